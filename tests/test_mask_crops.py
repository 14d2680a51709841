"""The mask's whole-image steps run on the bounding box of what they touch
(most of a photo has no text): the answers must be the ones the whole image
gives, including strokes and kernels that touch the image's edge."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from worker.mask import MaskParams, _drop_specks, mask_from_strokes, text_regions


def _scene(seed: int, shape=(120, 160)) -> np.ndarray:
    """Random strokes and specks, some of them on the image's edges."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.uint8)
    for _ in range(6):
        x0, y0 = int(rng.integers(-10, shape[1])), int(rng.integers(-10, shape[0]))
        cv2.line(img, (x0, y0), (x0 + int(rng.integers(5, 60)), y0 + int(rng.integers(-8, 8))), 1,
                 int(rng.integers(1, 4)))
    for _ in range(8):  # specks
        img[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = 1
    return img.astype(bool)


@pytest.mark.parametrize("seed", range(6))
def test_soft_mask_and_specks_match_the_whole_image_computation(seed):
    strokes = _scene(seed)
    evidence = np.random.default_rng(seed).random(strokes.shape).astype(np.float32) * 0.8
    params = MaskParams(sigma=4.0, dilate=1)
    got = mask_from_strokes(strokes, params, evidence=evidence)
    core = cv2.dilate(strokes.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))).astype(bool)
    feather = np.clip(cv2.GaussianBlur(strokes.astype(np.float32), (0, 0), 4.0) / 0.5, 0, 1)
    feather = np.maximum(feather, evidence)
    want = np.where(core, np.maximum(strokes.astype(np.float32), feather), 0.0)
    np.testing.assert_array_equal(got.core, core)
    np.testing.assert_array_equal(got.soft, want.astype(np.float32))

    count, labels, stats, _ = cv2.connectedComponentsWithStats(strokes.astype(np.uint8), connectivity=8)
    small = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] < 6]
    np.testing.assert_array_equal(_drop_specks(strokes, 6), strokes & ~np.isin(labels, small))
    assert _drop_specks(np.zeros((8, 8), bool), 6).sum() == 0


@pytest.mark.parametrize("seed", range(4))
def test_text_regions_match_the_whole_image_labelling(seed):
    confidence = _scene(seed).astype(np.float32) * 0.9
    params = MaskParams()
    union, boxes, regions = text_regions(confidence, params)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((confidence >= params.threshold).astype(np.uint8),
                                                               connectivity=8)
    kept = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= params.min_region_area]
    assert len(regions) == len(kept) > 0
    for region, i in zip(regions, kept):
        assert (region & (labels == i)).sum() == (labels == i).sum()   # each region holds its own kernel
    np.testing.assert_array_equal(union, np.logical_or.reduce(regions))
    empty = text_regions(np.zeros((10, 10), np.float32), params)
    assert not empty[0].any() and empty[1] == [] and empty[2] == []
