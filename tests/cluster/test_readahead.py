"""The read-ahead (``tasks.readahead``) on the real Redis and S3: it finds the
image a queue hands out next in our own messages, fetches exactly that
object's bytes, gives them only to that image's task at the listed version,
and a worker uses it: its images come out as the embedded run's."""

from __future__ import annotations

import pytest
import redis

from clusterlib import in_process_job
from orchestration.jobs import JobStore, read_manifest
from orchestration.local import restore
from orchestration.storage import Storage
from tasks import runtime
from tasks.app import CPU_QUEUE, make_app
from tasks.canvas import submit
from tasks.readahead import ReadAhead, next_image
from worker.io import decode, encode
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan

pytestmark = pytest.mark.cluster


def _put(storage: Storage, bucket: str, objects: dict[str, bytes]) -> dict[str, str]:
    for key, data in objects.items():
        storage.put(bucket, key, data)
    return {key: storage.head(bucket, key)["etag"] for key in objects}


def test_the_next_image_is_fetched_and_given_only_to_its_task(settings, bucket):
    storage = Storage.from_settings(settings)
    client = redis.Redis.from_url(settings.redis_url)
    objects = {f"ra/in/{i}.png": bytes([i]) * (1000 + i) for i in range(3)}
    etags = _put(storage, bucket, objects)
    submit(make_app(settings), storage, JobStore(client), f"s3://{bucket}/ra/in", f"s3://{bucket}/ra/out", Plan(),
           queues=[])
    # BRPOP takes from the tail: the first image listed is handed out first
    assert next_image(client, CPU_QUEUE) == (bucket, "ra/in/0.png", etags["ra/in/0.png"])
    seen = []
    ahead = ReadAhead(storage, client, max_bytes=10_000, on_result=seen.append)
    assert ahead.start(CPU_QUEUE, (bucket, "ra/in/0.png")) is None          # the image in hand: nothing to do
    assert ahead.start(CPU_QUEUE, (bucket, "other")) == (bucket, "ra/in/0.png", etags["ra/in/0.png"])
    assert ahead.take(bucket, "ra/in/1.png", etags["ra/in/1.png"]) is None  # not the one fetched
    assert ahead.take(bucket, "ra/in/0.png", etags["ra/in/0.png"]) == objects["ra/in/0.png"]
    assert ahead.take(bucket, "ra/in/0.png", etags["ra/in/0.png"]) is None  # given once
    # the object changed since it was listed: the task reads it itself
    ahead.start(CPU_QUEUE, (bucket, "other"))
    assert ahead.take(bucket, "ra/in/0.png", "0" * 32) is None
    # larger than the budget: not kept
    small = ReadAhead(storage, client, max_bytes=10)
    small.start(CPU_QUEUE, (bucket, "other"))
    assert small.take(bucket, "ra/in/0.png", etags["ra/in/0.png"]) is None
    assert seen == ["miss", "hit", "miss", "changed"] and small.counts["miss"] == 1
    # a fetch replaced before its task came (another worker took the image) is counted as dropped
    ahead.start(CPU_QUEUE, (bucket, "other"))
    client.rpop(CPU_QUEUE)
    ahead.start(CPU_QUEUE, (bucket, "other"))
    assert seen[-1] == "dropped"
    # anything but a first task of ours is left alone: junk, another task, an empty queue
    client.rpush(CPU_QUEUE, b"not json")
    assert next_image(client, CPU_QUEUE) is None
    client.rpush(CPU_QUEUE, b'{"headers": {"task": "retouch.finish"}, "body": "e30="}')
    assert next_image(client, CPU_QUEUE) is None
    assert next_image(client, "no-such-queue") is None


def test_a_worker_computes_from_inputs_read_ahead(settings, bucket, archive_photos):
    photos = archive_photos(3, seed=11)
    plan = Plan(inpaint="telea")
    storage, st = in_process_job(settings, bucket, photos, "rw", plan)
    assert (st.done, st.failed) == (3, 0), st.line()
    # one worker, three queued images: the second and third were fetched while the one before computed
    assert runtime.runtime().readahead.counts["hit"] >= 2, runtime.runtime().readahead.counts
    cache = ModelCache(device="cpu")
    for line in read_manifest(storage, st.manifest):
        name = line["key"].split("/")[-1]
        out = storage.get(bucket, line["output"].split("/", 3)[3])
        assert out == encode(restore(decode(photos[name], name), plan, cache).image, plan.format, plan.quality)
