"""min_area_rect: the rectangle of all a region's pixels, from its outlines."""

import cv2
import numpy as np

from worker.geometry import min_area_rect


def _of_all_pixels(region, origin=(0, 0)):
    ys, xs = np.nonzero(region)
    return cv2.minAreaRect(np.stack([xs + origin[0], ys + origin[1]], 1).astype(np.float32))


def test_the_rectangle_is_that_of_every_pixel():
    """Regions of several parts, some with holes, thin and rotated: the same
    rectangle as cv2 gives on all their pixels, shifted by the crop's origin."""
    rng = np.random.default_rng(3)
    for _ in range(100):
        region = np.zeros((120, 260), np.uint8)
        for _ in range(int(rng.integers(1, 5))):
            centre = (int(rng.integers(10, 250)), int(rng.integers(10, 110)))
            axes = (int(rng.integers(1, 50)), int(rng.integers(1, 15)))
            cv2.ellipse(region, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, int(rng.choice([-1, 1, 3])))
        origin = (int(rng.integers(0, 500)), int(rng.integers(0, 500)))
        assert min_area_rect(region.astype(bool), origin) == _of_all_pixels(region, origin)


def test_a_line_of_text_and_an_empty_region():
    region = np.zeros((80, 400), np.uint8)
    cv2.putText(region, "Photo 1987", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.6, 1, 3)
    assert min_area_rect(region) == _of_all_pixels(region)
    assert min_area_rect(np.zeros((5, 5), bool)) == cv2.minAreaRect(np.zeros((0, 2), np.float32))
