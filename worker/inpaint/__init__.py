"""Inpainting variants, listed in one registry, and the region-cropping wrapper.

An inpainter fills ``mask`` (bool HxW, True = fill) in ``rgb`` (float32 HxWx3 in
[0, 1]) and returns float32 HxWx3; pixels outside the mask are returned
unchanged. Given the same seed, every variant returns the same output.

:func:`fill` is what stages call: it works on the mask's bounding box plus a
margin, not the whole image, and fills an alpha plane with the same mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from worker.inpaint import opencv, patchmatch
from worker.registry import Registry, UnknownVariantError

Inpainter = Callable[[np.ndarray, np.ndarray, int], np.ndarray]

__all__ = ["Inpainter", "VariantInfo", "UnknownVariantError", "VARIANTS", "register", "names", "get",
           "bounding_box", "fill"]


@dataclass(frozen=True)
class VariantInfo:
    name: str
    description: str
    fn: Inpainter


VARIANTS: Registry[VariantInfo] = Registry("inpaint variant", [
    (v.name, v) for v in (
        VariantInfo("telea", "OpenCV fast-marching (Telea); thin strokes, small areas", opencv.telea),
        VariantInfo("ns", "OpenCV Navier-Stokes; smooth regions, small areas", opencv.navier_stokes),
        VariantInfo("patchmatch", "PatchMatch texture synthesis; larger or textured regions", patchmatch.inpaint),
    )
])


def register(name: str, fn: Inpainter, description: str) -> None:
    """Add a variant at run time (tests, plugins)."""
    VARIANTS.add(name, VariantInfo(name, description, fn))


def names() -> list[str]:
    return VARIANTS.names()


def get(name: str) -> VariantInfo:
    """Raises UnknownVariantError listing the available variants."""
    return VARIANTS.get(name)


def bounding_box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the True pixels grown by ``margin``, clipped; None if empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    h, w = mask.shape
    return (max(0, ys.min() - margin), min(h, ys.max() + 1 + margin),
            max(0, xs.min() - margin), min(w, xs.max() + 1 + margin))


def fill(rgb: np.ndarray, mask: np.ndarray, variant: str, seed: int = 0, margin: int = 32,
         alpha: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill ``mask`` in ``rgb`` (and ``alpha``) with ``variant``, working on the
    mask's bounding box plus ``margin`` pixels. Returns new arrays; inputs are
    not modified."""
    info = get(variant)
    out = rgb.copy()
    out_alpha = None if alpha is None else alpha.copy()
    box = bounding_box(mask, margin)
    if box is None:
        return out, out_alpha
    y0, y1, x0, x1 = box
    sub_mask = mask[y0:y1, x0:x1]
    filled = info.fn(np.ascontiguousarray(rgb[y0:y1, x0:x1]), sub_mask, seed)
    out[y0:y1, x0:x1][sub_mask] = filled[sub_mask]
    if alpha is not None:
        sub_alpha = opencv.telea_plane(np.ascontiguousarray(alpha[y0:y1, x0:x1]), sub_mask)
        out_alpha[y0:y1, x0:x1][sub_mask] = sub_alpha[sub_mask]
    return out, out_alpha
