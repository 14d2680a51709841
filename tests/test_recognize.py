"""Reading detected lines back: regions that are not text are not masked.

DBNet takes a cat's eyes and nose for text; filled, they paint over the
photo. The recogniser (PP-OCRv4, shipped in rapidocr-onnxruntime) reads them as
one uncertain letter or nothing, and captions as words."""

from __future__ import annotations

import numpy as np
import pytest

from orchestration.evaluate.dataset import load_photos
from worker.detect.recognize import Reading, is_text, line_crop
from worker.degrade import TextSpec, overlay_text
from worker.mask import MaskParams, build_mask, text_regions


@pytest.fixture(scope="module")
def clean_photos():
    """retouch eval's 12 photos (384 px), none with text on it."""
    return load_photos("bundled-wide")


def test_photos_without_text_get_no_mask(clean_photos, detector):
    params = MaskParams()
    unverified = {}
    for photo in clean_photos:
        conf = detector.confidence(photo.rgb)
        verified = build_mask(photo.rgb, conf, params, detector.reader)
        assert verified.binary.mean() == 0.0, (photo.name, verified.boxes)
        unverified[photo.name] = build_mask(photo.rgb, conf, params).binary.mean()
    # the failure this guards against: without reading back, chelsea's eyes and nose were filled
    assert unverified["chelsea"] > 0.05


def test_captions_read_as_text_and_keep_their_mask(clean_photos, detector):
    rgb = next(p.rgb for p in clean_photos if p.name == "chelsea")
    h = rgb.shape[0]
    specs = [TextSpec("Photo Archive 1984", (20, h - 45), 30, font="DejaVuSans-Bold.ttf", colour=(255, 255, 255)),
             TextSpec("do not copy", (10, 8), 24, colour=(20, 20, 20), opacity=0.6)]
    degraded, truth = overlay_text(rgb, specs)
    conf = detector.confidence(degraded)
    _, _, regions = text_regions(conf, MaskParams())
    readings = detector.reader.read_lines(degraded, regions)
    assert any("Archive" in r.text for r in readings), readings
    result = build_mask(degraded, conf, MaskParams(), detector.reader)
    assert (result.binary & truth).sum() / truth.sum() > 0.9
    eyes = (slice(71, 125), slice(107, 178)), (slice(86, 147), slice(246, 311))  # DBNet's boxes, unverified
    for eye in eyes:
        assert not (result.binary[eye] & ~truth[eye]).any()


def test_rule():
    assert is_text(Reading("SAMPLE", 0.4))
    assert not is_text(Reading("", 0.0))
    assert not is_text(Reading("C", 0.83))  # an eye reads like a C
    assert is_text(Reading("M", 0.95))
    assert not is_text(Reading("oo", 0.5)) and is_text(Reading("©1", 0.7))


def test_line_crop_is_upright_and_holds_the_line():
    img = np.zeros((100, 200, 3), np.float32)
    region = np.zeros((100, 200), bool)
    region[40:60, 20:180] = True
    img[40:60, 20:180] = 1.0
    crop = line_crop(img, region)
    assert crop.shape[1] > 3 * crop.shape[0]
    assert crop.dtype == np.uint8 and crop[2:-2, 2:-2].min() == 255
