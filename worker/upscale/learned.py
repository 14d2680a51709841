"""Running a learned upscaler: device, precision, tiles, exact output size.

:class:`TorchUpscaler` wraps any PyTorch module that maps (N, 3, H, W) RGB in
[0, 1] to (N, 3, sH, sW) (the project's Real-ESRGAN networks, or a model that
spandrel loaded). :class:`NativeScaleUpscaler` is the shared part: it runs the
network at its native scale through :class:`worker.tiling.Tiler` and then
resizes to the exact requested size with a Lanczos filter (PIL, float32, so
16-bit inputs keep their precision and downscales are antialiased).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Callable

import numpy as np

from PIL import Image

from worker.device import free_memory, is_out_of_memory, release_cached
from worker.tiling import Tiler
from worker.upscale.base import target_size

log = logging.getLogger(__name__)

# Peak activation bytes per *input* pixel in float32, with a margin over what
# one forward pass adds to the peak RSS on CPU (measured: SRVGGNetCompact ~1.5 KB
# at 256 px, RRDBNet ~15 KB at 128 px): RRDBNet's x4 tail holds 64-channel maps
# at 16x the input area; SRVGG stays at input resolution until its pixel shuffle.
# Unknown (spandrel) architectures, transformers included, get a generous default.
BYTES_PER_PIXEL = {"RRDBNet": 20_000, "SRVGGNetCompact": 2_500, "default": 40_000}
# ncnn keeps more per pixel (measured: RRDBNet ~49 KB at 128 px, SRVGG ~2.8 KB).
NCNN_BYTES_PER_PIXEL = {"RRDBNet": 60_000, "SRVGGNetCompact": 4_000, "default": 60_000}
CPU_DEFAULT_TILE = 256
# On the CPU the activations of one tile get at most this much, whatever RAM is
# free: with the x4 output canvas (768 MB for a 2000x2000 input) and the
# libraries, a 2000x2000 x4 run then peaks well under 4 GB.
CPU_ACTIVATION_BUDGET = 1 << 30
MAX_TILE = 1024
MIN_TILE = 32
OVERLAP = 16


def lanczos_resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 HxWxC -> (size[1], size[0], C) with PIL's Lanczos (antialiased
    when shrinking), float32 throughout; no clipping."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    out = np.empty((size[1], size[0], rgb.shape[2]), np.float32)
    for c in range(rgb.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(rgb[:, :, c], np.float32), mode="F")
        out[:, :, c] = np.asarray(plane.resize(size, Image.Resampling.LANCZOS), np.float32)
    return out


def precision(options) -> bool | str:
    """The precision a learned model should run in: ``options.extra["precision"]``
    (fp32, fp16, bf16, auto) if given, fp16 when ``options.half``, else ``auto``
    (fp16 on CUDA, as Real-ESRGAN's own inference does; always fp32 on the CPU,
    see :func:`worker.device.choose_dtype`)."""
    if "precision" in options.extra:
        return options.extra["precision"]
    return "fp16" if options.half else "auto"


def auto_tile(device: str, bytes_per_pixel: int, itemsize: int = 4) -> int:
    """A tile size (input pixels, multiple of 16) whose activations fit in
    about half the free memory of ``device``; on the CPU also within
    ``CPU_ACTIVATION_BUDGET`` and at most ``CPU_DEFAULT_TILE`` (bigger tiles
    buy little speed there and cost RAM)."""
    budget = free_memory(device) * 0.5
    if not device.startswith("cuda"):
        budget = min(budget, CPU_ACTIVATION_BUDGET)
    side = int(math.sqrt(budget / (bytes_per_pixel * itemsize / 4)))
    cap = MAX_TILE if device.startswith("cuda") else CPU_DEFAULT_TILE
    return max(MIN_TILE * 2, min(cap, side) // 16 * 16)


class NativeScaleUpscaler:
    """Base for learned upscalers: subclasses implement ``_run_tile`` at
    ``native_scale``; this class tiles, blends and resizes to the exact size.

    ``upscale(rgb, scale)``: float32 HxWx3 in [0, 1] -> float32
    (round(H*scale), round(W*scale), 3), clipped to [0, 1]."""

    name: str
    native_scale: int
    learned = True

    def __init__(self, name: str, native_scale: int, tile: int, overlap: int = OVERLAP,
                 is_oom: Callable[[BaseException], bool] | None = None, on_oom=None):
        self.name = name
        self.native_scale = native_scale
        self.tiler = Tiler(tile, overlap=min(overlap, tile // 4), min_tile=MIN_TILE, is_oom=is_oom, on_oom=on_oom)
        self._lock = threading.Lock()  # one image at a time per model instance

    @property
    def tile(self) -> int:
        return self.tiler.tile

    def upscale(self, rgb: np.ndarray, scale: float) -> np.ndarray:
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"{self.name}: expected HxWx3 RGB, got shape {rgb.shape}")
        size = target_size(rgb.shape[1], rgb.shape[0], scale)
        with self._lock:
            native = self.tiler.run(np.ascontiguousarray(rgb, np.float32), self._run_tile, self.native_scale)
        out = lanczos_resize(native, size)
        del native
        return np.clip(out, 0.0, 1.0, out=out)  # in place: the canvas can be hundreds of MB

    def _run_tile(self, tile: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class TorchUpscaler(NativeScaleUpscaler):
    """A torch module on ``device`` in ``dtype``, one tile at a time.

    ``multiple_of``/``minimum``: input size requirements (tiles are padded by
    reflection to meet them and the output cropped back)."""

    def __init__(self, name: str, module, native_scale: int, device: str = "cpu", dtype=None,
                 tile: int = 0, bytes_per_pixel: int = BYTES_PER_PIXEL["default"], multiple_of: int = 1,
                 minimum: int = 1):
        import torch

        self.device = device
        self.dtype = dtype or torch.float32
        self.multiple_of, self.minimum = multiple_of, minimum
        self.module = module.eval().to(device=device, dtype=self.dtype)
        for p in self.module.parameters():
            p.requires_grad_(False)
        if tile <= 0:
            tile = auto_tile(device, bytes_per_pixel, torch.tensor([], dtype=self.dtype).element_size())
        super().__init__(name, native_scale, tile, is_oom=is_out_of_memory,
                         on_oom=lambda _t: release_cached(device))

    def _run_tile(self, tile: np.ndarray) -> np.ndarray:
        import torch
        from torch.nn import functional as F

        h, w = tile.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))[None]
        x = x.to(device=self.device, dtype=self.dtype, non_blocking=True)
        ph = max(self.minimum, -(-h // self.multiple_of) * self.multiple_of) - h
        pw = max(self.minimum, -(-w // self.multiple_of) * self.multiple_of) - w
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        with torch.inference_mode():
            y = self.module(x)
        s = self.native_scale
        y = y[0, :, :h * s, :w * s].float().cpu().numpy()
        return np.ascontiguousarray(y.transpose(1, 2, 0))
