"""OpenCV's classical inpainting: fast marching (Telea) and Navier-Stokes.

Both are deterministic and fast; they suit thin strokes and small areas. Each
channel is inpainted as float32 so 16-bit sources keep their precision.
"""

from __future__ import annotations

import cv2
import numpy as np

RADIUS = 5


def _plane(plane: np.ndarray, mask: np.ndarray, flag: int) -> np.ndarray:
    # OpenCV's float path assumes an 8-bit value range (its weights go wrong on
    # [0, 1] data), so work in float [0, 255]: fractional levels keep 16-bit detail.
    scaled = np.ascontiguousarray(plane, dtype=np.float32) * 255.0
    return cv2.inpaint(scaled, mask.astype(np.uint8), RADIUS, flag) / 255.0


def telea_plane(plane: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill one float32 HxW plane (used for alpha)."""
    return np.clip(_plane(plane, mask, cv2.INPAINT_TELEA), 0.0, 1.0)


def _variant(flag: int):
    def inpaint(rgb: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        planes = [_plane(rgb[:, :, c], mask, flag) for c in range(3)]
        return np.clip(np.stack(planes, axis=2), 0.0, 1.0)

    return inpaint


telea = _variant(cv2.INPAINT_TELEA)
navier_stokes = _variant(cv2.INPAINT_NS)
