"""Inpainting variants, listed in one registry, and the region-cropping wrapper.

An inpainter fills ``mask`` (bool HxW, True = fill) in ``rgb`` (float32 HxWx3 in
[0, 1]) and returns float32 HxWx3; pixels outside the mask are returned
unchanged. Given the same seed, every variant returns the same output.

Two kinds of variants share the registry:

- built-in functions (telea, ns, patchmatch): :func:`fill` runs them on the
  mask's bounding box plus a margin and fills an alpha plane with the same mask;
- learned models the user added to the model store (a diffusers pipeline, a
  LaMa file; :mod:`worker.inpaint.store_models`), found by name at run time:
  their ``factory`` builds a :class:`ModelInpainter` once per process (the
  pipeline's ``ModelCache``) and :func:`fill_with_model` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from worker.inpaint import opencv, patchmatch, store_models
from worker.inpaint.base import (FillReport, InpaintOutOfMemory, InpaintParams, LoadOptions, ModelInpainter,
                                 UnsupportedInpainterError)
from worker.registry import Registry, UnknownVariantError

Inpainter = Callable[[np.ndarray, np.ndarray, int], np.ndarray]

__all__ = ["Inpainter", "VariantInfo", "UnknownVariantError", "VARIANTS", "register", "names", "get",
           "bounding_box", "fill", "fill_with_model", "InpaintParams", "LoadOptions", "ModelInpainter",
           "FillReport", "InpaintOutOfMemory", "UnsupportedInpainterError", "installed"]


@dataclass(frozen=True)
class VariantInfo:
    """``fn``: a built-in inpainter; ``factory``: builds a learned one (store
    models); ``family``: classical, patch, diffusion or lama."""

    name: str
    description: str
    fn: Inpainter | None = None
    family: str = "classical"
    factory: Callable[[LoadOptions], ModelInpainter] | None = None

    @property
    def learned(self) -> bool:
        return self.factory is not None


VARIANTS: Registry[VariantInfo] = Registry("inpaint variant", [
    (v.name, v) for v in (
        VariantInfo("telea", "OpenCV fast-marching (Telea); thin strokes, small areas", opencv.telea),
        VariantInfo("ns", "OpenCV Navier-Stokes; smooth regions, small areas", opencv.navier_stokes),
        VariantInfo("patchmatch", "PatchMatch texture synthesis; larger or textured regions", patchmatch.inpaint,
                    family="patch"),
    )
])


def _resolve_store_model(name: str, model_dir: str | None = None) -> VariantInfo | None:
    entry = store_models.lookup(name, model_dir)
    if entry is None:
        return None
    return VariantInfo(name, entry.get("description", entry["file"]), family=entry["family"],
                       factory=store_models.factory(name, entry))


VARIANTS.add_resolver(_resolve_store_model)


def register(name: str, fn: Inpainter, description: str) -> None:
    """Add a variant at run time (tests, plugins)."""
    VARIANTS.add(name, VariantInfo(name, description, fn))


def names(model_dir: str | None = None) -> list[str]:
    """Built-in variants, then the inpainting models in the store at ``model_dir``."""
    return VARIANTS.names() + [e["name"] for e in store_models.installed(model_dir)]


def installed(model_dir: str | None = None) -> list[dict]:
    """The learned inpainting models in the store (see ``store_models.installed``)."""
    return store_models.installed(model_dir)


def get(name: str, model_dir: str | None = None) -> VariantInfo:
    """The variant called ``name``: built in, or a model in the store at
    ``model_dir`` (None: the default store). Raises UnknownVariantError listing
    what is available and saying how to add a model of that name."""
    try:
        return VARIANTS.get(name, model_dir)
    except UnknownVariantError:
        raise UnknownVariantError(
            f"unknown inpaint variant {name!r} (not built in, not in the model store); available: "
            f"{', '.join(names(model_dir))}; to add your own weights: retouch models add PATH --name {name} "
            "(a diffusers inpainting pipeline folder, or a LaMa .safetensors/.pth)") from None


def bounding_box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the True pixels grown by ``margin``, clipped; None if empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    h, w = mask.shape
    return (max(0, ys.min() - margin), min(h, ys.max() + 1 + margin),
            max(0, xs.min() - margin), min(w, xs.max() + 1 + margin))


def fill(rgb: np.ndarray, mask: np.ndarray, variant: str, seed: int = 0, margin: int = 32,
         alpha: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill ``mask`` in ``rgb`` (and ``alpha``) with ``variant``, working on the
    mask's bounding box plus ``margin`` pixels. Returns new arrays; inputs are
    not modified."""
    info = get(variant)
    if info.fn is None:
        raise UnknownVariantError(f"inpaint variant {variant!r} is a learned model: run it with fill_with_model")
    out = rgb.copy()
    out_alpha = None if alpha is None else alpha.copy()
    box = bounding_box(mask, margin)
    if box is None:
        return out, out_alpha
    y0, y1, x0, x1 = box
    sub_mask = mask[y0:y1, x0:x1]
    filled = info.fn(np.ascontiguousarray(rgb[y0:y1, x0:x1]), sub_mask, seed)
    out[y0:y1, x0:x1][sub_mask] = filled[sub_mask]
    if alpha is not None:
        sub_alpha = opencv.telea_plane(np.ascontiguousarray(alpha[y0:y1, x0:x1]), sub_mask)
        out_alpha[y0:y1, x0:x1][sub_mask] = sub_alpha[sub_mask]
    return out, out_alpha


def fill_with_model(rgb: np.ndarray, mask: np.ndarray, model: ModelInpainter, params: InpaintParams,
                    alpha: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, FillReport]:
    """Fill ``mask`` with a learned inpainter (it crops around the mask itself);
    an alpha plane is filled with fast marching on the same mask. Returns new
    arrays, equal to the inputs outside ``mask``, and the model's report.
    Raises InpaintOutOfMemory when the model fits at no crop size."""
    out, report = model.fill(rgb, mask, params)
    out_alpha = None
    if alpha is not None:
        out_alpha = alpha.copy()
        box = bounding_box(mask, 8)
        if box is not None:
            y0, y1, x0, x1 = box
            sub_mask = mask[y0:y1, x0:x1]
            sub_alpha = opencv.telea_plane(np.ascontiguousarray(alpha[y0:y1, x0:x1]), sub_mask)
            out_alpha[y0:y1, x0:x1][sub_mask] = sub_alpha[sub_mask]
    return out, out_alpha, report
