"""The fill measurements the learned-inpainter rules read, against cases whose
answer is known by construction: text strokes, a large stamp, a mask over a
face, a mask across the flag's stripes, a mask on plain sky."""

from __future__ import annotations

import numpy as np
import skimage.data

from pathlib import Path

from tests.conftest import overlaid  # noqa: F401  (fixture)
from worker import stages
from worker.io import decode
from worker.mask import MaskParams
from worker.pipeline.plan import Plan
from worker.pipeline.select import FILL_RULES, choose_inpaint, choose_learned, fill_features

SD = [{"name": "sd-inpaint", "family": "diffusion"}]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _astronaut() -> np.ndarray:
    return (skimage.data.astronaut().astype(np.float32) / 255.0).copy()


def _box(shape, y0, y1, x0, x1):
    m = np.zeros(shape[:2], bool)
    m[y0:y1, x0:x1] = True
    return m


def test_text_strokes_stay_with_the_text_rules(overlaid, detector):  # noqa: F811
    """Captions (bold, rotated, overlapping, semi-transparent) are thin: no
    learned-model rule fires, on the true masks of the synthetic overlays and
    on the detected masks of the shipped samples."""
    for name, (_, degraded, truth) in overlaid.items():
        fill = fill_features(degraded, truth > 0.5)
        assert fill["fill_depth_px"] < 8, (name, fill)
        assert choose_learned(fill, SD) is None, (name, fill)
    for path in sorted(EXAMPLES.iterdir()):
        if path.suffix in (".jpg", ".png"):
            img = decode(path.read_bytes(), str(path))
            fill = fill_features(img.rgb, stages.detect(img.rgb, detector, MaskParams()).binary)
            assert fill["fill_px"] > 0 and choose_learned(fill, SD) is None, (path.name, fill)


def test_a_large_stamp_is_a_large_fill():
    rgb = _astronaut()
    fill = fill_features(rgb, _box(rgb.shape, 300, 400, 300, 420), faces=False)
    assert fill["largest_region_px"] == 100 * 120 and fill["fill_depth_px"] >= 49
    decision = choose_learned(fill, SD)
    assert decision.rule == "large-fill" and decision.variant == "sd-inpaint"
    assert "largest_region_px 12000 >= 4096" in decision.reason


def test_a_mask_over_the_face_is_structured():
    rgb = _astronaut()    # the face is about rows 70-163, columns 175-268 (detected there)
    fill = fill_features(rgb, _box(rgb.shape, 100, 130, 190, 250))
    assert fill["faces"] == 1 and fill["largest_region_px"] < 4096
    assert choose_learned(fill, SD).rule == "face-under-fill"
    sky = fill_features(rgb, _box(rgb.shape, 20, 50, 300, 330))     # the grey backdrop, away from the face
    assert sky["faces"] == 0 and sky["edges_crossing"] == 0
    assert choose_learned(sky, SD) is None


def test_edges_crossing_the_mask():
    rgb = _astronaut()    # the flag's stripes run across columns 0-120
    fill = fill_features(rgb, _box(rgb.shape, 120, 160, 20, 60), faces=False)
    assert fill["edges_crossing"] >= 3
    assert choose_learned(fill, SD).rule == "edges-cross-fill"


def test_rules_are_data_and_reasons_name_the_inputs():
    assert all(r.rule and r.conditions for r in FILL_RULES)
    rgb = _astronaut()
    fill = fill_features(rgb, _box(rgb.shape, 300, 400, 300, 420), faces=False)
    stats = {"coverage": 0.05, "stroke_width": 90.0, "regions": 1}
    d = choose_inpaint(Plan(), stats, 0.02, fill, SD)
    assert d.inputs["installed"] == ["sd-inpaint"] and d.inputs["fill_depth_px"] == fill["fill_depth_px"]
    # nothing installed: the rules never name a model
    assert choose_inpaint(Plan(), stats, 0.02, fill, []).variant == "patchmatch"
    # a named variant is the user's choice whatever the fill
    assert choose_inpaint(Plan(inpaint="telea"), stats, 0.02, fill, SD).rule == "user"
