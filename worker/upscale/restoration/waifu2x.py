"""waifu2x photo models (``models-upconv_7_photo``) on ncnn, from the model store.

The network is six valid 3x3 convs and a stride-2 deconvolution: an input
padded by 7 px (edge replicated, as waifu2x-ncnn-vulkan does) comes out at
exactly twice the unpadded size. Input and output are RGB in [0, 1].

- As an **upscaler** (``waifu2x-photo-x2``, ``waifu2x-photo-noise{0..3}-x2``):
  native x2; above x2 a second pass of the plain ``scale2.0x`` model gives x4
  (as waifu2x itself does), then a Lanczos resize to the exact size. The
  ``noiseN`` models also remove JPEG artefacts (level 0 light .. 3 strong).
- As a **deblocking pre-pass** (:class:`Waifu2xDeblocker`): the noise model at
  x2, then area-averaged back to the input size.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from worker.models.restoration import WAIFU2X_MODELS
from worker.models.store import open_store
from worker.tiling import Tiler
from worker.upscale.base import UpscaleOptions, VariantInfo, target_size
from worker.upscale.learned import MIN_TILE, NativeScaleUpscaler, auto_tile, lanczos_resize
from worker.upscale.ncnn_backend import NcnnNet

PREPAD = 7
BYTES_PER_PIXEL = 6_000   # upconv_7 holds up to 256 channels at the input resolution
PLAIN = "waifu2x-photo-x2"


def load_net(name: str, model_dir: str, threads: int | None = None) -> NcnnNet:
    """The ncnn net of store model ``name`` (files verified against the manifest)."""
    store = open_store(model_dir)
    entry = store.entry(name)
    files = {Path(f["file"]).suffix: store.path(name, f["file"]) for f in entry["files"]}
    return NcnnNet(files[".param"], files[".bin"], threads)


def run_x2(net: NcnnNet, tile: np.ndarray) -> np.ndarray:
    """One waifu2x pass: float32 HxWx3 in [0, 1] -> 2Hx2Wx3 (not clipped)."""
    padded = np.pad(tile, ((PREPAD, PREPAD), (PREPAD, PREPAD), (0, 0)), mode="edge")
    out = net.run(padded.transpose(2, 0, 1))
    return np.ascontiguousarray(out.transpose(1, 2, 0))


class Waifu2xUpscaler(NativeScaleUpscaler):
    """``upscale(rgb, scale)``: the noise model's x2 pass, a plain x2 pass when
    ``scale`` > 2, then Lanczos to ``round(W*scale) x round(H*scale)``."""

    def __init__(self, name: str, model_dir: str, tile: int = 0, threads: int | None = None):
        self.net = load_net(name, model_dir, threads)
        self.plain = self.net if name == PLAIN else load_net(PLAIN, model_dir, threads)
        tile = tile if tile > 0 else auto_tile("cpu", BYTES_PER_PIXEL)
        super().__init__(name, 2, tile)
        self.second = Tiler(tile, overlap=min(16, tile // 4), min_tile=MIN_TILE)
        self.device = "cpu"

    def _run_tile(self, tile: np.ndarray) -> np.ndarray:
        return run_x2(self.net, tile)

    def upscale(self, rgb: np.ndarray, scale: float) -> np.ndarray:
        size = target_size(rgb.shape[1], rgb.shape[0], scale)
        with self._lock:
            out = self.tiler.run(np.ascontiguousarray(rgb, np.float32), self._run_tile, 2)
            if scale > 2:
                out = self.second.run(np.clip(out, 0.0, 1.0), lambda t: run_x2(self.plain, t), 2)
        out = lanczos_resize(out, size)
        return np.clip(out, 0.0, 1.0, out=out)


class Waifu2xDeblocker:
    """A JPEG-artefact pre-pass at the input size: ``restore(rgb) -> rgb``."""

    kind = "deblock"

    def __init__(self, name: str, model_dir: str, tile: int = 0, threads: int | None = None):
        self.name = name
        self.net = load_net(name, model_dir, threads)
        tile = tile if tile > 0 else auto_tile("cpu", BYTES_PER_PIXEL)
        self.tiler = Tiler(tile, overlap=min(16, tile // 4), min_tile=MIN_TILE)
        self.device = "cpu"

    def restore(self, rgb: np.ndarray, strength: float | None = None) -> np.ndarray:
        h, w = rgb.shape[:2]
        big = self.tiler.run(np.ascontiguousarray(rgb, np.float32), lambda t: run_x2(self.net, t), 2)
        return np.clip(cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA), 0.0, 1.0)


def variants() -> list[VariantInfo]:
    """One upscale variant per waifu2x photo model in the store."""
    def factory(name):
        return lambda options: Waifu2xUpscaler(name, options.store_dir, options.tile, options.extra.get("threads"))

    return [VariantInfo(m.name, True, f"waifu2x upconv_7 photo x2"
                        + (f", JPEG-artefact reduction {m.noise}" if m.noise >= 0 else "") + " [ncnn, CPU]",
                        factory(m.name)) for m in WAIFU2X_MODELS]


def deblocker(level: int, options: UpscaleOptions) -> Waifu2xDeblocker:
    """The deblocking pre-pass of strength ``level`` (0..3)."""
    return Waifu2xDeblocker(f"waifu2x-photo-noise{level}-x2", options.store_dir, options.tile,
                            options.extra.get("threads"))
