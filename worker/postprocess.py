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

    The work is done per group of nearby regions, on its bounding box plus the
    reach of the filters (:func:`work_boxes`): a caption on a 1-MP photo
    touches a few percent of it, and the Gaussians over the whole image cost
    more than the inpainting did. Outside the boxes the result is ``original``
    where ``soft`` is 0.

    Returns (result float32 HxWx3, report with seam errors before and after)."""
    result = original.copy()  # where soft is 0 the blend is the original
    weights = np.zeros(2, np.float64)  # seam error sums (before, after), over inner-band pixels
    count = 0
    for y0, y1, x0, x1 in work_boxes(region | (soft > 0)):
        sub = (slice(y0, y1), slice(x0, x1))
        o, f, m, r = original[sub], filled[sub], soft[sub], region[sub]
        inner = _bands(r)[0].sum() if r.any() else 0
        fixed = colour_continuity(o, f, r) if continuity else f
        out = blend(o, fixed, m)
        result[sub] = out
        if inner:
            weights += (seam_error(o, f, r) * inner, seam_error(o, out, r) * inner)
            count += inner
    before, after = (weights / count) if count else (0.0, 0.0)
    return result, {"seam_error_before": round(float(before), 6), "seam_error": round(float(after), 6),
                    "continuity": continuity}


def work_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) boxes covering ``mask``'s connected parts plus the
    filters' reach (4 sigma of the widest Gaussian, plus the band), merged
    where they overlap, so every filter sees what it would see on the whole
    image."""
    if not mask.any():
        return []
    h, w = mask.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = []
    for x, y, bw, bh, _ in stats[1:]:
        # continuity's reach grows with the region's depth, at most half its short side
        reach = max(LOW_SIGMA, 0.5 * min(bw, bh) / 2 + 1)
        pad = int(np.ceil(4 * reach)) + 2 * BAND + 2
        boxes.append([max(0, y - pad), min(h, y + bh + pad), max(0, x - pad), min(w, x + bw + pad)])
    merged = True
    while merged:
        merged = False
        out = []
        for b in boxes:
            for m in out:
                if b[0] < m[1] and m[0] < b[1] and b[2] < m[3] and m[2] < b[3]:
                    m[:] = [min(m[0], b[0]), max(m[1], b[1]), min(m[2], b[2]), max(m[3], b[3])]
                    merged = True
                    break
            else:
                out.append(b)
        boxes = out
    return [tuple(b) for b in boxes]
