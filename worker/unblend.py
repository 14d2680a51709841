"""Lifting semi-transparent overlays: real pixels back instead of invented ones.

A semi-transparent caption, stamp or watermark was composited as

    observed = alpha * colour + (1 - alpha) * photo

so where ``alpha`` and ``colour`` are known (estimated from the image by the
text and watermark stages, or from a template) the photo is

    photo = (observed - alpha * colour) / (1 - alpha).

The overlay estimate is one float32 HxWx4 array: RGB colour and alpha, zero
alpha where there is no overlay. Dividing by ``1 - alpha`` amplifies noise
and quantisation by ``1 / (1 - alpha)``, so a pixel is unblended only when
``alpha <= alpha_max``; a result outside [0, 1] by more than the noise a pixel
can carry means the estimate does not fit that pixel. Both kinds of pixel are
left to the inpainter (``UnblendResult.remaining``).

How far to go depends on how well the overlay is known. Estimated from the
image alone (the text detector's fit), alpha is off by a few hundredths, and
above ``ALPHA_MAX`` that error, amplified, costs more than inpainting. Placed
from a template (a known mark, fitted to a fraction of a pixel), the alpha is
exact up to interpolation, and the 8-bit rounding amplified 20 times at
``ALPHA_MAX_EXACT`` still leaves the photo at about 33 dB, where an inpainter
invents it (a stamp at 90% opacity: 22 dB for Telea). The limit is per pixel
(the watermark stage's ``unblend_limit`` map). So is the tolerance: a result
outside [0, 1] tells an estimated colour that is wrong, but a template's
colour is known, and its alpha a percent or two off over a black or white
photo leaves the result just outside; clipped, it is the photo
(``TOLERANCE_EXACT``: a learned white ring over a black collar was inpainted
in specks, 30.8 -> 33.0 dB on the eval's collection).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ALPHA_MAX = 0.85          # above: the photo is under 15% of the pixel; inpaint instead
ALPHA_MAX_EXACT = 0.95    # the same for an overlay placed from a template (its alpha is known)
ALPHA_MIN = 0.02          # below: nothing to lift
QUANTISATION = 1.0 / 255  # what an 8-bit observed value may be off by
TOLERANCE = 2.0           # times the amplified quantisation a result may leave [0, 1] by and still fit
TOLERANCE_EXACT = 8.0     # the same where the overlay was placed from a template


@dataclass
class UnblendResult:
    """``rgb``: float32 HxWx3, unblended where ``lifted``; ``lifted``: bool HxW,
    pixels restored by reversing the blend; ``remaining``: bool HxW, the part
    of ``region`` still to inpaint (opaque, or the estimate does not fit)."""

    rgb: np.ndarray
    lifted: np.ndarray
    remaining: np.ndarray


def unblend(rgb: np.ndarray, overlay: np.ndarray, region: np.ndarray, alpha_max: float | np.ndarray = ALPHA_MAX,
            tolerance: float | np.ndarray = TOLERANCE, margin: int | None = None) -> UnblendResult:
    """Reverse the blend inside ``region`` (bool HxW) where the overlay
    (float32 HxWx4: colour, alpha) is semi-transparent and the result fits.
    ``alpha_max``: the largest alpha unblended, one number or float32 HxW.
    ``tolerance``: how many times the amplified quantisation error a result may
    fall outside [0, 1] before the pixel counts as not fitting (one number or
    float32 HxW).

    ``margin``: when the region is the overlay's pixels grown by a safety
    margin (a detected mask), pass that margin: what remains to inpaint is
    then the overlay pixels not lifted, grown by ``margin`` px within the
    region, so the margin around a fully lifted overlay (pixels the overlay
    never touched) is not inpainted. ``None``: every region pixel not lifted
    remains."""
    if overlay.shape[:2] != rgb.shape[:2] or overlay.shape[2] != 4:
        raise ValueError(f"overlay must be HxWx4 matching the image {rgb.shape[:2]} but is {overlay.shape}")
    if np.ndim(alpha_max) and np.shape(alpha_max) != rgb.shape[:2]:
        raise ValueError(f"alpha_max must be a number or HxW matching the image {rgb.shape[:2]} "
                         f"but is {np.shape(alpha_max)}")
    alpha = overlay[:, :, 3]
    candidate = region & (alpha > ALPHA_MIN) & (alpha <= alpha_max)
    out = rgb.copy()
    if not candidate.any():
        return UnblendResult(out, candidate, region.copy())
    a = alpha[candidate][:, None]
    photo = (rgb[candidate] - a * overlay[:, :, :3][candidate]) / (1.0 - a)
    allowed = np.broadcast_to(np.asarray(tolerance, np.float32), alpha.shape)[candidate][:, None]
    slack = allowed * QUANTISATION / (1.0 - a)
    fits = ((photo >= -slack) & (photo <= 1.0 + slack)).all(axis=1)
    lifted = np.zeros_like(candidate)
    lifted[candidate] = fits
    out[lifted] = np.clip(photo[fits], 0.0, 1.0)
    if margin is None:
        return UnblendResult(out, lifted, region & ~lifted)
    unlifted = (region & (alpha > ALPHA_MIN) & ~lifted).astype(np.uint8)
    if margin > 0:
        unlifted = cv2.dilate(unlifted, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2))
    return UnblendResult(out, lifted, region & unlifted.astype(bool))
