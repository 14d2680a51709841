"""Multiprocess mode with real forked children: one endpoint merges them, dead
children's live gauges go away (shutdown hook or swept after SIGKILL), and a new
worker start wipes the previous run's files."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

SCENARIO = Path(__file__).with_name("mp_scenario.py")
ROOT = Path(__file__).resolve().parents[2]


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def run_scenario(folder: Path) -> tuple[dict, list[int]]:
    proc = subprocess.Popen([sys.executable, str(SCENARIO), str(folder)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line and line[0] == "PORT", f"scenario did not start (exit {proc.poll()})"
        samples = scrape(int(line[1]))
        pids = [int(p) for p in line[3:]]
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    return samples, pids


def test_children_merge_dead_ones_drop_live_gauges_and_restart_wipes(tmp_path):
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "keep.txt").write_text("not ours")
    for _run in range(2):  # the second start must not add the first run's totals
        samples, pids = run_scenario(folder)
        # three children, each 3 ok + 1 failed, 1 selection, 3 confidence samples
        assert samples[("retouch_images_total", (("status", "ok"),))] == 9
        assert samples[("retouch_images_total", (("status", "failed"),))] == 3
        assert samples[("retouch_model_selections_total",
                        (("reason", "thin-strokes-smooth"), ("stage", "inpaint"), ("variant", "telea")))] == 3
        assert samples[("retouch_mask_confidence_count", ())] == 9
        assert samples[("retouch_mask_coverage_ratio_count", ())] == 3
        # in flight: A marked itself dead, B was SIGKILLed (swept at scrape), only C's task remains
        assert samples[("retouch_tasks_in_flight", (("task", "tasks.detect"),))] == 1
        assert samples.get(("retouch_tasks_in_flight", (("task", "tasks.upscale"),)), 0) == 0
        assert samples[("retouch_worker_up", ())] == 1
        live = {p.name for p in folder.glob("gauge_live*.db")}
        assert not any(f"_{pids[0]}." in n or f"_{pids[1]}." in n for n in live)
    assert (folder / "keep.txt").read_text() == "not ours"
