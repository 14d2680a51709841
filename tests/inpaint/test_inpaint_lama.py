"""LaMa through spandrel with random weights from spandrel's own architecture:
the store recognises the file, the fill keeps every unmasked pixel, runs at
the model's multiple, is deterministic, and `auto` picks it for a large fill
when no diffusion model is installed (and diffusion first when both are)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from worker import inpaint
from worker.inpaint import lama, store_models
from worker.inpaint.base import UnsupportedInpainterError
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan
from worker.pipeline.select import choose_inpaint, fallback_variants, fill_features


@pytest.fixture(scope="module")
def lama_store(tmp_path_factory, tiny_lama):
    store = tmp_path_factory.mktemp("lama-store")
    entry = store_models.add_model(store, tiny_lama, "lama", licence="Apache-2.0", source="random weights")
    assert entry["family"] == "lama" and entry["architecture"] == "LaMa" and entry["backend"] == "spandrel"
    return store


@pytest.fixture(scope="module")
def lama_model(lama_store):
    return ModelCache(device="cpu", model_dir=str(lama_store)).inpainter("lama", "cpu")


def test_the_store_knows_it_as_an_inpainter(lama_store, tiny_lama):
    assert store_models.kind_of(tiny_lama) == "lama"
    assert [e["name"] for e in inpaint.installed(str(lama_store))] == ["lama"]
    info = inpaint.get("lama", str(lama_store))
    assert info.learned and info.family == "lama"


def test_an_upscaler_is_not_an_inpainter(tmp_path):
    from spandrel.architectures.SPAN import SPAN
    from safetensors.torch import save_file

    path = tmp_path / "span.safetensors"
    save_file({k: v.contiguous() for k, v in SPAN(num_in_ch=3, num_out_ch=3, upscale=2).state_dict().items()}, str(path))
    assert store_models.kind_of(path) is None
    with pytest.raises(UnsupportedInpainterError, match="is a SR model, not an inpainting model|not an inpainting"):
        lama.load_descriptor(path)


def test_fill_keeps_unmasked_pixels_and_is_deterministic(lama_model):
    rgb = (skimage.data.chelsea()[:100, :100].astype(np.float32) / 255.0).copy()
    mask = np.zeros((100, 100), bool)
    mask[30:61, 40:75] = True
    params = inpaint.InpaintParams(seed=1)
    a, report = lama_model.fill(rgb, mask, params)
    b, _ = lama_model.fill(rgb, mask, inpaint.InpaintParams(seed=2))
    assert np.array_equal(a[~mask], rgb[~mask])
    assert a.tobytes() == b.tobytes()                  # LaMa has no randomness
    assert not np.allclose(a[mask], rgb[mask], atol=0.02)
    assert report.model_size[0] % 8 == 0 and report.model_size[1] % 8 == 0
    assert lama_model.dtype == torch.float32           # fp32 on the CPU


def test_auto_order_diffusion_then_lama_then_patchmatch():
    rgb = (skimage.data.astronaut()[:256, :256].astype(np.float32) / 255.0).copy()
    region = np.zeros((256, 256), bool)
    region[40:150, 60:170] = True
    fill = fill_features(rgb, region, faces=False)
    stats = {"coverage": float(region.mean()), "stroke_width": 60.0, "regions": 1}
    lama_only = [{"name": "lama", "family": "lama"}]
    both = [{"name": "sd", "family": "diffusion"}, {"name": "lama", "family": "lama"}]
    assert choose_inpaint(Plan(), stats, 0.05, fill, lama_only).variant == "lama"
    assert choose_inpaint(Plan(), stats, 0.05, fill, both).variant == "sd"
    assert choose_inpaint(Plan(), stats, 0.05, fill, []).variant == "patchmatch"
    assert fallback_variants("sd", both) == ["lama", "patchmatch"]
    assert fallback_variants("lama", both) == ["patchmatch"]
