"""Full-reference image metrics, optionally restricted to a mask, and detection scores.

Images are float32 HxWx3 RGB in [0, 1] (docs/CONTRACTS.md); masks are bool HxW.
PSNR and SSIM are scikit-image's (``data_range=1``); the masked forms average
the squared error or scikit-image's SSIM map over the mask's pixels only, so a
restoration is judged where the overlay was, not on the untouched rest of the
photo. The seam error is :func:`worker.postprocess.seam_error`.
"""

from __future__ import annotations

import math

import numpy as np

from worker.postprocess import seam_error as _seam

# PSNR of identical images is infinite; tables and means need a finite number.
PSNR_CAP = 100.0


def _check(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if mask is not None and mask.shape != a.shape[:2]:
        raise ValueError(f"mask is {mask.shape} but the images are {a.shape[:2]}")


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB (data range 1), capped at :data:`PSNR_CAP`. With ``mask``, the
    mean squared error is taken over the masked pixels (all channels) only.
    Returns nan for an empty mask; raises ValueError on shape mismatch."""
    from skimage.metrics import mean_squared_error, peak_signal_noise_ratio

    _check(a, b, mask)
    if mask is None:
        if not np.any(a != b):
            return PSNR_CAP
        return min(PSNR_CAP, float(peak_signal_noise_ratio(a, b, data_range=1.0)))
    if not mask.any():
        return math.nan
    mse = float(mean_squared_error(a[mask], b[mask]))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10.0 * math.log10(1.0 / mse))


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """scikit-image's SSIM map (7x7 window, data range 1), averaged over channels, float32 HxW."""
    from skimage.metrics import structural_similarity

    _check(a, b)
    _, full = structural_similarity(a, b, data_range=1.0, channel_axis=2, full=True)
    return full.mean(axis=2).astype(np.float32)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM in [-1, 1], over the whole image or over the masked pixels
    (nan for an empty mask). Images smaller than 7x7 raise ValueError."""
    _check(a, b, mask)
    full = ssim_map(a, b)
    if mask is None:
        # skimage's own mean crops the (7-1)/2 px border; match it for the full image
        pad = 3
        return float(full[pad:-pad, pad:-pad].mean())
    return float(full[mask].mean()) if mask.any() else math.nan


def masked_mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean of an HxW map over ``mask`` (whole map if None); nan for an empty mask."""
    if mask is None:
        return float(values.mean())
    return float(values[mask].mean()) if mask.any() else math.nan


def detection_scores(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Pixel precision, recall and IoU of a predicted bool mask against the true one.

    Empty-set conventions: precision is 1 when nothing is predicted, recall is 1
    when there is nothing to find, IoU is 1 when both are empty."""
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted mask is {predicted.shape} but the true mask is {truth.shape}")
    p, t = predicted.astype(bool), truth.astype(bool)
    tp = int(np.count_nonzero(p & t))
    n_p, n_t = int(np.count_nonzero(p)), int(np.count_nonzero(t))
    union = int(np.count_nonzero(p | t))
    return {
        "precision": tp / n_p if n_p else 1.0,
        "recall": tp / n_t if n_t else 1.0,
        "iou": tp / union if union else 1.0,
    }


def seam_error(result: np.ndarray, region: np.ndarray) -> float:
    """Low-frequency colour step across the boundary of ``region`` in the final
    image, [0, 1] units (see :func:`worker.postprocess.seam_error`)."""
    return _seam(result, result, region)


def error_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel reconstruction error: mean absolute difference over channels, float32 HxW."""
    _check(a, b)
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2)


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of the Student-t confidence interval, and n over the finite
    values. The half-width is nan for fewer than two values; the mean is nan for none."""
    from scipy import stats

    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(arr.mean())
    if n < 2:
        return mean, math.nan, n
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * arr.std(ddof=1) / math.sqrt(n))
    return mean, half, n
