"""The router end to end on the benchmark's own degraded inputs (the
``retouch eval --ops upscale`` kinds, built by ``artifact_case``): measured
features, then the rule, against the degradation each case is known to carry.
No model runs; this fails if a feature or a threshold stops telling the kinds apart."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from orchestration.evaluate.artifact_cases import artifact_case
from worker.pipeline.plan import Plan
from worker.pipeline.select import ROUTE_MODELS, route_upscale

SIDE = 224      # the photos of the reported evaluation: x4 from 56 px


def _photo(name: str) -> np.ndarray:
    rgb = getattr(skimage.data, name)()
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    h, w = rgb.shape[:2]
    s = SIDE / max(h, w)
    return cv2.resize(rgb.astype(np.float32) / 255.0, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def _route(photo: str, kind: str, seed: int = 3):
    _, low, params = artifact_case(_photo(photo), kind, np.random.default_rng(seed))
    return route_upscale(Plan(ops=["upscale"]), low, params.get("jpeg_tables")), params


@pytest.mark.parametrize("photo", ["astronaut", "camera", "coffee"])
@pytest.mark.parametrize("kind, rule", [
    ("jpeg10", "heavy-jpeg"), ("jpeg20", "heavy-jpeg"), ("jpeg40", "heavy-jpeg"),
    ("noise15", "sensor-noise"), ("noise30", "sensor-noise"),
    ("illustration", "illustration-content"),
])
def test_each_degradation_gets_its_rule(photo, kind, rule):
    choice, params = _route(photo, kind)
    assert choice.rule == rule, choice.reason
    assert (choice.prepass, choice.upscaler) == ROUTE_MODELS[rule]
    if params["label"] == "jpeg":
        assert choice.inputs["jpeg_q"] == params["quality"] and choice.inputs["jpeg_q_source"] == "tables"
    if params["label"] == "noise":
        # the measured sigma is within 25% of the noise added
        assert abs(choice.inputs["sigma"] - params["sigma"]) <= 0.25 * params["sigma"], choice.inputs["sigma"]


@pytest.mark.parametrize("photo", ["astronaut", "camera", "coffee"])
def test_light_artifacts_on_smooth_photos_go_straight_to_the_upscaler(photo):
    for kind in ("clean", "jpeg70"):
        choice, _ = _route(photo, kind)
        assert choice.rule in ("photo-content", "film-grain"), (kind, choice.reason)
        assert choice.prepass is None and choice.upscaler == ROUTE_MODELS["photo-content"][1]


@pytest.mark.parametrize("photo", ["grass", "brick"])
def test_dense_texture_is_smoothed_first(photo):
    for kind in ("clean", "jpeg70"):
        choice, _ = _route(photo, kind)
        assert choice.rule == "dense-texture", (kind, choice.reason)
        assert (choice.prepass, choice.upscaler) == ROUTE_MODELS["dense-texture"]
        assert f"texture {choice.inputs['texture']:.2f}" in choice.reason


def test_a_png_that_was_a_jpeg_routes_on_its_blocks_and_says_so():
    choice, _ = _route("camera", "blur-jpeg")      # blurred, JPEG q35, saved as PNG: no tables
    assert choice.inputs["tables"] == "none" and choice.inputs["jpeg_q_source"] == "pixels"
    assert "no quantisation tables, from the pixels' blockiness" in choice.reason
    assert choice.rule == "heavy-jpeg"
