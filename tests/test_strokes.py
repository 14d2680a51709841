"""The learned stroke segmenter: shipped weights, what it adds to the mask
against the true overlay mask, and its training entry point."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from orchestration import train
from orchestration.evaluate import dataset
from worker import stages
from worker.mask import MaskParams, learned_strokes
from worker.strokes import WEIGHTS, StrokeSegmenter


@pytest.fixture(scope="module")
def bold_cases():
    """Bold captions over the bundled photos (never seen in training: see orchestration.train)."""
    photos = dataset.load_photos(dataset.BUNDLED, max_side=384)
    return dataset.build_cases(photos, ["remove-text"], 0, ["text-bold"])


def _recall(mask: np.ndarray, truth: np.ndarray) -> float:
    return float((mask & truth).sum() / max(1, truth.sum()))


def test_shipped_weights_load_safely_and_give_a_probability_map():
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert all(v.dtype in (torch.float16, torch.int64) for v in state.values())
    segmenter = StrokeSegmenter()
    crop = np.random.default_rng(0).random((50, 170, 3), dtype=np.float32)
    prob = segmenter.probability(crop, 20.0)
    assert prob.shape == (50, 170) and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0


def test_bold_text_over_its_own_colour_is_found_by_shape(bold_cases, detector):
    """Dark bold words crossing a dark helmet, pale ones over a pale suit: the
    colour evidence loses those glyphs; the learned segmenter finds them. The
    pooled recall over the true overlay mask rises, and the fill region stays
    tight around the text."""
    params = MaskParams()
    with_net, without, truth_px, beyond = 0, 0, 0, []
    for case in bold_cases:
        found = stages.detect(case.degraded, detector, params)
        with_net += int((found.binary & case.mask).sum())
        beyond.append(float((found.binary & ~case.mask).mean()))
        segmenter, detector.segmenter = detector.segmenter, None
        try:
            plain = stages.detect(case.degraded, detector, params)
        finally:
            detector.segmenter = segmenter
        without += int((plain.binary & case.mask).sum())
        truth_px += int(case.mask.sum())
    assert with_net / truth_px >= 0.95
    assert with_net / truth_px >= without / truth_px + 0.04
    assert np.mean(beyond) <= 0.035   # 2.4% today


def test_learned_strokes_stay_within_reach_of_the_line():
    segmenter = StrokeSegmenter()
    crop = np.full((120, 300, 3), 0.5, np.float32)
    crop[10:30, 20:280] = 1.0   # a white bar far from the line: not this line's strokes
    region = np.zeros((120, 300), bool)
    region[80:100, 100:200] = True
    prob = learned_strokes(crop, region, segmenter, 20.0)
    assert prob.shape == region.shape
    assert prob[:40].max() == 0.0


def test_training_writes_weights_the_segmenter_loads(tmp_path):
    out = tmp_path / "strokes.pt"
    figures = train.train(steps=2, seed=0, out=out, batch=2, pool=4)
    assert figures["steps"] == 2 and np.isfinite(figures["loss"])
    prob = StrokeSegmenter(out).probability(np.zeros((40, 90, 3), np.float32), 16.0)
    assert prob.shape == (40, 90)


def test_training_goes_on_from_given_weights(tmp_path):
    """--init: the run starts from those weights (at a learning rate too small
    to move them, they come back as they were; from scratch they would not)."""
    out = tmp_path / "strokes.pt"
    train.train(steps=2, seed=0, out=out, batch=2, pool=4, init=WEIGHTS, max_lr=1e-12)
    shipped = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    again = torch.load(out, map_location="cpu", weights_only=True)
    convs = [k for k, v in shipped.items() if k.endswith("weight") and v.dim() == 4]
    assert convs and all(torch.allclose(shipped[k].float(), again[k].float(), atol=1e-3) for k in convs)


def test_training_crops_carry_their_true_mask():
    rng = np.random.default_rng(3)
    photos, fonts = train.training_photos(), train.fonts()
    assert len(photos) >= 8 and len(fonts) >= 10
    texts = 0
    for _ in range(12):
        rgb, target, weight = train.sample(rng, photos, fonts)
        assert rgb.shape == (train.CROP, train.CROP, 3) and target.shape == weight.shape == rgb.shape[:2]
        # a target pixel is one the overlay changed visibly; it always counts in the loss
        assert np.all(weight[target > 0] == 1.0)
        texts += bool(target.any())
    assert texts >= 8


@pytest.fixture(scope="module")
def wide_photos():
    return dataset.load_photos(dataset.BUNDLED_WIDE, max_side=384)


def test_lines_the_detector_misses_are_recovered(wide_photos, detector):
    """Pale captions over grass: DBNet does not fire on them at all. The
    segmenter over the whole image finds the strokes, the reader confirms the
    line, and the mask then covers the text (true overlay mask), staying tight."""
    case = next(c for c in dataset.build_cases(wide_photos, ["remove-text"], 0, ["text"]) if c.id == "grass-text")
    params = MaskParams()
    detector.recover = False
    try:
        missed = stages.detect(case.degraded, detector, params)
    finally:
        detector.recover = True
    found = stages.detect(case.degraded, detector, params)
    assert _recall(missed.binary, case.mask) < 0.05
    # 0.58 today: the recovered line holds "MPLE" and is followed past one search to the rest of "SAMPLE 51"
    # (0.39 without that, docs/text.md)
    assert _recall(found.binary, case.mask) >= 0.5
    assert float((found.binary & ~case.mask).mean()) <= 0.01
    recovered = found.stats["recovered"]
    assert recovered and all(len(r["text"].strip()) >= 3 and r["score"] >= 0.6 for r in recovered)


def test_a_leaning_line_the_detector_misses_is_recovered_with_the_image_turned(wide_photos, detector, monkeypatch):
    """"Lot 112" at 32 degrees over grass: DBNet gives nothing, and the
    segmenter over the image as it is finds an "o" and half a "2", so
    recovery found nothing (recall 0). With the image also turned by 30
    degrees each way the glyphs stand level and the whole line is found."""
    from worker import mask

    case = next(c for c in dataset.build_cases(wide_photos, ["remove-text"], 0, ["text-rotated"])
                if c.id == "grass-text-rotated")
    assert abs(case.params["texts"][0]["angle"]) > 25
    monkeypatch.setattr(mask, "RECOVER_TURNS", ())
    upright = stages.detect(case.degraded, detector, MaskParams())
    monkeypatch.undo()
    turned = stages.detect(case.degraded, detector, MaskParams())
    assert _recall(upright.binary, case.mask) < 0.05
    assert _recall(turned.binary, case.mask) >= 0.9   # 0.977 today
    assert float((turned.binary & ~case.mask).mean()) <= 0.01
    assert any("112" in r["text"] for r in turned.stats["recovered"])


def test_recovery_finds_nothing_in_photos_without_text(wide_photos, detector):
    """The segmenter also fires on texture (shelves, grass, brick); read back,
    none of it passes as a line in any of the 12 clean photos. (The rocket's
    own painted lettering, which DBNet finds and the reader rejects, is not
    proposed again.)"""
    for photo in wide_photos:
        stats = stages.detect(photo.rgb, detector, MaskParams()).stats
        assert not stats["recovered"], (photo.name, stats["recovered"])


def test_recovery_adds_no_photo_beside_found_lines(detector):
    """On larger photos the segmenter's strokes at the largest height spread
    from a caption into the photo beside it (fur under chelsea's caption read
    with it as one line). Only parts that read as text by themselves are
    added: recovery leaves every case's false area within 0.3% of the image
    of the detector's own (today at most +0.11%, where it recovers
    motorcycle's "Agency 0240"; without the check: chelsea 1.04% -> 1.97%)."""
    photos = dataset.load_photos(dataset.BUNDLED, max_side=1000)
    enlarged = [dataset.Photo(p.name, np.clip(cv2.resize(p.rgb, None, fx=1000 / max(p.rgb.shape[:2]),
                                                          fy=1000 / max(p.rgb.shape[:2]),
                                                          interpolation=cv2.INTER_CUBIC), 0, 1))
                for p in photos]
    params = MaskParams()
    for case in dataset.build_cases(enlarged, ["remove-text"], 0, ["text"]):
        detector.recover = False
        try:
            plain = stages.detect(case.degraded, detector, params).binary
        finally:
            detector.recover = True
        found = stages.detect(case.degraded, detector, params).binary
        beyond = float((found & ~case.mask).mean()) - float((plain & ~case.mask).mean())
        assert beyond <= 0.003, (case.id, beyond)
        assert _recall(found, case.mask) >= _recall(plain, case.mask) - 0.005, case.id
