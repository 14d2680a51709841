"""Interpolating upscalers: they invent nothing, so forensic runs use them."""

from __future__ import annotations

import cv2
import numpy as np

from worker.upscale.base import UpscaleOptions, VariantInfo, target_size


class Interpolator:
    def __init__(self, name: str, flag: int):
        self.name = name
        self._flag = flag

    def upscale(self, rgb: np.ndarray, scale: float) -> np.ndarray:
        size = target_size(rgb.shape[1], rgb.shape[0], scale)
        return np.clip(cv2.resize(rgb, size, interpolation=self._flag), 0.0, 1.0)


def _factory(name: str, flag: int):
    def make(options: UpscaleOptions) -> Interpolator:
        return Interpolator(name, flag)

    return make


VARIANTS = [
    VariantInfo("lanczos", False, "Lanczos (8x8) interpolation; invents no detail",
                _factory("lanczos", cv2.INTER_LANCZOS4)),
    VariantInfo("bicubic", False, "bicubic interpolation; invents no detail", _factory("bicubic", cv2.INTER_CUBIC)),
]
