"""Crop-and-paste geometry (diffusers' get_crop_region semantics) and the
out-of-memory ladder, with a stand-in model function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.inpaint.base import InpaintOutOfMemory
from worker.inpaint.crop import Attempt, crop_region, fill_on_crop, model_mask, working_size


def _mask(h=200, w=300, box=(50, 80, 100, 140)):
    m = np.zeros((h, w), bool)
    m[box[0]:box[1], box[2]:box[3]] = True
    return m


def test_crop_is_the_padded_box_widened_to_the_aspect():
    y0, y1, x0, x1 = crop_region(_mask(), padding=10, aspect=1.0)
    assert (y0, x0) <= (40, 90) and (y1, x1) >= (90, 150)   # the mask plus its padding
    assert y1 - y0 == x1 - x0 == 60                        # widened to a square
    assert crop_region(_mask(), padding=10) == (40, 90, 90, 150)   # no aspect: just padded


def test_crop_stays_inside_the_image():
    m = _mask(box=(0, 20, 280, 300))
    y0, y1, x0, x1 = crop_region(m, padding=64, aspect=1.0)
    assert 0 <= y0 < y1 <= 200 and 0 <= x0 < x1 <= 300 and y1 - y0 == x1 - x0
    assert crop_region(np.zeros((10, 10), bool), 4) is None


def test_working_size():
    assert working_size((300, 200), Attempt(0, (64, 64))) == (64, 64)
    assert working_size((1000, 500), Attempt(0, limit=512)) == (512, 256)
    assert working_size((101, 37), Attempt(0, limit=512), multiple=8) == (104, 40)


def test_thin_strokes_survive_the_downscale():
    m = np.zeros((256, 256), bool)
    m[100:102, 20:200] = True      # 2 px stroke, shrunk 4x
    assert model_mask(m, (64, 64)).any()


def test_paste_touches_only_masked_pixels_and_resizes_back():
    rng = np.random.default_rng(1)
    rgb = rng.random((200, 300, 3), dtype=np.float32)
    mask = _mask()
    seen = []

    def infer(crop, m):
        seen.append((crop.shape, m.shape, m.mean()))
        return np.full_like(crop, 0.5)

    out, report = fill_on_crop(rgb, mask, [Attempt(16, (64, 64))], infer, aspect=1.0, device="cpu", name="t")
    assert seen[0][0] == (64, 64, 3) and seen[0][1] == (64, 64) and 0 < seen[0][2] < 1
    assert np.array_equal(out[~mask], rgb[~mask])
    assert np.allclose(out[mask], 0.5, atol=1e-6)
    assert report.model_size == (64, 64) and report.out_of_memory == []


def test_out_of_memory_tries_smaller_crops_then_gives_up():
    rgb = np.zeros((200, 300, 3), np.float32)
    mask = _mask()
    attempts = [Attempt(32, (64, 64)), Attempt(16, (48, 48)), Attempt(8, (32, 32))]

    def small_only(crop, m):
        if crop.shape[0] > 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.ones_like(crop)

    out, report = fill_on_crop(rgb, mask, attempts, small_only, aspect=1.0, device="cpu", name="t")
    assert report.model_size == (32, 32) and len(report.out_of_memory) == 2 and out[mask].min() > 0.999

    def never(crop, m):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(InpaintOutOfMemory, match=r"t: out of memory on cpu at every crop size tried \(64x64"):
        fill_on_crop(rgb, mask, attempts, never, aspect=1.0, device="cpu", name="t")


def test_other_errors_are_not_swallowed():
    def broken(crop, m):
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        fill_on_crop(np.zeros((50, 50, 3), np.float32), _mask(50, 50, (10, 20, 10, 20)), [Attempt(4, (16, 16))],
                     broken, aspect=1.0, device="cpu", name="t")
