"""Seam-free tiled inference for learned upscalers.

The image is cut into overlapping tiles on a regular grid; each tile goes
through the model alone (so the whole image is never on the device at once)
and its output is blended into a float32 canvas with raised-cosine ramps across
every overlap. Ramps of neighbouring tiles are complementary (they sum to 1),
so the blend is a smooth cross-fade, and each tile's outermost pixels, where
the network saw zero padding, get (almost) no weight.

Weights are separable: tile (row j, col i) has weight ``wy_j(y) * wx_i(x)``, so
the normaliser is the outer product of two 1-D sums and no full-size weight
plane is kept (a 8000x8000 output needs 768 MB of canvas, not 1 GB).

When a tile fails with out-of-memory (see :func:`worker.device.is_out_of_memory`),
the tile size halves and that tile is redone as its own blended sub-grid; later
tiles use the smaller size directly. Below ``min_tile`` the error is re-raised.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at
    least ``overlap`` pixels shared between neighbours, evenly spread."""
    if tile >= length:
        return [0]
    if overlap >= tile:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    count = math.ceil((length - overlap) / (tile - overlap))
    count = max(count, 2)
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _raised_cosine(x: np.ndarray, start: float, width: float) -> np.ndarray:
    """0 before ``start``, 1 after ``start + width``, a half cosine between."""
    t = np.clip((x + 0.5 - start) / max(width, 1e-6), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def axis_weights(starts: list[int], tile: int, length: int, overlap: int, scale: int) -> list[np.ndarray]:
    """Per tile, its 1-D blending weight in output pixels (length ``size*scale``).

    Across the overlap with each neighbour a ramp of ``min(shared, overlap)``
    input pixels, centred in the shared span, fades this tile out and the
    neighbour in."""
    ends = [min(s + tile, length) for s in starts]
    weights = []
    for i, (s, e) in enumerate(zip(starts, ends)):
        x = np.arange(s * scale, e * scale, dtype=np.float32)
        w = np.ones_like(x)
        if i > 0:
            shared = ends[i - 1] - s
            width = min(shared, overlap) * scale
            w *= _raised_cosine(x, (s + ends[i - 1]) * scale / 2 - width / 2, width)
        if i < len(starts) - 1:
            shared = e - starts[i + 1]
            width = min(shared, overlap) * scale
            w *= 1.0 - _raised_cosine(x, (starts[i + 1] + e) * scale / 2 - width / 2, width)
        weights.append(w)
    return weights


class Tiler:
    """Runs ``fn`` over overlapping tiles of an HxWxC float32 image.

    ``fn(tile) -> out``: tile (h, w, C) float32 -> (h*scale, w*scale, C) float32.
    ``tile`` is the current tile size (input pixels); it only ever shrinks (OOM).
    """

    def __init__(self, tile: int, overlap: int = 16, min_tile: int = 32,
                 is_oom: Callable[[BaseException], bool] | None = None,
                 on_oom: Callable[[int], None] | None = None):
        if tile <= 2 * overlap:
            raise ValueError(f"tile size {tile} must exceed twice the overlap ({overlap})")
        self.tile = tile
        self.overlap = overlap
        self.min_tile = min_tile
        self.is_oom = is_oom or (lambda exc: isinstance(exc, MemoryError))
        self.on_oom = on_oom

    def run(self, image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], scale: int) -> np.ndarray:
        """The blended (H*scale, W*scale, C) float32 output."""
        h, w, c = image.shape
        if h <= self.tile and w <= self.tile:
            return self._one(image, fn, scale)
        tile = self.tile
        ys, xs = tile_starts(h, tile, self.overlap), tile_starts(w, tile, self.overlap)
        wy, wx = axis_weights(ys, tile, h, self.overlap, scale), axis_weights(xs, tile, w, self.overlap, scale)
        out = np.zeros((h * scale, w * scale, c), np.float32)
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                part = self._one(image[y:y + tile, x:x + tile], fn, scale)
                ph, pw = part.shape[:2]
                out[y * scale:y * scale + ph, x * scale:x * scale + pw] += (
                    part * wy[j][:, None, None] * wx[i][None, :, None])
        norm_y, norm_x = np.zeros(h * scale, np.float32), np.zeros(w * scale, np.float32)
        for y, wgt in zip(ys, wy):
            norm_y[y * scale:y * scale + len(wgt)] += wgt
        for x, wgt in zip(xs, wx):
            norm_x[x * scale:x * scale + len(wgt)] += wgt
        inv_x = (1.0 / norm_x)[None, :, None]
        for row in range(0, h * scale, 256):  # in bands: no full-size temporary
            out[row:row + 256] *= inv_x * (1.0 / norm_y[row:row + 256])[:, None, None]
        return out

    def _one(self, part: np.ndarray, fn, scale: int) -> np.ndarray:
        ph, pw = part.shape[:2]
        if max(ph, pw) > self.tile:
            # The tile size shrank (OOM) since this grid was laid out.
            return self.run(part, fn, scale)
        try:
            out = fn(part)
        except Exception as exc:
            if not self.is_oom(exc) or self.tile // 2 < self.min_tile:
                raise
            out = None
        if out is None:
            # Retried outside the except block: the traceback (and the failed
            # tile's device tensors it references) is gone before memory is
            # released and the smaller tiles run.
            self.tile //= 2
            self.overlap = min(self.overlap, max(1, self.tile // 4))
            log.warning("out of memory on a %dx%d tile; tile size now %d", pw, ph, self.tile)
            if self.on_oom:
                self.on_oom(self.tile)
            return self.run(part, fn, scale)
        if out.shape[:2] != (ph * scale, pw * scale):
            raise RuntimeError(f"model returned {out.shape[1]}x{out.shape[0]} for a {pw}x{ph} tile at x{scale}")
        return out
