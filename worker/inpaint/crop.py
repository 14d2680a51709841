"""Crop-and-paste for learned inpainters.

A model sees a crop around the mask, not the whole image: the mask's bounding
box grown by ``padding`` px of context and then widened to the model's aspect
ratio (diffusers' ``get_crop_region`` for ``padding_mask_crop``; IOPaint's
crop strategy), resized to the size the model runs at, filled, resized back
and pasted into the masked pixels only, so every unmasked pixel stays exactly
the input's.

When the model runs out of memory the next, smaller attempt is tried (less
padding, a smaller working size); :class:`Attempt` lists them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from worker.device import is_out_of_memory, release_cached
from worker.inpaint.base import FillReport, InpaintOutOfMemory

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]   # y0, y1, x0, x1 (end-exclusive)


@dataclass(frozen=True)
class Attempt:
    """One try: ``padding`` px of context around the mask, and ``size``: the
    model's working (width, height), or None to keep the crop's own size
    (fully convolutional models), capped at ``limit`` px on the longest side."""

    padding: int
    size: tuple[int, int] | None = None
    limit: int | None = None


def mask_box(mask: np.ndarray) -> Box | None:
    """The bounding box of the True pixels, or None if there are none."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _widen(lo: int, hi: int, want: int, limit: int) -> tuple[int, int]:
    """Grow [lo, hi) symmetrically to ``want`` long, shifted to stay inside [0, limit)."""
    want = min(want, limit)
    grow = want - (hi - lo)
    lo -= grow // 2
    hi += grow - grow // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    return max(lo, 0), min(hi, limit)


def crop_region(mask: np.ndarray, padding: int, aspect: float | None = None) -> Box | None:
    """The box a model works on: the mask's bounding box plus ``padding``
    (clipped to the image), widened to ``aspect`` (width / height) where the
    image allows, as diffusers' ``get_crop_region``. None for an empty mask."""
    box = mask_box(mask)
    if box is None:
        return None
    h, w = mask.shape
    y0, y1, x0, x1 = max(box[0] - padding, 0), min(box[1] + padding, h), max(box[2] - padding, 0), min(box[3] + padding, w)
    if aspect:
        cw, ch = x1 - x0, y1 - y0
        if cw / ch > aspect:
            y0, y1 = _widen(y0, y1, int(round(cw / aspect)), h)
        elif cw / ch < aspect:
            x0, x1 = _widen(x0, x1, int(round(ch * aspect)), w)
    return y0, y1, x0, x1


def working_size(crop_wh: tuple[int, int], attempt: Attempt, multiple: int = 8) -> tuple[int, int]:
    """The (width, height) the model runs at for a crop of ``crop_wh``: the
    attempt's fixed size, or the crop's own size scaled down to ``limit`` on its
    longest side, rounded to ``multiple`` (at least one multiple)."""
    if attempt.size is not None:
        return attempt.size
    w, h = crop_wh
    scale = min(1.0, attempt.limit / max(w, h)) if attempt.limit else 1.0

    def snap(v: float) -> int:
        return max(multiple, int(round(v * scale / multiple)) * multiple)
    return snap(w), snap(h)


def resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 HxW[xC] to (width, height): area averaging when shrinking, bicubic when growing."""
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    shrink = size[0] < arr.shape[1]
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def model_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The bool crop mask at the working size; a working pixel is masked when any
    part of it was, so thin strokes survive a downscale."""
    return resize(mask.astype(np.float32), size) > 1e-3


Infer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def fill_on_crop(rgb: np.ndarray, mask: np.ndarray, attempts: list[Attempt], infer: Infer, *,
                 aspect: float | None, device: str, name: str, multiple: int = 8) -> tuple[np.ndarray, FillReport]:
    """Fill ``mask`` in ``rgb`` with ``infer(crop float32 hxwx3, mask bool hxw)
    -> float32 hxwx3 in [0, 1]`` run at each attempt's working size in turn,
    moving on only when the model runs out of memory.

    Returns the whole image (a new array, equal to ``rgb`` outside ``mask``)
    and the report. Raises InpaintOutOfMemory naming the model, the device and
    every size tried when all attempts ran out of memory."""
    failed: list[str] = []
    for attempt in attempts:
        box = crop_region(mask, attempt.padding, aspect)
        if box is None:
            return rgb.copy(), FillReport((0, 0, 0, 0), (0, 0))
        y0, y1, x0, x1 = box
        crop, crop_mask = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        size = working_size((x1 - x0, y1 - y0), attempt, multiple)
        try:
            result = infer(np.ascontiguousarray(resize(crop, size)), model_mask(crop_mask, size))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            result = None
        if result is None:
            # outside the except block, so the traceback's frames (and their
            # tensors) are gone before the cache is emptied
            failed.append(f"{size[0]}x{size[1]} (padding {attempt.padding})")
            log.warning("%s ran out of memory on %s at %dx%d; trying a smaller crop", name, device, *size)
            release_cached(device)
            continue
        back = np.clip(resize(np.asarray(result, np.float32), (x1 - x0, y1 - y0)), 0.0, 1.0)
        out = rgb.copy()
        out[y0:y1, x0:x1][crop_mask] = back[crop_mask]
        return out, FillReport(box, size, failed)
    raise InpaintOutOfMemory(f"{name}: out of memory on {device} at every crop size tried ({', '.join(failed)})")
