"""`retouch bench pipeline` prints and writes its figures: per-stage seconds
per megapixel, and the detect stage against the bare ONNX sessions on the
arrays it feeds them (the detector's alone, and with the line reader's)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from orchestration.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_bench_pipeline_reports_detect_against_its_model_sessions(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--images", str(EXAMPLES / "rocket-stamp.png"), "--repeats", "2", "pipeline",
                 "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert figures["machine"]["cores"] >= 1 and "machine:" in printed
    per_stage = figures["seconds_per_megapixel"]
    assert {"detect", "inpaint", "postprocess"} <= set(per_stage)
    # the reader reads the stamp's line: the sessions with it take longer than the detector's alone
    assert figures["raw_onnx_with_reader_seconds_per_megapixel"] > figures["raw_onnx_seconds_per_megapixel"] > 0
    # the ratio is the median of each run's own ratio (the stage and its sessions timed back to back)
    runs = figures["detect_over_raw_onnx_with_reader_runs"]
    # (each run is rounded to 3 places before it is written, the median after: allow that rounding)
    assert len(runs) == 2 and abs(figures["detect_over_raw_onnx_with_reader"] - statistics.median(runs)) <= 0.0015
    assert figures["detect_over_raw_onnx"] > figures["detect_over_raw_onnx_with_reader"] > 0
    assert "with the line reader" in printed and "detect / raw" in printed
