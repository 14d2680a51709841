"""The captions users bring: bold, outlined, shadowed, overlapping,
semi-transparent and rotated text, scored against the true overlay mask of
retouch eval's reproducible cases (5 photos each)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestration.evaluate import dataset
from worker import degrade, stages
from worker.mask import MaskParams

# Regression guards, a little under what the mask reaches today on these 5
# photos with the default 1-px margin (pooled recall of the fill region on the
# overlay's pixels: bold 0.97, outline 0.99, shadow 0.98, overlap 0.98, alpha
# 0.79, rotated 0.92; filled beyond the text 1.5-3.0% of the image). Colour
# evidence alone, before the learned stroke segmenter (worker.strokes), reached
# bold 0.82, outline 0.96, shadow 0.94, overlap 0.88, alpha 0.78, rotated 0.88
# (2.0-3.4% beyond). Issue 10's targets (0.95 and 2%) are not reached on every
# kind yet; text-photo-colour is reported by retouch eval only.
RECALL = {"text-bold": 0.94, "text-outline": 0.97, "text-shadow": 0.95, "text-overlap": 0.95,
          "text-alpha": 0.76, "text-rotated": 0.89}
FALSE_AREA = 0.045


@pytest.fixture(scope="module")
def photos():
    return dataset.load_photos(dataset.BUNDLED, max_side=320)


def test_hard_kinds_are_reproducible_with_their_ground_truth(photos):
    kinds = list(dataset.HARD_TEXT_KINDS)
    first = dataset.build_cases(photos[:2], ["remove-text"], 5, kinds)
    again = dataset.build_cases(photos[:2], ["remove-text"], 5, kinds)
    assert [c.id for c in first] == [c.id for c in again] and len(first) == 2 * len(kinds)
    for a, b in zip(first, again):
        assert np.array_equal(a.degraded, b.degraded) and np.array_equal(a.mask, b.mask)
        changed = np.abs(a.degraded - a.clean).max(axis=2) > 0.02  # 5 levels: the mask is cover > 0.02
        assert a.mask.any() and not (changed & ~a.mask).any(), a.id  # the mask holds every changed pixel
    by_kind = {c.kind: c for c in first}
    outline = by_kind["text-outline"].params["texts"][0]
    assert outline["outline"] >= 1 and outline["outline_colour"] != outline["colour"]
    assert by_kind["text-shadow"].params["texts"][0]["shadow"] != [0, 0]
    overlap = by_kind["text-overlap"].params["texts"]
    assert len(overlap) == 2 and overlap[0]["colour"] != overlap[1]["colour"]


def test_photo_coloured_captions_take_a_photo_colour_a_reader_can_see():
    """text-photo-colour: each caption's colour is a pixel's of its photo, and
    contrasts with the ground under the caption. Before, a random pixel's
    colour was taken as it was: dark grey over the Hubble field's black, grey
    over grey grass, captions nobody could read."""
    wide = dataset.load_photos(dataset.BUNDLED_WIDE, max_side=256)
    for case in dataset.build_cases(wide, ["remove-text"], 0, ["text-photo-colour"]):
        for text in case.params["texts"]:
            colour = np.asarray(text["colour"], np.float32) / 255
            assert np.abs(case.clean - colour).max(axis=2).min() <= 0.5 / 255, case.id  # the photo's own
            spec = degrade.TextSpec(**{**text, "xy": tuple(text["xy"])})
            ground = degrade.ground_luma(case.clean, spec)
            assert abs(float(degrade.luma(colour)) - ground) >= dataset.PHOTO_COLOUR_CONTRAST, case.id
        changed = np.abs(case.degraded - case.clean).max(axis=2) > 10 / 255
        assert changed[case.mask].mean() > 0.5, case.id   # most of the caption visibly changes the photo


@pytest.mark.parametrize("kind", sorted(RECALL))
def test_mask_holds_on_hard_text(kind, photos, detector):
    cases = dataset.build_cases(photos, ["remove-text"], 0, [kind])
    hits = total = false = 0
    for case in cases:
        found = stages.detect(case.degraded, detector, MaskParams())
        hits += int(found.binary[case.mask].sum())
        total += int(case.mask.sum())
        false += int((found.binary & ~case.mask).sum())
    assert hits / total >= RECALL[kind], f"{kind}: recall {hits / total:.3f}"
    pixels = sum(c.mask.size for c in cases)
    assert false / pixels < FALSE_AREA, f"{kind}: {false / pixels:.1%} of the images filled beyond the text"


def test_mask_on_degenerate_images_and_maps():
    """Tiny, flat, grey and noisy images under confidence maps that cover
    nothing, a speck, a block or everything: always a mask of the image's size
    with finite weights (a region filling its whole crop once made the stroke
    width "infinite")."""
    from worker.mask import build_mask, mask_stats

    rng = np.random.default_rng(1)
    for i in range(60):
        h, w = int(rng.integers(1, 90)), int(rng.integers(1, 90))
        rgb = [rng.random((h, w, 3), dtype=np.float32), np.zeros((h, w, 3), np.float32),
               np.ones((h, w, 3), np.float32),
               np.repeat(rng.random((h, w, 1), dtype=np.float32), 3, axis=2)][i % 4]
        confidence = [np.zeros((h, w), np.float32), rng.random((h, w), dtype=np.float32),
                      np.ones((h, w), np.float32)][i % 3].copy()
        if i % 5 == 0:
            confidence[: max(1, h // 2), : max(1, w // 3)] = 0.9
        for params in (MaskParams(), MaskParams(type="binary", dilate=0)):
            result = build_mask(rgb, confidence, params)
            mask_stats(confidence, result)
            assert result.soft.shape == (h, w) and result.overlay.shape == (h, w, 4)
            assert np.isfinite(result.soft).all() and np.isfinite(result.overlay).all()
