"""Bring-your-own upscalers: tiny random-weight models round-trip through
save -> model store -> spandrel load -> upscale, by name; unsafe pickles and
non-upscalers are refused with the file named."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from orchestration.cli import main
from worker import upscale
from worker.models.manifest import Manifest, sha256_file
from worker.upscale.realesrgan.rrdbnet import RRDBNet
from worker.upscale.realesrgan.srvgg import SRVGGNetCompact
from worker.upscale.spandrel_models import UnsupportedUpscalerError, add_model, read_state_dict


def _tiny(kind: str):
    torch.manual_seed(7)
    if kind == "esrgan":
        return RRDBNet(num_feat=16, num_block=1, num_grow_ch=32).eval()
    return SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).eval()


def _direct(module, rgb: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None])
    return out[0].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("kind,suffix,arch,scale", [("esrgan", ".pth", "ESRGAN", 4),
                                                    ("compact", ".safetensors", "RealESRGAN Compact", 2)])
def test_tiny_model_round_trip(tmp_path, photo, kind, suffix, arch, scale, capsys):
    module = _tiny(kind)
    src = tmp_path / f"mine{suffix}"
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    if suffix == ".pth":
        torch.save({"params_ema": state}, src)  # the layout BasicSR checkpoints use
    else:
        save_file(state, str(src))
    store = tmp_path / "models"
    assert main(["models", "--model-dir", str(store), "add", str(src), "--name", f"my-{kind}",
                 "--licence", "CC0-1.0"]) == 0
    assert f"added my-{kind}: {arch} x{scale}" in capsys.readouterr().out
    entry = Manifest.load(store).get(f"my-{kind}")
    assert (entry["architecture"], entry["scale"], entry["backend"], entry["licence"]) == (arch, scale, "spandrel",
                                                                                          "CC0-1.0")
    assert entry["sha256"] == sha256_file(store / entry["file"])

    info = upscale.variant_info(f"my-{kind}", upscale.UpscaleOptions(model_dir=str(store)))
    assert info.learned
    model = upscale.create(f"my-{kind}", upscale.UpscaleOptions(model_dir=str(store)))
    rgb = photo("coffee")[:40, :36]
    out = model.upscale(rgb, scale)
    assert out.shape == (40 * scale, 36 * scale, 3)
    np.testing.assert_allclose(out, np.clip(_direct(module, rgb), 0, 1), atol=1e-5)
    # Any scale: native, then Lanczos to the exact size.
    assert model.upscale(rgb, 3.0).shape == (120, 108, 3)


def test_dropped_in_file_is_usable_by_its_stem(tmp_path, photo):
    store = tmp_path / "models"
    store.mkdir()
    module = _tiny("compact")
    save_file(dict(module.state_dict()), str(store / "dropped.safetensors"))
    out = upscale.create("dropped", upscale.UpscaleOptions(model_dir=str(store))).upscale(photo("rocket")[:20, :20], 2)
    assert out.shape == (40, 40, 3)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/retouch-pwned-by-pickle",))


def test_unsafe_pickles_are_never_run(tmp_path):
    import os

    marker = "/tmp/retouch-pwned-by-pickle"
    if os.path.exists(marker):
        os.unlink(marker)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"conv_first.weight": _Exploit()}, f)
    with pytest.raises(UnsupportedUpscalerError, match="evil.pth: cannot be loaded safely"):
        read_state_dict(evil)
    with pytest.raises(UnsupportedUpscalerError):
        add_model(tmp_path / "models", evil)
    assert not os.path.exists(marker)
    assert not (tmp_path / "models" / "evil.pth").exists()


def test_non_upscalers_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(junk))
    with pytest.raises(UnsupportedUpscalerError, match="junk.safetensors: spandrel does not recognise"):
        add_model(tmp_path / "models", junk)
    with pytest.raises(UnsupportedUpscalerError, match="unsupported weight file type"):
        read_state_dict(tmp_path / "model.onnx")
