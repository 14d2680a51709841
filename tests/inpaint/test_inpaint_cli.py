"""The learned inpainting path as a user tries it: `retouch models add` a
pipeline folder, `retouch run --inpaint NAME --prompt ... --seed 4412`, a
request file with the service payload, `auto` choosing by the fill's size,
and a variant that is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from orchestration.cli import main
from orchestration.local import discover, run_batch
from worker.io import decode_map
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan
from worker.pipeline.request import InpaintRequest

PROMPT = "preserve wood grain and ambient shadow"
PAYLOAD = {"image_id": "img", "mask": {"type": "soft", "sigma": 4}, "prompt": PROMPT, "scale": 0.85, "seed": 4412}


def _write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _box_mask(size: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


@pytest.fixture
def user_env(tmp_path, monkeypatch, tiny_sd):
    """A fresh store (RETOUCH_MODEL_DIR), the tiny pipeline added as a user would,
    and a photo with a mask over part of the face."""
    store = tmp_path / "store"
    monkeypatch.setenv("RETOUCH_MODEL_DIR", str(store))
    monkeypatch.setenv("RETOUCH_SETTINGS_FILE", "/nonexistent/retouch.env")
    assert main(["models", "add", str(tiny_sd), "--name", "sd-inpaint", "--licence", "test"]) == 0
    photo = skimage.data.astronaut()[:256, 64:320].copy()
    img = _write_png(tmp_path / "in" / "img.png", photo)
    _write_png(tmp_path / "masks" / "img.png", _box_mask(256, 60, 140, 80, 160))
    return tmp_path, img


def _run(img: Path, out: Path, *flags: str) -> dict:
    assert main(["run", str(img), "--out", str(out), "--no-progress", "--save-masks", "--steps", "2", *flags]) == 0
    return json.loads((out / f"{img.name}.json").read_text())


def test_models_list_shows_the_pipeline(user_env, capsys):
    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["sd-inpaint"]["task"] == "inpaint" and rows["sd-inpaint"]["status"] == "ok"
    assert rows["sd-inpaint"]["backend"] == "diffusers" and rows["sd-inpaint"]["licence"] == "test"


def test_named_diffusion_run_keeps_the_outside_and_repeats_bytes(user_env):
    tmp, img = user_env
    masks = str(tmp / "masks")
    record = _run(img, tmp / "a", "--inpaint", "sd-inpaint", "--prompt", PROMPT, "--seed", "4412", "--masks", masks)
    _run(img, tmp / "b", "--inpaint", "sd-inpaint", "--prompt", PROMPT, "--seed", "4412", "--masks", masks)
    assert record["variants"]["inpaint"] == "sd-inpaint" and record["plan"]["prompt"] == PROMPT
    assert record["inpaint"]["family"] == "diffusion" and record["inpaint"]["model_size"] == [64, 64]
    source = np.asarray(Image.open(img))
    out = np.asarray(Image.open(tmp / "a" / "img.png"))
    soft = decode_map((tmp / "a" / "img.png.mask.png").read_bytes(), "mask")
    assert np.array_equal(out[soft == 0], source[soft == 0])          # untouched outside the soft mask
    assert np.abs(out[soft > 0.99].astype(int) - source[soft > 0.99]).mean() > 5   # repainted inside
    assert (tmp / "a" / "img.png").read_bytes() == (tmp / "b" / "img.png").read_bytes()   # same seed, same bytes


def test_request_file_equals_the_flags(user_env):
    tmp, img = user_env
    masks = str(tmp / "masks")
    request = tmp / "request.json"
    request.write_text(json.dumps(PAYLOAD))
    by_request = _run(img, tmp / "req", "--inpaint", "sd-inpaint", "--masks", masks, "--request", str(request))
    by_flags = _run(img, tmp / "flags", "--inpaint", "sd-inpaint", "--masks", masks, "--prompt", PROMPT,
                    "--strength", "0.85", "--seed", "4412", "--mask-type", "soft", "--mask-sigma", "4")
    assert by_request["plan"]["strength"] == 0.85 and by_request["seed"] == 4412
    assert by_request["fingerprint"] == by_flags["fingerprint"]
    assert (tmp / "req" / "img.png").read_bytes() == (tmp / "flags" / "img.png").read_bytes()
    # ...and differs from the defaults, so the request did something
    default = _run(img, tmp / "default", "--inpaint", "sd-inpaint", "--masks", masks)
    assert (tmp / "default" / "img.png").read_bytes() != (tmp / "req" / "img.png").read_bytes()
    assert default["fingerprint"] != by_request["fingerprint"]


def test_bad_request_file_is_one_line(user_env, capsys):
    tmp, img = user_env
    request = tmp / "bad.json"
    request.write_text(json.dumps({**PAYLOAD, "scale": 1.7}))
    assert main(["run", str(img), "--out", str(tmp / "o"), "--request", str(request)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("retouch run:") and str(request) in err and "strength must be in (0, 1]" in err
    assert len(err.splitlines()) == 1


def test_auto_picks_diffusion_for_a_large_fill_and_patchmatch_for_a_small_one(user_env):
    tmp, _ = user_env
    photo = skimage.data.astronaut()[:256, 64:320].copy()
    _write_png(tmp / "auto" / "large.png", photo)
    _write_png(tmp / "auto" / "small.png", photo)
    _write_png(tmp / "automasks" / "large.png", _box_mask(256, 60, 150, 70, 170))
    _write_png(tmp / "automasks" / "small.png", _box_mask(256, 200, 210, 20, 30))
    assert main(["run", str(tmp / "auto"), "--out", str(tmp / "out"), "--no-progress", "--steps", "2",
                 "--masks", str(tmp / "automasks")]) == 0
    large = json.loads((tmp / "out" / "large.png.json").read_text())["decisions"][-1]
    small = json.loads((tmp / "out" / "small.png.json").read_text())["decisions"][-1]
    assert (large["variant"], large["rule"]) == ("sd-inpaint", "large-fill")
    assert large["inputs"]["largest_region_px"] >= 4096 and large["inputs"]["fill_depth_px"] >= 16
    assert "largest_region_px" in large["reason"] and "sd-inpaint" in large["reason"]
    assert small["variant"] == "patchmatch"
    assert small["inputs"]["fill_depth_px"] < 16 and small["inputs"]["installed"] == ["sd-inpaint"]


def test_a_variant_that_is_not_installed(user_env, capsys, tmp_path):
    _, img = user_env
    assert main(["run", str(img), "--out", str(tmp_path / "o"), "--inpaint", "big-lama"]) == 2
    err = capsys.readouterr().err
    assert "unknown inpaint variant 'big-lama'" in err and "retouch models add PATH --name big-lama" in err
    # in a batch (a request naming it, or a worker whose store lacks it) only that image fails
    other = _write_png(img.parent / "other.png", np.asarray(Image.open(img)))
    cache = ModelCache(device="cpu", model_dir=str(tmp_path / "store"))
    report = run_batch(discover([img, other]), tmp_path / "batch", Plan(inpaint="telea"), cache, max_pixels=10**7,
                       requests={"img": InpaintRequest(image_id="img", inpaint="big-lama")})
    by_name = {o.source.name: o for o in report.outcomes}
    assert by_name["other.png"].status == "ok" and by_name["img.png"].status == "failed"
    assert by_name["img.png"].error.startswith(str(img)) and "retouch models add PATH --name big-lama" in \
        by_name["img.png"].error and "\n" not in by_name["img.png"].error


def test_single_file_checkpoint_is_refused_with_the_conversion(tmp_path, monkeypatch, capsys):
    import torch
    from safetensors.torch import save_file

    monkeypatch.setenv("RETOUCH_MODEL_DIR", str(tmp_path / "store"))
    ckpt = tmp_path / "sd-v1-5-inpainting.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 9, 3, 3)}, str(ckpt))
    assert main(["models", "add", str(ckpt), "--name", "sd"]) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "single-file Stable Diffusion checkpoint" in err and "save_pretrained" in err
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())
