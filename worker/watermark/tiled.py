"""Repeated (tiled) marks found in one image without a template.

A mark tiled over the whole picture repeats on a lattice; the photo does not.

1. The lattice: the whitened autocorrelation (FFT) of the high-pass residual
   of the luma, windowed, has peaks at the lattice vectors; the strongest one and
   the strongest one not parallel to it (refined to a fraction of a pixel)
   give the period and the angle.
2. The mark's shape: the residual averaged over the lattice translates (up
   to 3 repeats each way) keeps the mark and averages the photo away; pixels
   standing out of that average's noise by ``4 sigma`` are the mark.
3. Its overlay: the photo under the mark is inpainted (Telea); alpha per
   pixel by least squares towards the mark's colour, median-averaged over the
   lattice translates, and the colour by least squares given alpha
   (alternating, as for a learned mark).

Periodic textures (brick, tiles, fabric) also repeat: whether automatic
detection is on by default depends on the false area measured on clean
photos (see the report of issue 11); ``--watermark auto`` turns it on.
"""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np

from worker.watermark.marks import Marks
from worker.watermark.template import ALPHA_FLOOR

MIN_PEAK = 0.25       # normalised autocorrelation a lattice vector needs
MIN_PERIOD = 10.0     # px: shorter repeats are texture or noise, not marks
REPEATS = 3           # lattice translates averaged each way
MAX_SIDE = 2048       # larger images are not searched (the padded FFT and the translate stacks grow with the area)


def _peaks(residual: np.ndarray) -> tuple[np.ndarray, list[tuple[float, np.ndarray]]]:
    h, w = residual.shape
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    r = (residual - residual.mean()) * window
    spectrum = np.fft.rfft2(r, s=(2 * h, 2 * w))                      # zero-padded: no wrap-around
    # whitened (|F| rather than |F|^2): the photo's strong low frequencies no longer bury the repeat's peaks
    auto = np.fft.irfft2(np.abs(spectrum), s=(2 * h, 2 * w))
    # normalise by the overlap of the window with itself at each shift, then by the zero shift
    overlap = np.fft.irfft2(np.abs(np.fft.rfft2(window, s=(2 * h, 2 * w))) ** 2, s=(2 * h, 2 * w))
    auto = np.fft.fftshift(auto / np.maximum(overlap, overlap.max() * 0.05))
    cy, cx = h, w
    auto /= auto[cy, cx]
    # shifts up to 0.7 of the image: marks repeat at least twice
    yy, xx = np.mgrid[-cy:auto.shape[0] - cy, -cx:auto.shape[1] - cx]
    radius = np.hypot(yy, xx)
    valid = (radius >= MIN_PERIOD) & (np.abs(yy) <= 0.7 * h) & (np.abs(xx) <= 0.7 * w) & ((yy > 0) | ((yy == 0) & (xx > 0)))
    local = auto == cv2.dilate(auto.astype(np.float32), np.ones((5, 5), np.uint8))
    ys, xs = np.nonzero(valid & local & (auto > 0.05))
    order = np.argsort(-auto[ys, xs])[:20]
    peaks = []
    for i in order:
        y, x = ys[i], xs[i]
        dy = dx = 0.0
        if 0 < y < auto.shape[0] - 1 and 0 < x < auto.shape[1] - 1:
            a, b, c = auto[y - 1, x], auto[y, x], auto[y + 1, x]
            dy = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
            a, c = auto[y, x - 1], auto[y, x + 1]
            dx = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
        peaks.append((float(auto[y, x]), np.array([x - cx + dx, y - cy + dy])))
    return auto, peaks


def lattice(residual: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(v1, v2, strength): two non-parallel repeat vectors (x, y in px) of the
    residual and the weaker one's normalised autocorrelation; None if the image
    does not repeat."""
    _, peaks = _peaks(residual)
    if not peaks or peaks[0][0] < MIN_PEAK:
        return None
    s1, v1 = peaks[0]
    for s2, v2 in peaks[1:]:
        cross = abs(v1[0] * v2[1] - v1[1] * v2[0])
        if cross > 0.3 * np.linalg.norm(v1) * np.linalg.norm(v2) and s2 >= 0.6 * MIN_PEAK:
            return v1, v2, min(s1, s2)
    return None


def _translates(shape: tuple[int, int], v1: np.ndarray, v2: np.ndarray) -> list[np.ndarray]:
    h, w = shape
    shifts = []
    for i in range(-REPEATS, REPEATS + 1):
        for j in range(-REPEATS, REPEATS + 1):
            s = i * v1 + j * v2
            if abs(s[0]) < w * 0.9 and abs(s[1]) < h * 0.9:
                shifts.append(s)
    return shifts


def lattice_stack(image: np.ndarray, shifts: list[np.ndarray]) -> np.ndarray:
    """``image`` (float32 HxW) moved by each shift (bilinear), NaN where it leaves the frame."""
    h, w = image.shape
    out = np.empty((len(shifts), h, w), np.float32)
    for k, s in enumerate(shifts):
        m = np.float32([[1, 0, -s[0]], [0, 1, -s[1]]])   # out(x) = image(x + s)
        out[k] = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=float("nan"))
    return out


def tiled_marks(rgb: np.ndarray, marks: Marks | None = None) -> Marks:
    """A tiled mark in ``rgb`` (float32 HxWx3), merged into ``marks``; a note
    when the image does not repeat or the repeat does not look like an overlay."""
    marks = marks if marks is not None else Marks.empty(rgb.shape[:2])
    h, w = rgb.shape[:2]
    if min(h, w) < 4 * MIN_PERIOD:
        marks.notes.append("auto: image too small to look for repeated marks")
        return marks
    if max(h, w) > MAX_SIDE:
        marks.notes.append(f"auto: {w}x{h} is over {MAX_SIDE} px a side, where repeated marks are not looked for yet")
        return marks
    luma = np.ascontiguousarray(rgb @ np.array([0.299, 0.587, 0.114], np.float32))
    residual = luma - cv2.GaussianBlur(luma, (0, 0), 3.0)
    found = lattice(residual)
    if found is None:
        marks.notes.append("auto: no repeated pattern (no two lattice peaks in the residual's autocorrelation)")
        return marks
    v1, v2, strength = found
    shifts = _translates((h, w), v1, v2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(lattice_stack(residual, shifts), axis=0), nan=0.0)
    sigma = 1.4826 * float(np.median(np.abs(mean - np.median(mean)))) + 1e-6
    strong = np.abs(mean) > 4 * sigma
    sign = 1.0 if mean[strong].sum() >= 0 else -1.0
    core = (sign * mean > 4 * sigma)
    if not 0.003 < core.mean() < 0.4:
        marks.notes.append(f"auto: a repeat (period {np.linalg.norm(v1):.0f} px) but no mark standing out of it "
                           f"({core.mean():.1%} of the image)")
        return marks
    region = cv2.dilate(core.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    hole = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8))
    photo = cv2.inpaint(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8), hole, 3,
                        cv2.INPAINT_TELEA).astype(np.float32) / 255.0
    colour = np.full(3, 1.0 if sign > 0 else 0.0, np.float32)
    change = rgb - photo
    alpha = np.zeros((h, w), np.float32)
    for _ in range(3):
        diff = colour - photo
        raw = (change * diff).sum(axis=2) / np.maximum((diff * diff).sum(axis=2), 1e-3)
        raw = np.where(region, np.clip(raw, 0.0, 1.0), np.nan).astype(np.float32)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no translate covers them
            alpha = np.nan_to_num(np.nanmedian(lattice_stack(raw, shifts), axis=0), nan=0.0) * region
        a = alpha[region][:, None]
        if float((a * a).sum()) < 1e-6:
            break
        colour = np.clip(((rgb - (1 - alpha[..., None]) * photo)[region] * a).sum(axis=0) / float((a * a).sum()),
                         0.0, 1.0)
    alpha = np.where(alpha > ALPHA_FLOOR, alpha, 0.0).astype(np.float32)
    residual_fit = change - alpha[..., None] * (colour - photo)
    total = float((change[region] ** 2).sum()) + 1e-12
    fit = max(0.0, 1.0 - float((residual_fit[region] ** 2).sum()) / total)
    overlay = np.dstack([np.broadcast_to(colour, (h, w, 3)), alpha]).astype(np.float32)
    angle = math.degrees(math.atan2(v1[1], v1[0]))
    marks.add(overlay, min(1.0, strength), [{
        "kind": "tiled", "x": 0.0, "y": 0.0, "angle": round(angle, 2),
        "period": [round(float(np.linalg.norm(v1)), 2), round(float(np.linalg.norm(v2)), 2)],
        "lattice": [[round(float(c), 2) for c in v1], [round(float(c), 2) for c in v2]],
        "alpha": round(float(np.percentile(alpha[alpha > 0], 90)) if (alpha > 0).any() else 0.0, 3),
        "colour": [round(float(c), 3) for c in colour], "score": round(strength, 3), "fit": round(fit, 3),
        "coverage": round(float((alpha > 0).mean()), 4)}])
    return marks
