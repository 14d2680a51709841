"""The lattice a tiled mark repeats on, found from the image alone.

A mark tiled over a photo makes the image's high-pass residual correlate with
itself at every lattice vector; the photo does not (a straight edge correlates
along a line, a texture at short shifts only). So:

1. ``repeat_map``: the normalised cross-correlation of the residual with
   itself at every shift (FFT, zero-padded, each shift normalised by the
   energy of its own overlap, summed over the colour channels so that a
   coloured mark that vanishes in luma still counts). A shift whose overlap is
   under ``MIN_OVERLAP`` of the image is not scored.
2. ``find_lattice``: the strongest local maxima are candidate vectors; every
   non-parallel pair spans a lattice (reduced to its shortest basis), scored by
   the median correlation over all of its points that overlap enough. One
   strong peak or an edge's ridge does not make a lattice: its sums and
   differences must correlate too. A coarser lattice inside the true one
   may score higher (it keeps only the strongest points), so the finest
   lattice holding the best one's points wins while it scores half as well.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy import fft as sfft

MIN_Z = 8.0          # a lattice's score over the spread of the whole map it needs (clean photos: <= 6.8)
FINE_SIGMA = 1.0      # px: the high-pass the lattice is found in (text strokes are a few px wide)
COARSE_SIGMA = 6.0    # px: the high-pass a grid of similar objects correlates in more than a tiled overlay
MIN_PERIOD = 12.0     # px: shorter repeats are texture or noise, not marks
MIN_OVERLAP = 0.2     # a shift is scored only where the image and its translate share this much of the area
CANDIDATES = 30       # local maxima tried as lattice vectors
MIN_POINTS = 3        # lattice points (up to sign) a lattice needs inside the scored shifts
REACH = 4             # lattice points i*v1 + j*v2 with |i|, |j| up to this


@dataclass(frozen=True)
class Lattice:
    """``v1``, ``v2``: float64 (x, y) repeat vectors in px, the shortest basis
    (|v1| <= |v2|); ``score``: the median normalised correlation over the
    lattice's points; ``points``: how many were scored; ``z``: ``score`` over
    the robust spread of the correlation at all scored shifts (how far the
    lattice stands out of chance repeats, whatever the image's size)."""

    v1: np.ndarray
    v2: np.ndarray
    score: float
    points: int
    z: float = 0.0

    def shifts(self, shape: tuple[int, int], reach: int = REACH, min_overlap: float = 0.0) -> list[np.ndarray]:
        """Lattice vectors, the zero shift first and the rest by length, whose
        translate of a ``shape`` image keeps at least ``min_overlap`` of it."""
        h, w = shape
        out = [np.zeros(2)]
        for i in range(-reach, reach + 1):
            for j in range(-reach, reach + 1):
                s = i * self.v1 + j * self.v2
                if (i or j) and (w - abs(s[0])) * (h - abs(s[1])) > max(min_overlap, 0.02) * w * h \
                        and abs(s[0]) < w and abs(s[1]) < h:
                    out.append(s)
        return out[:1] + sorted(out[1:], key=lambda s: float(np.hypot(*s)))


def residual(rgb: np.ndarray, sigma: float = 3.0) -> list[np.ndarray]:
    """The high-pass residual of each colour channel (float32 HxW each)."""
    out = []
    for c in range(rgb.shape[2]):
        channel = np.ascontiguousarray(rgb[..., c], np.float32)
        out.append(channel - cv2.GaussianBlur(channel, (0, 0), sigma))
    return out


def repeat_map(channels: list[np.ndarray]) -> np.ndarray:
    """float32 (2H)x(2W): the normalised correlation of the channels with
    themselves at shift (dx, dy), stored at [H + dy, W + dx]; 0 where the
    overlap is under ``MIN_OVERLAP`` of the image."""
    h, w = channels[0].shape
    size = (2 * h, 2 * w)
    num = np.zeros(size, np.float32)
    energy = np.zeros((h, w), np.float32)
    for f in channels:   # single precision (scipy keeps it): a 2048 px image pads to 4096 x 4096
        spectrum = sfft.rfft2(f.astype(np.float32), s=size)
        num += sfft.irfft2(spectrum * np.conj(spectrum), s=size)
        energy += f.astype(np.float32) ** 2
    ones = sfft.rfft2(np.ones((h, w), np.float32), s=size)
    e = sfft.rfft2(energy, s=size)
    # energy of f(x) and of f(x + s) over the overlap of the image with its translate by s
    ahead = sfft.irfft2(e * np.conj(ones), s=size)
    behind = sfft.irfft2(ones * np.conj(e), s=size)
    overlap = sfft.irfft2(ones * np.conj(ones), s=size)
    corr = num / np.sqrt(np.maximum(ahead * behind, 1e-12))
    corr[overlap < MIN_OVERLAP * h * w] = 0.0
    return np.fft.fftshift(corr).astype(np.float32)


def _candidates(corr: np.ndarray) -> list[np.ndarray]:
    """The strongest local maxima (x, y), one of each +-pair, refined to a fraction of a pixel."""
    h, w = corr.shape[0] // 2, corr.shape[1] // 2
    yy, xx = np.mgrid[-h:h, -w:w]
    valid = (np.hypot(yy, xx) >= MIN_PERIOD) & ((yy > 0) | ((yy == 0) & (xx > 0))) & (corr > 0)
    local = corr >= cv2.dilate(corr, np.ones((5, 5), np.uint8))
    ys, xs = np.nonzero(valid & local)
    order = np.argsort(-corr[ys, xs])[:CANDIDATES]
    out = []
    for i in order:
        y, x = ys[i], xs[i]
        dy = dx = 0.0
        if 0 < y < corr.shape[0] - 1 and 0 < x < corr.shape[1] - 1:
            a, b, c = corr[y - 1, x], corr[y, x], corr[y + 1, x]
            dy = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
            a, c = corr[y, x - 1], corr[y, x + 1]
            dx = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
        out.append(np.array([x - w + dx, y - h + dy]))
    return out


def coarse_ratio(rgb: np.ndarray, lattice: Lattice) -> float:
    """The lattice's score in a coarse residual (``COARSE_SIGMA``) over its
    score in ``lattice``'s own (assumed found at ``FINE_SIGMA``). A tiled
    overlay repeats to the pixel, so it correlates as well at fine scale as at
    coarse (<= 1.1 on the evaluation's marks); similar objects laid on a grid
    (coins, windows) correlate mostly at coarse scale (2.5 for skimage's coins)."""
    coarse, _ = _score(repeat_map(residual(rgb, COARSE_SIGMA)), lattice.v1, lattice.v2)
    return coarse / max(lattice.score, 1e-6)


def reduce_basis(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange-Gauss reduction: the shortest basis of the lattice u, v span."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    if u @ u > v @ v:
        u, v = v, u
    while True:
        v = v - np.round((u @ v) / (u @ u)) * u
        if v @ v >= u @ u:
            return u, v
        u, v = v, u


def _score(corr: np.ndarray, v1: np.ndarray, v2: np.ndarray) -> tuple[float, int]:
    """Median correlation over the lattice's scored points (the best of each point's 3x3), and their count."""
    h, w = corr.shape[0] // 2, corr.shape[1] // 2
    values = []
    for i in range(0, REACH + 1):
        for j in range(-REACH, REACH + 1):
            if i == 0 and j <= 0:
                continue   # one of each +-pair
            x, y = np.rint(i * v1 + j * v2 + (w, h)).astype(int)
            if 1 <= x < 2 * w - 1 and 1 <= y < 2 * h - 1 and corr[y, x] != 0:
                values.append(float(corr[y - 1:y + 2, x - 1:x + 2].max()))
    if len(values) < MIN_POINTS:
        return 0.0, len(values)
    return float(np.median(values)), len(values)


def find_lattice(corr: np.ndarray) -> Lattice | None:
    """The best lattice in a :func:`repeat_map`, or None when fewer than two
    non-parallel candidate vectors span one with enough scored points."""
    peaks = _candidates(corr)
    found: dict[tuple, Lattice] = {}
    for v1, v2, key in _bases(peaks):
        if key in found:
            continue
        score, points = _score(corr, v1, v2)
        if points >= MIN_POINTS:
            found[key] = Lattice(v1, v2, score, points)
    if not found:
        return None
    best = max(found.values(), key=lambda lat: lat.score)
    # a coarser lattice inside the true one can score higher (its points are the true one's strongest): take
    # the finest lattice that holds the best one's points and still scores half as well
    finer = [lat for lat in found.values() if lat.score >= 0.5 * best.score and _holds(lat, best)]
    chosen = min(finer, key=lambda lat: _area(lat.v1, lat.v2))
    scored = corr[corr != 0]
    spread = 1.4826 * float(np.median(np.abs(scored - np.median(scored)))) + 1e-9
    return replace(chosen, z=chosen.score / spread)


def _bases(vectors):
    """(v1, v2, key) for every pair of ``vectors`` far enough from parallel:
    the pair's reduced basis, its shorter vector at least ``MIN_PERIOD``, and
    a key (rounded to 2 px) under which near-equal bases meet."""
    for a in range(len(vectors)):
        for b in range(a + 1, len(vectors)):
            u, v = vectors[a], vectors[b]
            if not _spans(u, v):
                continue
            v1, v2 = reduce_basis(u, v)
            if np.hypot(*v1) >= MIN_PERIOD:
                yield v1, v2, tuple(np.rint(np.concatenate([v1, v2]) / 2).astype(int))


def _spans(u: np.ndarray, v: np.ndarray) -> bool:
    """Whether u and v are far enough from parallel (sine of their angle >= 0.25) to span a lattice."""
    return _area(u, v) >= 0.25 * np.hypot(*u) * np.hypot(*v)


def _area(u: np.ndarray, v: np.ndarray) -> float:
    return abs(float(u[0] * v[1] - u[1] * v[0]))


def _holds(fine: Lattice, coarse: Lattice, tolerance: float = 2.0) -> bool:
    """Whether ``coarse``'s basis vectors are points of ``fine`` (within ``tolerance`` px)."""
    basis = np.array([fine.v1, fine.v2]).T
    for v in (coarse.v1, coarse.v2):
        ij = np.linalg.solve(basis, v)
        if np.linalg.norm(basis @ (ij - np.round(ij))) > tolerance:
            return False
    return True


def through(points: np.ndarray, hint: Lattice | None = None, tolerance: float = 3.0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(origin, v1, v2): the lattice that ``points`` (float Nx2, the centres of
    one mark's occurrences) lie on, least-squares refined, or None when they
    do not lie on one within ``tolerance`` px. The basis is ``hint``'s (the
    image's self-correlation lattice) when every point lies on it, else the
    shortest non-parallel pair of the points' differences; a single point
    needs ``hint``."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    bases = [] if hint is None else [(hint.v1, hint.v2)]
    diffs = sorted((points[b] - points[a] for a in range(len(points)) for b in range(a + 1, len(points))),
                   key=lambda d: float(np.hypot(*d)))
    for a, u in enumerate(diffs):
        v = next((v for v in diffs[a + 1:] if _spans(u, v)), None)
        if v is not None and np.hypot(*u) >= MIN_PERIOD:
            bases.append(reduce_basis(u, v))
            break
    for v1, v2 in bases:
        basis = np.array([v1, v2]).T
        ij = np.rint(np.linalg.solve(basis, (points - points[0]).T).T)
        if np.abs(points - points[0] - ij @ basis.T).max() > tolerance:
            continue
        design = np.hstack([np.ones((len(points), 1)), ij])     # p = origin + i * v1 + j * v2
        if np.linalg.matrix_rank(design) == 3:
            solution = np.linalg.lstsq(design, points, rcond=None)[0]
            return solution[0], solution[1], solution[2]
        return (points - ij @ basis.T).mean(axis=0), np.asarray(v1, float), np.asarray(v2, float)
    return None


def points_over(origin: np.ndarray, v1: np.ndarray, v2: np.ndarray, box: tuple[float, float, float, float]
                ) -> list[np.ndarray]:
    """Every lattice point origin + i * v1 + j * v2 inside ``box`` (x0, y0, x1, y1)."""
    basis = np.array([v1, v2]).T
    corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], np.float64)
    ij = np.linalg.solve(basis, (corners - origin).T).T
    lo, hi = np.floor(ij.min(axis=0)).astype(int), np.ceil(ij.max(axis=0)).astype(int)
    out = []
    for i in range(lo[0], hi[0] + 1):
        for j in range(lo[1], hi[1] + 1):
            p = origin + i * v1 + j * v2
            if box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]:
                out.append(p)
    return out


def spanning(anchors: np.ndarray, peaks: np.ndarray, shape: tuple[int, int], tolerance: float = 3.0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(origin, v1, v2): the lattice through every anchor (float Nx2, a mark's
    found occurrences) that the most candidate places (``peaks``, Mx2: the
    template's correlation maxima at the anchors' scale and angle) lie on,
    each lattice point in a ``shape`` image without a peak counting against
    it by half. For a tiled mark the self-correlation lattice missed (a faint
    mark over a busy photo). None when no pair of candidate vectors spans a
    lattice that a fourth place (or a second anchor) agrees with, and more
    agree with than disagree."""
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    places = np.vstack([anchors, np.asarray(peaks, np.float64).reshape(-1, 2)])
    origin = anchors[0]
    vectors = [v for v in places[1:] - origin if np.hypot(*v) >= MIN_PERIOD]
    h, w = shape
    best, best_score, seen = None, 0.0, set()
    for v1, v2, key in _bases(vectors):
        if key in seen:
            continue
        seen.add(key)
        basis = np.array([v1, v2]).T
        ij = np.linalg.solve(basis, (anchors - origin).T).T
        if np.abs(anchors - origin - np.rint(ij) @ basis.T).max() > tolerance:
            continue
        points = np.array(points_over(origin, v1, v2, (0, 0, w, h))).reshape(-1, 2)
        near = np.hypot(*(points[:, None, :] - places[None, :, :]).transpose(2, 0, 1)).min(axis=1) <= tolerance
        score = near.sum() - 0.5 * (~near).sum()
        # a place beyond the three that define it agrees, or two of those are found marks
        if near.sum() >= (3 if len(anchors) >= 2 else 4) and score > best_score:
            best, best_score = (origin, v1, v2), score
    return best
