"""Drop shadows of a text line: the glyphs' own shape, offset by a few pixels.

A caption's shadow is a copy of its strokes moved by (dx, dy) and painted in
a darker (or lighter), usually semi-transparent colour. Over a background
close to that colour (a black shadow on a night sky) it barely differs from
the photo, and the colour clustering of :mod:`worker.mask` keeps too few of
its pixels; yet its *shape* is known once the strokes are. So the offsets
around the strokes are tried: at the shadow's offset, the pixels the moved
strokes cover (outside the strokes themselves) all move from their
background *toward one colour* (darker, for a black shadow), where at other
offsets they move as the photo's texture does, every which way: the mean of
their colour change (Lab) nearly cancels there. The offset whose moved
strokes shift clearly more, on average, than at the other offsets is the
shadow's, if its pixels' changes also agree in direction (the fringe of
anti-aliased strokes, or texture that happens to average to a shift, points
every which way pixel by pixel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_OFFSET = 8        # px: a shadow this far off is not one any more (at the segmentation's scale)
MIN_DEPARTURE = 4.0   # ΔE: the shadow's pixels' mean change from their background
CONTRAST = 2.0        # ... and this many times what moved strokes show at a typical offset
COHERENCE = 0.8       # ... and their changes point one way: |mean change| / mean |change|
# over busy texture (a wheel, a shelf) a typical offset shifts a lot too; a
# shadow whose changes agree this well stands out at a lower contrast
TEXTURED = (0.87, 1.4)  # (coherence, contrast)
SAMPLE = 3000         # stroke pixels the offsets are scored on (evenly taken from longer lines)


@dataclass
class Shadow:
    """``offset``: (dx, dy) px; ``weight``: float32 HxW, the moved stroke
    probability where the pixels changed toward the shadow (0 elsewhere, and
    on the strokes themselves); ``departure``: the length of their mean colour
    change (ΔE); ``typical``: its median over all offsets tried."""

    offset: tuple[int, int]
    weight: np.ndarray
    departure: float
    typical: float


def moved(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``a`` moved by (dx, dy) px (x right, y down), zeros where it leaves nothing."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def _scores(strokes: np.ndarray, open_: np.ndarray, change: np.ndarray, reach: int) -> dict:
    """Per offset (dx, dy) up to ``reach`` px: the length of the mean ``change``
    over the moved stroke pixels that land in ``open_`` (where at least 15%
    of them do). Computed from the strokes' coordinates (at most SAMPLE of
    them, evenly taken) for all offsets at once, not image by image."""
    h, w = strokes.shape
    ys, xs = np.nonzero(strokes)
    step = -(-ys.size // SAMPLE)
    ys, xs = ys[::step], xs[::step]
    offsets = np.array([(dx, dy) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)
                        if dx * dx + dy * dy >= 2])
    qy, qx = ys[None, :] + offsets[:, 1:2], xs[None, :] + offsets[:, 0:1]
    inside = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
    # moved pixels off the image read an extra last entry, zero and not open; each channel is
    # gathered on its own (a gather of single values is several times faster than one of triples)
    flat = np.where(inside, qy * w + qx, h * w)
    counts = np.append(open_.reshape(-1), False)[flat].sum(axis=1)
    shown = np.where(open_[..., None], change, 0.0).astype(np.float32).reshape(-1, 3)
    sums = np.stack([np.append(shown[:, c], np.float32(0))[flat].sum(axis=1) for c in range(3)], axis=1)
    enough = counts >= 0.15 * ys.size
    means = sums[enough] / counts[enough, None]
    return {(int(dx), int(dy)): float(v) for (dx, dy), v in zip(offsets[enough], np.linalg.norm(means, axis=1))}


def reach(height: float) -> int:
    """The farthest offset (px) tried for a line ``height`` px high."""
    return int(min(MAX_OFFSET, max(2, round(0.2 * height))))


def find_shadow(prob: np.ndarray, strokes: np.ndarray, near: np.ndarray, change: np.ndarray, within: np.ndarray,
                height: float) -> Shadow | None:
    """The drop shadow of one line's ``strokes`` (bool HxW; ``prob`` their
    probability, ``near`` the strokes grown by their anti-aliased edge), from
    ``change`` (HxWx3, each pixel's Lab minus its background estimate's)
    inside ``within`` (where the line and its surroundings are); None when no
    offset stands out."""
    if strokes.sum() < 20:
        return None
    scores = _scores(strokes, within & ~near, change, reach(height))
    if len(scores) < 8:
        return None
    typical = float(np.median(list(scores.values())))
    offset, departure = max(scores.items(), key=lambda kv: kv[1])
    if departure < max(MIN_DEPARTURE, TEXTURED[1] * typical):
        return None
    changes = change[moved(strokes, *offset) & ~near & within]
    coherence = departure / max(float(np.sqrt(np.einsum("ij,ij->i", changes, changes)).mean()), 1e-6)
    if coherence < COHERENCE or (departure < CONTRAST * typical and coherence < TEXTURED[0]):
        return None
    shown = moved(prob, *offset) * (~near & within)
    # a moved stroke pixel is shadow where it changed in the shadow's direction
    # by a good share of what the shadow's pixels do on average
    if not (shown > 0.5).any():
        return None
    direction = change[shown > 0.5].mean(axis=0)
    along = change @ (direction / max(float(np.linalg.norm(direction)), 1e-6))
    weight = np.where(along >= 0.4 * departure, shown, 0.0).astype(np.float32)
    return Shadow(offset, weight, departure, typical)
