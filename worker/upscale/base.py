"""What every upscaler shares: the protocol, the options a factory receives,
the registry entry, and the exact output size.

An upscaler maps float32 HxWx3 RGB in [0, 1] to float32 RGB in [0, 1] at
``scale`` times the size (rounded to whole pixels). Alpha never goes through a
learned model: :func:`upscale_alpha` resizes it separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import cv2
import numpy as np

from worker.models.store import default_model_dir


class Upscaler(Protocol):
    name: str

    def upscale(self, rgb: np.ndarray, scale: float) -> np.ndarray: ...


@dataclass(frozen=True)
class UpscaleOptions:
    """What a factory may need: the device ("cpu", "cuda:0"), the tile size
    (0 = choose from free memory), fp16 and the model store directory (None:
    the default store)."""

    device: str = "cpu"
    tile: int = 0
    half: bool = False
    model_dir: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def store_dir(self) -> str:
        return self.model_dir or default_model_dir()


@dataclass(frozen=True)
class VariantInfo:
    name: str
    learned: bool          # learned models may invent detail; forensic runs avoid them
    description: str
    factory: Callable[[UpscaleOptions], Upscaler]


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The output (width, height) for a scale factor."""
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an alpha plane (float32 HxW) to (width, height) with Lanczos, clipped."""
    return np.clip(cv2.resize(alpha, size, interpolation=cv2.INTER_LANCZOS4), 0.0, 1.0)
