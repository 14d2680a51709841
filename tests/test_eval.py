"""`retouch eval`: reproducible cases, a deliberately bad variant ranks last,
identical tables for the same seed, and a report that a real browser renders
with its images and plots."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from orchestration.evaluate import dataset
from orchestration.evaluate.runner import INPUT, resolve_variants
from orchestration.evaluate.suite import EvalConfig, run_suite
from tests.conftest import photo
from worker import inpaint
from orchestration.evaluate.dataset import EvalError

TABLES = ("results.json", "summary.csv", "images.csv", "cases.csv")


def _meanfill(rgb: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """The deliberately bad variant: every masked pixel becomes the mean colour."""
    out = rgb.copy()
    out[mask] = rgb[~mask].mean(axis=0) if (~mask).any() else 0.5
    return out


@pytest.fixture
def meanfill():
    inpaint.register("meanfill", _meanfill, "test only: fill with the mean colour")
    yield "meanfill"
    inpaint.VARIANTS.remove("meanfill")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """Three small clean crops of real photos as a folder dataset."""
    folder = tmp_path_factory.mktemp("clean")
    for name in ("astronaut", "coffee", "chelsea"):
        rgb = photo(name)[:144, :160]
        PILImage.fromarray(np.rint(rgb * 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


def test_cases_are_reproducible_and_seeded():
    photos = [dataset.Photo("a", photo("rocket")[:128, :128]), dataset.Photo("b", photo("coffee")[:128, :128])]
    one = dataset.build_cases(photos, ["remove-text", "upscale"], seed=5, jpeg_levels=[0, 40])
    two = dataset.build_cases(photos, ["remove-text", "upscale"], seed=5, jpeg_levels=[0, 40])
    other = dataset.build_cases(photos, ["remove-text", "upscale"], seed=6, jpeg_levels=[0, 40])
    assert [c.id for c in one] == [c.id for c in two] and len(one) == 2 * (3 + 2) * 2
    assert all(np.array_equal(a.degraded, b.degraded) for a, b in zip(one, two))
    assert all(a.params == b.params for a, b in zip(one, two))
    assert not all(np.array_equal(a.degraded, b.degraded) for a, b in zip(one, other) if a.op == "remove-text")
    x4 = next(c for c in one if c.kind == "x4" and not c.jpeg)
    assert x4.degraded.shape[0] * 4 == x4.clean.shape[0] and x4.mask is None
    # a subset of kinds gives the same cases as in the full set
    logos = dataset.build_cases(photos, ["remove-text"], seed=5, kinds=["logo"])
    assert np.array_equal(logos[0].degraded, next(c for c in one if c.id == logos[0].id).degraded)
    with pytest.raises(EvalError, match="unknown degradation"):
        dataset.build_cases(photos, ["remove-text"], seed=5, kinds=["smudge"])


def test_variant_names_are_checked():
    assert resolve_variants(["telea", "lanczos", "auto"], ["remove-text", "upscale"]) == \
        {"remove-text": ["telea", "auto"], "upscale": ["lanczos", "auto"]}
    with pytest.raises(EvalError, match="unknown variant"):
        resolve_variants(["nope"], ["remove-text"])


def test_bad_variant_ranks_last_and_same_seed_gives_identical_tables(photo_dir, lpips_store, meanfill, tmp_path):
    config = EvalConfig(dataset=str(photo_dir), ops=["remove-text"], kinds=["text", "logo"], seed=3,
                        variants=["telea", "patchmatch", "auto", meanfill], model_dir=str(lpips_store),
                        max_visuals=2)
    first = run_suite(config, tmp_path / "a")
    ranked = sorted((e for e in first.summary if e.get("rank")), key=lambda e: e["rank"])
    assert [e["variant"] for e in ranked][-1] == "meanfill", ranked
    assert {e["variant"] for e in ranked} == {"telea", "patchmatch", "auto", "meanfill"}
    by_name = {e["variant"]: e for e in first.summary}
    # every real variant improves on the degraded input inside the mask; the mean fill does not beat them
    for name in ("telea", "patchmatch", "auto"):
        assert by_name[name]["lpips_mask"] < by_name[INPUT]["lpips_mask"]
        assert by_name[name]["fill_psnr_mask"] > by_name["meanfill"]["fill_psnr_mask"]
    assert by_name["meanfill"]["seam_error"] > by_name["telea"]["seam_error"]
    assert sum(by_name["auto"]["chosen"].values()) == by_name["auto"]["n"]

    second = run_suite(config, tmp_path / "b")
    for table in TABLES:
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes(), table
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert len(results["rows"]) == 3 * 2 * 5 and results["config"]["seed"] == 3
    assert second.summary == first.summary

    config.seed = 4
    run_suite(config, tmp_path / "c")
    assert (tmp_path / "a" / "images.csv").read_bytes() != (tmp_path / "c" / "images.csv").read_bytes()


def _colour_pixels(png: Path) -> tuple[int, int]:
    """(pixels of the plots' bar/histogram blue, strongly coloured pixels) in a screenshot."""
    arr = np.asarray(PILImage.open(png).convert("RGB")).astype(int)
    blue = np.all(np.abs(arr - np.array([0x4C, 0x72, 0xB0])) <= 6, axis=2).sum()
    colourful = ((arr.max(axis=2) - arr.min(axis=2)) > 60).sum()
    return int(blue), int(colourful)


def _screenshot(page: Path, png: Path) -> None:
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2600",
                        page.as_uri()], check=True, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_cli_report_on_bundled_photos_renders_in_chromium(lpips_store, tmp_path):
    from orchestration.cli import main

    out = tmp_path / "report"
    code = main(["eval", "--dataset", "bundled", "--max-side", "128", "--seed", "1", "--out", str(out),
                 "--model-dir", str(lpips_store), "--device", "cpu", "--max-visuals", "4"])
    assert code == 0
    page = (out / "index.html").read_text()
    for ref in ("plots/confidence.png", "plots/coverage.png", "plots/rank-remove-text.png", "summary.csv"):
        assert ref in page and (out / ref).is_file()
    crops = sorted((out / "img").glob("*.png"))
    assert len(crops) >= 4 * (3 + 3 * 2)  # before, truth, mask, before error + 3 variants x (after, error)
    assert all(f"img/{c.name}" in page for c in crops)

    shot = tmp_path / "shot.png"
    _screenshot(out / "index.html", shot)
    blue, colourful = _colour_pixels(shot)
    # the same page without its images and plots, for contrast
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out / "index.html", bare / "index.html")
    bare_shot = tmp_path / "bare.png"
    _screenshot(bare / "index.html", bare_shot)
    bare_blue, bare_colourful = _colour_pixels(bare_shot)
    assert blue > 2000 and bare_blue < 200, (blue, bare_blue)
    assert colourful > 50_000 and colourful > 10 * max(1, bare_colourful), (colourful, bare_colourful)


def test_true_mask_mode_isolates_inpainting(photo_dir, tmp_path):
    config = EvalConfig(dataset=str(photo_dir), ops=["remove-text"], kinds=["logo"], seed=2, variants=["telea"],
                        lpips=False, max_visuals=0)
    detected = run_suite(config, tmp_path / "detected")
    config.mask = "true"
    oracle = run_suite(config, tmp_path / "true")
    # the pipeline dilates the given mask, so every overlay pixel is in the fill region
    assert all(c["recall"] == 1.0 for c in oracle.evaluation.cases)
    assert [c["case"] for c in detected.evaluation.cases] == [c["case"] for c in oracle.evaluation.cases]
    score = {name: next(e for e in r.summary if e["variant"] == "telea")["psnr_mask"]
             for name, r in (("detected", detected), ("true", oracle))}
    assert score["true"] > score["detected"]
    assert "lpips_mask" not in oracle.summary[0]
