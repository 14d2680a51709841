"""Seam post-processing: low-frequency colour continuity and soft blending.

1. Colour continuity: just inside the fill region the fill's local mean colour
   should match the real pixels just outside. The mismatch measured along the
   boundary is spread over the fill (normalised convolution) and subtracted.
2. Blend: ``soft * fill + (1 - soft) * original``, so the fill fades into the
   real pixels where the detector was less sure.
3. Seam error: the remaining mean absolute low-frequency colour step across the
   boundary, in [0, 1] units (multiply by 255 for 8-bit levels).
"""

from __future__ import annotations

import cv2
import numpy as np

BAND = 3          # px on each side of the boundary
LOW_SIGMA = 6.0   # low-frequency scale, px
_EPS = 1e-4


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _bands(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r8 = region.astype(np.uint8)
    inner = region & ~cv2.erode(r8, _disk(BAND)).astype(bool)
    outer = cv2.dilate(r8, _disk(BAND)).astype(bool) & ~region
    return inner, outer


def _local_mean(img: np.ndarray, weight: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised convolution: the weighted local mean and the local weight."""
    w = weight.astype(np.float32)
    num = cv2.GaussianBlur(img * w[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(w, (0, 0), sigma)
    return num / np.maximum(den, _EPS)[..., None], den


def boundary_step(original: np.ndarray, filled: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Low-frequency colour step (outside minus inside) at each pixel of the inner
    band, float32 HxWx3; zero elsewhere."""
    inner, outer = _bands(region)
    mu_out, den_out = _local_mean(original, outer, LOW_SIGMA)
    mu_in, den_in = _local_mean(filled, inner, LOW_SIGMA)
    valid = inner & (den_out > _EPS) & (den_in > _EPS)
    return np.where(valid[..., None], mu_out - mu_in, 0.0).astype(np.float32)


def seam_error(original: np.ndarray, result: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute low-frequency colour step across the region's boundary, [0, 1]."""
    if not region.any():
        return 0.0
    inner, _ = _bands(region)
    step = boundary_step(original, result, region)
    return float(np.abs(step[inner]).mean()) if inner.any() else 0.0


def colour_continuity(original: np.ndarray, filled: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Shift the fill's low frequencies so they continue the surrounding colour.

    The boundary step is propagated inwards with a wide normalised convolution;
    pixels outside ``region`` are untouched. Returns a new float32 array."""
    if not region.any():
        return filled.copy()
    step = boundary_step(original, filled, region)
    inner, _ = _bands(region)
    reach = max(LOW_SIGMA, 0.5 * float(cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3).max()))
    correction, den = _local_mean(step, inner & (np.abs(step).sum(axis=2) > 0), reach)
    correction = np.where((region & (den > _EPS))[..., None], correction, 0.0)
    return np.clip(filled + correction, 0.0, 1.0).astype(np.float32)


def blend(original: np.ndarray, filled: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Confidence-weighted blend, float32 HxWx3."""
    w = soft[..., None].astype(np.float32)
    return (w * filled + (1.0 - w) * original).astype(np.float32)


def postprocess(original: np.ndarray, filled: np.ndarray, soft: np.ndarray, region: np.ndarray,
                continuity: bool = True) -> tuple[np.ndarray, dict]:
    """Colour continuity, then blending. ``region`` is the bool fill region.

    Returns (result float32 HxWx3, report with seam errors before and after)."""
    before = seam_error(original, filled, region)
    fixed = colour_continuity(original, filled, region) if continuity else filled
    result = blend(original, fixed, soft)
    after = seam_error(original, result, region)
    return result, {"seam_error_before": round(before, 6), "seam_error": round(after, 6),
                    "continuity": continuity}
