"""Reading a detected line back: PP-OCRv4's recognizer, as a check that it is text.

DBNet fires on things that are not text: a cat's eyes and nose, round
highlights. Filling those paints over the photo. The recognizer that ships
beside the detector in ``rapidocr-onnxruntime`` (CRNN with CTC, ONNX, its
character list in the model's metadata) reads each line's crop: a caption
reads as several characters with high confidence, an eye as one uncertain
letter. :func:`is_text` holds the rule; :class:`LineReader` runs the model and
gives :func:`worker.mask.build_mask` its verdict per region.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from worker.detect.onnx import onnx_session, shipped_model_path
from worker.geometry import min_area_rect

log = logging.getLogger(__name__)

MODEL_FILE = "ch_PP-OCRv4_rec_infer.onnx"
_HEIGHT = 48  # the recogniser's input height as trained (rapidocr config: rec_img_shape 3x48x320)
_MAX_WIDTH = 48 * 40  # a 40:1 line is as long as a caption gets; longer crops are squeezed

# A region is text when the recogniser reads 3+ characters, or 1-2 characters
# confidently enough (MIN_SCORE by length). Measured on retouch eval's 12
# photos (384 px): on the clean photos DBNet's regions are chelsea's eyes and
# nose ('C' 0.83 for the left eye, '' 0.00 for the right eye and the nose) and a
# cup's rim (one CJK glyph, 0.20); the 169 regions over real overlays read 3+
# characters (0.45-1.0), except fragments of 80-540 px (a lone '1', '+', 'P',
# 'S' at 0.09-0.61), which the rule gives up (recall 0.833 -> 0.832).
# An eye reads like a 'C' or an 'O', so one character needs more than two.
MIN_SCORE = {0: float("inf"), 1: 0.9, 2: 0.6}


@dataclass
class Reading:
    """``text``: what the recogniser read; ``score``: mean confidence of its characters (0-1)."""

    text: str
    score: float

    def to_dict(self) -> dict:
        return {"text": self.text, "score": round(self.score, 3)}


def is_text(reading: Reading) -> bool:
    """A line is text when it reads as 3+ characters, or as 1-2 read with MIN_SCORE."""
    length = len(reading.text.strip())
    return length > max(MIN_SCORE) or reading.score >= MIN_SCORE[length]


def to_bgr8(rgb: np.ndarray) -> np.ndarray:
    """float32 RGB in [0, 1] as the uint8 BGR the recogniser was trained on."""
    return (np.clip(rgb[:, :, ::-1], 0, 1) * 255).astype(np.uint8)


def line_crop(rgb: np.ndarray, region: np.ndarray, box: list[int] | None = None) -> np.ndarray:
    """The region's minimum-area rectangle from ``rgb`` (float32 HxWx3, 0-1),
    rotated upright and longer side horizontal, as uint8 BGR (what the model was
    trained on). ``box``: the region's [x, y, w, h] when known (saves a search
    of the whole image)."""
    bx, by = (box[0], box[1]) if box else (0, 0)
    rect = min_area_rect(region[by:by + box[3], bx:bx + box[2]] if box else region, (bx, by))
    (cx, cy), (w, h), angle = rect
    if h > w:
        w, h, angle = h, w, angle + 90.0
    w, h = max(2, int(round(w)) + 2), max(2, int(round(h)) + 2)
    # only the rectangle's surroundings are converted: its bounding box plus the
    # cubic kernel's reach and the rounding above (clipped at the image's edge,
    # where the replicated border is the image's own)
    corners = cv2.boxPoints(rect)
    x0, y0 = (max(0, int(np.floor(v)) - 6) for v in corners.min(axis=0))
    x1 = min(rgb.shape[1], int(np.ceil(corners[:, 0].max())) + 7)
    y1 = min(rgb.shape[0], int(np.ceil(corners[:, 1].max())) + 7)
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    matrix[:, 2] += (w / 2 - cx, h / 2 - cy)  # the rectangle's centre lands in the crop's centre
    matrix[:, 2] += matrix[:, :2] @ (x0, y0)  # ... read from the converted window
    return cv2.warpAffine(to_bgr8(rgb[y0:y1, x0:x1]), matrix, (w, h), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)


class LineReader:
    """PP-OCRv4 text recognition (ONNX, from ``rapidocr-onnxruntime``) on line crops."""

    name = "ppocrv4-rec"

    def __init__(self, device: str = "auto", threads: int = 0):
        from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

        self.session = onnx_session(shipped_model_path(MODEL_FILE), device, threads)
        self.input_name = self.session.get_inputs()[0].name
        characters = self.session.get_modelmeta().custom_metadata_map["character"].splitlines()
        self.decode = CTCLabelDecode(character=characters)

    def read(self, crops: list[np.ndarray]) -> list[Reading]:
        """One Reading per uint8 BGR crop (any size), in order."""
        readings = []
        for crop in crops:  # one at a time: line widths differ, and a batch pads all to the widest
            preds = self.run_session(self._input(crop))
            text, score = self.decode(preds)[0][:2]
            readings.append(Reading(str(text), float(score)))
        return readings

    def read_lines(self, rgb: np.ndarray, regions: list[np.ndarray],
                   boxes: list[list[int]] | None = None) -> list[Reading]:
        """Readings of the bool HxW ``regions`` of ``rgb`` (float32 HxWx3 in [0, 1]);
        ``boxes``: their [x, y, w, h] when known."""
        return self.read([line_crop(rgb, region, box) for region, box in zip(regions, boxes or [None] * len(regions))])

    def model_inputs(self, rgb: np.ndarray, regions: list[np.ndarray],
                     boxes: list[list[int]] | None = None) -> list[np.ndarray]:
        """The arrays the model is run on for these regions (one per line, NCHW):
        what ``retouch bench`` times the bare session with."""
        return [self._input(line_crop(rgb, region, box)) for region, box in zip(regions, boxes or [None] * len(regions))]

    def run_session(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def verdicts(self, rgb: np.ndarray, regions: list[np.ndarray],
                 boxes: list[list[int]] | None = None) -> list[tuple[bool, dict]]:
        """Per region: whether it reads as text (:func:`is_text`), and the reading."""
        return [(is_text(r), {**r.to_dict(), "reader": self.name}) for r in self.read_lines(rgb, regions, boxes)]

    @staticmethod
    def _input(crop: np.ndarray) -> np.ndarray:
        h, w = crop.shape[:2]
        width = int(min(_MAX_WIDTH, max(_HEIGHT, np.ceil(_HEIGHT * w / max(h, 1)))))
        resized = cv2.resize(crop, (width, _HEIGHT), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        x = (resized / 255.0 - 0.5) / 0.5  # PaddleOCR's normalisation
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
