"""Metrics: scikit-image PSNR/SSIM, their masked forms, detection scores, seam
error, confidence intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tests.conftest import photo
from worker.quality import metrics


@pytest.fixture(scope="module")
def pair():
    clean = photo("chelsea")[:128, :128]
    rng = np.random.default_rng(3)
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    return clean, noisy


def test_full_image_metrics_are_scikit_images(pair):
    clean, noisy = pair
    assert metrics.psnr(clean, noisy) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=1.0))
    assert metrics.ssim(clean, noisy) == pytest.approx(
        structural_similarity(clean, noisy, data_range=1.0, channel_axis=2), abs=1e-6)
    assert metrics.psnr(clean, clean) == metrics.PSNR_CAP


def test_masked_metrics_only_see_the_mask(pair):
    clean, noisy = pair
    mask = np.zeros(clean.shape[:2], bool)
    mask[40:80, 30:90] = True
    # damage only outside the mask: the masked scores must not notice
    outside = np.where(mask[..., None], clean, noisy)
    assert metrics.psnr(clean, outside, mask) == metrics.PSNR_CAP
    assert metrics.psnr(clean, outside) < 30
    inside = np.where(mask[..., None], noisy, clean)
    mse = float(((clean[mask] - noisy[mask]) ** 2).mean())
    assert metrics.psnr(clean, inside, mask) == pytest.approx(10 * math.log10(1 / mse))
    assert metrics.ssim(clean, inside, mask) < metrics.ssim(clean, outside, mask)
    assert math.isnan(metrics.psnr(clean, noisy, np.zeros_like(mask)))
    with pytest.raises(ValueError, match="mask is"):
        metrics.psnr(clean, noisy, mask[:10])


def test_detection_scores():
    truth = np.zeros((10, 10), bool)
    truth[2:6, 2:6] = True                   # 16 px
    pred = np.zeros_like(truth)
    pred[4:8, 2:6] = True                    # 16 px, 8 overlapping
    s = metrics.detection_scores(pred, truth)
    assert s == {"precision": 0.5, "recall": 0.5, "iou": 8 / 24}
    assert metrics.detection_scores(np.zeros_like(truth), np.zeros_like(truth)) == \
        {"precision": 1.0, "recall": 1.0, "iou": 1.0}
    assert metrics.detection_scores(np.zeros_like(truth), truth)["recall"] == 0.0


def test_seam_error_sees_a_flat_patch():
    clean = photo("coffee")[:128, :128]
    region = np.zeros(clean.shape[:2], bool)
    region[40:90, 40:90] = True
    patched = clean.copy()
    patched[region] = clean[region].mean(axis=0) + 0.3
    assert metrics.seam_error(np.clip(patched, 0, 1), region) > 3 * metrics.seam_error(clean, region)


def test_mean_ci():
    mean, half, n = metrics.mean_ci([1.0, 2.0, 3.0, float("nan")])
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) * sd / sqrt(n)
    assert math.isnan(metrics.mean_ci([5.0])[1])
