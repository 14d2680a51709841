"""The stage graph is the pipeline: a stage added to it runs in the embedded
executor without touching it; expected failures and bugs are told apart."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from orchestration.local import discover, restore, run_batch
from tests.conftest import photo
from worker.errors import RetouchError
from worker.io import Image, encode
from worker.pipeline import graph
from worker.pipeline.artifacts import PIXELS
from worker.pipeline.cache import ModelCache
from worker.pipeline.job import ImageJob, JobSchemaError
from worker.pipeline.plan import Plan


def noop_step(arts, plan, cache, ctx):
    """Sees the pixels, changes nothing, says so in the record."""
    rgb = arts[PIXELS].rgb
    ctx.note("noop", {"seen": [int(rgb.shape[1]), int(rgb.shape[0])], "checksum": float(rgb.sum())})
    ctx.timed("noop", "noop", "cpu", 0.0)
    return {}


@pytest.fixture
def noop_stage():
    """A heavy no-op stage after postprocess: its own segment (task) in the cluster."""
    graph.add_stage(graph.Stage("noop", noop_step, consumes=(PIXELS,), produces=(), heavy=True), after="postprocess")
    yield "noop"
    graph.remove_stage("noop")


def test_stage_order_and_segments_follow_the_declaration(noop_stage):
    plan = Plan(ops=["remove-text", "upscale"])
    # upscale auto: the router may put a deblock or denoise pre-pass before the upscaler
    assert [s.name for s in graph.stages_for(plan)] == ["detect", "watermark", "unblend", "inpaint", "postprocess", "noop",
                                                       "deblock", "denoise", "upscale"]
    assert [[s.name for s in seg] for seg in graph.segments(graph.stages_for(plan))] == \
        [["detect", "watermark", "unblend", "inpaint"], ["postprocess"], ["noop", "deblock", "denoise", "upscale"]]
    # grouped by the queue each stage runs on: with no GPU queue, heavy and light share one task
    assert [len(seg) for seg in graph.segments(graph.stages_for(plan), lambda s: "cpu")] == [9]
    assert [[s.name for s in seg] for seg in graph.segments(graph.stages_for(plan),
                                                             lambda s: "gpu.0" if s.heavy else "cpu")] == \
        [["detect", "watermark", "unblend", "inpaint"], ["postprocess"], ["noop", "deblock", "denoise", "upscale"]]
    assert [s.name for s in graph.stages_for(Plan(ops=["upscale"]))] == ["noop", "deblock", "denoise", "upscale"]
    assert [s.name for s in graph.stages_for(Plan(ops=["upscale"], upscale="lanczos"))] == ["noop", "upscale"]
    with pytest.raises(ValueError, match="undeclared artifact"):
        graph.add_stage(graph.Stage("bad", noop_step, consumes=("nope",), produces=()))


def test_added_stage_runs_in_the_embedded_executor(noop_stage, tmp_path, overlaid):
    _, degraded, _ = overlaid["coffee"]
    img = Image(rgb=degraded, name="coffee.png", format="PNG")
    cache = ModelCache(device="cpu")
    with_noop = restore(img, Plan(inpaint="telea"), cache)
    assert with_noop.record["noop"]["seen"] == [degraded.shape[1], degraded.shape[0]]
    # it saw the post-processed pixels, and changed nothing
    assert with_noop.record["noop"]["checksum"] == pytest.approx(float(with_noop.image.rgb.sum()), rel=1e-6)
    graph.remove_stage("noop")
    try:
        without = restore(img, Plan(inpaint="telea"), cache)
    finally:
        graph.add_stage(graph.Stage("noop", noop_step, consumes=(PIXELS,), produces=(), heavy=True),
                        after="postprocess")
    assert encode(with_noop.image) == encode(without.image) and "noop" not in without.record


def test_a_stage_producing_an_undeclared_artifact_is_a_bug(tmp_path):
    graph.add_stage(graph.Stage("liar", lambda arts, plan, cache, ctx: {"mask": np.zeros((2, 2))},
                                consumes=(PIXELS,), produces=()))
    try:
        with pytest.raises(RuntimeError, match="liar produced undeclared artifact"):
            restore(Image(rgb=photo("rocket")[:32, :32]), Plan(ops=["upscale"], upscale="lanczos", scale=2),
                    ModelCache(device="cpu"))
    finally:
        graph.remove_stage("liar")


def _write_png(path, rgb):
    from PIL import Image as PILImage

    PILImage.fromarray((rgb * 255).astype(np.uint8)).save(path)


def test_expected_failures_are_one_line_and_bugs_keep_their_traceback(tmp_path, caplog):
    """A RetouchError fails its image with its own line; a ValueError from inside
    a stage (what a numpy or OpenCV bug raises) is a bug: logged with its
    traceback, and it still fails only its image."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        _write_png(src / name, photo("astronaut")[:48, :48])

    def step(arts, plan, cache, ctx):
        name = arts["image"].name
        if name.endswith("a.png"):
            raise RetouchError(f"{name}: refused for a reason the user can act on")
        if name.endswith("b.png"):
            raise ValueError("operands could not be broadcast together")  # a bug, not bad input
        return {}

    graph.add_stage(graph.Stage("picky", step, consumes=(PIXELS,), produces=()), before="upscale")
    try:
        with caplog.at_level(logging.ERROR):
            report = run_batch(discover([src]), tmp_path / "out", Plan(ops=["upscale"], upscale="lanczos", scale=2),
                               ModelCache(device="cpu"), max_pixels=10**8)
    finally:
        graph.remove_stage("picky")
    by_name = {o.source.name: o for o in report.outcomes}
    assert by_name["a.png"].status == "failed" and by_name["a.png"].error == \
        f"{src / 'a.png'}: refused for a reason the user can act on"
    assert by_name["b.png"].status == "failed" and "ValueError: operands could not be broadcast" in \
        by_name["b.png"].error
    assert by_name["c.png"].status == "ok"
    bugs = [r for r in caplog.records if r.exc_info]
    assert len(bugs) == 1 and "b.png" in bugs[0].getMessage() and bugs[0].exc_info[0] is ValueError


def _job(**changes) -> dict:
    job = ImageJob(job="j1", bucket="in", key="a/b.jpg", etag="e", out_bucket="out", out_key="o/b.jpg",
                   artifact_prefix="o/_retouch/jobs/j1/artifacts/a/b.jpg", plan=Plan(), fingerprint="f" * 16,
                   max_pixels=10**8, queue="cpu")
    return {**json.loads(json.dumps(job.to_message())), **changes}


def test_image_job_round_trips_as_json_and_refuses_other_versions():
    message = _job()
    job = ImageJob.from_message(message)
    assert job.plan == Plan() and job.url == "s3://in/a/b.jpg" and job.to_message() == message
    with pytest.raises(JobSchemaError, match=r"s3://in/a/b.jpg: task message has schema version 0, this worker "
                                             r"reads version 1"):
        ImageJob.from_message(_job(schema_version=0))
    old = _job()
    del old["schema_version"]
    with pytest.raises(JobSchemaError, match="schema version None"):
        ImageJob.from_message(old)
    with pytest.raises(JobSchemaError, match="malformed task message.*plan"):
        ImageJob.from_message(_job(plan={"ops": ["sharpen"]}))
