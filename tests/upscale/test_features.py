"""Measured artifact features against ground truth: JPEGs saved at known
qualities, Gaussian noise of known sigma, synthetic film grain."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image as PILImage

from worker import degrade
from worker.io import decode
from worker.upscale import features


def _photo(name: str = "astronaut", side: int = 256) -> np.ndarray:
    rgb = getattr(skimage.data, name)().astype(np.float32) / 255.0
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


def _jpeg_bytes(rgb: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, "JPEG", **save)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [8, 15, 30, 50, 62, 75, 88, 95])
def test_quality_from_the_files_own_tables(quality):
    img = decode(_jpeg_bytes(_photo("chelsea", 128), quality=quality), "q.jpg")
    assert img.jpeg_tables is not None and len(img.jpeg_tables) == 2
    found = features.jpeg_features(img.rgb, img.jpeg_tables)
    assert found["tables"] == "ijg" and found["jpeg_q_source"] == "tables"
    assert abs(found["jpeg_q"] - quality) <= 5


def test_png_that_was_a_jpeg_is_found_by_its_blocks():
    rgb = _photo()
    clean = features.jpeg_features(rgb, None)
    was_jpeg = decode(_jpeg_bytes(rgb, quality=20), "x.jpg").rgb     # pixels only: as if saved to PNG
    blind = features.jpeg_features(was_jpeg, None)
    assert blind["tables"] == "none" and blind["jpeg_q_source"] == "pixels"
    assert blind["blockiness"] > 3 * clean["blockiness"]
    assert blind["jpeg_q"] <= 45 < clean["jpeg_q"]
    assert decode(_png_bytes(was_jpeg), "x.png").jpeg_tables is None


def _png_bytes(rgb):
    buf = io.BytesIO()
    PILImage.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_odd_tables_route_on_the_pixels():
    rng = np.random.default_rng(3)
    odd = [list(rng.integers(2, 60, 64)), list(rng.integers(2, 60, 64))]
    img = decode(_jpeg_bytes(_photo(), qtables=odd), "odd.jpg")
    found = features.jpeg_features(img.rgb, img.jpeg_tables)
    assert found["tables"] == "odd" and found["jpeg_q_source"] == "pixels, tables odd"
    assert found["table_fit"] > features.TABLE_FIT_MAX
    assert features.jpeg_quality_from_tables([[1, 2, 3]])["tables"] == "odd"   # not 64 values


def test_double_compression_is_evidenced():
    rgb = _photo()
    once = decode(_jpeg_bytes(rgb, quality=90), "once.jpg")
    twice = decode(_jpeg_bytes(decode(_jpeg_bytes(rgb, quality=15), "a.jpg").rgb, quality=90), "twice.jpg")
    first = features.jpeg_features(once.rgb, once.jpeg_tables)
    second = features.jpeg_features(twice.rgb, twice.jpeg_tables)
    assert not first["double_jpeg"] and first["jpeg_q"] == 90
    assert second["double_jpeg"] and "blocky-beyond-tables" in second["double_jpeg_evidence"]
    assert second["jpeg_q"] <= 45          # the router goes by the worse of the two


@pytest.mark.parametrize("sigma", [5.0, 15.0, 30.0])
def test_noise_sigma_within_20_percent(sigma):
    rng = np.random.default_rng(int(sigma))
    # scikit-image's coffee photo: smooth cup and table; its own noise is about 1-2 units
    noisy = degrade.gaussian_noise(_photo("coffee", 256), sigma, rng)
    found = features.noise_sigma(noisy)["sigma"]
    assert abs(found - sigma) <= 0.2 * sigma, found


def test_clean_photo_has_little_noise():
    assert features.noise_sigma(_photo("coffee", 256))["sigma"] < 3.0


@pytest.mark.parametrize("photo", ["astronaut", "coffee", "chelsea"])
def test_grain_told_apart_from_sensor_noise(photo):
    rgb = _photo(photo, 192)
    grain = features.grain_features(degrade.film_grain(rgb, 14, np.random.default_rng(1)))
    noise = features.grain_features(degrade.gaussian_noise(rgb, 14, np.random.default_rng(1)))
    assert grain["grain_score"] >= 0.5 > 0.2 >= noise["grain_score"], (grain, noise)
    assert grain["grain_correlation"] > noise["grain_correlation"] + 0.2
    assert grain["grain_luma_share"] > 0.75 and noise["grain_luma_share"] < 0.6


def test_scan_traits():
    rgb = _photo("coffee", 256)
    plain = features.scan_features(rgb)
    dusty = rgb.copy()
    rng = np.random.default_rng(0)
    for y, x in rng.integers(5, 250, (30, 2)):
        dusty[y:y + 2, x:x + 3] = 1.0                      # white specks
    dusty[:, 100] = np.clip(dusty[:, 100] + 0.35, 0, 1)    # a bright vertical scratch
    grey = np.repeat(cv2.resize(skimage.data.camera().astype(np.float32) / 255.0, (256, 256))[..., None], 3, 2)
    faded = (0.35 + 0.45 * grey) * np.array([1.0, 0.95, 0.75], np.float32)   # lifted blacks, yellowed
    plain_grey = features.scan_features(grey)
    marked = features.scan_features(dusty)
    old = features.scan_features(faded)
    # 30 specks on 0.066 MP: most of them found (a textured photo has specks of its own)
    assert marked["dust_per_mpx"] - plain["dust_per_mpx"] >= 300
    assert marked["scratch_columns"] >= 1 and plain["scratch_columns"] == 0
    assert old["faded"] and not plain["faded"] and not plain_grey["faded"]
    assert old["cast"] > plain_grey["cast"] + 5 and 45 <= old["cast_hue"] <= 135   # towards yellow (+b*)


def test_measure_is_flat_and_json_able():
    import json

    found = features.measure(_photo("rocket", 96))
    json.dumps(found)
    for key in ("jpeg_q", "sigma", "grain_score", "texture", "blockiness", "dust_per_mpx", "cast"):
        assert key in found


def test_texture_tells_dense_fine_texture_from_smooth_surfaces_and_edges():
    """At 56 px, grass and brick are texture at the pixel scale; the astronaut,
    the cameraman and the rocket are surfaces and edges. A flat image has none."""
    grey = lambda name: np.repeat(_photo(name, 56)[..., None], 3, axis=2)  # noqa: E731
    dense = [features.texture_features(grey(n))["texture"] for n in ("grass", "brick")]
    smooth = [features.texture_features(_photo(n, 56))["texture"] for n in ("astronaut", "rocket")]
    smooth.append(features.texture_features(grey("camera"))["texture"])
    assert min(dense) >= 0.55 > max(smooth), (dense, smooth)
    assert features.texture_features(np.full((56, 56, 3), 0.5, np.float32))["texture"] == 0.0
    assert features.texture_features(np.zeros((4, 4, 3), np.float32))["texture"] == 0.0
