"""What `submit` puts on the queue per image: the compact first message reads
back as the same image job, and the chord callback no longer carries the
batch's keys (they are stored once per batch in Redis)."""

from __future__ import annotations

import base64
import json
import zlib

import pytest
import redis

from orchestration.jobs import JobStore
from orchestration.settings import load_settings
from orchestration.storage import Storage
from tasks.app import CPU_QUEUE, make_app
from tasks.canvas import compact_message, submit, with_plan
from worker.pipeline.job import ImageJob, JobSchemaError
from worker.pipeline.plan import Plan


def _job(**plan) -> ImageJob:
    p = Plan(**plan)
    return ImageJob(job="j1", bucket="b", key="in/a.jpg", etag='"e"', out_bucket="b", out_key="out/a.jpg",
                    artifact_prefix="out/_retouch/jobs/j1/artifacts/in/a.jpg", plan=p, fingerprint=p.fingerprint(),
                    force=True, max_pixels=1000, queue="gpu.1", batch=3)


def test_compact_message_reads_back_as_the_same_job():
    for plan in ({}, {"ops": ["remove-text", "upscale"], "scale": 2.0, "inpaint": "telea", "quality": 90}):
        job = _job(**plan)
        message = compact_message(job)
        # the plan is the job's, stored once: put back, it reads as the same job
        assert "plan" not in message and "trace" not in message and "status" not in message
        stored = job.plan.model_dump(mode="json")
        assert ImageJob.from_message(with_plan(message, stored, job.fingerprint)) == job
        assert len(json.dumps(message)) < len(json.dumps(job.to_message())) - 600
        # a message made with another plan than the job's stored one is refused in one line
        with pytest.raises(JobSchemaError, match="s3://b/in/a.jpg: the task's plan fingerprint"):
            with_plan(message, Plan(ops=["upscale"]).model_dump(mode="json"), Plan(ops=["upscale"]).fingerprint())
        # a message that carries its plan (an older submit) is read as it is
        full = job.to_message()
        assert with_plan(full, None, None) is full


def test_queued_messages_are_compact_and_the_batch_keys_are_in_redis(cluster_env, bucket, s3):
    settings = load_settings(redis_url=cluster_env["RETOUCH_REDIS_URL"],
                             s3_endpoint_url=cluster_env["RETOUCH_S3_ENDPOINT_URL"],
                             s3_access_key_id=cluster_env["AWS_ACCESS_KEY_ID"],
                             s3_secret_access_key=cluster_env["AWS_SECRET_ACCESS_KEY"])
    keys = [f"in/{i:03d}.jpg" for i in range(7)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    client = redis.Redis.from_url(settings.redis_url)
    store = JobStore(client)
    job = submit(make_app(settings), Storage.from_settings(settings), store, f"s3://{bucket}/in",
                 f"s3://{bucket}/out", Plan(), batch_size=4, queues=[]).job
    assert store.batch_keys(job, 0) == keys[:4] and store.batch_keys(job, 1) == keys[4:]
    raw_messages = client.lrange(CPU_QUEUE, 0, -1)
    messages = [json.loads(raw) for raw in raw_messages]
    assert len(messages) == 7
    for message in messages:
        assert message["headers"]["argsrepr"] in {repr(k) for k in keys}
        body = json.loads(zlib.decompress(base64.b64decode(message["body"])))
        assert len(raw_messages[0]) < 1700   # envelope and compressed body without the plan: 1,596 B (1,828 with it)
        image = ImageJob.from_message(with_plan(body[0][0], *store.plan(job)))
        assert image.plan == Plan()
        # no GPU queue: the image is one task that finishes it too (no chain to clone and link)
        assert body[1] == {"finish": True} and not body[2]["chain"]
        callback = body[2]["chord"]
        assert callback["task"] == "retouch.batch_done" and callback["args"] == [job, image.batch]
        assert image.key in store.batch_keys(job, image.batch)
