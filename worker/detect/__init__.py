"""Text detection with PP-OCRv4's DBNet, run by onnxruntime.

The ONNX model ships inside the ``rapidocr-onnxruntime`` wheel; nothing is
downloaded. :meth:`TextDetector.confidence` returns the model's per-pixel text
probability at the input's full resolution. Small images are enlarged so the
short side reaches ``min_side`` (DBNet misses small glyphs otherwise); large
ones are tiled with overlap so memory stays bounded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from worker.detect.onnx import ModelNotFoundError, onnx_providers, onnx_session, shipped_model_path
from worker.detect.recognize import LineReader
from worker.strokes import WEIGHTS as STROKE_WEIGHTS
from worker.strokes import StrokeSegmenter

__all__ = ["LineReader", "ModelNotFoundError", "TextDetector", "onnx_providers", "shipped_model_path"]

log = logging.getLogger(__name__)

# DBNet's preprocessing as trained (PaddleOCR): BGR, (x/255 - 0.5) / 0.5
_MEAN = 0.5
_STD = 0.5
_STRIDE = 32
# Up to this many model pixels the image runs in one pass (about 1 GB of
# activations on CPU at 2048x2048, measured); beyond, in overlapping tiles.
SINGLE_PASS_PIXELS = 2048 * 2048


class TextDetector:
    """DBNet text probability maps.

    ``min_side``: short side the image is enlarged to before detection;
    ``single_pass_pixels``: the largest enlarged image run in one pass;
    ``tile``: tile edge in model pixels (multiple of 32) beyond it; ``overlap``: tile overlap;
    ``verify``: read each found line back (``reader``, PP-OCRv4's recogniser) so that
    regions that are not text (eyes, highlights) are not masked;
    ``strokes``: the learned stroke segmenter (``segmenter``, :mod:`worker.strokes`)
    adds the glyphs of each found line that colour evidence misses;
    ``recover``: with both, lines DBNet missed are looked for with the segmenter
    over the whole image and read back (:func:`worker.mask.recover_lines`).
    """

    name = "ppocrv4-det"

    def __init__(self, model_path: str | Path | None = None, device: str = "auto",
                 min_side: int = 736, max_scale: float = 4.0, tile: int = 1024, overlap: int = 128,
                 threads: int = 0, single_pass_pixels: int = SINGLE_PASS_PIXELS, verify: bool = True,
                 strokes: bool = True, recover: bool = True):
        self.model_path = Path(model_path) if model_path else shipped_model_path()
        self.session = onnx_session(self.model_path, device, threads)
        self.providers = self.session.get_providers()
        self.device = "cuda" if "CUDAExecutionProvider" in self.providers else "cpu"
        self.input_name = self.session.get_inputs()[0].name
        self.min_side = min_side
        self.max_scale = max_scale
        self.tile = tile - tile % _STRIDE
        self.overlap = overlap
        self.single_pass_pixels = single_pass_pixels
        self.reader = LineReader(device, threads) if verify else None
        self.segmenter = StrokeSegmenter(STROKE_WEIGHTS, self.device) if strokes else None
        self.recover = recover

    def confidence(self, rgb: np.ndarray) -> np.ndarray:
        """Per-pixel text probability, float32 HxW in [0, 1], for float32 HxWx3 RGB."""
        h, w = rgb.shape[:2]
        bgr = self._enlarged(rgb)
        prob = np.zeros(bgr.shape[:2], np.float32)
        for y0, x0, crop in self._tiles(bgr):
            view = prob[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
            np.maximum(view, self._run(crop), out=view)  # a tile's edge sees less context; keep the stronger
        if prob.shape != (h, w):
            enlarged = prob.shape[0] > h
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_AREA if enlarged else cv2.INTER_LINEAR)
        return np.clip(prob, 0.0, 1.0, out=prob)

    def model_inputs(self, rgb: np.ndarray) -> list[np.ndarray]:
        """The arrays the model is run on for ``rgb`` (one per tile, NCHW):
        what ``retouch bench`` times the bare session with."""
        return [self._input(crop) for _, _, crop in self._tiles(self._enlarged(rgb))]

    def run_session(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def _enlarged(self, rgb: np.ndarray) -> np.ndarray:
        """BGR in [0, 1], enlarged so the short side reaches ``min_side``."""
        h, w = rgb.shape[:2]
        scale = min(self.max_scale, max(1.0, self.min_side / min(h, w)))
        sh, sw = max(_STRIDE, int(round(h * scale))), max(_STRIDE, int(round(w * scale)))
        bgr = cv2.cvtColor(np.asarray(rgb, np.float32), cv2.COLOR_RGB2BGR)
        if (sh, sw) != (h, w):
            bgr = cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_CUBIC)
        return np.clip(bgr, 0.0, 1.0, out=bgr)

    def _tiles(self, bgr: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """One pass over the whole image when it fits ``single_pass_pixels``
        (no overlap computed twice, no tile edges); overlapping tiles beyond."""
        h, w = bgr.shape[:2]
        if h * w <= self.single_pass_pixels:
            return [(0, 0, bgr)]
        step = self.tile - self.overlap
        ys = list(range(0, max(1, h - self.overlap), step)) if h > self.tile else [0]
        xs = list(range(0, max(1, w - self.overlap), step)) if w > self.tile else [0]
        tiles = []
        for y in ys:
            for x in xs:
                y0, x0 = min(y, max(0, h - self.tile)), min(x, max(0, w - self.tile))
                tiles.append((y0, x0, bgr[y0:y0 + self.tile, x0:x0 + self.tile]))
        return tiles

    def _input(self, bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        ph, pw = -h % _STRIDE, -w % _STRIDE
        if ph or pw:
            bgr = cv2.copyMakeBorder(bgr, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        # (x - mean) / std and HWC -> NCHW in one pass (the same float32 values as numpy's)
        return cv2.dnn.blobFromImage(np.ascontiguousarray(bgr), 1.0 / _STD, mean=(_MEAN,) * 3)

    def _run(self, bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        return self.run_session(self._input(bgr))[0, 0, :h, :w]
