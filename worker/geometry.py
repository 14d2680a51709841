"""Shape measures of pixel regions, shared by the mask, the line reader and the
logo finder."""

from __future__ import annotations

import cv2
import numpy as np


def min_area_rect(region: np.ndarray, origin: tuple[int, int] = (0, 0)) -> tuple:
    """``cv2.minAreaRect`` of the pixels (x, y) of ``region`` (bool or 0/1
    HxW), shifted by ``origin`` (x, y) when the region is a crop. Computed on
    the region's outer outlines: their convex hull, and so the rectangle, is
    the one of all its pixels, from far fewer points (a 1000x300 line of
    text: 3.5 -> 0.15 ms). An empty region gives cv2's empty rectangle."""
    outlines, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not outlines:
        return cv2.minAreaRect(np.zeros((0, 2), np.float32))
    points = np.concatenate(outlines).reshape(-1, 2).astype(np.float32)
    return cv2.minAreaRect(points + np.asarray(origin, np.float32))
