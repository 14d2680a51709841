"""Faint logos and outlined stamps around the text the detector found.

A logo or stamp composited over a photo is letters (which the text detector
often finds) with an outline around them (a ring, a rounded square, a
stamp's frame, which it does not), all of one colour at one opacity:

    observed = a0 * colour + (1 - a0) * photo     on every stroke

so against the photo's background (a median of the surroundings, wider than
a stroke) each stroke pixel moves towards the same colour by the same
fraction ``a0``; the photo's own edges (and the photo pixels a detected word's
box also holds) do not agree on one colour and one fraction.

Per detected word (the detector's soft mask, nearby glyphs grouped):

1. Its colour and opacity: the colour most of its changed pixels head for
   (where each pixel's residual ray leaves the RGB cube, the mode over 6
   levels a channel), the one on whose alpha most of them agree.
2. Growth: within half the word's size around it, the pixels moving towards
   that colour by about ``a0``; the parts touching the word's agreeing
   pixels, and long thin ones (an outline), join it.
3. Fit: the photo under the mark is inpainted (Telea); opacity and colour by
   least squares (alternating, as for a learned mark); alpha per pixel
   (stroke interiors at ``a0``, antialiased edges below). A nearly opaque
   mark (``a0 >= OPAQUE``) is left to the inpainter, edges included: dividing
   by ``1 - a0`` would amplify the estimate's error past what filling costs.

A word whose pixels share no colour, or whose fit explains under
``MIN_FIT`` of its change, is left as the detector found it. The overlay goes
to :class:`worker.watermark.marks.Marks`, so ``unblend`` restores real
pixels where the mark is semi-transparent.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from worker.blend import alpha_towards as _alpha_towards
from worker.blend import exit_modes
from worker.geometry import min_area_rect
from worker.watermark.marks import Marks
from worker.watermark.template import ALPHA_FLOOR

log = logging.getLogger(__name__)

MIN_COS = 0.9       # a pixel's change vs the direction from its background to the mark's colour
MIN_SEED = 20       # changed pixels a detected word needs
MIN_AGREE = 0.15    # share of them that must agree on the colour and opacity
MIN_FIT = 0.6       # share of the change inside the mark its overlay must explain
OPAQUE = 0.62       # opacity from which a mark is inpainted rather than unblended
MAX_SPREAD = 0.14   # a mark's strokes agree on one opacity: measured 0.05-0.13 on marks, 0.15-0.26 on photo edges
OPAQUE_SPREAD = 0.16  # ... a nearly opaque one (a stamp: filled, never unblended) up to this (a photo edge: 0.177)
MAX_ALPHA = 0.9     # opaque text: the detector's own maps already send it to the inpainter
CHANGED = 0.05      # a channel's change from the background that counts as changed
REACH = 1.6         # how far from a word's centre its outline may run, in half-diagonals (+8 px)
GROW_STEPS = 6      # rounds of growth against the inpainted photo (2 px each)
COLOURS = 4         # most common gamut exits of a word tried as its colour
NOT_FOUND = "auto: no detected text is part of a logo or stamp of one colour and opacity"


def _background(rgb: np.ndarray, k: int) -> np.ndarray:
    u8 = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    return cv2.medianBlur(u8, k).astype(np.float32) / 255.0


def _seed_colour(change: np.ndarray, photo: np.ndarray, seed: np.ndarray
                 ) -> tuple[np.ndarray, float, np.ndarray] | None:
    """(colour, opacity, agreeing pixels) most of ``seed``'s pixels share,
    None when too few agree. The seed (a detected word) also holds photo
    pixels, so the colour is a mode: of the ``COLOURS`` most common gamut
    exits (6 levels a channel) the one on whose alpha most seed pixels agree,
    opaque ones (above ``MAX_ALPHA``) aside."""
    best = None
    for colour in exit_modes(change[seed], photo[seed], COLOURS):
        alpha, cos = _alpha_towards(change, photo, colour)
        agree = seed & (cos > MIN_COS) & (alpha > 0.1) & (alpha < 1.05)
        if agree.sum() < 15:
            continue
        a0 = float(np.median(alpha[agree]))
        if a0 > MAX_ALPHA:   # opaque: photo pixels of the word's box (a dark collar), or text the detector fills anyway
            continue
        agree &= np.abs(alpha - a0) < 0.1 + 0.2 * a0
        if best is None or agree.sum() > best[2].sum():
            best = (colour, a0, agree)
    if best is None or best[2].sum() < max(MIN_SEED, MIN_AGREE * seed.sum()):
        return None
    return best


def _around(part: np.ndarray, cx: float, cy: float, reach: float) -> tuple[float, np.ndarray]:
    """(share of the directions from (cx, cy) that ``part`` covers, its pixels within ``reach`` of it)."""
    ys, xs = np.nonzero(part)
    near = np.hypot(xs - cx, ys - cy) <= reach
    angles = np.arctan2(ys[near] - cy, xs[near] - cx)
    cover = len(np.unique(np.floor((angles + np.pi) / (2 * np.pi) * 36))) / 36.0
    kept = np.zeros(part.shape, bool)
    kept[ys[near], xs[near]] = True
    return cover, kept


def _grow(change: np.ndarray, photo: np.ndarray, colour: np.ndarray, a0: float, agree: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """(mark, extent), bool in the window's shape. The mark: the pixels
    moving towards ``colour`` by about ``a0`` that touch ``agree`` (the
    word's letters), and the outline around them: thin parts that go a
    quarter of the way round the word's centre or more, taken within
    ``REACH`` times the word's half-diagonal of it (a whisker or a photo's
    edge running past goes round little of it, and far). The extent: their
    convex hull, 2 px wider."""
    alpha, cos = _alpha_towards(change, photo, colour)
    like = (cos > MIN_COS) & (np.abs(alpha - a0) < 0.1 + 0.25 * a0)
    like = cv2.morphologyEx(like.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, parts, stats, _ = cv2.connectedComponentsWithStats(like, connectivity=8)
    ys, xs = np.nonzero(agree)
    cx, cy = float(xs.mean()), float(ys.mean())
    reach = REACH * (0.5 * float(np.hypot(np.ptp(xs), np.ptp(ys))) + 8)
    keep = agree.copy()
    for j in range(1, n):
        part = parts == j
        cover, near = _around(part, cx, cy, reach)
        if (part & agree).any() or (cover >= 0.25 and stats[j, 4] < 0.6 * stats[j, 2] * stats[j, 3]):
            keep |= near
    extent = np.zeros(agree.shape, np.uint8)
    cv2.fillPoly(extent, [cv2.convexHull(cv2.findNonZero(keep.astype(np.uint8)))], 1)
    return keep, cv2.dilate(extent, np.ones((5, 5), np.uint8)).astype(bool)


def _inpainted(crop: np.ndarray, hole: np.ndarray) -> np.ndarray:
    u8 = np.clip(np.rint(crop * 255), 0, 255).astype(np.uint8)
    return cv2.inpaint(u8, hole.astype(np.uint8), 3, cv2.INPAINT_TELEA).astype(np.float32) / 255.0


def _fill_in(crop: np.ndarray, found: np.ndarray, colour: np.ndarray, a0: float) -> np.ndarray:
    """Pixels near ``found`` moving towards ``colour`` by about ``a0`` against
    the photo inpainted under them: bold letters cover most of a median's
    window, so against the median their middles barely change."""
    hole = cv2.dilate(found.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    photo = _inpainted(crop, hole)
    alpha, cos = _alpha_towards(crop - photo, photo, colour)
    return hole & (cos > 0.8) & (alpha > 0.5 * a0) & (alpha < 1.5 * a0 + 0.1)


def _mark(crop: np.ndarray, change: np.ndarray, photo: np.ndarray, colour: np.ndarray, a0: float,
          agree: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The mark's pixels in a window (bool): grown from ``agree`` against the
    median background, then along it and the ``seed`` against the photo
    inpainted under them."""
    region, extent = _grow(change, photo, colour, a0, agree)
    for _ in range(GROW_STEPS):   # along an outline where the median background is off (a strong edge)
        more = _fill_in(crop, region | seed, colour, a0) & extent & ~region
        if not more.any():
            break
        region |= more
    return region


def _fit(crop: np.ndarray, region: np.ndarray, colour: np.ndarray, a0: float
         ) -> tuple[np.ndarray, np.ndarray, float, float, float] | None:
    """(colour, alpha HxW of the crop, opacity, fit, spread) of the overlay on
    ``region``: fit, the share of the change it explains; spread, the median
    deviation of the stroke pixels' alpha from the opacity, relative to it.
    None when too little of the region sits at the mark's opacity."""
    if region.sum() < MIN_SEED:
        return None
    photo = _inpainted(crop, cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)))
    change = crop - photo
    for _ in range(3):
        raw, _ = _alpha_towards(change, photo, colour)
        interior = region & (raw > 0.6 * a0)
        if interior.sum() < 10:
            return None
        a0 = float(np.clip(np.median(raw[interior]), 0.05, 1.0))
        colour = np.clip((crop - (1 - a0) * photo)[interior].mean(axis=0) / a0, 0, 1).astype(np.float32)
    raw, _ = _alpha_towards(change, photo, colour)
    # where the photo is close to the mark's colour its alpha is mostly noise: measured where it is not
    telling = interior & (np.abs(colour - photo).max(axis=2) > 0.25)
    spread = float(np.median(np.abs(raw[telling if telling.sum() >= 10 else interior] - a0))) / a0
    # the antialiased rim just outside the strokes, measured against the same inpainted photo
    rim = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & (raw > 0.15 * a0)
    alpha = np.where(rim | region, np.clip(raw, 0.0, a0), 0.0)
    alpha = np.where(alpha > 0.75 * a0, a0, alpha)   # stroke interiors sit at the mark's opacity
    alpha = np.where(alpha > ALPHA_FLOOR, alpha, 0.0).astype(np.float32)
    error = change - alpha[..., None] * (colour - photo)
    fit = max(0.0, 1.0 - float((error[region] ** 2).sum()) / (float((change[region] ** 2).sum()) + 1e-12))
    return colour, alpha, a0, fit, spread


def seeded_marks(rgb: np.ndarray, seeds: np.ndarray, marks: Marks | None = None) -> Marks:
    """Logos and stamps grown from ``seeds`` (bool HxW: the text the detector
    found) in ``rgb`` (float32 HxWx3), merged into ``marks`` with one record
    each: kind (``logo``, unblended, or ``stamp``, nearly opaque and filled),
    centre, angle, size, alpha handed on (1 when filled), opacity and colour
    estimated, score (= fit) and spread;
    a note when no detected word is part of one."""
    marks = marks if marks is not None else Marks.empty(rgb.shape[:2])
    if not seeds.any():   # nothing to grow from: skip the whole-image median
        marks.notes.append(NOT_FOUND)
        return marks
    h, w = rgb.shape[:2]
    photo = _background(rgb, max(int(2 * round(0.03 * min(h, w)) + 1), 7))
    change = rgb - photo
    changed = np.abs(change).max(axis=2) > CHANGED
    words = cv2.dilate(seeds.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(words, connectivity=8)
    found = 0
    for i in range(1, n):
        x, y, bw, bh, _ = stats[i]
        grow = int(max(16, 0.6 * max(bw, bh)))
        x0, y0, x1, y1 = max(0, x - grow), max(0, y - grow), min(w, x + bw + grow), min(h, y + bh + grow)
        seed = (labels[y0:y1, x0:x1] == i) & seeds[y0:y1, x0:x1] & changed[y0:y1, x0:x1]
        if seed.sum() < MIN_SEED:
            continue
        picked = _seed_colour(change[y0:y1, x0:x1], photo[y0:y1, x0:x1], seed)
        if picked is None:
            log.debug("word at %d,%d: its pixels share no colour and opacity", x, y)
            continue
        colour, a0, agree = picked
        crop = rgb[y0:y1, x0:x1]
        # bold letters fill most of the median's window, so against it their alpha reads low: against the photo
        # inpainted under them instead
        under = _inpainted(crop, cv2.dilate(seed.astype(np.uint8), np.ones((5, 5), np.uint8)))
        a_under, _ = _alpha_towards(crop - under, under, colour)
        a0 = max(a0, float(np.median(a_under[agree])))
        region = _mark(crop, change[y0:y1, x0:x1], photo[y0:y1, x0:x1], colour, a0, agree, seed)
        fitted = _fit(crop, region, colour, a0)
        # the fit's opacity must be the one the mark was grown at (else the growth took in something else)
        spread_limit = MAX_SPREAD if fitted is None or fitted[2] < OPAQUE else OPAQUE_SPREAD
        if (fitted is None or fitted[3] < MIN_FIT or fitted[4] > spread_limit
                or abs(fitted[2] - a0) > 0.1 + 0.25 * a0):
            log.debug("word at %d,%d: colour %s at %.2f, no overlay fits (%s)", x, y, np.round(colour, 2), a0,
                      fitted and [round(float(v), 3) for v in fitted[2:]])
            continue
        colour, alpha, a0, fit, spread = fitted
        if a0 >= OPAQUE:
            alpha = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
        overlay = np.zeros((h, w, 4), np.float32)
        overlay[y0:y1, x0:x1, :3] = colour
        overlay[y0:y1, x0:x1, 3] = alpha
        (cx, cy), (rw, rh), angle = min_area_rect(alpha > 0)
        if rw < rh:
            angle -= 90.0
        # alpha: what the overlay hands on (1: filled); opacity: the estimate
        marks.add(overlay, round(fit, 3), [{
            "kind": "stamp" if a0 >= OPAQUE else "logo", "x": round(float(cx + x0), 2), "y": round(float(cy + y0), 2),
            "angle": round(float(angle), 2), "size": [round(float(max(rw, rh)), 1), round(float(min(rw, rh)), 1)],
            "alpha": 1.0 if a0 >= OPAQUE else round(a0, 3), "opacity": round(a0, 3),
            "colour": [round(float(c), 3) for c in colour], "score": round(fit, 3), "fit": round(fit, 3),
            "spread": round(spread, 3)}])
        found += 1
    if not found:
        marks.notes.append(NOT_FOUND)
    return marks
