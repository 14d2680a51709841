"""Reversing a semi-transparent blend gives the photo back; opaque or
ill-fitting pixels are left to the inpainter."""

from __future__ import annotations

import numpy as np

from tests.conftest import photo
from worker.unblend import ALPHA_MAX, unblend


def _blend(clean: np.ndarray, colour, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    overlay = np.zeros(clean.shape[:2] + (4,), np.float32)
    overlay[..., :3] = colour
    overlay[..., 3] = alpha
    observed = alpha[..., None] * overlay[..., :3] + (1 - alpha[..., None]) * clean
    return np.round(observed * 255) / 255, overlay  # as an 8-bit file would hold it


def test_semi_transparent_overlay_is_lifted_to_the_photo():
    clean = photo("coffee")
    alpha = np.zeros(clean.shape[:2], np.float32)
    alpha[40:120, 30:220] = 0.5
    observed, overlay = _blend(clean, (1.0, 1.0, 1.0), alpha)
    region = alpha > 0
    result = unblend(observed.astype(np.float32), overlay, region)
    assert result.lifted[region].mean() > 0.95 and not result.lifted[~region].any()
    # back to the photo within the amplified 8-bit rounding (x2 at alpha 0.5)
    assert np.abs(result.rgb[result.lifted] - clean[result.lifted]).max() <= 2.0 / 255 + 1e-6
    assert np.array_equal(result.rgb[~region], observed[~region].astype(np.float32))
    assert np.array_equal(result.remaining, region & ~result.lifted)


def test_opaque_and_wrong_estimates_are_left_to_inpaint():
    clean = photo("rocket")
    alpha = np.zeros(clean.shape[:2], np.float32)
    alpha[10:60, 10:100] = 0.97                      # opaque
    alpha[100:150, 10:100] = 0.6                     # semi-transparent, but we claim another colour
    observed, overlay = _blend(clean, (1.0, 0.0, 0.0), alpha)
    overlay[100:150, 10:100, :3] = (0.0, 0.0, 1.0)   # a wrong estimate: the results leave [0, 1]
    region = alpha > 0
    result = unblend(observed.astype(np.float32), overlay, region)
    assert not result.lifted[10:60, 10:100].any() and ALPHA_MAX < 0.97
    assert result.remaining[10:60, 10:100].all()
    assert result.remaining[100:150, 10:100].mean() > 0.5


def test_a_per_pixel_limit_lifts_a_known_overlay_that_the_global_one_leaves():
    """A stamp at 92% opacity: above ALPHA_MAX, so an estimated overlay is
    inpainted; placed from a template its alpha is known, and the watermark
    stage raises the limit there (``unblend_limit``) to ALPHA_MAX_EXACT. The
    photo comes back within the 8-bit rounding amplified 1 / (1 - 0.92) times."""
    from worker.unblend import ALPHA_MAX_EXACT

    clean = photo("astronaut")
    alpha = np.zeros(clean.shape[:2], np.float32)
    alpha[30:90, 20:200] = 0.92
    alpha[150:210, 20:200] = 0.92
    observed, overlay = _blend(clean, (0.8, 0.1, 0.1), alpha)
    region = alpha > 0
    assert not unblend(observed.astype(np.float32), overlay, region).lifted.any()
    limit = np.full(clean.shape[:2], ALPHA_MAX, np.float32)
    limit[:120] = ALPHA_MAX_EXACT                   # only the upper stamp was placed from a template
    result = unblend(observed.astype(np.float32), overlay, region, alpha_max=limit)
    assert result.lifted[30:90, 20:200].all() and not result.lifted[150:210].any()
    error = np.abs(result.rgb[result.lifted] - clean[result.lifted]).max()
    assert error <= 0.5 / 255 / (1 - 0.92) + 1e-4, error * 255
    assert result.remaining[150:210, 20:200].all() and not result.remaining[30:90, 20:200].any()


def test_a_known_overlay_a_little_off_over_black_is_clipped_not_left():
    """A white mark at 45% over a black collar, its alpha 3% high (a learned
    mark's error): the result falls just below zero. For an estimated colour
    that says the estimate is wrong; for a template's known colour it is the
    alpha's error, and the photo is the clipped result (TOLERANCE_EXACT)."""
    from worker.unblend import TOLERANCE_EXACT

    clean = photo("coffee")
    clean[20:80, 20:200] = 0.0                       # black
    alpha = np.zeros(clean.shape[:2], np.float32)
    alpha[30:70, 30:190] = 0.45
    observed, overlay = _blend(clean, (1.0, 1.0, 1.0), alpha)
    overlay[..., 3] *= 1.03
    region = alpha > 0
    assert unblend(observed.astype(np.float32), overlay, region).remaining[region].mean() > 0.9
    result = unblend(observed.astype(np.float32), overlay, region, tolerance=TOLERANCE_EXACT)
    assert result.lifted[region].all()
    assert np.abs(result.rgb[region] - clean[region]).max() <= 2.0 / 255
