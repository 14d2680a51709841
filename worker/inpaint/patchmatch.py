"""Patch-based inpainting (PatchMatch, via the ``pypatchmatch`` package).

Copies real texture from the surroundings, so it suits larger or textured
regions better than diffusion-style fills. PatchMatch draws random candidates
from the C library's own ``rand()``; seeding libc with the run's seed makes the
output reproducible.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

import numpy as np

_LOCK = threading.Lock()  # libc's rand() state is process-global
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
PATCH_SIZE = 5


def inpaint(rgb: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    from patchmatch import patch_match

    if not patch_match.patchmatch_available:
        raise RuntimeError("pypatchmatch's native library is not available")
    src = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    with _LOCK:
        _LIBC.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
        out8 = patch_match.inpaint(src, mask.astype(np.uint8) * 255, patch_size=PATCH_SIZE)
    out = out8.astype(np.float32) / 255.0
    # Keep full precision outside the fill; only masked pixels come from PatchMatch.
    result = rgb.copy()
    result[mask] = out[mask]
    return result

