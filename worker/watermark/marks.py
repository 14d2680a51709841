"""What the watermark stage hands on: maps in the text detector's format, the
overlay estimate, and one JSON-able record per mark found."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from worker.unblend import ALPHA_MAX, ALPHA_MAX_EXACT
from worker.watermark import match
from worker.watermark.template import ALPHA_FLOOR, Template

CLAIM = 4  # px around a template's mark where the text detector's finding is taken to be the mark


@dataclass
class Marks:
    """``confidence``, ``soft``: float32 HxW in [0, 1]; ``region``: bool HxW
    (the pixels the marks touch: alpha above 0.02); ``overlay``: float32 HxWx4
    (colour, alpha); ``records``: one dict per mark (kind, position, angle,
    scale or period, alpha, colour, score); ``notes``: one line per template
    or detector that found nothing, saying why. ``claimed``: bool HxW, the
    neighbourhood (``CLAIM`` px) of marks placed from a template: there the
    mark explains what the text detector saw, and its region gives way, and
    its alpha is known, so it is unblended up to ``ALPHA_MAX_EXACT`` (see
    :mod:`worker.unblend`)."""

    confidence: np.ndarray
    soft: np.ndarray
    region: np.ndarray
    overlay: np.ndarray
    records: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    claimed: np.ndarray | None = None
    exact: np.ndarray | None = None   # bool HxW: the overlay there comes from a template

    def __post_init__(self) -> None:
        if self.claimed is None:
            self.claimed = np.zeros(self.region.shape, bool)
        if self.exact is None:
            self.exact = np.zeros(self.region.shape, bool)

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> "Marks":
        return cls(np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape, bool),
                   np.zeros(shape + (4,), np.float32))

    def add(self, overlay: np.ndarray, score: float, records: list[dict], claim: bool = False) -> None:
        """Merge one finding's overlay (the larger alpha wins) with its score as
        confidence; ``claim``: the mark's pose is exact (a template), so what
        the text detector found around it is this mark, and where its overlay
        wins, its alpha is known (``exact``)."""
        alpha = overlay[..., 3]
        touched = alpha > ALPHA_FLOOR
        larger = alpha > self.overlay[..., 3]
        self.exact[larger] = claim
        if claim:
            near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * CLAIM + 1,) * 2)
            self.claimed |= cv2.dilate(touched.astype(np.uint8), near).astype(bool)
        self.overlay[larger] = overlay[larger]
        self.region |= touched
        self.confidence = np.maximum(self.confidence, np.where(touched, np.float32(score), 0).astype(np.float32))
        feather = cv2.GaussianBlur(touched.astype(np.float32), (0, 0), 1.0)
        self.soft = np.maximum(self.soft, np.maximum(touched, np.clip(2 * feather, 0, 1))).astype(np.float32)
        self.records.extend(records)


def template_marks(rgb: np.ndarray, templates: list[Template], marks: Marks | None = None) -> Marks:
    """Every occurrence of every template in ``rgb`` (float32 HxWx3), merged into ``marks``."""
    marks = marks if marks is not None else Marks.empty(rgb.shape[:2])
    for template in templates:
        found, rejected = match.find(rgb, template)
        if not found:
            best = rejected[0] if rejected else None
            marks.notes.append(f"{template.name}: no occurrence found" + (
                f" (best candidate: correlation {best.score:.2f}, overlay fit {best.fit:.2f})" if best else
                " (no candidate above the coarse correlation threshold)"))
            continue
        for occurrence in found:
            marks.add(match.render(rgb.shape[:2], template, [occurrence]), occurrence.score,
                      [occurrence.record(template)], claim=True)
    return marks


def merge(confidence: np.ndarray | None, soft: np.ndarray | None, region: np.ndarray | None,
          overlay: np.ndarray | None, marks: Marks) -> dict:
    """The detector's maps with the marks merged in: max of confidence and soft
    mask, union of region. The overlay: where a mark was fitted (alpha above
    0.02) its estimate is kept, since it was measured against the image (the
    text detector's estimate of a logo's letters is typically opaque, which
    would send the whole mark to the inpainter); elsewhere the detector's.
    Where a template's mark claims the pixels (``Marks.claimed``), the
    detector's maps give way: its margin and the photo's details it took for
    strokes (stars under a tiled mark) would be inpainted over the unblended
    photo. A missing map (None) is taken as empty. ``unblend_limit``: the
    largest alpha unblended per pixel, higher where a template placed the
    overlay."""
    shape = marks.region.shape
    confidence = np.zeros(shape, np.float32) if confidence is None else confidence
    soft = np.zeros(shape, np.float32) if soft is None else soft
    region = np.zeros(shape, bool) if region is None else region
    free = ~marks.claimed
    confidence, soft, region = confidence * free, soft * free, region & free
    out = marks.overlay.copy()
    if overlay is not None:
        keep = marks.overlay[..., 3] <= ALPHA_FLOOR
        out[keep] = overlay[keep]
    return {"confidence": np.maximum(confidence, marks.confidence).astype(np.float32),
            "mask": np.maximum(soft, marks.soft).astype(np.float32),
            "region": region | marks.region, "overlay": out.astype(np.float32),
            "unblend_limit": np.where(marks.exact, np.float32(ALPHA_MAX_EXACT), np.float32(ALPHA_MAX))}
