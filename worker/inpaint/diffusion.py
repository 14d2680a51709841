"""Diffusion inpainting with the user's own diffusers pipeline, loaded offline.

A team brings a pipeline folder in diffusers' ``save_pretrained`` layout
(``model_index.json`` plus one folder per component, weights as
``.safetensors``): an SD 1.5 / 2 inpainting checkpoint, an SDXL inpainting one,
or anything whose ``model_index.json`` names an ``...InpaintPipeline``.
``retouch models add FOLDER --name NAME`` copies it into the model store with
every file's sha256; loading verifies them and reads only local files
(``local_files_only=True``, ``use_safetensors=True``): nothing is downloaded
and nothing is unpickled.

The fill works on a crop around the mask (the bounding box plus
:data:`PADDING` px, widened to a square), resized to the model's native size
(UNet sample size x VAE scale factor: 512 for SD 1.5/2, 1024 for SDXL), as
diffusers' ``padding_mask_crop`` does; the result is resized back and pasted
into the masked pixels only. fp16 on CUDA, fp32 on the CPU. Out of memory, the
next :func:`attempts` entry (less padding, a smaller working size) is tried.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
import shutil
import tempfile
from pathlib import Path

import numpy as np

from worker.device import choose_dtype
from worker.inpaint.base import FillReport, InpaintParams, LoadOptions, UnsupportedInpainterError
from worker.inpaint.crop import Attempt, fill_on_crop
from worker.models.manifest import Manifest, sha256_file

log = logging.getLogger(__name__)

INDEX = "model_index.json"
PADDING = 128          # px of context around the mask (IOPaint's crop margin)
WEIGHTS = (".safetensors",)
UNSAFE = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def read_index(folder: str | Path) -> dict:
    """``model_index.json`` of a pipeline folder; raises UnsupportedInpainterError
    naming the folder if it is missing, unreadable or not an inpainting pipeline."""
    folder = Path(folder)
    path = folder / INDEX
    if not path.is_file():
        raise UnsupportedInpainterError(f"{folder}: not a diffusers pipeline folder (no {INDEX}); save it with "
                                        "pipeline.save_pretrained(folder)")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UnsupportedInpainterError(f"{path}: unreadable ({exc})") from None
    cls = index.get("_class_name", "") if isinstance(index, dict) else ""
    if "Inpaint" not in cls:
        raise UnsupportedInpainterError(f"{folder}: {cls or 'an unnamed pipeline'} is not an inpainting pipeline "
                                        f"({INDEX} must name an ...InpaintPipeline)")
    return index


def is_pipeline_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / INDEX).is_file()


# The first UNet convolution of a Stable Diffusion checkpoint in the original (LDM) single-file layout
SINGLE_FILE_KEY = "model.diffusion_model.input_blocks.0.0.weight"


def refuse_single_file(path: str | Path) -> None:
    """Raise UnsupportedInpainterError with the conversion to use if ``path`` is
    a single-file Stable Diffusion ``.safetensors`` checkpoint (read by its keys
    only). diffusers' ``from_single_file`` fetches the matching configs from the
    hub, which retouch never does."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() != ".safetensors":
        return
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    except Exception:  # not a readable safetensors file: the other loaders say why
        return
    if SINGLE_FILE_KEY in keys:
        raise UnsupportedInpainterError(
            f"{path}: a single-file Stable Diffusion checkpoint; loading one needs its configs from the hub, "
            "which retouch never fetches: convert it once where the configs are "
            "(StableDiffusionInpaintPipeline.from_single_file(path).save_pretrained(folder)) and add the folder")


def _weight_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]


def _check_weights(folder: Path, index: dict) -> str | None:
    """Every component with weights has them as .safetensors. Returns the
    weight variant to load ("fp16" when only fp16 files exist) or None."""
    variant = None
    for component, spec in index.items():
        sub = folder / component
        if component.startswith("_") or not isinstance(spec, list) or not sub.is_dir():
            continue
        files = [p.name for p in sub.iterdir() if p.is_file()]
        safe = [f for f in files if f.endswith(WEIGHTS)]
        unsafe = [f for f in files if f.endswith(UNSAFE)]
        if unsafe and not safe:
            raise UnsupportedInpainterError(
                f"{sub}: weights only as {', '.join(sorted(unsafe))} (pickle); retouch loads .safetensors only: "
                "re-save with pipeline.save_pretrained(folder, safe_serialization=True)")
        if safe and all(".fp16." in f for f in safe):
            variant = "fp16"
    return variant


def add_pipeline(model_dir: str | Path, folder: str | Path, name: str | None = None, licence: str = "unknown",
                 source: str | None = None) -> dict:
    """Check ``folder`` loads offline as an inpainting pipeline, copy it into the
    store as ``<name>/`` and record it (every file with its sha256). Returns
    the manifest entry (with ``path``). Raises UnsupportedInpainterError
    (nothing written) if it is not one."""
    folder = Path(folder)
    name = name or folder.name
    index = read_index(folder)
    variant = _check_weights(folder, index)
    _load_pipeline(folder, "cpu", index, variant, validate=True)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    dest = model_dir / name
    if dest.resolve() != folder.resolve():
        # copy next to the destination, then swap it in: a reader never sees half a folder
        staging = Path(tempfile.mkdtemp(prefix=".retouch-", dir=model_dir))
        shutil.copytree(folder, staging / "copy", ignore=shutil.ignore_patterns(".*"))
        if dest.exists():
            shutil.rmtree(dest)
        (staging / "copy").rename(dest)
        staging.rmdir()
    files = [{"file": str(p.relative_to(model_dir)), "sha256": sha256_file(p)} for p in _weight_files(dest)]
    primary = f"{name}/{INDEX}"
    entry = {"name": name, "task": "inpaint", "family": "diffusion", "architecture": index["_class_name"],
             "scale": None, "backend": "diffusers", "file": primary,
             "sha256": next(f["sha256"] for f in files if f["file"] == primary), "files": files,
             "variant": variant, "licence": licence, "source": source or f"user folder {folder}",
             "description": f"{index['_class_name']} (diffusers {index.get('_diffusers_version', '?')})"}
    manifest = Manifest.load(model_dir)
    manifest.put(entry)
    manifest.save()
    return {**entry, "path": str(dest)}


def _load_pipeline(folder: Path, device: str, index: dict, variant: str | None, validate: bool = False):
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    # validating on the CPU only needs the weights to fit: fp16 halves the memory
    dtype = torch.float16 if validate else choose_dtype(device, "fp16")
    extra = {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in index else {}
    try:
        with warnings.catch_warnings():
            # newer diffusers rename torch_dtype to dtype; the old name still works and the floor version needs it
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = DiffusionPipeline.from_pretrained(
                str(folder), torch_dtype=dtype, local_files_only=True, use_safetensors=True, variant=variant,
                low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None, **extra)
    except (OSError, ValueError, EnvironmentError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise UnsupportedInpainterError(f"{folder}: diffusers cannot load it offline ({first})") from None
    if validate:
        return pipe
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def native_size(pipe) -> int:
    """The square size a pipeline was trained at: UNet sample size x VAE scale factor."""
    sample = pipe.unet.config.sample_size
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    return int(sample) * int(pipe.vae_scale_factor)


def attempts(native: int) -> list[Attempt]:
    """Full padding at the native size; then less context at 3/4 and 1/2 of it
    (multiples of 8, as the VAE needs)."""
    def snap(v: float) -> int:
        return max(8, int(v) // 8 * 8)
    return [Attempt(PADDING, (native, native)), Attempt(PADDING // 2, (snap(native * 0.75),) * 2),
            Attempt(PADDING // 4, (snap(native * 0.5),) * 2)]


class DiffusionInpainter:
    """One diffusers inpainting pipeline, loaded once, kept on its device."""

    family = "diffusion"

    def __init__(self, name: str, pipe, device: str):
        self.name, self.pipe, self.device = name, pipe, device
        self.native = native_size(pipe)

    def _call(self, params: InpaintParams):
        import torch

        def infer(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
            h, w = mask.shape
            # the noise is drawn on the CPU: the same seed gives the same latents on any device
            generator = torch.Generator(device="cpu").manual_seed(params.seed)
            result = self.pipe(prompt=params.prompt, negative_prompt=params.negative_prompt or None,
                               image=crop[None], mask_image=mask.astype(np.float32)[None, :, :, None],
                               height=h, width=w, strength=params.strength, num_inference_steps=params.steps,
                               guidance_scale=params.guidance, generator=generator, output_type="np")
            return np.asarray(result.images[0], np.float32)
        return infer

    def fill(self, rgb: np.ndarray, mask: np.ndarray, params: InpaintParams) -> tuple[np.ndarray, FillReport]:
        """See :class:`worker.inpaint.base.ModelInpainter`."""
        return fill_on_crop(rgb, mask, attempts(self.native), self._call(params), aspect=1.0, device=self.device,
                            name=self.name)


def load(name: str, folder: str | Path, options: LoadOptions, variant: str | None = None) -> DiffusionInpainter:
    """The pipeline in ``folder`` (already verified) on ``options.device``."""
    folder = Path(folder)
    model = DiffusionInpainter(name, _load_pipeline(folder, options.device, read_index(folder), variant),
                               options.device)
    log.info("loaded %s (%s, native %d px) from %s on %s", name, type(model.pipe).__name__, model.native, folder,
             options.device)
    return model
