"""`retouch bench submit` on a small prefix: every object listed and queued
as one message, and the figures it prints are there (values are not asserted:
speed is the benchmark's to report)."""

from __future__ import annotations

import json
import os

from tests.cluster.clusterlib import ROOT, retouch


def test_bench_submit_lists_and_queues_every_object(tmp_path):
    # the benchmark starts its own redis-server and weed mini
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RETOUCH_", "AWS_"))},
           "RETOUCH_SETTINGS_FILE": "/nonexistent/retouch.env", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "submit.json"
    proc = retouch("bench", "submit", "--objects", "250", "--batch-size", "40", "--json", str(out),
                   env=env, timeout=300)
    figures = json.loads(out.read_text())
    assert figures["listed"] == figures["images"] == figures["messages_queued"] == 250
    assert figures["batches"] == 7                                      # 6 x 40 + 10
    assert figures["first_task_s"] is not None and figures["first_task_s"] < figures["submit_s"]
    assert 0 < figures["redis_bytes_per_image"] < 20_000 and figures["message_bytes"] > 0
    for label in ("list ", "enqueue ", "first task ", "redis ", "machine "):
        assert label in proc.stdout, proc.stdout
