"""FFDNet colour denoising from the model store, on the CPU or CUDA (fp16).

``restore(rgb, sigma)``: float32 HxWx3 in [0, 1] and the noise sigma in 8-bit
units (the measured one, :func:`worker.upscale.features.noise_sigma`) ->
the denoised image, same size, clipped to [0, 1]. Tiled like the upscalers.
"""

from __future__ import annotations

import importlib
import logging

import numpy as np

from worker.device import choose_dtype, is_out_of_memory, release_cached, resolve_device
from worker.models.restoration import FFDNET_NAME
from worker.models.store import open_store
from worker.tiling import Tiler
from worker.upscale.base import UpscaleOptions
from worker.upscale.learned import MIN_TILE, OVERLAP, auto_tile, precision

log = logging.getLogger(__name__)

NETWORK = "worker.upscale.restoration.ffdnet_net"   # imports torch: loaded by name
BYTES_PER_PIXEL = 3_000


class FFDNetDenoiser:
    kind = "denoise"

    def __init__(self, options: UpscaleOptions):
        import torch
        from safetensors.torch import load_file

        store = open_store(options.store_dir)
        path = store.path(FFDNET_NAME)
        self.name = "ffdnet"
        self.device = resolve_device(options.device)
        self.dtype = choose_dtype(self.device, precision(options))
        net = importlib.import_module(NETWORK).from_state_dict(load_file(str(path)))
        self.module = net.eval().to(device=self.device, dtype=self.dtype)
        tile = options.tile or auto_tile(self.device, BYTES_PER_PIXEL, torch.tensor([], dtype=self.dtype).element_size())
        self.tiler = Tiler(tile, overlap=min(OVERLAP, tile // 4), min_tile=MIN_TILE, is_oom=is_out_of_memory,
                           on_oom=lambda _t: release_cached(self.device))
        log.info("loaded FFDNet from %s on %s as %s", path, self.device, self.dtype)

    def restore(self, rgb: np.ndarray, strength: float | None = None) -> np.ndarray:
        """``strength``: the noise sigma in 8-bit units (None or <= 0: returned as is)."""
        if not strength or strength <= 0:
            return np.asarray(rgb, np.float32)
        import torch

        sigma = torch.full((1, 1, 1, 1), float(strength) / 255.0, device=self.device, dtype=self.dtype)

        def run(tile: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))[None]
            with torch.inference_mode():
                y = self.module(x.to(device=self.device, dtype=self.dtype), sigma)
            return np.ascontiguousarray(y[0].float().cpu().numpy().transpose(1, 2, 0))

        out = self.tiler.run(np.ascontiguousarray(rgb, np.float32), run, 1)
        return np.clip(out, 0.0, 1.0)
