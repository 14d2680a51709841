"""Tiny inpainting models built in code, as diffusers' and spandrel's own tests
do (random weights, fixed seeds; nothing downloaded): a Stable Diffusion
inpainting pipeline saved with save_pretrained, and a LaMa from spandrel's
architecture. Built once per session; each test gets a fresh model store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from examples.make_tiny_inpaint import build_lama, build_sd_inpaint
from worker.inpaint import store_models


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return build_sd_inpaint(tmp_path_factory.mktemp("tiny") / "tiny-sd-inpaint")


@pytest.fixture(scope="session")
def tiny_lama(tmp_path_factory) -> Path:
    return build_lama(tmp_path_factory.mktemp("tiny") / "tiny-lama.safetensors")


@pytest.fixture(scope="session")
def _sd_store(tmp_path_factory, tiny_sd) -> Path:
    store = tmp_path_factory.mktemp("sd-store")
    store_models.add_model(store, tiny_sd, "sd-inpaint", licence="test", source="built by the test")
    return store


@pytest.fixture
def sd_store(_sd_store, tmp_path) -> Path:
    """A fresh store holding the tiny pipeline as ``sd-inpaint`` (a copy: tests may alter it)."""
    store = tmp_path / "store"
    shutil.copytree(_sd_store, store)
    return store
