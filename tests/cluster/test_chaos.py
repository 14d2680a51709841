"""``retouch bench chaos`` with its defaults (issue 12's fault drill): 2
workers, 24 images of ~1 MP, 10 SIGKILLed worker process trees, a Redis
restart and a 15 s S3 outage, all with default settings. Every figure the
command prints is checked here against the ground truth it gathered:
each kill that left a task held is redelivered within 15 s, every image is
done exactly once (status, manifest and summary agree), each output has one
S3 version and is byte-identical to ``retouch run``'s, the job ends within
2x its fault-free time plus the outage, and a Redis restarted without
persistence is reported. Several minutes on 2 cores: marked slow."""

from __future__ import annotations

import json

import pytest

from clusterlib import retouch

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(3600)]


def test_chaos_drill_with_default_settings(cluster_env, tmp_path):
    out = tmp_path / "chaos.json"
    proc = retouch("bench", "chaos", "--json", str(out), env=cluster_env, timeout=1800, check=False)
    assert out.exists(), proc.stdout + proc.stderr[-3000:]
    f = json.loads(out.read_text())
    assert len(f["kills"]) == 10, proc.stdout
    assert sum(k["kind"] in ("task-end", "finish") for k in f["kills"]) >= 4
    assert sum(bool(k["restored"]) for k in f["kills"]) >= 5, proc.stdout   # most kills left a task held
    for k in f["kills"]:
        if k["restored"]:
            assert k["redelivered_after_s"] is not None and k["redelivered_after_s"] <= 15, k
    assert f["redis_restart"]["unreachable_s"] > 0 and f["s3_outage"]["stopped_s"] >= 15
    c = f["faulted_job"]
    assert c["done_exactly_once"], c
    assert c["status"] == {"done": 24, "failed": 0, "skipped": 0, "queued": 0, "running": 0}
    assert c["manifest"] == c["summary"] == {"ok": 24, "failed": 0, "skipped": 0}
    assert c["one_version_each"] and c["records"] == 24
    assert c["byte_identical"] == 24 and f["fault_free_job"]["byte_identical"] == 24
    assert f["within_bound"], (f["faulted_s"], f["bound_s"])
    assert f["volatile_redis"]["reported"], f["volatile_redis"]
    assert proc.returncode == 0, proc.stdout
