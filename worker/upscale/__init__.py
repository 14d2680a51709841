"""Upscaler variants, listed in one registry.

The interpolators (``classical``), the Real-ESRGAN networks shipped as
weights in the model store (``realesrgan``), the waifu2x photo models
(``restoration.waifu2x``) and the models a user added to the
store (``spandrel_models``, found by name at run time) are one list, so
``--upscale NAME``, ``auto`` and ``retouch models list`` see the same names.
Contracts of the variants: :mod:`worker.upscale.base`.
"""

from __future__ import annotations

from typing import Callable

from worker.registry import Registry, UnknownVariantError
from worker.upscale import classical, realesrgan, spandrel_models
from worker.upscale.restoration import waifu2x
from worker.upscale.base import UpscaleOptions, Upscaler, VariantInfo, target_size, upscale_alpha

__all__ = ["Upscaler", "UpscaleOptions", "VariantInfo", "UnknownVariantError", "VARIANTS", "register",
           "variant_info", "create", "names", "target_size", "upscale_alpha"]

VARIANTS: Registry[VariantInfo] = Registry(
    "upscale variant", [(v.name, v) for v in classical.VARIANTS + realesrgan.variants() + waifu2x.variants()])
VARIANTS.add_resolver(spandrel_models.resolve)


def register(name: str, factory: Callable[[UpscaleOptions], Upscaler], *, learned: bool, description: str) -> None:
    """Add a variant at run time (tests, plugins)."""
    VARIANTS.add(name, VariantInfo(name, learned, description, factory))


def variant_info(name: str, options: UpscaleOptions | None = None) -> VariantInfo:
    """Raises UnknownVariantError listing the available variants."""
    return VARIANTS.get(name, options or UpscaleOptions())


def create(name: str, options: UpscaleOptions | None = None) -> Upscaler:
    """Instantiate a variant (loads weights for learned ones)."""
    options = options or UpscaleOptions()
    return variant_info(name, options).factory(options)


def names() -> list[str]:
    return VARIANTS.names()
