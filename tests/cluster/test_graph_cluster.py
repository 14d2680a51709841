"""A stage added to the graph runs in the distributed executor too, without
touching it: the chain builder gives it its own task, the generic task runs
it, and the output is still byte for byte the embedded run's. The worker runs
in this process (Celery's test worker, on the real Redis and S3), so it sees
the stage the test added."""

from __future__ import annotations

import json

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from clusterlib import wait_finished
from orchestration.jobs import JobStore, read_manifest
from orchestration.local import restore
from orchestration.storage import Storage
from tasks import runtime
from tasks.app import make_app
from tasks.canvas import submit
from tests.test_graph import noop_stage  # noqa: F401  (fixture)
from worker.io import decode, encode
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan

pytestmark = pytest.mark.cluster


def test_added_stage_runs_in_the_distributed_executor(noop_stage, settings, bucket, archive_photos):  # noqa: F811
    photos = archive_photos(2, seed=3)
    storage = Storage.from_settings(settings)
    for name, data in photos.items():
        storage.put(bucket, f"in/{name}", data)
    app = make_app(settings)
    runtime.configure(settings, runtime.WorkerOptions(device="cpu"))
    store = JobStore(redis.Redis.from_url(settings.redis_url))
    plan = Plan(inpaint="telea")
    with start_worker(app, pool="solo", perform_ping_check=False, queues=["cpu"]):
        job = submit(app, storage, store, f"s3://{bucket}/in", f"s3://{bucket}/out", plan).job
        st = wait_finished(store, job)
    assert (st.done, st.failed) == (2, 0), st.line()
    cache = ModelCache(device="cpu")
    for line in read_manifest(storage, st.manifest):
        # the noop stage ran on a worker; with no GPU queue every stage shares the cpu queue, so one task
        assert set(line["task_seconds"]) == {"detect+watermark+unblend+inpaint+postprocess+noop"}
        assert set(line["workers"]) == {"detect", "watermark", "unblend", "inpaint", "postprocess", "noop"}
        record = json.loads(storage.get(bucket, line["record"].split("/", 3)[3]))
        assert record["noop"]["seen"] == [256, 256] and "noop" in record["timings"]
        name = line["key"].split("/")[-1]
        embedded = restore(decode(photos[name], name), plan, cache)
        assert record["noop"] == embedded.record["noop"]
        out = storage.get(bucket, line["output"].split("/", 3)[3])
        assert out == encode(embedded.image, plan.format, plan.quality)
