"""A stage added to the graph runs in the distributed executor too, without
touching it: the chain builder gives it its own task, the generic task runs
it, and the output is still byte for byte the embedded run's. The worker runs
in this process (Celery's test worker, on the real Redis and S3), so it sees
the stage the test added."""

from __future__ import annotations

import json

import pytest

from clusterlib import in_process_job
from orchestration.jobs import read_manifest
from orchestration.local import restore
from tests.test_graph import noop_stage  # noqa: F401  (fixture)
from worker.io import decode, encode
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan

pytestmark = pytest.mark.cluster


def test_added_stage_runs_in_the_distributed_executor(noop_stage, settings, bucket, archive_photos):  # noqa: F811
    photos = archive_photos(2, seed=3)
    plan = Plan(inpaint="telea")
    storage, st = in_process_job(settings, bucket, photos, "g", plan)
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
