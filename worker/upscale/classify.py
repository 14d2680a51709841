"""Content classes for choosing an upscaler: ``photo`` or ``illustration``.

Illustrations, line art, logos and drawings are made of flat areas in a few
colours with sharp boundaries; photos (even of smooth subjects) carry noise,
gradients and texture nearly everywhere, in many shades. Measured on a copy at
most 512 px on its long side, 8-bit, after a 5x5 median (which removes most
JPEG ringing and sensor noise but keeps edges):

- ``flat``: share of pixels whose largest difference to their right/lower
  neighbours (any channel) is 0;
- ``top_colours``: share of pixels in the 12 most common colours at 4 bits per
  channel;
- ``edges``: share of the non-flat pixels that are strong edges (a step of at
  least 24/255): outlines between flat areas, not the soft gradients of a sky
  (a clear sky is flat and few-coloured too, but its steps are tiny);
- ``grey``: whether the image has no colour (then ``top_colours`` says nothing).

``illustration`` when ``flat >= FLAT_MIN``, ``top_colours >= TOP_COLOURS_MIN``
and ``edges >= EDGES_MIN`` (colour), or ``flat >= GREY_FLAT_MIN`` (grey:
silhouettes, line art, scans); otherwise ``photo``. Thresholds set on scikit-image's photos (all ``photo``,
also after JPEG quality 30) and its logo / horse silhouette plus generated
flat-colour cartoons (``illustration``, also after JPEG 30); see
tests/upscale/test_classify.py.
"""

from __future__ import annotations

import numpy as np

FLAT_MIN = 0.5
TOP_COLOURS_MIN = 0.75
EDGES_MIN = 0.05
GREY_FLAT_MIN = 0.8
STRONG_STEP = 24
_LONG_SIDE = 512


def _small_u8(rgb: np.ndarray) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    f = _LONG_SIDE / max(h, w)
    if f < 1:
        # Nearest keeps flat areas flat (area averaging would invent new shades).
        rgb = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_NEAREST)
    u8 = (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return cv2.medianBlur(np.ascontiguousarray(u8), 5)


def content_features(rgb: np.ndarray) -> dict:
    """``{"flat", "top_colours", "edges" (in [0, 1]), "grey" (bool)}`` of float32 HxWx3 RGB in [0, 1]."""
    small = _small_u8(np.asarray(rgb, np.float32)).astype(np.int16)
    h, w = small.shape[:2]
    if h < 3 or w < 3:
        return {"flat": 0.0, "top_colours": 0.0, "edges": 0.0, "grey": False}
    dx = np.abs(np.diff(small, axis=1))[:-1].max(axis=2)
    dy = np.abs(np.diff(small, axis=0))[:, :-1].max(axis=2)
    step = np.maximum(dx, dy)
    flat = float(np.mean(step == 0))
    edges = float(np.mean(step >= STRONG_STEP) / max(1e-6, 1.0 - flat))
    q = (small // 16).astype(np.int32)
    _, counts = np.unique((q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2], return_counts=True)
    top = float(np.sort(counts)[::-1][:12].sum() / (h * w))
    grey = bool(np.abs(small[..., 0] - small[..., 1]).max() <= 1 and np.abs(small[..., 1] - small[..., 2]).max() <= 1)
    return {"flat": round(flat, 4), "top_colours": round(top, 4), "edges": round(edges, 4), "grey": grey}


def classify_content(rgb: np.ndarray) -> tuple[str, dict]:
    """(``"photo"`` | ``"illustration"``, features) for float32 HxWx3 RGB in [0, 1]."""
    f = content_features(rgb)
    if f["grey"]:
        illustration = f["flat"] >= GREY_FLAT_MIN
    else:
        illustration = f["flat"] >= FLAT_MIN and f["top_colours"] >= TOP_COLOURS_MIN and f["edges"] >= EDGES_MIN
    return ("illustration" if illustration else "photo"), f
