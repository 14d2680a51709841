"""A learned stroke segmenter for a text line the detector found.

DBNet says where a line is; which of its pixels are glyphs is the mask's
question (:mod:`worker.mask`). Colour evidence answers it where the text
stands out from its background, and fails where it does not: a dark bold
word crossing a dark helmet, a pale word over a pale suit, text whose colour
occurs in the photo. A glyph keeps its *shape* there, and a small
convolutional network trained on rendered captions over photos
(:mod:`orchestration.train`) reads the shape.

The network sees one line at a time, rescaled so the line's region is
``LINE_PX`` high (the size it was trained at), and returns a per-pixel stroke
probability over the same crop. The weights (``strokes.pt``, 0.6 MB in half precision)
ship inside the package: they were trained here, from fonts and photos that
ship in installed packages, by ``python -m orchestration.train`` (6000 steps,
17 minutes on 2 CPU cores); they load with ``weights_only=True``. On CUDA the
network runs on the detector's device (each line's crop is a few hundred
kilopixels at most, so it needs no tiling).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

WEIGHTS = Path(__file__).with_name("strokes.pt")
LINE_PX = 24.0      # a line's region height at the network's input (fonts about 28 px)
MULTIPLE = 8        # the network halves the size three times


def build_network():
    """The network (torch imported here: the mask module loads without it)."""
    import torch
    from torch import nn

    def block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    class StrokeNet(nn.Module):
        """A small U-Net: 3 scales down, a dilated bottleneck (receptive field
        beyond a glyph's width), skips back up; RGB in, stroke logits out."""

        def __init__(self, width: int = 16):
            super().__init__()
            w = width
            self.e1, self.e2, self.e3 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.mid = nn.Sequential(block(4 * w, 4 * w, 2), block(4 * w, 4 * w, 4))
            self.d3, self.d2, self.d1 = block(8 * w, 2 * w), block(4 * w, w), block(2 * w, w)
            self.out = nn.Conv2d(w, 1, 1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            up = nn.functional.interpolate
            e1 = self.e1(x - 0.5)
            e2 = self.e2(self.pool(e1))
            e3 = self.e3(self.pool(e2))
            m = self.mid(self.pool(e3))
            d3 = self.d3(torch.cat([up(m, size=e3.shape[-2:]), e3], 1))
            d2 = self.d2(torch.cat([up(d3, size=e2.shape[-2:]), e2], 1))
            d1 = self.d1(torch.cat([up(d2, size=e1.shape[-2:]), e1], 1))
            return self.out(d1)

    return StrokeNet()


class StrokeSegmenter:
    """``probability(crop, height)``: the stroke probability (float32 HxW) of
    an RGB crop holding one text line whose region is ``height`` px high."""

    name = "strokes"

    def __init__(self, weights: Path = WEIGHTS, device: str = "cpu"):
        import torch

        self.device = device
        self.net = build_network()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        self.net.eval().to(device)

    def probability(self, crop: np.ndarray, height: float) -> np.ndarray:
        h, w = crop.shape[:2]
        x, (sh, sw) = self.model_input(crop, height)
        prob = self.run(x)[:sh, :sw]
        return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)

    @staticmethod
    def model_input(crop: np.ndarray, height: float) -> tuple[np.ndarray, tuple[int, int]]:
        """The array the network runs on for ``crop`` (NCHW float32, the crop
        rescaled to ``LINE_PX`` per line height and padded to ``MULTIPLE``),
        and the rescaled crop's size (h, w) inside it."""
        h, w = crop.shape[:2]
        factor = LINE_PX / max(4.0, float(height))
        sw, sh = max(MULTIPLE, int(round(w * factor))), max(MULTIPLE, int(round(h * factor)))
        small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        small = cv2.copyMakeBorder(small, 0, -sh % MULTIPLE, 0, -sw % MULTIPLE, cv2.BORDER_REFLECT)
        return np.ascontiguousarray(small.transpose(2, 0, 1)[None], np.float32), (sh, sw)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The network's stroke probability (HxW float32) for one model input."""
        import torch

        with torch.inference_mode():
            logits = self.net(torch.from_numpy(x).to(self.device))
        return torch.sigmoid(logits)[0, 0].float().cpu().numpy()
