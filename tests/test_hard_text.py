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


def _lot_12():
    """"Lot" that DBNet's line holds, "1" at the far end of the search past
    the line's end (EXTEND line heights), "2" beyond it. Returns (rgb, region,
    box, end of the line, its height, glyph masks of "1" and "2")."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    from worker.mask import EXTEND, line_crop

    h, w = 120, 420
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(3)
    ground = np.stack([0.35 + 0.2 * xx / w, 0.45 + 0.1 * yy / h, 0.3 + 0.0 * xx], axis=2)
    ground = np.clip(ground + rng.normal(0, 0.01, ground.shape), 0, 1).astype(np.float32)
    font = degrade._font("DejaVuSerif-Bold.ttf", 40)
    layer = PILImage.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    draw.text((20, 40), "Lot", font=font, fill=255)
    left, top, right, bottom = draw.textbbox((20, 40), "Lot", font=font)
    region = np.zeros((h, w), bool)
    region[top - 2:bottom + 3, left - 2:right + 3] = True
    box = [left - 2, top - 2, right - left + 5, bottom - top + 5]
    height = line_crop(region, box)[1]
    end = right + 2
    glyph = {}
    for char, start in (("1", end + 0.75 * EXTEND * height), ("2", end + 1.25 * EXTEND * height)):
        one = PILImage.new("L", (w, h), 0)
        ImageDraw.Draw(one).text((int(start), 40), char, font=font, fill=255)
        glyph[char] = np.asarray(one) > 128
        layer.paste(255, mask=one)
    cover = np.asarray(layer, np.float32)[..., None] / 255.0
    rgb = (cover * np.float32([0.95, 0.9, 0.85]) + (1 - cover) * ground).astype(np.float32)
    return rgb, region, box, end, height, glyph


def _found(sl, prob, glyph):
    strokes = np.zeros(glyph.shape, bool)
    strokes[sl] = prob >= 0.35
    return (strokes & glyph).sum() / glyph.sum()


def test_a_caption_cut_short_is_followed_glyph_by_glyph_past_one_search(detector):
    """DBNet's line holds "Lot" only; "1" lies within the search past the
    line's end, "2" beyond it. The line is searched again from the "1", reads
    as more text ("Lot1" or so), and the "2" is found too; within the first
    search the first segmentation stands."""
    from worker.mask import EXTEND, _segment_continued, segment_line

    rgb, region, box, end, height, glyph = _lot_12()
    assert glyph["2"].any() and (np.nonzero(glyph["2"])[1].min() - end) > (EXTEND + 0.15) * height
    first = segment_line(rgb, region, region, None, box=box)
    sl, prob = first[:2]
    assert _found(sl, prob, glyph["1"]) > 0.8 and _found(sl, prob, glyph["2"]) < 0.2   # one search: "2" out of reach
    grown, _, (sl, prob, *_) = _segment_continued(rgb, region, box, region, None, detector.reader)
    assert _found(sl, prob, glyph["1"]) > 0.8 and _found(sl, prob, glyph["2"]) > 0.8
    assert grown[glyph["1"]].any() and not grown[:, :box[0] - 10].any()   # it took in the "1", nothing before
    before, after = np.zeros(region.shape, np.float32), np.zeros(region.shape, np.float32)
    before[first[0]], after[sl] = first[1], prob
    assert np.array_equal(after[region], before[region]) and after[region].max() > 0.5   # the first line's own pixels


def test_a_longer_line_that_reads_as_no_more_text_is_not_continued():
    """What lies past a complete caption (photo of its colour) reads as no
    more characters: the line stays as it was."""
    from worker.detect.recognize import Reading
    from worker.mask import _segment_continued, segment_line

    class SameText:
        def read_lines(self, rgb, regions, boxes=None):
            return [Reading("Lot", 0.99) for _ in regions]

    rgb, region, box, end, height, glyph = _lot_12()
    kept, kept_box, (sl, prob, *_) = _segment_continued(rgb, region, box, region, None, SameText())
    first = segment_line(rgb, region, region, None, box=box)
    assert kept is region and kept_box == box and sl == first[0] and np.array_equal(prob, first[1])
    assert _found(sl, prob, glyph["2"]) < 0.2
    # with no reader to ask (TextDetector(verify=False)), nothing tells the caption from photo: not continued
    unread, unread_box, (sl, prob, *_) = _segment_continued(rgb, region, box, region, None, None)
    assert unread is region and unread_box == box and np.array_equal(prob, first[1])


def _ring_over_gradient(inside_white: bool):
    """A 70x120 photo (a smooth gradient) under a white mark whose strokes
    are masked, with an 11x11 hole in the mask. In the hole, if
    ``inside_white``, a 4x4 clump of the white the segmentation left out
    (stroke probability 0.2); else the hole shows the photo (a counter).
    Returns (rgb, strokes, stroke probability)."""
    h, w = 70, 120
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([0.75 + 0.1 * xx / w, 0.35 + 0.1 * yy / h, np.full((h, w), 0.28, np.float32)], -1)
    strokes = np.zeros((h, w), bool)
    strokes[20:47, 40:67] = True
    strokes[28:39, 48:59] = False
    rgb[strokes] = 0.95
    evidence = strokes * np.float32(0.9)
    if inside_white:
        rgb[30:34, 50:54] = 0.95
        evidence[30:34, 50:54] = 0.2
    return rgb.astype(np.float32), strokes, evidence


def test_overlay_left_in_a_hole_of_the_mask_joins_it_and_a_counter_does_not():
    """Where a white caption crosses a green one, a clump of white can stay out
    of the mask, enclosed by it, and the inpainter smears it over the whole
    hole (retina-text-overlap: 22.3 dB inside the text, 29.8 once it joins).
    The hole's own photo (a glyph's counter) stays out of the mask."""
    from worker.mask import _fill_islands

    rgb, strokes, evidence = _ring_over_gradient(inside_white=True)
    added = _fill_islands(rgb, strokes, evidence, 1, [30]) & ~strokes
    assert added[30:34, 50:54].all() and added.sum() == 16
    # no overlay evidence in it: left alone
    assert np.array_equal(_fill_islands(rgb, strokes, evidence * strokes, 1, [30]), strokes)
    rgb, strokes, evidence = _ring_over_gradient(inside_white=False)
    assert np.array_equal(_fill_islands(rgb, strokes, evidence, 1, [30]), strokes)
    # a hole larger than ISLAND_AREA line heights squared is the photo's own (a cup's inside), not a left-over
    rgb, strokes, evidence = _ring_over_gradient(inside_white=True)
    assert np.array_equal(_fill_islands(rgb, strokes, evidence, 1, [8]), strokes)
    # a clump that does not look like the mark around it (a vessel in a counter) stays out
    rgb[30:34, 50:54] = (0.3, 0.05, 0.05)
    assert np.array_equal(_fill_islands(rgb, strokes, evidence, 1, [30]), strokes)


def test_crossing_captions_leave_no_smear_where_they_cross(detector):
    """retina-text-overlap of retouch eval: a white "© Agency" crossed by a
    green "ARCHIVE". Filled with Telea over the detected mask, the text's
    pixels come within 4 dB of Telea over the true mask (10 dB short before
    the hole fill: a white clump left between the lines was smeared)."""
    import cv2

    from worker.quality import metrics

    wide = dataset.load_photos(dataset.BUNDLED_WIDE, max_side=384)
    case = next(c for c in dataset.build_cases(wide, ["remove-text"], 0, ["text-overlap"])
                if c.id == "retina-text-overlap")
    found = stages.detect(case.degraded, detector, MaskParams())
    u8 = np.clip(np.rint(case.degraded * 255), 0, 255).astype(np.uint8)

    def telea(mask):
        return cv2.inpaint(u8, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA).astype(np.float32) / 255

    truth = case.mask.astype(bool)
    ours = metrics.psnr(case.clean, telea(found.binary), truth)
    best = metrics.psnr(case.clean, telea(cv2.dilate(truth.astype(np.uint8), np.ones((3, 3), np.uint8))), truth)
    assert ours >= best - 4.0, f"{ours:.2f} dB against {best:.2f} dB over the true mask"
