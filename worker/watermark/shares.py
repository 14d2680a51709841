"""Learning a collection's mark in parts, for the cluster (``tasks.learning``).

The learning (:func:`worker.watermark.learn.learn`) needs every image's
pixels at once: the median of gradients, the alignment and the per-pixel
regression all run across the collection. So an image's share is its decoded
pixels (exact, stored as ``.npz`` and read back with
``allow_pickle=False``); a per-image gradient share would be twice that size
and the solve needs the pixels anyway. The solve then runs ``learn``
unchanged on the shares of the most common size, in key order, so a cluster
job learns the same template as ``retouch run --watermark learned`` on the
same files. Pixels decoded from 8-bit samples (most archives) go as their
8-bit values, zlib-compressed, a quarter of the float32 size or less; they are
kept that way only when reading them back gives the same float32 exactly.

The sample is the ``size`` keys with the smallest sha256: reproducible,
independent of listing order, and streamed (a prefix of millions of keys is
never held in memory).
"""

from __future__ import annotations

import hashlib
import heapq
import io
from collections import Counter
from typing import Iterable

import numpy as np

from worker.watermark.learn import MIN_IMAGES, describe, learn
from worker.watermark.template import WatermarkError, template_png

SAMPLE = 40          # images a cluster job learns from at most
TEMPLATE = "watermark.png"


def sample(keys: Iterable[str], size: int = SAMPLE) -> list[str]:
    """The ``size`` keys of ``keys`` with the smallest sha256, sorted."""
    heap: list[tuple[bytes, str]] = []   # max-heap on the digest (negated bytes): the ``size`` smallest kept
    for key in keys:
        digest = hashlib.sha256(key.encode()).digest()
        item = (bytes(255 - b for b in digest), key)
        if len(heap) < size:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
    return sorted(key for _, key in heap)


def share_bytes(rgb: np.ndarray) -> bytes:
    """One image's share: its pixels (float32 HxWx3) as ``.npz`` bytes,
    ``u8`` (8-bit values) when that is exact, else ``f32``."""
    rgb = np.ascontiguousarray(rgb, np.float32)
    u8 = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    if np.array_equal(_from_u8(u8), rgb):
        np.savez_compressed(buf, u8=u8)
    else:
        np.savez_compressed(buf, f32=rgb)
    return buf.getvalue()


def _from_u8(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) / np.float32(255.0)


def read_share(data: bytes, name: str) -> np.ndarray:
    """The pixels of a share (float32 HxWx3). Raises WatermarkError (one line)
    for anything else; never unpickles."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            kind = next((k for k in ("u8", "f32") if k in arrays.files), None)
            array = arrays[kind] if kind else None
    except (OSError, ValueError, EOFError, AttributeError, TypeError) as exc:
        raise WatermarkError(f"{name}: not a learning share ({exc})") from None
    expected = {"u8": np.uint8, "f32": np.float32}.get(kind)
    if array is None or array.dtype != expected or array.ndim != 3 or array.shape[2] != 3:
        raise WatermarkError(f"{name}: not a learning share (8-bit or float32 HxWx3 expected)")
    return _from_u8(array) if kind == "u8" else array


def common_size(sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The most common (width, height), the first met among equals (as ``learn`` picks)."""
    counts = Counter(sizes)
    return counts.most_common(1)[0][0] if counts else None


def solve(names: list[str], images: list[np.ndarray], name: str,
          min_images: int = MIN_IMAGES) -> tuple[bytes, dict]:
    """The learned mark of ``images`` (named ``names``, in key order): its
    RGBA PNG bytes and its JSON (as ``retouch watermark learn`` writes them,
    the PNG named ``watermark.png``). Raises WatermarkError (one line) when
    the sample is too small or shares no mark."""
    learned = learn(images, name=name, min_images=min_images)
    return template_png(learned.template), describe(learned, TEMPLATE, names)
