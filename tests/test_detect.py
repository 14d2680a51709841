"""Detection and masks on real photos with known text overlays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from orchestration.local import restore
from worker.pipeline.plan import Plan
from worker import stages
from worker.io import Image
from worker.mask import MaskParams
from worker.pipeline.cache import ModelCache
from worker.errors import RetouchError


def test_confidence_map_is_full_resolution_probability(detector, overlaid):
    _, degraded, truth = overlaid["chelsea"]
    conf = detector.confidence(degraded)
    assert conf.shape == truth.shape and conf.dtype == np.float32
    assert 0.0 <= conf.min() and conf.max() <= 1.0
    assert conf[truth].mean() > 5 * conf[~truth].mean()


def test_recall_on_text_pixels_at_least_090(detector, overlaid):
    hits = total = 0
    for name, (_, degraded, truth) in overlaid.items():
        det = stages.detect(degraded, detector, MaskParams())
        recall = det.core[truth].mean()
        assert recall >= 0.75, f"{name}: recall {recall:.3f}"
        hits += det.core[truth].sum()
        total += truth.sum()
    assert hits / total >= 0.9


def test_naive_threshold_misses_strokes_but_mask_follows_them(detector, overlaid):
    """DBNet's map marks shrunk kernels: thresholding it misses most stroke pixels,
    while the mask covers them without filling whole boxes."""
    for name, (_, degraded, truth) in overlaid.items():
        conf = detector.confidence(degraded)
        naive_recall = (conf >= 0.3)[truth].mean()
        det = stages.detect(degraded, detector, MaskParams())
        box_area = sum(w * h for _, _, w, h in det.stats["boxes"])
        assert naive_recall < 0.5, f"{name}: naive thresholding recall {naive_recall:.2f}"
        assert det.core[truth].mean() > naive_recall + 0.3
        # the mask also takes anti-aliased edges, outlines and glyphs just beyond the
        # detector's boxes, and scene text it marks (motorcycle's badges): 0.50-0.81 here
        assert det.core.sum() < 0.85 * box_area, f"{name}: mask fills its boxes"


def _true_region(truth: np.ndarray) -> np.ndarray:
    return cv2.dilate(truth.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))).astype(bool)


def test_pipeline_within_3db_of_true_mask_inpainting(overlaid):
    """Over the test photos, the mean PSNR of the full pipeline (detected masks)
    is within 3 dB of the same variant inpainting the true mask."""
    cache = ModelCache(device="cpu")
    plan = Plan(ops=["remove-text"])
    gaps = {}
    for name, (clean, degraded, truth) in overlaid.items():
        restored = restore(Image(rgb=degraded, name=name), plan, cache)
        variant = restored.record["variants"]["inpaint"]
        ours = peak_signal_noise_ratio(clean, restored.image.rgb, data_range=1.0)
        reference, _ = stages.inpaint(degraded, None, _true_region(truth), variant)
        best = peak_signal_noise_ratio(clean, reference, data_range=1.0)
        before = peak_signal_noise_ratio(clean, degraded, data_range=1.0)
        gaps[name] = best - ours
        # +1.5 dB at least: on motorcycle the detector also marks the tank's and the
        # engine's YAMAHA badges, real text the clean photo keeps (+1.8 dB there)
        assert ours > before + 1.5, f"{name}: restoration gained only {ours - before:.2f} dB"
        # per photo 6 dB: the stroke mask now also takes the glyphs' full anti-aliased
        # edges and outlines, and on coffee a strip of the cup rim between dark letters
        # (5.2 dB); the mean over the photos stays within 3 dB
        assert gaps[name] < 6.0, f"{name}: {ours:.2f} dB vs true-mask {variant} {best:.2f} dB"
    assert np.mean(list(gaps.values())) <= 3.0, gaps


def test_text_is_gone_for_the_detector_after_restoration(detector, overlaid):
    cache = ModelCache(device="cpu")
    for name, (_, degraded, _) in overlaid.items():
        det = stages.detect(degraded, detector, MaskParams())
        restored = restore(Image(rgb=degraded, name=name), Plan(), cache)
        after = detector.confidence(restored.image.rgb)
        regions = np.zeros_like(det.core)
        for x, y, w, h in det.stats["boxes"]:
            regions[y:y + h, x:x + w] = True
        assert after[regions].mean() < 0.3, name


def test_soft_and_binary_masks(detector, overlaid):
    _, degraded, _ = overlaid["rocket"]
    soft = stages.detect(degraded, detector, MaskParams(type="soft", sigma=4))
    hard = stages.detect(degraded, detector, MaskParams(type="binary"))
    assert np.array_equal(soft.binary, hard.binary)
    assert set(np.unique(hard.soft)) <= {0.0, 1.0}
    inner = soft.soft[soft.binary]
    assert ((inner > 0.05) & (inner < 0.95)).mean() > 0.05, "soft mask has no feathering"
    assert soft.soft[~soft.binary].max() == 0.0
    stats = soft.stats
    assert 0 < stats["coverage"] < 0.3 and stats["regions"] >= 1 and len(stats["boxes"]) == stats["regions"]
    assert set(stats["confidence"]) == {"p5", "p25", "p50", "p75", "p95"}


def test_user_mask_replaces_detection(overlaid):
    _, degraded, truth = overlaid["coffee"]

    class NoDetector:
        def confidence(self, rgb):  # pragma: no cover - must not be called
            raise AssertionError("detector used despite a user mask")

    det = stages.detect(degraded, NoDetector(), MaskParams(), user_mask=truth.astype(np.float32))
    assert det.stats["source"] == "user" and det.core[truth].all()
    with pytest.raises(RetouchError, match="mask is"):
        stages.detect(degraded, NoDetector(), MaskParams(), user_mask=np.zeros((5, 5), np.float32))


def test_tiled_detection_matches_whole_image(overlaid):
    """Large images are tiled; the text found must not depend on the tiling."""
    from worker.detect import TextDetector

    _, degraded, truth = overlaid["rocket"]
    big = np.concatenate([degraded, degraded[:, ::-1]], axis=1)  # 256x512
    truth2 = np.concatenate([truth, truth[:, ::-1]], axis=1)
    whole = TextDetector(device="cpu", min_side=256).confidence(big)
    tiler = TextDetector(device="cpu", min_side=256, tile=192, overlap=64, single_pass_pixels=0)
    tiled = tiler.confidence(big)
    assert len(tiler.model_inputs(big)) > 1
    assert tiled.shape == whole.shape
    assert abs(float((tiled >= 0.3)[truth2].mean()) - float((whole >= 0.3)[truth2].mean())) < 0.1
    assert np.abs(tiled - whole).mean() < 0.02


def test_one_pass_while_the_enlarged_image_fits_the_budget():
    """An image whose enlarged size fits ``single_pass_pixels`` runs once (no
    overlap computed twice); a larger one runs in tiles; both cover the image."""
    from worker.detect import TextDetector

    rgb = np.zeros((640, 1024, 3), np.float32)          # enlarged to 736x1178 for the model
    one = TextDetector(device="cpu").model_inputs(rgb)
    assert len(one) == 1 and one[0].shape[2] >= 736 and one[0].shape[3] >= 1178
    tiled = TextDetector(device="cpu", single_pass_pixels=736 * 1024).model_inputs(rgb)
    assert len(tiled) >= 2 and all(x.shape[2] <= 1024 and x.shape[3] <= 1024 for x in tiled)
