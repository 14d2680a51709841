"""Inpaint, upscale, postprocess and model selection on arrays."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import photo
from worker.pipeline.plan import Plan
from worker.pipeline.select import choose_inpaint, choose_upscale, ring_texture
from worker import inpaint, stages, upscale
from worker.postprocess import colour_continuity, postprocess, seam_error
from worker.errors import PlanError
from worker.registry import UnknownVariantError


def _square_mask(h=128, w=128, box=(50, 70, 40, 90)):
    m = np.zeros((h, w), bool)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("variant", ["telea", "ns", "patchmatch"])
def test_variants_fill_only_the_mask_and_are_deterministic(variant):
    rgb = photo("chelsea")[:128, :128]
    mask = _square_mask()
    a, _ = inpaint.fill(rgb, mask, variant, seed=5)
    b, _ = inpaint.fill(rgb, mask, variant, seed=5)
    assert np.array_equal(a, b)
    assert np.array_equal(a[~mask], rgb[~mask])
    assert np.abs(a[mask] - rgb[mask]).mean() > 0.005  # something was filled
    assert a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1


def test_fill_works_on_the_bounding_box_plus_margin():
    seen = []

    def spy(rgb, mask, seed):
        seen.append(rgb.shape)
        return rgb

    inpaint.register("spy", spy, "records what it is given (test only)")
    rgb = photo("coffee")
    mask = _square_mask(*rgb.shape[:2], box=(100, 110, 120, 150))
    inpaint.fill(rgb, mask, "spy", margin=8)
    assert seen == [(10 + 16, 30 + 16, 3)]


def test_alpha_is_filled_with_the_same_mask():
    rgb = photo("rocket")[:64, :64]
    alpha = np.ones((64, 64), np.float32)
    alpha[:, :8] = 0.0
    mask = _square_mask(64, 64, (20, 30, 20, 40))
    alpha_in = alpha.copy()
    alpha_in[mask] = 0.0  # a hole the mask covers
    _, out_alpha = inpaint.fill(rgb, mask, "telea", alpha=alpha_in)
    assert out_alpha[mask].min() > 0.9 and np.array_equal(out_alpha[~mask], alpha_in[~mask])


@pytest.mark.parametrize("variant", ["lanczos", "bicubic"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_classical_upscalers_sizes(variant, scale):
    rgb = photo("astronaut")[:40, :50]
    up = upscale.create(variant)
    out, alpha = stages.upscale(rgb, np.ones((40, 50), np.float32), up, scale)
    assert out.shape == (40 * scale, 50 * scale, 3) and alpha.shape == (40 * scale, 50 * scale)
    assert 0 <= out.min() and out.max() <= 1
    # interpolation invents nothing: downscaling back gives the input closely
    import cv2

    back = cv2.resize(out, (50, 40), interpolation=cv2.INTER_AREA)
    assert np.abs(back - rgb).mean() < 0.03


def test_unknown_variants_name_the_choices():
    with pytest.raises(UnknownVariantError, match="available: .*telea"):
        inpaint.get("nope")
    with pytest.raises(UnknownVariantError, match="available: .*lanczos"):
        upscale.create("nope")


def test_colour_continuity_removes_a_colour_offset_in_the_fill():
    rgb = photo("coffee")[100:228, 100:228]
    mask = _square_mask()
    good, _ = inpaint.fill(rgb, mask, "telea")
    shifted = good.copy()
    shifted[mask] = np.clip(shifted[mask] + np.array([0.12, -0.08, 0.05], np.float32), 0, 1)
    before = seam_error(rgb, shifted, mask)
    fixed = colour_continuity(rgb, shifted, mask)
    assert seam_error(rgb, fixed, mask) < 0.5 * before
    assert np.array_equal(fixed[~mask], shifted[~mask])
    result, report = postprocess(rgb, shifted, mask.astype(np.float32), mask)
    assert report["seam_error"] < report["seam_error_before"]


def test_blend_follows_the_soft_mask():
    rgb = np.zeros((8, 8, 3), np.float32)
    fill = np.ones((8, 8, 3), np.float32)
    soft = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    out, _ = postprocess(rgb, fill, soft, np.zeros((8, 8), bool))
    assert np.allclose(out[..., 0], soft)


def test_selection_rules_and_overrides():
    plan = Plan()
    smooth = {"coverage": 0.01, "stroke_width": 3.0, "regions": 1}
    d = choose_inpaint(plan, smooth, texture=0.01)
    assert (d.variant, d.rule) == ("telea", "thin-strokes-smooth") and d.inputs["stroke_width"] == 3.0
    assert choose_inpaint(plan, smooth, texture=0.2).variant == "patchmatch"
    assert choose_inpaint(plan, {**smooth, "coverage": 0.2}, texture=0.01).rule == "large-region"
    assert choose_inpaint(plan, {**smooth, "coverage": 0.0}, texture=0.0).variant == "none"
    named = choose_inpaint(Plan(inpaint="ns"), smooth, texture=0.2)
    assert (named.variant, named.rule) == ("ns", "user")
    forensic = choose_upscale(Plan(no_hallucination=True), photo("rocket")[:32, :32])
    assert (forensic.variant, forensic.rule) == ("lanczos", "forensic")
    with pytest.raises(PlanError, match="no-hallucination"):
        choose_upscale(Plan(no_hallucination=True, upscale="realesrgan-x4plus"), photo("rocket")[:32, :32])


def test_ring_texture_separates_smooth_from_textured():
    mask = _square_mask(64, 64, (28, 36, 10, 54))
    flat = np.full((64, 64, 3), 0.5, np.float32)
    noisy = np.clip(flat + np.random.default_rng(0).normal(0, 0.1, flat.shape).astype(np.float32), 0, 1)
    assert ring_texture(flat, mask) < 0.005 < 0.05 < ring_texture(noisy, mask)


def test_plan_fingerprint_changes_with_settings_not_device():
    assert Plan(seed=1).fingerprint() != Plan(seed=2).fingerprint()
    assert Plan(device="cpu").fingerprint() == Plan(device="cuda:0").fingerprint()
    with pytest.raises(ValueError, match="unknown op"):
        Plan(ops=["sharpen"])


def test_postprocess_on_work_boxes_matches_the_whole_image():
    """Postprocess works per group of regions, on boxes padded by the filters'
    reach: the result matches continuity + blend over the whole image, and
    pixels far from every region are the original's, untouched."""
    from worker import postprocess as pp

    rng = np.random.default_rng(3)
    original = rng.random((300, 420, 3), dtype=np.float32) * 0.2 + 0.4
    filled = original.copy()
    region = np.zeros((300, 420), bool)
    region[40:52, 30:150] = True      # two captions far apart: two boxes
    region[250:262, 300:400] = True
    filled[region] = original[region] + 0.15  # a fill brighter than its surroundings
    soft = region.astype(np.float32)
    result, report = pp.postprocess(original, filled, soft, region)
    whole = pp.blend(original, pp.colour_continuity(original, filled, region), soft)
    assert len(pp.work_boxes(region)) == 2
    assert np.abs(result - whole).max() < 1.0 / 255
    far = np.ones_like(region)
    for y0, y1, x0, x1 in pp.work_boxes(region):
        far[y0:y1, x0:x1] = False
    assert far.any() and np.array_equal(result[far], original[far])
    assert report["seam_error"] < report["seam_error_before"]
