"""Bring-your-own upscalers: any ``.safetensors`` / ``.pth`` super-resolution
model that spandrel recognises (ESRGAN, Real-ESRGAN compact, SwinIR, HAT,
DAT, ...), placed in the model store, is an upscale variant by its name.

- Register one: :func:`add_model` (``retouch models add FILE --name NAME``)
  copies it into the store, detects its architecture and scale with spandrel
  and records it in the manifest with its sha256, licence and source.
- A weight file simply dropped into the store directory also works, by its
  file stem, but has no checksum to verify (a warning is logged).

Loading never unpickles arbitrary objects: safetensors files are read with
``safetensors``; ``.pth``/``.pt``/``.ckpt`` with ``torch.load(weights_only=True)``
(tensors and plain containers only; TorchScript is refused).
"""

from __future__ import annotations

import logging
from pathlib import Path

from worker.device import choose_dtype, resolve_device
from worker.errors import RetouchError
from worker.files import atomic_copy
from worker.models import weights
from worker.models.manifest import Manifest, sha256_file
from worker.models.store import ModelNotFound, open_store
from worker.upscale.base import UpscaleOptions, VariantInfo
from worker.upscale.learned import BYTES_PER_PIXEL, TorchUpscaler, precision

log = logging.getLogger(__name__)

SUFFIXES = weights.SUFFIXES


class UnsupportedUpscalerError(RetouchError):
    """The file is not a super-resolution model spandrel can load."""


def read_state_dict(path: str | Path) -> dict:
    """A canonical state dict from ``path`` without running pickled code.

    Raises UnsupportedUpscalerError naming the file for unknown suffixes or
    files that need full unpickling."""
    return _canonical(weights.read_state_dict(path, UnsupportedUpscalerError))


def _canonical(state: dict) -> dict:
    from spandrel import canonicalize_state_dict

    return canonicalize_state_dict(state)


def load_descriptor(path: str | Path):
    """spandrel's ImageModelDescriptor for an SR model file (on the CPU).

    Raises UnsupportedUpscalerError naming the file if spandrel does not
    recognise it or it is not an RGB super-resolution model (scale >= 2)."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    state = read_state_dict(path)
    try:
        descriptor = ModelLoader(device="cpu").load_from_state_dict(state)
    except UnsupportedModelError:
        raise UnsupportedUpscalerError(f"{path}: spandrel does not recognise this architecture") from None
    except (RuntimeError, KeyError, ValueError) as exc:  # recognised, but the weights do not fit
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UnsupportedUpscalerError(f"{path}: spandrel could not build the model ({first})") from None
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.scale < 2:
        raise UnsupportedUpscalerError(f"{path}: {descriptor.architecture.name} is a {descriptor.purpose} model "
                                       f"(scale {descriptor.scale}), not an upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UnsupportedUpscalerError(f"{path}: expects {descriptor.input_channels} channels, RGB models only")
    return descriptor


def load_upscaler(name: str, path: str | Path, options: UpscaleOptions):
    """A TorchUpscaler running the spandrel model in ``path`` on ``options.device``."""
    descriptor = load_descriptor(path)
    device = resolve_device(options.device)
    dtype = choose_dtype(device, precision(options),
                         supports_half=descriptor.supports_half, supports_bf16=descriptor.supports_bfloat16)
    req = descriptor.size_requirements
    arch = descriptor.architecture.name
    log.info("loaded %s (%s x%d, spandrel) from %s on %s", name, arch, descriptor.scale, path, device)
    return TorchUpscaler(name, descriptor.model, descriptor.scale, device=device, dtype=dtype, tile=options.tile,
                         bytes_per_pixel=BYTES_PER_PIXEL.get(arch, BYTES_PER_PIXEL["default"]),
                         multiple_of=req.multiple_of, minimum=req.minimum)


def add_model(model_dir: str | Path, file: str | Path, name: str | None = None, licence: str = "unknown",
              source: str | None = None) -> dict:
    """Copy ``file`` into the store as ``<name><suffix>``, check spandrel loads
    it, and record it in the manifest. Returns the manifest entry (with ``path``).

    Raises UnsupportedUpscalerError (nothing is written) if it is not a usable upscaler."""
    file = Path(file)
    name = name or file.stem
    descriptor = load_descriptor(file)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    dest = model_dir / f"{name}{file.suffix.lower()}"
    if dest.resolve() != file.resolve():
        atomic_copy(file, dest)
    entry = {"name": name, "task": "upscale", "architecture": descriptor.architecture.name,
             "scale": descriptor.scale, "backend": "spandrel", "file": dest.name, "sha256": sha256_file(dest),
             "licence": licence, "source": source or f"user file {file}",
             "description": f"{descriptor.architecture.name} x{descriptor.scale} (spandrel)"}
    manifest = Manifest.load(model_dir)
    manifest.put(entry)
    manifest.save()
    return {**entry, "path": str(dest)}


def resolve(name: str, options: UpscaleOptions) -> VariantInfo | None:
    """Registry resolver: a spandrel model of that name in the store, or None."""
    store = open_store(options.store_dir)
    try:
        entry = store.entry(name)
    except ModelNotFound:
        return None
    if entry.get("backend") != "spandrel" or entry.get("task", "upscale") != "upscale":
        return None

    def factory(opts: UpscaleOptions):
        return load_upscaler(name, open_store(opts.store_dir).path(name), opts)

    return VariantInfo(name, True, entry.get("description", f"user model {entry['file']}"), factory)

