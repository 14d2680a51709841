"""From the detector's confidence map to a mask that follows the strokes.

DBNet's map marks a shrunk *kernel* of each text line: thresholding it misses
most stroke pixels, and a whole box would make the inpainter invent far more
than the text covered. So:

1. regions: threshold the map, and grow each connected kernel back to its text
   line by DBNet's unclip distance (area * ratio / perimeter);
2. strokes: inside each region, a pixel is text when its colour is closer to
   the line's text colour than to the local background (a median filter wider
   than a stroke); that gives a per-pixel stroke probability;
3. mask: strokes dilated by ``dilate`` px is the fill region; the soft mask is
   1 on the strokes and feathered with a Gaussian of ``sigma`` across that
   margin (blend weights); ``type="binary"`` keeps the hard region only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


TEXT_COLOUR_DELTA_E = 8.0
TEXT_COLOUR_TOLERANCE = 0.5


@dataclass(frozen=True)
class MaskParams:
    type: str = "soft"          # "soft" | "binary"
    sigma: float = 4.0          # feathering, px
    threshold: float = 0.3      # on the detector's probability
    dilate: int = 2             # px around strokes
    unclip_ratio: float = 1.6   # DBNet's kernel -> text line growth
    min_region_area: int = 6    # px of kernel; smaller blobs are noise
    stroke_margin: float = 0.15 # stroke probability needed to count as text

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MaskResult:
    """``soft``: float32 HxW blend weights in [0, 1]; ``binary``: bool HxW fill
    region; ``core``: bool HxW strokes + dilation; ``regions``: bool HxW text
    lines; ``boxes``: [x, y, w, h] per region."""

    soft: np.ndarray
    binary: np.ndarray
    core: np.ndarray
    regions: np.ndarray
    boxes: list[list[int]]
    strokes: np.ndarray | None = None


def _disk(radius: int) -> np.ndarray:
    radius = max(0, int(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def text_regions(confidence: np.ndarray, params: MaskParams) -> tuple[np.ndarray, list[list[int]], list[np.ndarray]]:
    """Text-line regions grown from the thresholded kernels.

    Returns (union bool HxW, boxes [x, y, w, h], one bool mask per region)."""
    kernels = (confidence >= params.threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(kernels, connectivity=8)
    union = np.zeros(confidence.shape, bool)
    boxes, masks = [], []
    h, w = confidence.shape
    for i in range(1, count):
        x, y, bw, bh, area = stats[i]
        if area < params.min_region_area:
            continue
        comp = (labels[y:y + bh, x:x + bw] == i).astype(np.uint8)
        contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        perimeter = max(1.0, sum(cv2.arcLength(c, True) for c in contours))
        grow = int(np.ceil(area * params.unclip_ratio / perimeter)) + 1
        y0, y1, x0, x1 = max(0, y - grow), min(h, y + bh + grow), max(0, x - grow), min(w, x + bw + grow)
        region = np.zeros((y1 - y0, x1 - x0), np.uint8)
        region[y - y0:y - y0 + bh, x - x0:x - x0 + bw] = comp
        region = cv2.dilate(region, _disk(grow)).astype(bool)
        full = np.zeros((h, w), bool)
        full[y0:y1, x0:x1] = region
        union |= full
        boxes.append([int(x0), int(y0), int(x1 - x0), int(y1 - y0)])
        masks.append(full)
    return union, boxes, masks


def stroke_probability(rgb: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Per-pixel probability (float32 HxW) that a pixel of ``region`` is a stroke.

    Strokes are thin, so a median filter wider than a stroke but narrower than
    the line estimates the local background, texture included. The text colour
    is the mean of the region's pixels farthest from that background; each pixel
    is then text or background by which of the two it is closer to (Lab)."""
    prob = np.zeros(region.shape, np.float32)
    ys, xs = np.nonzero(region)
    if ys.size < 4:
        return prob
    thickness = 2.0 * float(cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3).max())
    k = int(max(5, round(thickness * 0.6))) | 1
    pad = k
    y0, y1 = max(0, ys.min() - pad), min(region.shape[0], ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(region.shape[1], xs.max() + 1 + pad)
    sub = region[y0:y1, x0:x1]
    crop = np.ascontiguousarray(rgb[y0:y1, x0:x1], np.float32)
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2Lab)
    crop8 = np.clip(np.rint(crop * 255), 0, 255).astype(np.uint8)
    background = cv2.cvtColor(cv2.medianBlur(crop8, min(k, 255)).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    dist_bg = np.linalg.norm(lab - background, axis=2)
    inside = dist_bg[sub]
    far = sub & (dist_bg >= np.percentile(inside, 85))
    text = lab[far].mean(axis=0)
    separation = float(np.linalg.norm(text - np.median(background[sub], axis=0)))
    if separation < 6.0 or float(np.median(dist_bg[far])) < 6.0:
        return prob  # no distinct text colour (ΔE < 6): nothing to remove here
    d_text = np.linalg.norm(lab - text, axis=2)
    member = np.clip(0.5 + (dist_bg - d_text) / (2 * separation), 0.0, 1.0)
    # Where the background happens to match the text colour (white text crossing a
    # white object), the median cannot tell them apart; such pixels are text-coloured,
    # and filling them costs little, while leaving them leaves glyph fragments.
    member = np.where(d_text <= TEXT_COLOUR_DELTA_E, np.maximum(member, 0.75), member)
    # Closer to the text colour than to the background is not enough: dark eyes
    # under dark text are too. Text is one colour, so stay near it.
    member = np.where(d_text <= TEXT_COLOUR_TOLERANCE * separation, member, member * 0.3)
    prob[y0:y1, x0:x1] = np.where(sub, member, 0.0)
    return prob


def build_mask(rgb: np.ndarray, confidence: np.ndarray, params: MaskParams) -> MaskResult:
    """The stroke-following mask for a confidence map (see the module docstring)."""
    union, boxes, regions = text_regions(confidence, params)
    strokes = np.zeros(confidence.shape, np.float32)
    for region in regions:
        np.maximum(strokes, stroke_probability(rgb, region), out=strokes)
    return mask_from_strokes(strokes >= 0.5 - params.stroke_margin, params, union, boxes)


def mask_from_strokes(strokes: np.ndarray, params: MaskParams, regions: np.ndarray | None = None,
                      boxes: list[list[int]] | None = None) -> MaskResult:
    """Dilate and feather a bool stroke mask (also used for user-supplied masks).

    The fill region (``binary``) is the strokes dilated by ``dilate`` px: every
    extra pixel the inpainter must invent costs quality, so feathering does not
    grow it. The soft mask is 1 on the strokes and falls off with a Gaussian of
    ``sigma`` across the dilation margin, so the fill fades into the real pixels
    at the region's edge instead of meeting them at a hard seam."""
    strokes = strokes.astype(bool)
    core = cv2.dilate(strokes.astype(np.uint8), _disk(params.dilate)).astype(bool) if params.dilate else strokes.copy()
    if params.type == "binary" or params.sigma <= 0:
        soft = core.astype(np.float32)
    else:
        blurred = cv2.GaussianBlur(strokes.astype(np.float32), (0, 0), params.sigma)
        feather = np.clip(blurred / 0.5, 0.0, 1.0)  # a stroke edge pixel sees ~half the kernel
        soft = np.where(core, np.maximum(strokes.astype(np.float32), feather), 0.0).astype(np.float32)
    regions = core.copy() if regions is None else regions
    return MaskResult(soft=soft, binary=core.copy(), core=core, regions=regions, boxes=boxes or [],
                      strokes=strokes)


def stroke_width(strokes: np.ndarray) -> float:
    """Median stroke width in px: twice the distance to the edge along the skeleton."""
    from skimage.morphology import skeletonize

    if not strokes.any():
        return 0.0
    skeleton = skeletonize(strokes)
    dist = cv2.distanceTransform(strokes.astype(np.uint8), cv2.DIST_L2, 3)
    return float(2.0 * np.median(dist[skeleton])) if skeleton.any() else 0.0


def mask_stats(confidence: np.ndarray, result: MaskResult) -> dict:
    """JSON-able summary: coverage fractions, confidence percentiles inside the
    mask core, number of regions and their boxes, stroke width."""
    core = result.core
    inside = confidence[core]
    pct = {f"p{q}": round(float(np.percentile(inside, q)), 4) for q in (5, 25, 50, 75, 95)} if inside.size else {}
    width = stroke_width(result.strokes) if result.strokes is not None else 0.0
    return {
        "coverage": round(float(core.mean()), 6),
        "fill_coverage": round(float(result.binary.mean()), 6),
        "confidence": pct,
        "confidence_mean": round(float(inside.mean()), 4) if inside.size else None,
        "regions": len(result.boxes),
        "boxes": result.boxes,
        "stroke_width": round(width, 2),
    }


def confidence_sample(confidence: np.ndarray, core: np.ndarray, limit: int = 4096) -> np.ndarray:
    """A deterministic subsample of the confidences inside the bool mask ``core`` (for histograms)."""
    inside = confidence[core]
    if inside.size <= limit:
        return inside
    return inside[np.linspace(0, inside.size - 1, limit).astype(int)]
