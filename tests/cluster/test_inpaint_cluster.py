"""Learned inpainting in the cluster: the diffusion fill runs on the image's
GPU queue (a heavy stage), post-processing on the cpu queue, the output is
byte for byte the embedded run's, and the worker's model-load histogram
counts the pipeline. A Celery test worker runs in this process on the real
Redis and S3, consuming gpu.0 and cpu; each task's delivery says which queue
it came from. (One worker, not one per queue: two nested in-process workers
share Celery's one stop flag, and with them this test failed in full runs on
a loaded machine while it passed alone.)"""

from __future__ import annotations

import json
import time

import pytest
import redis
from celery import signals
from celery.contrib.testing.worker import start_worker

from examples.make_tiny_inpaint import build_sd_inpaint
from monitoring.metrics import process_metrics
from orchestration.jobs import JobStore, read_manifest, status
from orchestration.local import restore
from orchestration.settings import Settings
from orchestration.storage import Storage
from tasks import runtime
from tasks.app import make_app
from tasks.canvas import submit
from worker.inpaint import store_models
from worker.io import decode, encode
from worker.pipeline import graph
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan

pytestmark = pytest.mark.cluster


def test_diffusion_fill_runs_on_the_gpu_queue(cluster_env, bucket, archive_photos, tmp_path):
    store = tmp_path / "store"
    store_models.add_model(store, build_sd_inpaint(tmp_path / "tiny-sd"), "sd-inpaint")
    assert graph.get("inpaint").heavy   # declared heavy: chained onto the image's GPU queue
    settings = Settings(_env_file=None, redis_url=cluster_env["RETOUCH_REDIS_URL"],
                        s3_endpoint_url=cluster_env["RETOUCH_S3_ENDPOINT_URL"],
                        s3_access_key_id=cluster_env["AWS_ACCESS_KEY_ID"],
                        s3_secret_access_key=cluster_env["AWS_SECRET_ACCESS_KEY"], device="cpu",
                        model_dir=str(store))
    photos = archive_photos(1, seed=11)
    storage = Storage.from_settings(settings)
    for name, data in photos.items():
        storage.put(bucket, f"in/{name}", data)
    app = make_app(settings)
    runtime.configure(settings, runtime.WorkerOptions(device="cpu"))
    jobs = JobStore(redis.Redis.from_url(settings.redis_url))
    plan = Plan(inpaint="sd-inpaint", prompt="plaster wall", seed=4412, steps=2)
    labels = {"kind": "inpainter", "name": "sd-inpaint"}
    loads_before = process_metrics().registry.get_sample_value("retouch_model_load_seconds_count", labels) or 0
    routed: dict[str, str] = {}   # stage -> the queue its task was delivered from

    def prerun(sender=None, task=None, args=None, **_):
        if (task or sender).name == "retouch.stages":
            for stage in args[1]:
                routed[stage] = (task or sender).request.delivery_info.get("routing_key")

    signals.task_prerun.connect(prerun, weak=False, dispatch_uid="test-inpaint-routing")
    try:
        # a solo worker finishes its current poll before it exits: on a loaded machine that takes over 10 s
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["gpu.0", "cpu"], shutdown_timeout=60):
            job = submit(app, storage, jobs, f"s3://{bucket}/in", f"s3://{bucket}/out", plan, queues=["gpu.0"]).job
            deadline = time.monotonic() + 300
            while not status(jobs, job).finished:
                assert time.monotonic() < deadline, status(jobs, job).line()
                time.sleep(0.2)
    finally:
        signals.task_prerun.disconnect(dispatch_uid="test-inpaint-routing")
    st = status(jobs, job)
    assert (st.done, st.failed) == (1, 0), st.line()
    line = next(iter(read_manifest(storage, st.manifest)))
    assert line["queue"] == "gpu.0" and line["variants"]["inpaint"] == "sd-inpaint"
    # every stage the plan needs, on the queue the graph declares for it
    assert routed == {stage.name: "gpu.0" if stage.heavy else "cpu" for stage in graph.stages_for(plan)}
    assert routed["inpaint"] == "gpu.0" and routed["postprocess"] == "cpu"
    record = json.loads(storage.get(bucket, line["record"].split("/", 3)[3]))
    assert record["inpaint"]["family"] == "diffusion" and record["plan"]["prompt"] == "plaster wall"
    name = line["key"].split("/")[-1]
    embedded = restore(decode(photos[name], name), plan, ModelCache(device="cpu", model_dir=str(store)))
    assert storage.get(bucket, line["output"].split("/", 3)[3]) == encode(embedded.image, plan.format, plan.quality)
    loads = process_metrics().registry.get_sample_value("retouch_model_load_seconds_count", labels)
    assert loads - loads_before == 1
