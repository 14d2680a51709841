"""An image's chain that runs again after its first run completed (its
acknowledgement was lost with a killed worker) finds its own output and ends
"skipped": the job keeps the first finish's "ok", in its counts and in the
manifest line alike. The finish task runs here in process, on real Redis and S3."""

from __future__ import annotations

import json

import pytest
import redis

from orchestration.jobs import JobStore
from orchestration.settings import Settings
from tasks import runtime
from tasks.pipeline import finish
from worker.pipeline.job import ImageJob
from worker.pipeline.plan import Plan

pytestmark = pytest.mark.cluster


def _message(bucket: str, status: str) -> dict:
    plan = Plan(inpaint="telea")
    job = ImageJob(job="j1", batch=0, bucket=bucket, key="in/a.jpg", etag="e1", out_bucket=bucket,
                   out_key="out/a.jpg", artifact_prefix="jobs/j1/a", plan=plan, fingerprint=plan.fingerprint(),
                   max_pixels=10**8, queue="cpu", status=status, begun=True,
                   output=f"s3://{bucket}/out/a.jpg", record_key="out/a.jpg.json" if status == "ok" else None)
    return job.to_message()


def test_a_repeated_finish_never_downgrades_the_line_that_counted(cluster_env, bucket):
    settings = Settings(_env_file=None, redis_url=cluster_env["RETOUCH_REDIS_URL"],
                        s3_endpoint_url=cluster_env["RETOUCH_S3_ENDPOINT_URL"],
                        s3_access_key_id=cluster_env["AWS_ACCESS_KEY_ID"],
                        s3_secret_access_key=cluster_env["AWS_SECRET_ACCESS_KEY"], device="cpu")
    runtime.configure(settings, runtime.WorkerOptions(device="cpu"))
    store = JobStore(redis.Redis.from_url(settings.redis_url))
    store.create("j1", {"created": 0})
    assert finish(_message(bucket, "ok")) == {"key": "in/a.jpg", "status": "ok"}
    finish(_message(bucket, "skipped"))      # the same image's chain, run again
    lines = {k: json.loads(v) for k, v in store.batch_lines("j1", 0).items()}
    assert lines["in/a.jpg"]["status"] == "ok" and lines["in/a.jpg"]["record"].endswith("out/a.jpg.json")
    counts = store.counts("j1")
    assert counts.get("ok") == 1 and not counts.get("skipped")
    # an image whose first finish counted but died before its line was stored
    # still gets one, saying what counted
    store.drop_lines("j1", 0)
    assert finish(_message(bucket, "skipped")) == {"key": "in/a.jpg", "status": "ok"}
    line = json.loads(store.batch_lines("j1", 0)["in/a.jpg"])
    assert line["status"] == "ok" and line["record"].endswith("out/a.jpg.json")
    assert store.counts("j1").get("ok") == 1 and not store.counts("j1").get("skipped")


def test_a_job_whose_state_vanished_is_reported_not_recorded(cluster_env, bucket, caplog):
    """Redis restarted without persistence: the job's state is gone. Its
    finish says so in the log and writes nothing into the empty Redis."""
    settings = Settings(_env_file=None, redis_url=cluster_env["RETOUCH_REDIS_URL"],
                        s3_endpoint_url=cluster_env["RETOUCH_S3_ENDPOINT_URL"],
                        s3_access_key_id=cluster_env["AWS_ACCESS_KEY_ID"],
                        s3_secret_access_key=cluster_env["AWS_SECRET_ACCESS_KEY"], device="cpu")
    runtime.configure(settings, runtime.WorkerOptions(device="cpu"))
    client = redis.Redis.from_url(settings.redis_url)
    with caplog.at_level("ERROR"):
        finish(_message(bucket, "ok"))
    assert "job j1: its state is gone from Redis" in caplog.text
    assert list(client.scan_iter("retouch:job:j1:*")) == []


def test_redis_started_by_retouch_keeps_its_data_across_a_restart(tmp_path):
    """retouch cluster up and the fixtures run Redis with an append-only file:
    killed and restarted on the same folder, it still holds the job."""
    import time

    from orchestration.cluster import free_port, start_redis

    port = free_port()
    server = start_redis(tmp_path / "redis", port)
    client = redis.Redis.from_url(server.url)
    JobStore(client).set_meta("j2", state="queued")
    time.sleep(1.5)                       # appendfsync everysec
    server.proc.kill()                    # no clean shutdown
    server.proc.wait(timeout=10)
    again = start_redis(tmp_path / "redis", port)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.hget(JobStore.k("j2", "meta"), "state") == b'"queued"'  # set_meta stores JSON
    finally:
        again.stop()
