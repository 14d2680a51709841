"""Synthetic degradations: reproducible for a seed, with masks that match what changed."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import photo
from worker import degrade


@pytest.fixture(scope="module")
def clean():
    return photo("astronaut")[:160, :192]


def test_watermark_is_tiled_semi_transparent_and_reproducible(clean):
    spec = degrade.random_watermark_spec(np.random.default_rng(7), 192, 160)
    assert spec == degrade.random_watermark_spec(np.random.default_rng(7), 192, 160)
    out, mask = degrade.tiled_watermark(clean, spec)
    again, _ = degrade.tiled_watermark(clean, spec)
    assert np.array_equal(out, again) and out.dtype == np.float32
    # tiles spread over the image: every third of the width has watermark pixels
    assert all(mask[:, i * 64:(i + 1) * 64].any() for i in range(3))
    # semi-transparent: nowhere fully replaced by the watermark colour
    changed = np.abs(out - clean).max(axis=2)
    assert changed[~mask].max() < 0.03 and changed[mask].max() > 0.05
    # a pixel moves at most `opacity` of the way to the watermark colour
    assert spec.opacity < 1 and changed.max() <= spec.opacity + 1e-5


def test_logo_sits_in_a_corner(clean):
    spec = degrade.random_logo_spec(np.random.default_rng(3), 192, 160)
    out, mask = degrade.overlay_logo(clean, spec)
    ys, xs = np.nonzero(mask)
    x0, y0 = spec.xy
    assert xs.min() >= x0 and xs.max() < x0 + spec.size and ys.min() >= y0 and ys.max() < y0 + spec.size
    assert 0.002 < mask.mean() < 0.2
    assert np.abs(out[~mask] - clean[~mask]).max() < 0.03


def test_text_overlay_mask_matches_changes(clean):
    specs = degrade.random_text_specs(np.random.default_rng(1), 192, 160, lines=2, max_angle=15, min_opacity=0.6)
    out, mask = degrade.overlay_text(clean, specs)
    assert mask.any() and np.abs(out - clean).max(axis=2)[~mask].max() < 0.03


def test_jpeg_levels_and_downscale(clean):
    errors = [float(np.abs(degrade.jpeg(clean, q) - clean).mean()) for q in (90, 50, 10)]
    assert errors[0] < errors[1] < errors[2]
    assert np.array_equal(degrade.jpeg(clean, 50), degrade.jpeg(clean, 50))
    with pytest.raises(ValueError, match="quality"):
        degrade.jpeg(clean, 0)
    low, truth = degrade.downscale(clean[:, :190], 4)
    assert low.shape == (40, 47, 3) and truth.shape == (160, 188, 3)
    # area averaging: the mean colour is preserved
    assert np.allclose(low.mean(axis=(0, 1)), truth.mean(axis=(0, 1)), atol=1e-3)
    with pytest.raises(ValueError, match="factor"):
        degrade.downscale(clean, 1)
