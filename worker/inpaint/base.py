"""What the learned inpainters share: their parameters, how they are built,
and the one out-of-memory error the pipeline falls back from.

A learned inpainter (a diffusers pipeline, a LaMa network) is built once per
process by a factory from :class:`LoadOptions` and then fills one image at a
time through :meth:`ModelInpainter.fill`. It works on a crop around the mask
(:mod:`worker.inpaint.crop`) and returns the whole image with only the masked
pixels replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from worker.errors import RetouchError


@dataclass(frozen=True)
class InpaintParams:
    """Per-image settings of a learned fill.

    ``prompt`` / ``negative_prompt``: text conditioning (diffusion only);
    ``strength`` in (0, 1]: how far the masked area is re-noised (1 = ignore
    what is under the mask; the request payload's ``scale``); ``steps``:
    denoising steps; ``guidance``: classifier-free guidance scale; ``seed``:
    the generator seed (same seed, same output on the same device).
    """

    seed: int = 0
    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 1.0
    steps: int = 30
    guidance: float = 7.5


@dataclass(frozen=True)
class LoadOptions:
    """Where a factory puts the model: ``device`` ("cpu", "cuda:0"; already
    resolved) and the model store directory."""

    device: str = "cpu"
    model_dir: str | None = None


@dataclass
class FillReport:
    """What one fill did: the crop box (y0, y1, x0, x1) in the image, the size
    the model ran at (width, height), and the attempts that ran out of memory."""

    crop: tuple[int, int, int, int]
    model_size: tuple[int, int]
    out_of_memory: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"crop": list(self.crop), "model_size": list(self.model_size), "out_of_memory": self.out_of_memory}


class ModelInpainter(Protocol):
    name: str
    family: str          # "diffusion" | "lama"
    device: str

    def fill(self, rgb: np.ndarray, mask: np.ndarray, params: InpaintParams) -> tuple[np.ndarray, FillReport]:
        """float32 HxWx3 in [0, 1] and bool HxW (True = fill) -> float32 HxWx3
        equal to ``rgb`` outside ``mask``, and the report. Raises
        InpaintOutOfMemory when even the smallest crop does not fit."""


class InpaintOutOfMemory(RetouchError):
    """A learned inpainter ran out of memory at every crop size it tried; the
    inpaint step then falls back to the next variant."""


class UnsupportedInpainterError(RetouchError):
    """A file or folder that is not an inpainting model retouch can load offline."""
