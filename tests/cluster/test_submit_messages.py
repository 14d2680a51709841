"""What `submit` puts on the queue per image: the compact first message reads
back as the same image job, and the chord callback no longer carries the
batch's keys (they are stored once per batch in Redis)."""

from __future__ import annotations

import base64
import json
import zlib

import redis

from orchestration.jobs import JobStore
from orchestration.settings import load_settings
from orchestration.storage import Storage
from tasks.app import CPU_QUEUE, make_app
from tasks.canvas import compact_message, submit
from worker.pipeline.job import ImageJob
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
        assert ImageJob.from_message(message) == job
        assert message["plan"] == job.plan.model_dump(mode="json")      # the whole plan, defaults included
        assert "trace" not in message and "status" not in message
        assert len(json.dumps(message)) < len(json.dumps(job.to_message())) - 150


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
    messages = [json.loads(raw) for raw in client.lrange(CPU_QUEUE, 0, -1)]
    assert len(messages) == 7
    for message in messages:
        assert message["headers"]["argsrepr"] in {repr(k) for k in keys}
        body = json.loads(zlib.decompress(base64.b64decode(message["body"])))
        image = ImageJob.from_message(body[0][0])
        callback = body[2]["chain"][0]["options"]["chord"]
        assert callback["task"] == "retouch.batch_done" and callback["args"] == [job, image.batch]
        assert image.key in store.batch_keys(job, image.batch)
