"""The diffusion variant with a tiny random SD inpainting pipeline (diffusers'
test recipe), offline on the CPU: store entries, loading, crop and paste,
unmasked pixels, seeds, prompts, out-of-memory fallbacks, metrics."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import skimage.data
import torch
from prometheus_client import CollectorRegistry

from monitoring.metrics import Metrics
from orchestration.local import restore
from worker import inpaint
from worker.inpaint import store_models
from worker.inpaint.base import UnsupportedInpainterError
from worker.io import decode
from worker.models.store import ModelChecksumError, ModelFileMissing
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan

FAST = dict(steps=2, guidance=7.5)


def _photo(size=128):
    return (skimage.data.astronaut()[:size * 2:2, :size * 2:2].astype(np.float32) / 255.0).copy()


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_add_records_every_file_with_its_checksum(sd_store):
    entry = store_models.lookup("sd-inpaint", str(sd_store))
    assert entry["task"] == "inpaint" and entry["family"] == "diffusion" and entry["backend"] == "diffusers"
    assert entry["architecture"] == "StableDiffusionInpaintPipeline" and entry["licence"] == "test"
    files = {f["file"] for f in entry["files"]}
    assert {"sd-inpaint/model_index.json", "sd-inpaint/unet/diffusion_pytorch_model.safetensors",
            "sd-inpaint/tokenizer/tokenizer.json"} <= files
    assert all(len(f["sha256"]) == 64 for f in entry["files"])
    assert [e["name"] for e in inpaint.installed(str(sd_store))] == ["sd-inpaint"]
    assert "sd-inpaint" in inpaint.names(str(sd_store))


def test_not_an_inpainting_pipeline_is_refused(tmp_path, tiny_sd):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(UnsupportedInpainterError, match="StableDiffusionPipeline is not an inpainting pipeline"):
        store_models.add_model(tmp_path / "store", plain, "x")
    pickled = tmp_path / "pickled"
    import shutil

    shutil.copytree(tiny_sd, pickled)
    weights = pickled / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(UnsupportedInpainterError, match=r"unet: weights only as .*\.bin \(pickle\)"):
        store_models.add_model(tmp_path / "store", pickled, "x")
    assert not (tmp_path / "store" / "x").exists()


def test_altered_or_missing_file_fails_with_path_and_checksums(sd_store):
    unet = sd_store / "sd-inpaint" / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(unet.read_bytes())
    data[-1] ^= 0xFF
    unet.write_bytes(bytes(data))
    with pytest.raises(ModelChecksumError) as err:
        ModelCache(device="cpu", model_dir=str(sd_store)).inpainter("sd-inpaint", "cpu")
    line = str(err.value)
    assert str(unet) in line and line.count("sha256") >= 1 and len([w for w in line.split() if len(w.strip(",")) == 64]) == 2
    unet.unlink()
    with pytest.raises(ModelFileMissing, match="diffusion_pytorch_model.safetensors: model file missing"):
        ModelCache(device="cpu", model_dir=str(sd_store)).inpainter("sd-inpaint", "cpu")


@pytest.fixture(scope="module")
def sd_cache(_sd_store):
    """One cache for the module (the pipeline loads once); tests that patch the
    pipeline do it with monkeypatch, which puts it back."""
    return ModelCache(device="cpu", model_dir=str(_sd_store))


@pytest.fixture
def model(sd_cache):
    return sd_cache.inpainter("sd-inpaint", "cpu")


def test_loads_offline_in_fp32_on_cpu(model):
    assert model.family == "diffusion" and model.native == 64
    assert model.pipe.unet.dtype == torch.float32 and model.pipe.unet.config.in_channels == 9
    assert model.pipe.device.type == "cpu"


def test_fill_keeps_unmasked_pixels_and_same_seed_same_bytes(model):
    rgb = _photo()
    mask = _box(128, 128, 40, 80, 50, 90)
    params = inpaint.InpaintParams(seed=4412, prompt="wood grain", **FAST)
    a, report = model.fill(rgb, mask, params)
    b, _ = model.fill(rgb, mask, params)
    c, _ = model.fill(rgb, mask, inpaint.InpaintParams(seed=4413, prompt="wood grain", **FAST))
    assert np.array_equal(a[~mask], rgb[~mask])              # bit for bit outside the mask
    assert not np.allclose(a[mask], rgb[mask], atol=0.05)    # the masked pixels were repainted
    assert a.tobytes() == b.tobytes()                        # same seed, same bytes
    assert not np.array_equal(a[mask], c[mask])              # another seed, another fill
    y0, y1, x0, x1 = report.crop
    assert y0 <= 40 and y1 >= 80 and x0 <= 50 and x1 >= 90 and report.model_size == (64, 64)


def test_prompts_reach_the_pipeline(model, monkeypatch):
    seen = []
    encode_prompt = model.pipe.encode_prompt
    signature = inspect.signature(encode_prompt)

    def spy(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        seen.append((bound["prompt"], bound.get("negative_prompt")))
        return encode_prompt(*args, **kwargs)

    monkeypatch.setattr(model.pipe, "encode_prompt", spy)
    rgb, mask = _photo(), _box(128, 128, 40, 80, 50, 90)
    wood, _ = model.fill(rgb, mask, inpaint.InpaintParams(seed=1, prompt="preserve wood grain", **FAST))
    sky, _ = model.fill(rgb, mask, inpaint.InpaintParams(seed=1, prompt="sky", negative_prompt="brick", **FAST))
    assert seen == [("preserve wood grain", None), ("sky", "brick")]
    assert not np.array_equal(wood[mask], sky[mask])    # the text encoder's output changed the fill


class _OutOfMemoryAbove:
    """Stands in for the pipeline: raises CUDA's out-of-memory error above a working size."""

    def __init__(self, pipe, limit):
        self.pipe, self.limit, self.sizes = pipe, limit, []

    def __call__(self, **kwargs):
        self.sizes.append(kwargs["height"])
        if kwargs["height"] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return self.pipe(**kwargs)


def test_out_of_memory_retries_a_smaller_crop(model, monkeypatch):
    monkeypatch.setattr(model, "pipe", _OutOfMemoryAbove(model.pipe, 48))
    rgb, mask = _photo(), _box(128, 128, 40, 80, 50, 90)
    out, report = model.fill(rgb, mask, inpaint.InpaintParams(seed=3, **FAST))
    assert model.pipe.sizes == [64, 48] and report.model_size == (48, 48)
    assert report.out_of_memory == ["64x64 (padding 128)"]
    assert np.array_equal(out[~mask], rgb[~mask])


def test_out_of_memory_everywhere_falls_back_to_the_next_variant(sd_cache, model, monkeypatch):
    cache = sd_cache
    monkeypatch.setattr(model, "pipe", _OutOfMemoryAbove(model.pipe, 0))
    rgb = _photo()
    img = decode(encode_array(rgb), "photo.png")
    user = _box(128, 128, 40, 80, 50, 90).astype(np.float32)
    restored = restore(img, Plan(inpaint="sd-inpaint", **FAST), cache, user_mask=user)
    rules = [(d["variant"], d["rule"]) for d in restored.record["decisions"]]
    assert rules == [("sd-inpaint", "user"), ("patchmatch", "out-of-memory")]
    assert "sd-inpaint ran out of memory on cpu" in restored.record["decisions"][1]["reason"]
    assert restored.record["variants"]["inpaint"] == "patchmatch"
    assert model.pipe.sizes == [64, 48, 32]


def encode_array(rgb: np.ndarray) -> bytes:
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_loaded_once_per_process_and_timed_in_the_load_histogram(_sd_store):
    metrics = Metrics(registry=CollectorRegistry())
    cache = ModelCache(device="cpu", model_dir=str(_sd_store), on_load=metrics.model_loaded)
    img = decode(encode_array(_photo()), "photo.png")
    user = _box(128, 128, 40, 80, 50, 90).astype(np.float32)
    for seed in (1, 2):
        restore(img, Plan(inpaint="sd-inpaint", seed=seed, **FAST), cache, user_mask=user, metrics=metrics)
    count = metrics.registry.get_sample_value("retouch_model_load_seconds_count",
                                              {"kind": "inpainter", "name": "sd-inpaint"})
    assert count == 1
    assert cache.inpainter("sd-inpaint", "cpu") is cache.inpainter("sd-inpaint", "cpu")
    assert metrics.registry.get_sample_value("retouch_stage_duration_seconds_count",
                                             {"stage": "inpaint", "variant": "sd-inpaint", "device": "cpu"}) == 2
