"""Tiling: blending weights are a partition of unity, tiled output equals the
untiled one where the model is local, no seam shows along tile borders (and a
naive hard-cut tiling does show one, so the measure can see seams), OOM halves
the tile, exact output sizes, alpha and 16-bit precision kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.tiling import Tiler, axis_weights, tile_starts


@pytest.mark.parametrize("length,tile,overlap,scale", [(160, 64, 16, 4), (100, 48, 8, 2), (257, 64, 16, 3),
                                                       (65, 64, 16, 4), (500, 128, 32, 1)])
def test_blend_weights_sum_to_one_everywhere(length, tile, overlap, scale):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile >= length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # at least `overlap` shared
    total = np.zeros(length * scale)
    for s, w in zip(starts, axis_weights(starts, tile, length, overlap, scale)):
        assert w.min() >= 0 and w.max() <= 1
        total[s * scale:s * scale + len(w)] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_tiles_of_a_pointwise_model_reassemble_exactly():
    """With a model that has no spatial context (nearest x2), any tiling must give
    the untiled result: the blend adds nothing of its own."""
    rng = np.random.default_rng(0)
    img = rng.random((150, 110, 3), dtype=np.float32)
    nearest = lambda t: np.repeat(np.repeat(t, 2, 0), 2, 1)  # noqa: E731
    out = Tiler(48, overlap=12).run(img, nearest, 2)
    np.testing.assert_allclose(out, nearest(img), atol=1e-6)


def _line_gradient(out: np.ndarray, axis: int) -> np.ndarray:
    """Mean |step| between consecutive rows (axis=0) or columns (axis=1); index c
    is the step from line c to c+1."""
    return np.abs(np.diff(out, axis=axis)).mean(axis=(1 - axis, 2))


def _border_lines(length: int, tile: int, overlap: int, scale: int) -> list[int]:
    """Output indices where one tile's pixels start or end."""
    starts = tile_starts(length, tile, overlap)
    lines = {s * scale - 1 for s in starts[1:]} | {min(s + tile, length) * scale - 1 for s in starts[:-1]}
    return sorted(lines)


def _naive(img: np.ndarray, fn, tile: int, scale: int) -> np.ndarray:
    out = np.zeros((img.shape[0] * scale, img.shape[1] * scale, 3), np.float32)
    for y in range(0, img.shape[0], tile):
        for x in range(0, img.shape[1], tile):
            part = img[y:y + tile, x:x + tile]
            out[y * scale:(y + part.shape[0]) * scale, x * scale:(x + part.shape[1]) * scale] = fn(part)
    return out


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_no_seam_along_tile_borders(make_upscaler, photo, name):
    """Real model (realesr-animevideov3), a 160 px photo crop in 64 px tiles,
    compared with one untiled pass. What tiling changes in the image (tiled -
    untiled) has a smaller gradient across every tile border than inside the
    tiles, and the gradient across a border is the untiled image's own. The
    same measures flag the seams of a naive tiling (no overlap, hard cuts)."""
    img = photo(name)[:160, :160]
    model = make_upscaler("realesr-animevideov3", tile=64)
    tiled = model.tiler.run(img, model._run_tile, 4)
    whole = Tiler(256).run(img, model._run_tile, 4)
    naive = _naive(img, model._run_tile, 64, 4)
    for out, borders, seamless in ((tiled, _border_lines(160, 64, model.tiler.overlap, 4), True),
                                   (naive, [64 * 4 - 1, 128 * 4 - 1], False)):
        for axis in (0, 1):
            change = _line_gradient(out - whole, axis)
            inside = [c for c in range(len(change)) if min(abs(c - b) for b in borders) > 4]
            added = (_line_gradient(out, axis) - _line_gradient(whole, axis))[borders]
            if seamless:
                assert change[borders].max() <= change[inside].max(), f"seam along axis {axis}"
                assert np.abs(added).max() < 0.05 / 255, f"tiling adds a step along axis {axis}"
            else:
                assert change[borders].max() > change[inside].max()
                assert added.max() > 0.5 / 255


def test_tiled_and_untiled_outputs_agree(make_upscaler, photo):
    img = photo("coffee")[40:136, 60:156]
    whole = make_upscaler("realesr-animevideov3", tile=256).upscale(img, 4)
    tiled = make_upscaler("realesr-animevideov3", tile=48).upscale(img, 4)
    assert np.abs(whole - tiled).mean() < 2e-3 and np.abs(whole - tiled).max() < 0.1


def test_out_of_memory_halves_the_tile_and_retries(make_upscaler, photo):
    """A tile above the memory budget raises torch.OutOfMemoryError (as CUDA's
    allocator does); the tiler halves the tile, redoes that tile as a blended
    sub-grid, and the result still matches an unconstrained run."""
    model = make_upscaler("realesr-animevideov3", tile=96)
    calls = []

    def budgeted(tile):
        calls.append(tile.shape[:2])
        if max(tile.shape[:2]) > 48:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model._run_tile(tile)

    img = photo("rocket")[60:180, 60:180]
    out = model.tiler.run(img, budgeted, 4)
    assert model.tiler.tile == 48
    assert any(max(s) > 48 for s in calls) and all(max(s) <= 48 for s in calls[1:])
    reference = Tiler(256).run(img, model._run_tile, 4)
    assert np.abs(out - reference).mean() < 3e-3

    def always(tile):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):  # below the minimum tile it gives up, loudly
        Tiler(64, overlap=8, min_tile=32, is_oom=lambda e: isinstance(e, torch.OutOfMemoryError)).run(
            img, always, 4)


def test_other_errors_are_not_swallowed(make_upscaler, photo):
    model = make_upscaler("realesr-animevideov3", tile=64)

    def broken(tile):
        raise ValueError("bad tile")

    with pytest.raises(ValueError, match="bad tile"):
        model.tiler.run(photo("rocket")[:100, :100], broken, 4)
    assert model.tiler.tile == 64


@pytest.mark.parametrize("scale", [2.0, 3.0, 2.5, 4.0, 6.0])
def test_any_scale_is_native_x4_then_lanczos_to_the_exact_size(make_upscaler, photo, scale):
    from worker.upscale import target_size
    from worker.upscale.learned import lanczos_resize

    img = photo("astronaut")[100:150, 100:141]
    model = make_upscaler("realesr-animevideov3")
    out = model.upscale(img, scale)
    w, h = target_size(41, 50, scale)
    assert out.shape == (h, w, 3) and out.dtype == np.float32
    native = model.upscale(img, 4.0)
    np.testing.assert_allclose(out, np.clip(lanczos_resize(native, (w, h)), 0, 1), atol=1e-5)


def test_learned_output_keeps_16_bit_precision(make_upscaler):
    """A smooth 16-bit ramp stays smooth: the learned path never rounds to 8 bits."""
    ramp = np.linspace(0.3, 0.3 + 40 / 255, 64, dtype=np.float32)  # 40 8-bit steps over 64 px
    img = np.repeat(np.repeat(ramp[None, :, None], 32, 0), 3, 2)
    out = make_upscaler("realesr-animevideov3").upscale(img, 2)
    assert out.dtype == np.float32
    row = out[32, 8:-8, 1]
    assert len(np.unique(np.round(row * 65535))) > len(np.unique(np.round(row * 255))) * 2
    off_grid = np.abs(row * 255 - np.round(row * 255))
    assert np.mean(off_grid > 0.01) > 0.5
