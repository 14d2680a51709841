"""The restoration stages as plain functions over arrays.

They hold no state and read no settings: models and parameters come in as
arguments, so the same functions run in ``retouch run`` and inside Celery
tasks. Arrays follow docs/CONTRACTS.md (float32 in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker import inpaint as inpaint_variants
from worker.errors import RetouchError
from worker.mask import MaskParams, MaskResult, build_mask, mask_from_strokes, mask_stats
from worker.postprocess import postprocess as _postprocess
from worker.upscale.base import Upscaler, target_size, upscale_alpha


@dataclass
class Detection:
    """``confidence``: detector probability HxW; ``soft``: blend weights HxW;
    ``binary``: bool fill region; ``core``: bool strokes + dilation; ``stats``: JSON-able;
    ``overlay``: float32 HxWx4 overlay estimate (colour, alpha), None for a user mask."""

    confidence: np.ndarray
    soft: np.ndarray
    binary: np.ndarray
    core: np.ndarray
    stats: dict
    overlay: np.ndarray | None = None


def detect(rgb: np.ndarray, detector, params: MaskParams, user_mask: np.ndarray | None = None) -> Detection:
    """Text confidence and the stroke-following mask.

    ``detector`` has ``confidence(rgb) -> HxW``. A ``user_mask`` (float32 HxW in
    [0, 1], soft or binary, same size as the image) replaces detection: it is the
    confidence, its >= 0.5 part is dilated and feathered like detected strokes.
    Raises RetouchError if the user mask's size differs from the image's."""
    if user_mask is not None:
        if user_mask.shape != rgb.shape[:2]:
            raise RetouchError(f"mask is {user_mask.shape[1]}x{user_mask.shape[0]} "
                             f"but the image is {rgb.shape[1]}x{rgb.shape[0]}")
        confidence = user_mask.astype(np.float32)
        result: MaskResult = mask_from_strokes(confidence >= 0.5, params)
        source = "user"
    else:
        confidence = detector.confidence(rgb)
        result = build_mask(rgb, confidence, params, getattr(detector, "reader", None),
                            getattr(detector, "segmenter", None), getattr(detector, "recover", True))
        source = "detector"
    stats = mask_stats(confidence, result)
    stats["source"] = source
    return Detection(confidence, result.soft, result.binary, result.core, stats, result.overlay)


def inpaint(rgb: np.ndarray, alpha: np.ndarray | None, region: np.ndarray, variant: str,
            seed: int = 0, margin: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill the bool ``region`` with the named variant (alpha with the same mask)."""
    return inpaint_variants.fill(rgb, region, variant, seed=seed, margin=margin, alpha=alpha)


def upscale(rgb: np.ndarray, alpha: np.ndarray | None, upscaler: Upscaler,
            scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Upscale colour with ``upscaler`` and alpha separately with Lanczos."""
    out = upscaler.upscale(rgb, scale)
    expected = target_size(rgb.shape[1], rgb.shape[0], scale)
    if (out.shape[1], out.shape[0]) != expected:
        raise RuntimeError(f"upscaler {upscaler.name} returned {out.shape[1]}x{out.shape[0]}, expected "
                           f"{expected[0]}x{expected[1]}")
    return out, (upscale_alpha(alpha, expected) if alpha is not None else None)


def postprocess(original: np.ndarray, filled: np.ndarray, soft: np.ndarray,
                region: np.ndarray) -> tuple[np.ndarray, dict]:
    """Colour continuity and soft blending of the fill; reports the seam error."""
    return _postprocess(original, filled, soft, region)
