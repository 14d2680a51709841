"""SIGTERM to ``retouch worker`` (what Kubernetes and ``docker stop`` send) is
a warm shutdown: the task in hand finishes and its image is written, then the
worker exits by itself; the rest of the image's chain waits for the next
worker, and the job completes."""

from __future__ import annotations

import io
import json
import time

import pytest
import redis
from PIL import Image as PILImage

from clusterlib import retouch, wait_job

pytestmark = pytest.mark.cluster


def test_sigterm_lets_the_running_task_finish(cluster_env, bucket, s3, start_workers, archive_photos):
    photo = next(iter(archive_photos(1, seed=6).values()))
    small = io.BytesIO()
    PILImage.open(io.BytesIO(photo)).crop((0, 0, 160, 160)).save(small, "PNG")   # x4 on CPU: seconds
    s3.put_object(Bucket=bucket, Key="raw/photo.png", Body=small.getvalue())
    workers = start_workers(cluster_env, "--cpu")
    workers.wait_ready(["cpu"], cluster_env["RETOUCH_REDIS_URL"])
    job = retouch("submit", f"s3://{bucket}/raw", "--out", f"s3://{bucket}/out", "--ops", "upscale",
                  "--upscale", "realesrgan-x4plus", "--scale", "4", env=cluster_env).stdout.strip()

    r = redis.Redis.from_url(cluster_env["RETOUCH_REDIS_URL"])
    deadline = time.monotonic() + 120
    while not any((raw := r.get(k)) and json.loads(raw)["task"] == "upscale"
                  for k in r.scan_iter("retouch:worker:*:current")):
        assert time.monotonic() < deadline, "the upscale task never started"
        time.sleep(0.05)
    workers.proc.terminate()                                    # SIGTERM to the supervisor, once
    time.sleep(1.0)
    assert workers.proc.poll() is None, "the worker quit without finishing its task"
    workers.proc.wait(timeout=300)                              # it exits by itself once the task is done
    assert workers.proc.returncode == 0
    # the task in hand finished: the output is written (the last stage writes it)
    out = PILImage.open(io.BytesIO(s3.get_object(Bucket=bucket, Key="out/photo.png")["Body"].read()))
    assert out.size == (640, 640)
    # the rest of the chain (finish) waits in the queue for the next worker
    start_workers(cluster_env, "--cpu").wait_ready(["cpu"], cluster_env["RETOUCH_REDIS_URL"])
    last = wait_job(cluster_env, job, timeout=120)
    assert "1 done, 0 failed" in last, last
