"""Redis killed (SIGKILL) in the middle of a task and started again on the
same port and append-only data folder, with the default settings (a 2-hour
visibility timeout, so nothing here is rescued by it):

- the running task waits for Redis, finishes, and its image is done once;
- a worker process that dies while Redis is down has its task put back on
  the queue once Redis is back (the supervisor's restore waits for it).

Either way every image is done exactly once (counts, manifest lines and
``retouch status`` agree), each output has one S3 version, and the outputs
are byte-identical to ``retouch run``'s."""

from __future__ import annotations

import hashlib
import json
import signal
import time

import pytest
import redis

from clusterlib import retouch, wait_job
from orchestration.cluster import start_redis

pytestmark = pytest.mark.cluster


def _wait_running(r, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key in r.scan_iter("retouch:worker:*:current"):
            raw = r.get(key)
            if raw and json.loads(raw)["task"] in ("detect", "inpaint"):
                return json.loads(raw)
        time.sleep(0.02)
    raise AssertionError("no task seen running")


@pytest.mark.parametrize("worker_dies", [False, True], ids=["task-waits", "worker-dies-meanwhile"])
def test_redis_restart_mid_task(worker_dies, cluster_env, redis_server, bucket, s3, start_workers,
                                archive_photos, tmp_path):
    photos = archive_photos(4, seed=12)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for name, data in photos.items():
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=data)
    env = dict(cluster_env)
    workers = start_workers(env, "--cpu")
    workers.wait_ready(["cpu"], env["RETOUCH_REDIS_URL"])
    job = retouch("submit", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--ops", "remove-text",
                  "--inpaint", "telea", env=env).stdout.strip()

    r = redis.Redis.from_url(env["RETOUCH_REDIS_URL"])
    running = _wait_running(r)
    child = workers.child("cpu")
    redis_server.proc.send_signal(signal.SIGKILL)        # Redis dies mid-task
    redis_server.proc.wait(timeout=10)
    if worker_dies:
        time.sleep(0.5)
        child.send_signal(signal.SIGKILL)                 # and the worker too, while Redis is away
    time.sleep(4)
    port = int(env["RETOUCH_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    again = start_redis(redis_server.log_file.parent, port)   # same port, same append-only file
    try:
        back = time.monotonic()
        if worker_dies:
            # the dead worker's task runs again soon after Redis is back, not after the visibility timeout
            while not any(int(r.get(k) or 0) >= 2 for k in r.scan_iter(f"retouch:delivery:{running['id']}:*")):
                assert time.monotonic() - back < 30, "the dead worker's task was not put back after Redis returned"
                time.sleep(0.1)
        last = wait_job(env, job, timeout=150)
        assert "4 done, 0 failed, 0 skipped" in last, last

        st = json.loads(retouch("status", job, "--json", env=env).stdout)
        assert (st["done"], st["failed"], st["skipped"], st["queued"], st["running"]) == (4, 0, 0, 0, 0)
        bucket_, key = st["manifest"][5:].split("/", 1)
        lines = [json.loads(x) for x in s3.get_object(Bucket=bucket_, Key=key)["Body"].read().splitlines()]
        assert sorted(x["key"] for x in lines) == sorted(f"in/{n}" for n in photos)
        assert all(x["status"] == "ok" and x["error"] is None for x in lines), lines
        summary = json.loads(s3.get_object(Bucket=bucket, Key=key.rsplit("/", 1)[0] + "/summary.json")["Body"]
                             .read())
        assert (summary["ok"], summary["failed"], summary["skipped"]) == (4, 0, 0)

        versions = {}
        for v in s3.list_object_versions(Bucket=bucket, Prefix="out/").get("Versions", []):
            versions[v["Key"]] = versions.get(v["Key"], 0) + 1
        assert {k: versions.get(k) for k in (f"out/{n}" for n in photos)} == {f"out/{n}": 1 for n in photos}

        # byte-identical to the embedded run
        src = tmp_path / "local-in"
        src.mkdir()
        for name, data in photos.items():
            (src / name).write_bytes(data)
        retouch("run", str(src), "--out", str(tmp_path / "local-out"), "--ops", "remove-text", "--inpaint", "telea",
                "--no-progress", env=env)
        for name in photos:
            got = s3.get_object(Bucket=bucket, Key=f"out/{name}")["Body"].read()
            want = (tmp_path / "local-out" / name).read_bytes()
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest(), name
    finally:
        workers.stop()
        again.stop()
