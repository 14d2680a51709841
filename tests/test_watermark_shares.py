"""The cluster's learning step in parts (worker.watermark.shares, tasks.learning),
without servers: the sample is reproducible and bounded, a share is exact and
never unpickled, the solve is ``learn`` itself, and a plan may name a learned
template in S3 only as a PNG under the job's output bucket."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from tasks.learning import _check
from tests.test_watermark import collection, shared_mark
from worker.errors import PlanError
from worker.io import decode
from worker.pipeline.job import ImageJob
from worker.pipeline.plan import Plan, make_plan
from worker.watermark import WatermarkError
from worker.watermark.learn import describe, learn
from worker.watermark.shares import read_share, sample, share_bytes, solve
from worker.watermark.template import template_png


def test_sample_is_reproducible_bounded_and_independent_of_order():
    keys = [f"in/{i:05d}.jpg" for i in range(1000)]
    picked = sample(keys, 40)
    assert len(picked) == 40 and picked == sorted(picked) and set(picked) <= set(keys)
    assert sample(reversed(keys), 40) == picked
    assert sample(keys[:500], 40) != picked[:40]          # a different prefix, a different sample
    assert sample(keys[:10], 40) == keys[:10]             # fewer keys than the bound: all of them
    assert sample([], 40) == []


def test_share_round_trips_exactly_and_refuses_other_arrays():
    rgb = np.random.default_rng(0).random((17, 23, 3), dtype=np.float32)
    assert np.array_equal(read_share(share_bytes(rgb), "s"), rgb)
    # pixels decoded from 8 bits go as 8 bits, and come back the same float32
    png = cv2.imencode(".png", np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    decoded = decode(png, "x.png").rgb
    data = share_bytes(decoded)
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        assert arrays.files == ["u8"]
    assert np.array_equal(read_share(data, "s"), decoded) and len(data) < decoded.nbytes / 3
    buf = io.BytesIO()
    np.savez(buf, u8=np.array([{"a": 1}], dtype=object))
    with pytest.raises(WatermarkError, match="not a learning share"):
        read_share(buf.getvalue(), "evil.npz")
    for other in ({"u8": np.zeros((4, 4), np.uint8)}, {"f32": np.zeros((4, 4, 3), np.float64)}, {"x": rgb}):
        buf = io.BytesIO()
        np.savez(buf, **other)
        with pytest.raises(WatermarkError, match="8-bit or float32 HxWx3"):
            read_share(buf.getvalue(), "other.npz")
    buf = io.BytesIO()
    np.save(buf, rgb)
    with pytest.raises(WatermarkError, match="not a learning share"):
        read_share(buf.getvalue(), "plain.npy")


def test_solve_is_learn_itself():
    observed, _ = shared_mark(collection(12))
    images = [o.astype(np.float32) for o in observed]
    names = [f"s3://b/in/{i:02d}.png" for i in range(12)]
    png, info = solve(names, [read_share(share_bytes(im), n) for im, n in zip(images, names)], "s3://b/in")
    learned = learn(images, name="x")
    assert png == template_png(learned.template) and info == describe(learned, "watermark.png", names)
    with pytest.raises(WatermarkError, match="needs at least 8"):
        solve(names[:5], images[:5], "s3://b/in")


def test_plan_names_a_learned_template_in_s3_only_as_a_png_under_the_job_output():
    good = "s3://out/restored/_retouch/watermarks/0123456789abcdef/watermark.png"
    assert make_plan(watermarks=[good]).watermarks == [good]
    for bad in ("s3://out/x/../watermark.png", "s3://out/watermark.json", "s3:///watermark.png"):
        with pytest.raises(PlanError, match="S3 template must be"):
            make_plan(watermarks=[bad])
    job = ImageJob(job="j", bucket="in", key="a.png", etag="e", out_bucket="out", out_key="restored/a.png",
                   artifact_prefix="restored/_retouch/jobs/j/artifacts/a.png", plan=Plan(watermarks=[good]),
                   fingerprint="f", max_pixels=10**8, queue="cpu")
    _check(good, job)
    for elsewhere in ("s3://other/restored/_retouch/watermarks/0/watermark.png", "s3://out/restored/logo.png"):
        with pytest.raises(WatermarkError, match="must lie in the job's output bucket"):
            _check(elsewhere, job)
