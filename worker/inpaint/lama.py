"""LaMa (and MAT, where spandrel's extra architectures are installed):
inpainting networks that spandrel recognises, loaded from the user's own
``.safetensors`` / ``.pth`` files without unpickling code.

They are fully convolutional: the crop around the mask runs at its own size
(rounded to the model's multiple), scaled down to :data:`LIMIT` px on its
longest side as IOPaint does, with :data:`PADDING` px of context. Out of
memory, a smaller crop and working size are tried (:data:`ATTEMPTS`).
Deterministic: the seed does not change a LaMa fill.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from worker.device import choose_dtype
from worker.files import atomic_copy
from worker.inpaint.base import FillReport, InpaintParams, LoadOptions, UnsupportedInpainterError
from worker.inpaint.crop import Attempt, fill_on_crop
from worker.models import weights
from worker.models.manifest import Manifest, sha256_file

log = logging.getLogger(__name__)

PADDING = 128      # px of context around the mask (IOPaint's crop margin)
LIMIT = 512        # longest side the network runs at (LaMa was trained at 256-512)
ATTEMPTS = [Attempt(PADDING, limit=LIMIT), Attempt(PADDING // 2, limit=384), Attempt(PADDING // 4, limit=256)]


def load_descriptor(path: str | Path):
    """spandrel's MaskedImageModelDescriptor for an inpainting model file (CPU).

    Raises UnsupportedInpainterError naming the file if spandrel does not
    recognise it or it is not an RGB inpainting model."""
    from spandrel import MaskedImageModelDescriptor, ModelLoader, UnsupportedModelError, canonicalize_state_dict

    _install_extra_architectures()
    state = canonicalize_state_dict(weights.read_state_dict(path, UnsupportedInpainterError))
    try:
        descriptor = ModelLoader(device="cpu").load_from_state_dict(state)
    except UnsupportedModelError:
        raise UnsupportedInpainterError(f"{path}: spandrel does not recognise this architecture") from None
    except (RuntimeError, KeyError, ValueError) as exc:  # recognised, but the weights do not fit
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UnsupportedInpainterError(f"{path}: spandrel could not build the model ({first})") from None
    if not isinstance(descriptor, MaskedImageModelDescriptor):
        raise UnsupportedInpainterError(f"{path}: {descriptor.architecture.name} is a {descriptor.purpose} model, "
                                        "not an inpainting model")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UnsupportedInpainterError(f"{path}: expects {descriptor.input_channels} channels, RGB models only")
    return descriptor


def _install_extra_architectures() -> None:
    """MAT lives in spandrel_extra_arches (non-commercial licences), which is not
    a dependency; when a team installs it, its architectures are recognised too."""
    try:
        import spandrel_extra_arches
    except ImportError:
        return
    try:
        spandrel_extra_arches.install(ignore_duplicates=True)
    except TypeError:  # older releases have no ignore_duplicates
        spandrel_extra_arches.install()


def is_model_file(path: str | Path) -> bool:
    """Whether ``path`` is a weight file spandrel loads as an inpainting model."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in weights.SUFFIXES:
        return False
    try:
        load_descriptor(path)
    except UnsupportedInpainterError:
        return False
    return True


def add_model(model_dir: str | Path, file: str | Path, name: str | None = None, licence: str = "unknown",
              source: str | None = None) -> dict:
    """Copy ``file`` into the store as ``<name><suffix>``, check spandrel loads it
    as an inpainting model, and record it in the manifest (``task: inpaint``).
    Returns the manifest entry (with ``path``). Raises UnsupportedInpainterError
    (nothing written) otherwise."""
    file = Path(file)
    name = name or file.stem
    descriptor = load_descriptor(file)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    dest = model_dir / f"{name}{file.suffix.lower()}"
    if dest.resolve() != file.resolve():
        atomic_copy(file, dest)
    arch = descriptor.architecture.name
    entry = {"name": name, "task": "inpaint", "family": "lama", "architecture": arch, "scale": None,
             "backend": "spandrel", "file": dest.name, "sha256": sha256_file(dest), "licence": licence,
             "source": source or f"user file {file}", "description": f"{arch} inpainting (spandrel)"}
    manifest = Manifest.load(model_dir)
    manifest.put(entry)
    manifest.save()
    return {**entry, "path": str(dest)}


class LamaInpainter:
    """A spandrel inpainting network on one device (fp32 on the CPU; on CUDA
    fp16 where the architecture supports it, else bf16: LaMa's FFTs overflow in fp16)."""

    family = "lama"

    def __init__(self, name: str, descriptor, device: str):
        import torch

        self.name, self.device = name, device
        self.dtype = choose_dtype(device, True, supports_half=descriptor.supports_half,
                                  supports_bf16=descriptor.supports_bfloat16)
        self.descriptor = descriptor.to(torch.device(device)).to(self.dtype).eval()
        req = descriptor.size_requirements
        self.multiple = max(8, req.multiple_of)
        self.aspect = 1.0 if req.square else None

    def _infer(self, crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        image = torch.from_numpy(crop).permute(2, 0, 1)[None].to(self.device, self.dtype)
        holes = torch.from_numpy(mask.astype(np.float32))[None, None].to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.descriptor(image, holes)
        return out[0].permute(1, 2, 0).float().cpu().numpy()

    def fill(self, rgb: np.ndarray, mask: np.ndarray, params: InpaintParams) -> tuple[np.ndarray, FillReport]:
        """See :class:`worker.inpaint.base.ModelInpainter`."""
        return fill_on_crop(rgb, mask, ATTEMPTS, self._infer, aspect=self.aspect, device=self.device,
                            name=self.name, multiple=self.multiple)


def load(name: str, path: str | Path, options: LoadOptions) -> LamaInpainter:
    """The network in ``path`` on ``options.device``."""
    model = LamaInpainter(name, load_descriptor(path), options.device)
    log.info("loaded %s (%s, spandrel) from %s on %s", name, model.descriptor.architecture.name, path, options.device)
    return model
