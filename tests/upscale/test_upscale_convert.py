"""The ncnn -> safetensors conversion: our PyTorch networks on the converted
weights agree with ncnn running the original files (<= 2/255 on uint8), and
with spandrel's independent implementations; broken inputs fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from worker.models.convert_ncnn import ConversionError, convert, parse_param, wheel_models_dir
from worker.upscale.ncnn_backend import NcnnNet
from worker.upscale.realesrgan import build_module


def to_u8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(rgb, np.float32) * 255.0), 0, 255).astype(np.int16)


def _torch(module, rgb: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None])
    return out[0].numpy().transpose(1, 2, 0)


def _ncnn(store: Path, stem: str, rgb: np.ndarray) -> np.ndarray:
    net = NcnnNet(store / "ncnn" / f"{stem}.param", store / "ncnn" / f"{stem}.bin", threads=2)
    return net.run(rgb.transpose(2, 0, 1)).transpose(1, 2, 0)


@pytest.mark.parametrize("name,stem,crop", [
    ("realesrgan-x4plus", "realesrgan-x4plus", ("astronaut", 60, 100, 40)),
    ("realesrgan-x4plus-anime", "realesrgan-x4plus-anime", ("coffee", 80, 60, 64)),
    ("realesr-animevideov3", "realesr-animevideov3-x4", ("chelsea", 30, 90, 80)),
])
def test_torch_matches_ncnn_on_the_same_weights(realesrgan_store, photo, name, stem, crop):
    src, y, x, size = crop
    rgb = photo(src)[y:y + size, x:x + size]
    state = load_file(str(realesrgan_store / f"{name}.safetensors"))
    arch = "SRVGGNetCompact" if "body.0.weight" in state else "RRDBNet"
    ours = _torch(build_module(arch, state).eval(), rgb)
    theirs = _ncnn(realesrgan_store, stem, rgb)
    assert ours.shape == theirs.shape == (4 * size, 4 * size, 3)
    assert np.abs(to_u8(ours) - to_u8(theirs)).max() <= 2
    # Not trivially equal to the input upsampled: the network did something.
    assert np.abs(ours - np.repeat(np.repeat(rgb, 4, 0), 4, 1)).mean() > 0.005


@pytest.mark.parametrize("stem,factor", [("realesr-animevideov3-x2", 0.5), ("realesr-animevideov3-x3", 0.75)])
def test_x2_x3_exports_are_the_x4_network_then_bicubic(realesrgan_store, photo, stem, factor):
    _, _, config = convert(realesrgan_store / "ncnn" / f"{stem}.param", realesrgan_store / "ncnn" / f"{stem}.bin")
    assert config["post_scale"] == factor
    rgb = photo("rocket")[100:160, 100:160]
    net = build_module("SRVGGNetCompact", load_file(str(realesrgan_store / "realesr-animevideov3.safetensors")))
    with torch.inference_mode():
        x4 = net(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None])
        ours = torch.nn.functional.interpolate(x4, scale_factor=factor, mode="bicubic", align_corners=False)
    theirs = _ncnn(realesrgan_store, stem, rgb)
    ours = ours[0].numpy().transpose(1, 2, 0)
    assert ours.shape == theirs.shape == (int(60 * 4 * factor),) * 2 + (3,)
    assert np.abs(to_u8(ours) - to_u8(theirs)).max() <= 2


@pytest.mark.parametrize("name", ["realesr-animevideov3", "realesrgan-x4plus-anime"])
def test_our_architectures_match_spandrels(realesrgan_store, photo, name):
    """spandrel recognises the converted files (upstream key names) and its own
    implementation gives the same output as ours."""
    from spandrel import ModelLoader

    path = realesrgan_store / f"{name}.safetensors"
    descriptor = ModelLoader().load_from_file(str(path))
    assert descriptor.scale == 4
    state = load_file(str(path))
    ours = build_module("SRVGGNetCompact" if name.startswith("realesr-") else "RRDBNet", state).eval()
    rgb = photo("motorcycle")[:40, :40]
    theirs = _torch(descriptor.model.eval(), rgb)
    assert np.abs(_torch(ours, rgb) - theirs).max() < 1e-4


def test_conversion_refuses_mismatched_or_truncated_files(tmp_path):
    src = wheel_models_dir()
    # A .param with another model's .bin: sizes disagree, named in the error.
    with pytest.raises(ConversionError, match="realesrgan-x4plus-anime.bin"):
        convert(src / "realesrgan-x4plus.param", src / "realesrgan-x4plus-anime.bin")
    short = tmp_path / "short.bin"
    short.write_bytes((src / "realesr-animevideov3-x4.bin").read_bytes()[:-100])
    with pytest.raises(ConversionError, match="short.bin: truncated"):
        convert(src / "realesr-animevideov3-x4.param", short)
    bad = tmp_path / "bad.param"
    bad.write_text("not a param file\n")
    with pytest.raises(ConversionError, match="bad.param: not an ncnn param file"):
        parse_param(bad)


def test_fp16_blobs_are_read_with_their_tag(realesrgan_store):
    """The shipped .bin holds fp16 convolution weights (tag 0x01306B47) and fp32
    biases/slopes; the converted weights are float32 with realistic ranges."""
    state = load_file(str(realesrgan_store / "realesr-animevideov3.safetensors"))
    assert state["body.0.weight"].shape == (64, 3, 3, 3) and state["body.0.weight"].dtype == torch.float32
    assert state["body.1.weight"].shape == (64,)            # PReLU slopes
    assert state["body.34.weight"].shape == (48, 64, 3, 3)  # 3 * 4 * 4 channels for the pixel shuffle
    slopes = state["body.1.weight"]
    # Decoding fp16 as fp32 (or the reverse) gives values like 1e-30 or 1e+30.
    assert 1e-3 < float(slopes.abs().max()) < 2 and 0.1 < float(state["body.0.weight"].abs().max()) < 50
