"""Finding a template's occurrences in one image, across scale and rotation,
and estimating each one's overlay (colour and alpha) so the photo under it
can be unblended.

1. Coarse search: the image's gradient magnitude (all three channels) is matched
   (``cv2.matchTemplate``, normalised correlation, masked to the mark) against
   the template's alpha-gradient magnitude warped over a grid of scales and
   angles, on a half-resolution copy when the template is large enough.
   Gradients, not colours: a semi-transparent mark shifts the photo by
   ``alpha * (colour - photo)``, whose sign and size change with the photo, but
   its edges stay where the alpha changes.
2. Refinement: each candidate's position, scale and angle are refined
   continuously (Nelder-Mead on the same correlation, at full resolution),
   then polished to a fraction of a pixel by minimising the roughness of the
   photo the overlay would leave after unblending (the right pose leaves no
   trace of the mark's edges).
3. Alpha by least squares: the photo under the mark is estimated by inpainting
   the mark's support (Telea), and the template's alpha scale ``k`` minimises
   ``|observed - photo - k * alpha * (colour - photo)|^2``. The fit's R^2 is
   the verification: a candidate whose overlay explains little of the image
   change is not a mark. The guess is smoother than the photo, so ``k`` comes
   out a few percent off (up to 11% on the eval's logos); a found mark's ``k``
   is then taken where the unblended photo keeps none of the mark's edges
   (:func:`sharpen_alpha`: within 0.5% on most of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import minimize

from worker.unblend import ALPHA_MAX_EXACT
from worker.watermark import lattice
from worker.watermark.template import ALPHA_FLOOR, Pose, Template, affine, extent, warp

# thin strokes leave a narrow basin: a mark 3% off in scale or 1.5 deg off in angle already loses most of
# its correlation (measured on the eval's logos and stamps: 16/24 found with 17 scales x 5 deg, 21/24 here)
SCALES = tuple(float(s) for s in np.geomspace(0.5, 2.0, 32))
ANGLES = tuple(float(a) for a in np.arange(-45.0, 45.1, 2.5))
COARSE_MIN = 0.20   # normalised edge correlation a coarse candidate needs
MIN_SCORE = 0.35    # refined correlation an occurrence needs
MAX_SHARED = 0.3    # two occurrences sharing more of their pixels are one
REPEAT_ALPHA = 1.5  # a repeat of a found mark: its alpha scale within this factor of the mark's
MIN_FIT = 0.30      # R^2 of the overlay fit an occurrence needs
LATTICE_FIT = 0.15  # R^2 a near miss needs to help place a lattice
DRIFT = 4.0         # px a place on a lattice may move when polished (the lattice's own error)
SMOOTHER = 1.0      # a place on a lattice is kept where unblending leaves the photo no rougher (measured: true
                    # tiles 0.23-0.96, partial ones at the border highest; the same tiles shifted by 8 px 1.24-2.5)
UNSEEN = 3.0 / 255  # RMS change under which a mark cannot be seen (nor contradicted)
MAX_CANDIDATES = 64
COARSE_SIDE = 640   # px: larger images are searched on a reduced copy first
COARSE_BLUR = 0.0   # px: blurring both sides widens the basin but lifts the clutter more (measured: worse)


@dataclass(frozen=True)
class Occurrence:
    """One place the template was found: its ``pose``, ``score`` (refined
    gradient correlation, 0-1), ``fit`` (R^2 of the overlay against the image)
    and ``alpha_scale`` (the mark's opacity relative to the template's alpha)."""

    pose: Pose
    score: float
    fit: float
    alpha_scale: float

    def record(self, template: Template) -> dict:
        alpha = self.alpha_scale * float(template.alpha.max())
        colour = np.average(template.colour.reshape(-1, 3), axis=0, weights=template.alpha.reshape(-1) + 1e-9)
        return {"kind": "template", "template": template.name, "x": round(self.pose.x, 2),
                "y": round(self.pose.y, 2), "scale": round(self.pose.scale, 4), "angle": round(self.pose.angle, 2),
                "alpha": round(min(alpha, 1.0), 3), "colour": [round(float(c), 3) for c in colour],
                "score": round(self.score, 3), "fit": round(self.fit, 3)}


def _oriented(jxx: np.ndarray, jyy: np.ndarray, jxy: np.ndarray) -> np.ndarray:
    """HxWx2 from the structure tensor's entries: the edge's angle doubled, its length the gradient magnitude."""
    strength = np.sqrt(jxx + jyy) + 1e-6
    return np.dstack([(jxx - jyy) / strength, 2 * jxy / strength]).astype(np.float32)


def gradient(grey: np.ndarray, sigma: float = 0.8) -> np.ndarray:
    """Edges of a float32 HxW image, slightly smoothed first, as HxWx2: the
    gradient's angle doubled, its length the gradient magnitude. The doubled
    angle lets an edge match an edge along the same line whichever of its sides
    is darker: a mark's outline over a background that is brighter here and
    darker there."""
    smooth = cv2.GaussianBlur(grey, (0, 0), sigma)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    return _oriented(gx * gx, gy * gy, gx * gy)


def colour_gradient(rgb: np.ndarray, sigma: float = 0.8) -> np.ndarray:
    """Edges over the three channels together (Di Zenzo's colour structure
    tensor), as :func:`gradient`: a red mark on a photo of the same luma has
    edges in colour only."""
    smooth = cv2.GaussianBlur(np.ascontiguousarray(rgb, np.float32), (0, 0), sigma)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    return _oriented((gx * gx).sum(axis=2), (gy * gy).sum(axis=2), (gx * gy).sum(axis=2))


def _shrunk(template: Template, factor: float) -> Template:
    if factor == 1:
        return template
    h, w = template.alpha.shape
    size = (max(4, round(w / factor)), max(4, round(h / factor)))
    premult = cv2.resize(template.colour * template.alpha[..., None], size, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(template.alpha, size, interpolation=cv2.INTER_AREA)
    colour = premult / np.maximum(alpha, 1e-6)[..., None]
    return Template(np.clip(colour, 0, 1).astype(np.float32), alpha.astype(np.float32), template.name)


def _features(template: Template, pose: Pose, box) -> tuple[np.ndarray, np.ndarray]:
    """(template gradient magnitude, support mask) warped into ``box``."""
    _, alpha = warp(template, pose, box)
    support = cv2.dilate((alpha > ALPHA_FLOOR).astype(np.uint8), np.ones((5, 5), np.uint8))
    return gradient(alpha), support


def coarse_search(feature: np.ndarray, template: Template, scales=SCALES, angles=ANGLES,
                  threshold: float = COARSE_MIN) -> list[tuple[float, Pose]]:
    """(score, pose) candidates on ``feature`` (an edge map from :func:`gradient`
    or :func:`colour_gradient`, possibly reduced), best first, one per neighbourhood. Poses are in ``feature``'s pixels;
    marks cut by the border are found too (the map is zero-padded)."""
    h, w = feature.shape[:2]
    # both sides blurred: a mark between two grid steps of scale or angle still lines up
    feature = cv2.GaussianBlur(feature, (0, 0), COARSE_BLUR) if COARSE_BLUR else feature
    found: list[tuple[float, Pose, float]] = []
    for scale in scales:
        for angle in angles:
            probe = Pose(0.0, 0.0, scale, angle)
            x0, y0, x1, y1 = extent(template, probe, pad=2)
            bw, bh = x1 - x0, y1 - y0
            if bw < 6 or bh < 6 or bw > 2 * w or bh > 2 * h:
                continue
            tfeat, support = _features(template, probe, (x0, y0, x1, y1))
            if COARSE_BLUR:
                tfeat = cv2.GaussianBlur(tfeat, (0, 0), COARSE_BLUR)
            if tfeat.std() < 1e-6:
                continue
            px, py = bw // 2, bh // 2
            padded = cv2.copyMakeBorder(feature, py, py, px, px, cv2.BORDER_CONSTANT, value=0)
            score = cv2.matchTemplate(padded, tfeat, cv2.TM_CCOEFF_NORMED, mask=support.astype(np.float32))
            score = np.nan_to_num(score, nan=0.0, posinf=0.0, neginf=0.0)
            # local maxima over a neighbourhood a quarter of the mark wide
            radius = max(1, min(bw, bh) // 4)
            peaks = (score == cv2.dilate(score, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))) & (score >= threshold)
            for ty, tx in zip(*np.nonzero(peaks)):
                # the top-left (tx, ty) in padded coordinates -> the template centre in feature coordinates
                found.append((float(score[ty, tx]), Pose(tx - px - x0, ty - py - y0, scale, angle), min(bw, bh)))
    found.sort(key=lambda f: -f[0])
    kept: list[tuple[float, Pose, float]] = []
    for s, pose, side in found:
        if all(math.hypot(pose.x - k.x, pose.y - k.y) > 0.5 * min(side, ks) for _, k, ks in kept):
            kept.append((s, pose, side))
        if len(kept) >= MAX_CANDIDATES:
            break
    return [(s, p) for s, p, _ in kept]


def _clip_box(box, shape) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)


def _correlation(feature: np.ndarray, template: Template, pose: Pose) -> float:
    box = _clip_box(extent(template, pose, pad=3), feature.shape[:2])
    if box[2] - box[0] < 4 or box[3] - box[1] < 4:
        return 0.0
    tfeat, support = _features(template, pose, box)
    m = support.astype(bool)
    a, b = feature[box[1]:box[3], box[0]:box[2]][m], tfeat[m]
    if len(a) < 16:
        return 0.0
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    norm = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / norm if norm > 1e-12 else 0.0


def refine(feature: np.ndarray, template: Template, pose: Pose, step: tuple[float, float, float, float]) -> tuple[float, Pose]:
    """Nelder-Mead on (x, y, log scale, angle) maximising the gradient correlation."""
    def cost(v):
        return -_correlation(feature, template, Pose(v[0], v[1], math.exp(v[2]), v[3]))

    start = np.array([pose.x, pose.y, math.log(pose.scale), pose.angle])
    simplex = np.vstack([start] + [start + np.eye(4)[i] * step[i] for i in range(4)])
    result = minimize(cost, start, method="Nelder-Mead",
                      options={"initial_simplex": simplex, "xatol": 0.02, "fatol": 1e-4, "maxfev": 300})
    v = result.x
    return -float(result.fun), Pose(float(v[0]), float(v[1]), float(math.exp(v[2])), float(v[3]))


def _terms(rgb: np.ndarray, template: Template, pose: Pose) -> tuple[np.ndarray, np.ndarray] | None:
    """(d, g), Nx3 over the mark's support at ``pose``: the image's change from
    the photo under it (estimated by inpainting the support, Telea) and the
    change the template's overlay would make at alpha scale 1; None when
    under 8 of its pixels are in the image."""
    box = _clip_box(extent(template, pose, pad=6), rgb.shape)
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    colour, alpha = warp(template, pose, box)
    crop = rgb[box[1]:box[3], box[0]:box[2]]
    support = alpha > ALPHA_FLOOR
    if support.sum() < 8:
        return None
    hole = cv2.dilate(support.astype(np.uint8), np.ones((3, 3), np.uint8))
    photo = cv2.inpaint(np.clip(np.rint(crop * 255), 0, 255).astype(np.uint8), hole, 3,
                        cv2.INPAINT_TELEA).astype(np.float32) / 255.0
    return (crop - photo)[support], (alpha[..., None] * (colour - photo))[support]


def fit_alpha(rgb: np.ndarray, template: Template, pose: Pose, fixed: float | None = None) -> tuple[float, float]:
    """(alpha scale k, R^2): the least-squares scale of the template's alpha at
    ``pose`` against the image, the photo under the mark estimated by inpainting
    (``fixed``: k is known, only the fit is measured)."""
    terms = _terms(rgb, template, pose)
    if terms is None:
        return 0.0, 0.0
    d, g = terms
    gg = float((g * g).sum())
    if gg < 1e-8:
        return 0.0, 0.0
    k = float((d * g).sum() / gg) if fixed is None else fixed
    k = float(np.clip(k, 0.0, 1.0 / max(float(template.alpha.max()), 1e-6)))
    residual = float(((d - k * g) ** 2).sum())
    total = float(((d - d.mean(axis=0)) ** 2).sum()) + 1e-12
    return k, max(0.0, 1.0 - residual / total)


def _unseen(terms: tuple[np.ndarray, np.ndarray], k: float) -> bool:
    """Whether a mark whose :func:`_terms` are ``terms``, at alpha scale ``k``,
    would change the image by no more than it varies anyway (under ``UNSEEN``
    RMS, and the image does not differ from the photo around it either): a
    white mark over white sky. Such a place on a confirmed lattice is kept;
    unblending it is harmless."""
    d, g = terms
    return float(np.sqrt(np.mean((k * g) ** 2))) < UNSEEN and float(np.sqrt(np.mean(d ** 2))) < UNSEEN


def _roughness(rgb: np.ndarray, template: Template, pose: Pose, k: float) -> float:
    """Mean absolute gradient of the photo recovered under the mark at ``pose``:
    the right pose and alpha leave no trace of the mark's edges."""
    box = _clip_box(extent(template, pose, pad=3), rgb.shape)
    if box[2] - box[0] < 4 or box[3] - box[1] < 4:
        return float("inf")
    colour, alpha = warp(template, pose, box)
    a = np.minimum(alpha * k, ALPHA_MAX_EXACT)[..., None]
    crop = rgb[box[1]:box[3], box[0]:box[2]]
    photo = (crop - a * colour) / (1.0 - a)
    near = cv2.dilate((alpha > ALPHA_FLOOR).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if not near[:, 1:].any() or not near[1:, :].any():
        return float("inf")
    dx = np.abs(np.diff(photo, axis=1)).sum(axis=2)
    dy = np.abs(np.diff(photo, axis=0)).sum(axis=2)
    return float(dx[near[:, 1:]].mean() + dy[near[1:, :]].mean())


def _edge_residual(crop: np.ndarray, colour: np.ndarray, alpha: np.ndarray, k: float) -> float:
    """How much of the mark's edges the photo unblended at alpha scale ``k``
    still holds, signed: the photo's gradient along the alpha's gradient,
    weighted by the mark's contrast to the photo. Positive where ``k`` is too
    low (the mark is still there), negative where too high (its negative is)."""
    a = np.minimum(alpha * k, ALPHA_MAX_EXACT)
    photo = (crop - a[..., None] * colour) / (1.0 - a[..., None])
    ax, ay = cv2.Sobel(alpha, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(alpha, cv2.CV_32F, 0, 1, ksize=3)
    px, py = cv2.Sobel(photo, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(photo, cv2.CV_32F, 0, 1, ksize=3)
    along = px * ax[..., None] + py * ay[..., None]
    return float((along * (colour - photo)).sum())


def sharpen_alpha(rgb: np.ndarray, template: Template, pose: Pose, k: float, span: float = 0.25) -> float:
    """The alpha scale within ``span`` of ``k`` at which the unblended photo
    keeps none of the mark's edges (:func:`_edge_residual` crosses zero). The
    least-squares fit compares with a Telea guess of the photo, which is
    smoother than the photo, so it comes out a few percent off; unblending then
    leaves the mark's negative or its ghost (over black, values below zero,
    taken as not fitting and inpainted). ``k`` itself when there is no crossing."""
    box = _clip_box(extent(template, pose, pad=3), rgb.shape)
    if box[2] - box[0] < 4 or box[3] - box[1] < 4:
        return k
    colour, alpha = warp(template, pose, box)
    crop = rgb[box[1]:box[3], box[0]:box[2]]
    top = 1.0 / max(float(template.alpha.max()), 1e-6)
    ks = np.linspace(k * (1 - span), min(top, k * (1 + span)), 11)
    r = np.array([_edge_residual(crop, colour, alpha, float(v)) for v in ks])
    cross = np.nonzero((r[:-1] > 0) & (r[1:] <= 0))[0]
    if not len(cross):
        return k
    i = int(cross[np.argmin(np.abs(ks[cross] - k))])
    low, high = float(ks[i]), float(ks[i + 1])
    for _ in range(8):   # the residual turns steeply near a high alpha: bisect rather than interpolate
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _edge_residual(crop, colour, alpha, mid) > 0 else (low, mid)
    return 0.5 * (low + high)


def polish(rgb: np.ndarray, template: Template, pose: Pose, k: float) -> Pose:
    """Sub-pixel pose refinement: Nelder-Mead on (x, y, log scale, angle)
    minimising the roughness of the unblended photo (alpha scale ``k`` held)."""
    def cost(v):
        return _roughness(rgb, template, Pose(v[0], v[1], math.exp(v[2]), v[3]), k)

    start = np.array([pose.x, pose.y, math.log(pose.scale), pose.angle])
    simplex = np.vstack([start] + [start + np.eye(4)[i] * s for i, s in enumerate((0.5, 0.5, 0.01, 0.5))])
    result = minimize(cost, start, method="Nelder-Mead",
                      options={"initial_simplex": simplex, "xatol": 0.01, "fatol": 1e-6, "maxfev": 200})
    v = result.x
    return Pose(float(v[0]), float(v[1]), float(math.exp(v[2])), float(v[3]))


def _shared(template: Template, a: Pose, b: Pose) -> float:
    """The share of the smaller of two placed marks that the other covers."""
    boxes = extent(template, a), extent(template, b)
    box = (min(boxes[0][0], boxes[1][0]), min(boxes[0][1], boxes[1][1]),
           max(boxes[0][2], boxes[1][2]), max(boxes[0][3], boxes[1][3]))
    sa, sb = (warp(template, p, box)[1] > ALPHA_FLOOR for p in (a, b))
    return float((sa & sb).sum()) / max(1, min(int(sa.sum()), int(sb.sum())))


def _within(template: Template, pose: Pose, x: float, y: float) -> bool:
    """Whether image point (x, y) lies inside the template's rectangle placed at ``pose``."""
    h, w = template.alpha.shape
    m = np.vstack([affine(template, pose), [0.0, 0.0, 1.0]])
    u, v, _ = np.linalg.solve(m, np.array([x, y, 1.0]))
    return 0 <= u <= w - 1 and 0 <= v <= h - 1


def _verify(rgb, feature, template: Template, starts: list[Pose], steps, known, min_score: float, min_fit: float,
            accepted: list[Occurrence], rejected: list[Occurrence], like: float | None = None) -> None:
    """Refine, polish and fit each start; accepted ones go to ``accepted`` (none
    overlapping another), the others to ``rejected``. ``like``: the alpha scale
    of the occurrence these starts repeat; one whose own scale is not within
    REPEAT_ALPHA times of it is rejected (tiles are laid at one opacity)."""
    th, tw = template.alpha.shape
    for start in starts:
        if any(math.hypot(start.x - o.pose.x, start.y - o.pose.y) < 0.4 * min(th, tw) * o.pose.scale for o in accepted):
            continue
        score, pose = refine(feature, template, start, steps)
        k, fit = fit_alpha(rgb, template, pose, known)
        if score >= min_score and fit >= min_fit and k >= 0.05:
            pose = polish(rgb, template, pose, k)
            k, fit = fit_alpha(rgb, template, pose, known)
            if known is None and k >= 0.05:
                k = sharpen_alpha(rgb, template, pose, k)
                fit = fit_alpha(rgb, template, pose, k)[1]
        occurrence = Occurrence(pose, score, fit, k)
        # by centres, then by the pixels themselves: a long stamp shifted along itself is the same stamp
        overlaps = any(math.hypot(pose.x - o.pose.x, pose.y - o.pose.y) < 0.5 * min(th, tw) * o.pose.scale
                       or _shared(template, pose, o.pose) > MAX_SHARED for o in accepted)
        alike = like is None or 1 / REPEAT_ALPHA <= k / max(like, 1e-6) <= REPEAT_ALPHA
        if score >= min_score and fit >= min_fit and k >= 0.05 and alike and not overlaps:
            accepted.append(occurrence)
        elif not overlaps:
            rejected.append(occurrence)


def find(rgb: np.ndarray, template: Template, scales=SCALES, angles=ANGLES, min_score: float = MIN_SCORE,
         min_fit: float = MIN_FIT) -> tuple[list[Occurrence], list[Occurrence]]:
    """Every occurrence of ``template`` in ``rgb`` (float32 HxWx3 in [0, 1]); a
    learned template (``anchor``) in an image of its collection's size only
    near where it was learned, unscaled and unrotated. Returns (accepted,
    rejected candidates): accepted ones best first, none overlapping another
    by more than half its size."""
    feature = colour_gradient(rgb)
    th, tw = template.alpha.shape
    near, known = None, None
    if template.anchor is not None and (rgb.shape[1], rgb.shape[0]) == tuple(template.anchor[2:]):
        # learned from a collection of this size: where it was learned, at its own scale, give or take a shift
        scales, angles = (1.0,), (0.0,)
        near = (template.anchor[0], template.anchor[1], max(16.0, 0.5 * min(th, tw)))
        known = 1.0  # its alpha was solved across the collection: more reliable than one image's fit
    # the coarse search on a reduced copy of a large image, as long as the smallest mark keeps 16 px
    factor = 1
    while max(rgb.shape[:2]) / factor > COARSE_SIDE and min(th, tw) * min(scales) / (2 * factor) >= 16:
        factor *= 2
    small_feature = feature if factor == 1 else colour_gradient(cv2.resize(rgb, None, fx=1 / factor, fy=1 / factor,
                                                                           interpolation=cv2.INTER_AREA))
    small = _shrunk(template, factor)
    # the shrunken template's centre maps to the full one's centre
    sh, sw = small.alpha.shape
    candidates = coarse_search(small_feature, small, scales, angles, 0.0 if near is not None else COARSE_MIN)
    scale_step = math.log(scales[1] / scales[0]) / 2 if len(scales) > 1 else 0.02
    angle_step = (angles[1] - angles[0]) / 2 if len(angles) > 1 else 1.0
    starts = [Pose((c.x + 0.5) * factor - 0.5, (c.y + 0.5) * factor - 0.5, c.scale * (sw * factor / tw), c.angle)
              for _, c in candidates]
    if near is not None:
        # the learned place itself is always tried (the fit decides), even when the photo drowns its edges
        starts = [p for p in starts if math.hypot(p.x - near[0], p.y - near[1]) <= near[2]][:4]
        starts.append(Pose(near[0], near[1], 1.0, 0.0))
        # where the place is known, the overlay fit is the evidence: a white mark on a white box has no edges
        min_score = min(min_score, 0.1)
    accepted: list[Occurrence] = []
    rejected: list[Occurrence] = []
    steps = (factor * 1.0, factor * 1.0, scale_step, angle_step)
    _verify(rgb, feature, template, starts, steps, known, min_score, min_fit, accepted, rejected)
    # a mark repeats at the scale and angle it was found at (tiles, a logo used twice): look again at exactly
    # those, with a lower bar for the coarse correlation, which the grid's spacing no longer lowers. Not a mark
    # learned from a collection: it has its one place there, and the bar lowered for that place let a corner
    # of the image where a quarter of the mark would fall pass as a second one (and be unblended: a dark ghost)
    repeats = accepted if near is None else []
    for found in {(round(o.pose.scale, 2), round(o.pose.angle, 1)): o for o in repeats}.values():
        pose = found.pose
        again = coarse_search(feature, template, (pose.scale,), (pose.angle,), threshold=0.1)
        _verify(rgb, feature, template, [p for _, p in again], (1.0, 1.0, 0.01, 0.5), known, min_score, min_fit,
                accepted, rejected, like=found.alpha_scale)
    _on_lattice(rgb, feature, template, known, accepted, rejected)
    accepted.sort(key=lambda o: -o.score)
    rejected.sort(key=lambda o: -o.score)
    return accepted, rejected


def _on_lattice(rgb, feature, template: Template, known, accepted: list[Occurrence],
                rejected: list[Occurrence]) -> None:
    """A mark repeated at one scale and angle is tiled: every other place on
    its lattice is tried, tiles cut by the border included. The lattice is the
    one the occurrences lie on: the image's self-correlation lattice when they
    agree with it, else the one their differences span, else the one most of
    the template's correlation peaks lie on; a single occurrence's lattice
    holds only if another of its places shows the mark as clearly as a found
    one. A mark learned from a collection is not tiled (it has one place).
    A place is kept where unblending it at the repeats' opacity leaves the
    photo no rougher (``SMOOTHER``; the fit of the overlay against an
    inpainted guess of the photo is too noisy over a busy photo), where the
    overlay fits as well as a found mark's, or where the mark would not show
    (nothing there contradicts it)."""
    if not accepted or known is not None:
        return   # a learned mark has its one place in the collection's frame
    best = max(accepted, key=lambda o: o.score)

    def family(o: Occurrence) -> bool:
        return abs(math.log(o.pose.scale / best.pose.scale)) < 0.03 and abs(o.pose.angle - best.pose.angle) < 1.5

    group = [o for o in accepted if family(o)]
    like = float(np.median([o.alpha_scale for o in group]))
    # near misses at the same pose and opacity help place the lattice; they are tried again on it
    near_misses = [o for o in rejected if family(o) and o.fit >= LATTICE_FIT and o.score >= MIN_SCORE
                   and 1 / REPEAT_ALPHA <= o.alpha_scale / max(like, 1e-6) <= REPEAT_ALPHA]
    anchors: list[tuple[float, float]] = []
    for o in group + near_misses:
        if all(math.hypot(o.pose.x - x, o.pose.y - y) > 3 for x, y in anchors):
            anchors.append((o.pose.x, o.pose.y))
    hint = lattice.find_lattice(lattice.repeat_map(lattice.residual(rgb, lattice.FINE_SIGMA)))
    if len(anchors) < 2 and (hint is None or hint.z < lattice.MIN_Z):
        hint = None   # one mark lies on any lattice: only one that stands out of the image's self-correlation
    found = lattice.through(np.array(anchors), hint)
    if found is None:
        peaks = coarse_search(feature, template, (best.pose.scale,), (best.pose.angle,), threshold=0.1)
        found = lattice.spanning(np.array(anchors), np.array([[p.x, p.y] for _, p in peaks]), rgb.shape[:2])
    if found is None:
        return
    origin, v1, v2 = found
    scale = float(np.median([o.pose.scale for o in group]))
    angle = float(np.median([o.pose.angle for o in group]))
    th, tw = template.alpha.shape
    reach = 0.5 * math.hypot(th, tw) * scale
    h, w = rgb.shape[:2]
    tried: list[tuple[Occurrence, bool]] = []  # (place, whether the mark shows there as clearly as a found one)
    for p in lattice.points_over(origin, v1, v2, (-reach, -reach, w + reach, h + reach)):
        pose = Pose(float(p[0]), float(p[1]), scale, angle)
        if any(math.hypot(pose.x - o.pose.x, pose.y - o.pose.y) < 0.5 * min(th, tw) * scale
               or _shared(template, pose, o.pose) > MAX_SHARED for o in accepted):
            continue   # found already, or overlapping a found mark (tiles do not overlap)
        terms = _terms(rgb, template, pose)
        if terms is None:
            continue   # under 8 of its pixels in the image
        # the right place unblends to a photo no rougher (the mark's edges go; a wrong one adds its inverse), or
        # its overlay explains the image as well as a found mark's does (where the photo is rough anyway)
        placed = polish(rgb, template, pose, like)
        # a tile sits on its lattice point, at the repeats' scale and angle: a polish that wanders is no tile
        stays = (math.hypot(placed.x - pose.x, placed.y - pose.y) <= DRIFT and abs(placed.angle - angle) <= 1.0
                 and abs(math.log(placed.scale / scale)) <= 0.02)
        k, own = fit_alpha(rgb, template, placed)
        shown = stays and own >= MIN_FIT and 1 / REPEAT_ALPHA <= k / max(like, 1e-6) <= REPEAT_ALPHA
        smoother = stays and _roughness(rgb, template, placed, like) <= SMOOTHER * _roughness(rgb, template, placed, 0)
        if shown or smoother:
            pose = placed
            # kept at the repeats' opacity: a tile cut by the border or over a busy photo measures its own poorly
            fit = fit_alpha(rgb, template, pose, like)[1]
            tried.append((Occurrence(pose, _correlation(feature, template, pose), fit, like), shown))
        elif _unseen(terms, like):
            tried.append((Occurrence(pose, _correlation(feature, template, pose), 0.0, like), False))
        else:
            rejected.append(Occurrence(pose, _correlation(feature, template, pose), 0.0, like))
    if len(group) < 2 and not any(shown for _, shown in tried):  # one mark, and its lattice shows no other
        rejected.extend(o for o, _ in tried)
        return
    accepted.extend(o for o, _ in tried)
    # the tiles explain what lies on them: a match at another scale or angle centred on a tile is not a mark
    tiles = [o for o in accepted if family(o)]
    for other in [o for o in accepted if not family(o)]:
        if any(_within(template, t.pose, other.pose.x, other.pose.y) for t in tiles):
            accepted.remove(other)
            rejected.append(other)


def render(shape: tuple[int, int], template: Template, occurrences: list[Occurrence]) -> np.ndarray:
    """The overlay estimate of ``occurrences``: float32 HxWx4 (colour, alpha),
    alpha 0 elsewhere; where two overlap, the larger alpha wins."""
    overlay = np.zeros(shape + (4,), np.float32)
    for o in occurrences:
        box = _clip_box(extent(template, o.pose, pad=2), shape)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        colour, alpha = warp(template, o.pose, box)
        alpha = np.clip(alpha * o.alpha_scale, 0, 1)
        target = overlay[box[1]:box[3], box[0]:box[2]]
        larger = alpha > target[..., 3]
        target[larger, :3] = colour[larger]
        target[larger, 3] = alpha[larger]
    return overlay
