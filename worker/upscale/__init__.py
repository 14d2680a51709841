"""Upscaler variants, listed in one registry.

An upscaler maps float32 HxWx3 RGB in [0, 1] to float32 RGB in [0, 1] at
``scale`` times the size (rounded to whole pixels). Alpha never goes through a
learned model: :func:`upscale_alpha` resizes it separately.

Variants register a factory with :func:`register`; learned families (see
``worker.upscale.realesrgan`` and bring-your-own models from the model store)
add themselves to the same registry, so ``--upscale NAME`` and the model
selector see one list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np


class Upscaler(Protocol):
    name: str

    def upscale(self, rgb: np.ndarray, scale: float) -> np.ndarray: ...


@dataclass(frozen=True)
class UpscaleOptions:
    """What a factory may need: the device ("cpu", "cuda:0"), the tile size
    (0 = choose from free memory), fp16 and the model store directory."""

    device: str = "cpu"
    tile: int = 0
    half: bool = False
    model_dir: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class VariantInfo:
    name: str
    learned: bool          # learned models may invent detail; forensic runs avoid them
    description: str
    factory: Callable[[UpscaleOptions], Upscaler]


class UnknownVariantError(KeyError):
    """No upscaler of that name is registered or in the model store."""

    def __str__(self) -> str:
        return str(self.args[0])


_REGISTRY: dict[str, VariantInfo] = {}
# Resolvers look up names that are not registered statically (e.g. models that a
# user dropped into the model store). Each returns a VariantInfo or None.
_RESOLVERS: list[Callable[[str, UpscaleOptions], VariantInfo | None]] = []


def register(name: str, factory: Callable[[UpscaleOptions], Upscaler], *, learned: bool, description: str) -> None:
    _REGISTRY[name] = VariantInfo(name, learned, description, factory)


def add_resolver(resolver: Callable[[str, UpscaleOptions], VariantInfo | None]) -> None:
    _RESOLVERS.append(resolver)


def variant_info(name: str, options: UpscaleOptions | None = None) -> VariantInfo:
    _load_families()
    options = options or UpscaleOptions()
    if name in _REGISTRY:
        return _REGISTRY[name]
    for resolve in _RESOLVERS:
        info = resolve(name, options)
        if info is not None:
            return info
    raise UnknownVariantError(f"unknown upscale variant {name!r}; available: {', '.join(names())}")


def create(name: str, options: UpscaleOptions | None = None) -> Upscaler:
    """Instantiate a variant (loads weights for learned ones)."""
    options = options or UpscaleOptions()
    return variant_info(name, options).factory(options)


def names() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The output (width, height) for a scale factor."""
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an alpha plane (float32 HxW) to (width, height) with Lanczos, clipped."""
    import cv2

    return np.clip(cv2.resize(alpha, size, interpolation=cv2.INTER_LANCZOS4), 0.0, 1.0)


_loaded = False


def _load_families() -> None:
    # Families register on import; importing them here keeps one list without
    # import cycles and without loading any weights.
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in _FAMILIES:
        importlib.import_module(module)


_FAMILIES = ["worker.upscale.classical", "worker.upscale.realesrgan", "worker.upscale.spandrel_models"]
