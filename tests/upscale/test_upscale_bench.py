"""`retouch bench upscale` runs each model in its own process and reports
medians per output megapixel and peak memory (figures printed, not asserted)."""

from __future__ import annotations

import json

from orchestration.cli import main


def test_bench_reports_speed_and_peak_memory_per_model(realesrgan_store, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "upscale", "--models", "realesr-animevideov3,realesr-animevideov3-x4-ncnn",
                 "--size", "48", "--repeats", "2", "--model-dir", str(realesrgan_store), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "s/out MP" in printed and "peak RSS MB" in printed and "NcnnUpscaler" in printed
    results = json.loads(out.read_text())["results"]
    assert [r["variant"] for r in results] == ["realesr-animevideov3", "realesr-animevideov3-x4-ncnn"]
    for r in results:
        assert r["output"] == "192x192" and len(r["seconds"]) == 2
        assert r["seconds_per_output_mp"] > 0 and r["peak_rss_mb"] > 50


def test_bench_reports_a_failing_model_and_exits_1(realesrgan_store, capsys):
    assert main(["bench", "upscale", "--models", "no-such-model", "--size", "16", "--repeats", "1",
                 "--model-dir", str(realesrgan_store)]) == 1
    assert "no-such-model" in capsys.readouterr().out
