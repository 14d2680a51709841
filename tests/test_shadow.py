"""Drop shadows: the glyphs' shape moved by a few pixels, found even where
the shadow's colour is close to the photo's (a black shadow on a night sky),
and nothing added where a line has no shadow."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from worker import degrade, shadow, stages
from worker.mask import MaskParams

SPEC = degrade.TextSpec("Photo 1987", xy=(70, 20), size=32, font="DejaVuSansMono.ttf", colour=(220, 200, 205),
                        shadow=(4, 4), shadow_colour=(0, 0, 0), shadow_opacity=0.65)


def _rocket() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.rocket()[:200, 40:420], np.float32) / 255.0


def _shadow_pixels(clean: np.ndarray, spec: degrade.TextSpec) -> np.ndarray:
    """Where the shadow alone shows: its own mask minus the text's."""
    _, text = degrade.overlay_text(clean, [degrade.TextSpec(**{**spec.__dict__, "shadow": (0, 0)})])
    _, both = degrade.overlay_text(clean, [spec])
    return both & ~text


def test_moved_keeps_the_shape_and_leaves_zeros():
    a = np.zeros((6, 6), np.float32)
    a[1, 1] = 1
    assert shadow.moved(a, 2, 3)[4, 3] == 1 and shadow.moved(a, 2, 3).sum() == 1
    assert shadow.moved(a, -1, -1)[0, 0] == 1 and shadow.moved(a, -2, 0).sum() == 0


@pytest.mark.parametrize("offset", [(4, 4), (3, 2)])
def test_dark_shadow_on_a_dark_sky_is_masked(offset, detector, monkeypatch):
    clean = _rocket()
    spec = degrade.TextSpec(**{**SPEC.__dict__, "shadow": offset})
    observed, truth = degrade.overlay_text(clean, [spec])
    shade = _shadow_pixels(clean, spec)
    found = stages.detect(observed, detector, MaskParams())
    recall = found.binary[shade].mean()
    assert recall >= 0.8, f"shadow recall {recall:.2f}"
    # issue 10's bound on what is filled beyond the text (colour evidence alone
    # stayed under 1% here; the learned strokes' edges add up to 0.6%)
    assert (found.binary & ~truth).mean() < 0.02
    shadows = [line["shadow"] for line in found.stats["lines"] if line["shadow"]]
    assert shadows and max(abs(a - b) for a, b in zip(shadows[0], offset)) <= 1   # recorded in the sidecar
    # the learned strokes find shadows too; the shadow search alone, on colour
    # evidence, still does, and without it most of the shadow is left: the check can fail
    monkeypatch.setattr(detector, "segmenter", None)
    by_colour = stages.detect(observed, detector, MaskParams()).binary[shade].mean()
    assert by_colour >= 0.8, f"shadow recall from colour evidence {by_colour:.2f}"
    monkeypatch.setattr(shadow, "find_shadow", lambda *a, **k: None)
    assert stages.detect(observed, detector, MaskParams()).binary[shade].mean() < by_colour - 0.3


def test_no_shadow_added_to_a_line_without_one(detector, monkeypatch):
    clean = _rocket()
    spec = degrade.TextSpec(**{**SPEC.__dict__, "shadow": (0, 0)})
    observed, truth = degrade.overlay_text(clean, [spec])
    found = stages.detect(observed, detector, MaskParams())
    assert found.binary[truth].mean() > 0.9
    monkeypatch.setattr(shadow, "find_shadow", lambda *a, **k: None)
    np.testing.assert_array_equal(found.binary, stages.detect(observed, detector, MaskParams()).binary)
