"""Choosing the upscaler: photos vs illustrations/line art, the forensic mode,
the device; and the whole path through `retouch run` (decision recorded,
alpha and 16-bit depth kept)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import skimage.data

from worker.pipeline.plan import Plan
from worker.pipeline.select import ILLUSTRATION_MODEL, PHOTO_MODEL, ROUTE_MODELS, choose_upscale
from worker import upscale
from worker.degrade import jpeg
from worker.upscale.classify import classify_content


def _rgb(a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    a = a[..., :3].astype(np.float32)
    return a / 255.0 if a.max() > 1 else a


def _cartoon(seed: int) -> np.ndarray:
    """Flat-colour shapes with black outlines (anti-aliased), like a drawing."""
    rng = np.random.default_rng(seed)
    img = np.full((300, 400, 3), rng.integers(150, 255, 3), np.uint8)
    for _ in range(12):
        centre = tuple(int(v) for v in rng.integers(0, 400, 2))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(img, centre, int(rng.integers(10, 80)), colour, -1, cv2.LINE_AA)
        cv2.circle(img, centre, int(rng.integers(10, 80)), (0, 0, 0), 3, cv2.LINE_AA)
    return img.astype(np.float32) / 255.0


ILLUSTRATIONS = {"logo": lambda: _rgb(skimage.data.logo()), "horse": lambda: _rgb(skimage.data.horse() * 1.0),
                 **{f"cartoon{s}": (lambda s=s: _cartoon(s)) for s in range(3)}}
MORE_PHOTOS = {n: (lambda n=n: _rgb(getattr(skimage.data, n)())) for n in
               ("camera", "moon", "brick", "retina", "immunohistochemistry", "coffee", "rocket")}


@pytest.mark.parametrize("compressed", [False, True])
def test_photos_and_illustrations_are_told_apart(photo, photo_names, compressed):
    prep = (lambda a: jpeg(a, 30)) if compressed else (lambda a: a)
    for name in photo_names:
        assert classify_content(prep(photo(name)))[0] == "photo", name
    for name, load in MORE_PHOTOS.items():
        assert classify_content(prep(load()))[0] == "photo", name
    for name, load in ILLUSTRATIONS.items():
        label, features = classify_content(prep(load()))
        assert label == "illustration", (name, features)


def test_auto_picks_a_model_per_content_and_says_why(photo):
    assert {PHOTO_MODEL, ILLUSTRATION_MODEL} <= set(upscale.names())
    d = choose_upscale(Plan(ops=["upscale"]), photo("chelsea"))
    assert (d.variant, d.rule) == ("realesrgan-x4plus", "photo-content")
    assert "flat pixels" in d.reason and d.inputs["content"] == "photo" and "flat" in d.inputs
    d = choose_upscale(Plan(ops=["upscale"]), _cartoon(1))
    # the model per rule is data, chosen on the upscale benchmark (select.ROUTE_MODELS)
    assert (d.variant, d.rule) == (ROUTE_MODELS["illustration-content"][1], "illustration-content")
    forensic = choose_upscale(Plan(ops=["upscale"], no_hallucination=True), photo("chelsea"))
    assert (forensic.variant, forensic.rule) == ("lanczos", "forensic")
    assert not upscale.variant_info("lanczos").learned and upscale.variant_info(PHOTO_MODEL).learned


def test_devices_resolve():
    import torch

    from worker.device import DeviceError, choose_dtype, free_memory, resolve_device

    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="'cuda:7'"):
        if torch.cuda.device_count() > 7:
            pytest.skip("a machine with 8 GPUs")
        resolve_device("cuda:7")
    with pytest.raises(DeviceError, match="'gpu' is not one of"):
        resolve_device("gpu")
    assert choose_dtype("cpu", True) == torch.float32  # no fp16 convolutions on the CPU
    assert choose_dtype("cpu", "auto") == torch.float32
    with pytest.raises(DeviceError, match="'fp8'"):
        choose_dtype("cuda:0", "fp8")
    assert free_memory("cpu") > 100 * 2**20


def test_retouch_run_upscales_with_a_learned_model_keeping_alpha_and_16_bit(tmp_path, realesrgan_store, photo,
                                                                            monkeypatch):
    from orchestration.cli import main
    from worker.io import read_image

    monkeypatch.setenv("RETOUCH_MODEL_DIR", str(realesrgan_store))
    src = photo("rocket")[100:140, 100:148]
    rgba = np.dstack([src, np.linspace(0, 1, 48, dtype=np.float32)[None, :].repeat(40, 0)])
    deep = np.round(rgba * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), cv2.cvtColor(deep, cv2.COLOR_RGBA2BGRA))
    assert main(["run", str(tmp_path / "deep.png"), "--out", str(tmp_path / "out"), "--ops", "upscale",
                 "--scale", "2", "--upscale", "auto", "--device", "cpu", "--no-progress"]) == 0
    record = json.loads((tmp_path / "out" / "deep.png.json").read_text())
    decision = record["decisions"][0]
    assert decision["variant"] == "realesrgan-x4plus" and decision["rule"] == "photo-content"
    assert decision["reason"].startswith("photo content")
    out = cv2.imread(str(tmp_path / "out" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (80, 96, 4)
    alpha = out[..., 3].astype(np.float32) / 65535
    assert np.abs(alpha[:, 4:-4].mean(axis=0) - np.linspace(0, 1, 96)[4:-4]).max() < 0.03
    # 16-bit levels survive: more distinct values than 8 bits could hold in the colour.
    assert len(np.unique(out[..., :3])) > 256
