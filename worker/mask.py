"""From the detector's confidence map to a mask that follows the strokes.

DBNet's map marks a shrunk *kernel* of each text line: thresholding it misses
most stroke pixels, and a whole box would make the inpainter invent far more
than the text covered. So, per text line:

1. region: threshold the map, and grow each connected kernel back to its text
   line by DBNet's unclip distance (area * ratio / perimeter), plus a margin
   for outlines and shadows;
2. background: estimated from *outside* the glyphs (the pixels around the
   line that no text region covers), filled into the line by normalised
   convolution at the smallest scale that reaches it. A window inside dense
   bold text would see mostly text; the ring around the line does not;
3. overlay colours: the pixels that moved from that background by more than
   the surrounding texture does are clustered (up to three colours: fill,
   outline, shadow), and each colour is fitted as a blend
   ``observed = alpha * colour + (1 - alpha) * background`` by least squares
   over its pixels. Opaque text has ``alpha`` 1; semi-transparent text has a
   lower ``alpha`` that the same fit recovers from how the observed colour
   follows the background;
4. strokes: a pixel's evidence is how far it moved from its background toward
   the fitted overlay (its coverage, in [0, 1]) and how well the blend
   explains it; that is the per-pixel stroke probability;
5. shape: a small network trained on rendered captions (:mod:`worker.strokes`)
   reads the glyphs' shape over the line's crop; it adds the glyphs the colour
   evidence lost (dark bold text over a dark helmet) and drops opaque colour
   evidence beside its glyphs that it calls photo;
6. mask: strokes dilated by ``dilate`` px is the fill region; the soft mask is
   the stroke probability, feathered with a Gaussian of ``sigma`` across that
   margin (blend weights); ``type="binary"`` keeps the hard region only.

The fitted overlay (colour and alpha per pixel, :mod:`worker.unblend`'s
HxWx4 estimate) lets the unblend stage bring the real pixels back under
semi-transparent text instead of inventing them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from worker import shadow
from worker.blend import alpha_towards, exit_modes
from worker.geometry import min_area_rect
from worker.strokes import LINE_PX




MEDIAN_TEXT_DELTA_E = 8.0
MEDIAN_TEXT_TOLERANCE = 0.5
UNBLEND_RMSE = 0.012   # a blend fit trusted for unblending explains its pixels within ~3 levels
BEYOND_DELTA_E = 10.0      # ... accepting parts that show the line's overlay colour within this ΔE
THIN_FACTOR = 1.3          # ... as parts no thicker than this many times the line's thickest strokes
SLOT = 1.2                 # a glyph slot beyond a line's end: this many times its strokes' height
PURER = 4.0                # ... keeps what is this ΔE closer to the overlay than its neighbourhood
SEGMENT_HEIGHT = 32.0      # taller lines are segmented at this height and enlarged back
EXIT_FROM = 0.04     # an opaque fit's rmse from which a faint overlay's colour is looked for,
EXIT_COLOURS = 4     # ... as one of this many gamut exits, where its background is flat,
EXIT_CHROMA = 0.5    # ... a colour one (its channels this far apart),
EXIT_COS = 0.9       # ... a pixel agreeing when its change points at it,
EXIT_AGREE = 0.3     # ... as this share of the pixels must,
EXIT_BETTER = 0.8    # ... and its trimmed rmse be this share of the opaque fit's at most,
EXIT_MAX_ALPHA = 0.62  # ... with an opacity up to this (a faint mark; the logo finder's OPAQUE)
EXTEND = 1.5         # line heights searched beyond a line's ends for glyphs the detector left out
CONTINUE = 2         # ... searched again from the glyphs found there, at most this many times,
CONTINUE_GLYPH = 0.2  # ... when they hold (this many line heights)^2 of strokes
CONTINUE_END = 0.5   # ... reaching within this many line heights of the search's end,
CONTINUE_READ = 0.15  # ... and kept when the longer line reads as more characters, at this much less score at most
CONTINUE_SURE = 0.7   # ... or at this score ("Lot" 0.999 -> "Lotl1" 0.754: the reader is less sure of digits)
SECOND_LINE_SPAN = 0.6     # a second colour spanning this share of the line's length ...
SECOND_LINE_DENSITY = 20.0  # ... this many times denser inside the line than around it is text too
ADJACENT = 0.5      # share of a second colour's pixels next to the main colour's, to count as overlay
# the learned stroke segmenter (worker.strokes), per line:
LEARNED_REACH = 0.25  # ... adds strokes within this many line heights of the line's region
LEARNED_ADD = 0.7     # ... where its probability reaches this (0.5 filled 0.2-0.5% more beyond the text, for less PSNR)
LEARNED_VETO = 0.2    # ... and drops opaque colour evidence where it is below this (photo, not glyph),
LEARNED_NEAR = 1.0    # ... within this many line heights of the glyphs it found,
LEARNED_TRUST = 0.9   # ... unless the colour evidence is this sure (a glyph the network reads poorly)
STROKE = 0.35         # (what counts as a stroke pixel in those figures: the default mask's cut)
BLUR_PX = 4.0         # local means wider than this many px per sigma are taken at a reduced size
NEAR_PX = 12.0        # a line's reach is computed with its height reduced to this many px
BLOB_FACTOR = 4.0    # parts thicker than this many stroke half-widths are photo, not text
ISLAND_AREA = 0.1    # a hole in the mask up to this many line heights squared (with a 6 px floor) ...
ISLAND_DIFF = 0.25   # ... holds overlay where its pixels (single ones too) stand this far (a channel) from the
                     # photo filled in around it, in clumps
ISLAND_LIKE = 0.12   # ... of a colour this close (a channel) to ...
ISLAND_RING = 0.3    # ... this share of the stroke pixels around them,
ISLAND_EVIDENCE = 0.05  # ... with this much stroke probability (median) in them
# lines the detector missed (grass, brick: DBNet does not fire on text over dense texture), found by the
# learned segmenter over the whole image and read back (recover_lines):
RECOVER_HEIGHTS = (16.0, 10.7, 7.1)  # ... at line heights of the image's short side over these
RECOVER_MIN_HEIGHT = 16.0  # ... and never below this many px,
RECOVER_TURNS = (-30.0, 30.0)  # ... with the image also turned by these many degrees (leaning lines),
RECOVER_CUT = 0.5     # ... strokes where its probability reaches this,
RECOVER_JOIN = 0.35   # ... joined into a line across gaps of this many line heights,
RECOVER_STROKES = 0.15  # ... holding at least this many line heights squared of strokes,
RECOVER_SHAPE = (0.4, 2.2, 1.8)  # ... as high as these many line heights (min, max), this many times as long,
RECOVER_DEPTH = 0.25  # ... as many outside the lines already found, in parts this many line heights deep
RECOVER_CHARS = 3     # ... read as this many characters or more
RECOVER_SCORE = 0.6   # ... at this mean confidence (texture reads as 2-3 letters below 0.55)
RECOVER_AGREE = 0.45  # ... and beyond it, colour evidence is kept only where this share of its strokes inside is glyph


@dataclass(frozen=True)
class MaskParams:
    type: str = "soft"          # "soft" | "binary"
    sigma: float = 4.0          # feathering, px
    threshold: float = 0.3      # on the detector's probability
    dilate: int = 1             # px around strokes
    unclip_ratio: float = 1.6   # DBNet's kernel -> text line growth
    min_region_area: int = 6    # px of kernel; smaller blobs are noise
    stroke_margin: float = 0.15 # stroke probability needed to count as text

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MaskResult:
    """``soft``: float32 HxW blend weights in [0, 1]; ``binary``: bool HxW fill
    region; ``core``: bool HxW strokes + dilation; ``regions``: bool HxW text
    lines; ``boxes``: [x, y, w, h] per region; ``strokes``: bool HxW;
    ``overlay``: float32 HxWx4 overlay estimate (colour, alpha) or None;
    ``lines``: what was found per line; ``rejected``: regions read back as not
    text (box, reading, score); ``recovered``: lines the detector missed and
    :func:`recover_lines` found (box, height, reading)."""

    soft: np.ndarray
    binary: np.ndarray
    core: np.ndarray
    regions: np.ndarray
    boxes: list[list[int]]
    strokes: np.ndarray | None = None
    overlay: np.ndarray | None = None
    lines: list[LineFit] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    recovered: list[dict] = field(default_factory=list)


def _length(d: np.ndarray) -> np.ndarray:
    """Euclidean length over the last axis (numpy's norm, without its temporaries)."""
    return np.sqrt(np.einsum("...k,...k->...", d, d))


def _disk(radius: int) -> np.ndarray:
    radius = max(0, int(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def text_regions(confidence: np.ndarray, params: MaskParams) -> tuple[np.ndarray, list[list[int]], list[np.ndarray]]:
    """Text-line regions grown from the thresholded kernels.

    Returns (union bool HxW, boxes [x, y, w, h], one bool mask per region)."""
    kernels = (confidence >= params.threshold).astype(np.uint8)
    # components labelled on the kernels' bounding box only (the same labels, in
    # the same order, as on the whole image; most of a photo has no text)
    kx, ky, kw, kh = cv2.boundingRect(kernels)
    if not kw:
        return np.zeros(confidence.shape, bool), [], []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(kernels[ky:ky + kh, kx:kx + kw], connectivity=8)
    stats[:, 0] += kx
    stats[:, 1] += ky
    union = np.zeros(confidence.shape, bool)
    boxes, masks = [], []
    h, w = confidence.shape
    for i in range(1, count):
        x, y, bw, bh, area = stats[i]
        if area < params.min_region_area:
            continue
        comp = (labels[y - ky:y - ky + bh, x - kx:x - kx + bw] == i).astype(np.uint8)
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


@dataclass
class LineFit:
    """What the segmentation found in one text line (JSON-able via ``to_dict``).

    ``box``: [x, y, w, h] of the line; ``colours``: overlay colours (0-255 RGB),
    one per cluster; ``alphas``: each colour's fitted opacity; ``shares``: each
    colour's share of the stroke pixels; ``stroke_share``: strokes / line area;
    ``texture``: the background's own variation around the line (ΔE, 95th
    percentile), the evidence threshold; ``rmse``: the blend fit's residual per
    colour (0-1 RGB); ``shadow``: the offset of the line's drop shadow, if one
    was found (:mod:`worker.shadow`); ``learned``: the pixels the learned stroke
    segmenter added to the colour evidence and those it dropped from it
    ([added, dropped]; None when it did not run)."""

    box: list[int]
    colours: list[list[int]] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    rmse: list[float] = field(default_factory=list)
    stroke_share: float = 0.0
    texture: float = 0.0
    shadow: list[int] | None = None   # [dx, dy] of a drop shadow found (its colour is the last one)
    learned: list[int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the nearest pixel outside ``mask`` (float32 HxW), the
    image's border counting as outside (OpenCV's transform of a mask with no
    zero pixel returns a huge constant)."""
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]


def _line_height(region: np.ndarray) -> float:
    return 2.0 * float(_distance(region).max())


def _local_mean(values: np.ndarray, weight: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised convolution: the ``weight``-ed Gaussian local mean of HxWxC ``values``.

    A wide kernel costs per pixel as much as it is wide, and what it returns
    varies no faster than it: beyond BLUR_PX, both sums are blurred at a size
    reduced to BLUR_PX per sigma and enlarged back."""
    w = weight.astype(np.float32)
    num, den = (values * w[..., None]).astype(np.float32), w
    h, wd = w.shape
    factor = sigma / BLUR_PX
    if factor > 1.5 and min(h, wd) / factor >= 8:
        size = (max(1, round(wd / factor)), max(1, round(h / factor)))
        num = cv2.resize(num, size, interpolation=cv2.INTER_AREA)
        den = cv2.resize(den, size, interpolation=cv2.INTER_AREA)
        sigma = sigma * size[0] / wd
    num = cv2.GaussianBlur(num, (0, 0), sigma)
    den = cv2.GaussianBlur(den, (0, 0), sigma)
    if den.shape != (h, wd):
        num = cv2.resize(num, (wd, h), interpolation=cv2.INTER_LINEAR)
        den = cv2.resize(den, (wd, h), interpolation=cv2.INTER_LINEAR)
    if num.ndim == 2:
        num = num[..., None]
    return num / np.maximum(den, 1e-6)[..., None], den


def fill_background(rgb: np.ndarray, known: np.ndarray, scale: float, want: np.ndarray | None = None) -> np.ndarray:
    """A background under the unknown pixels, from the ``known`` ones: fast
    marching (Telea) from the nearest known pixels over the ``want`` ones, so
    where a line crosses the edge of an object, each side takes the colour of
    its own side; every other pixel gets the local mean of the known ones
    (which measures the texture at known pixels). Other unknown pixels
    touching ``want`` are treated as known for the marching: the smooth fill
    stands in for them.

    A background varies slowly next to a line's height: for tall lines it is
    estimated at a reduced size (``scale`` about 4 px there) and enlarged."""
    factor = scale / 4.0
    if factor > 1.25 and min(known.shape) / factor >= 16:
        h, w = known.shape
        size = (max(8, int(round(w / factor))), max(8, int(round(h / factor))))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        k_small = cv2.resize(known.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.99
        w_small = None if want is None else cv2.resize(want.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        out = fill_background(small, k_small, 4.0, w_small)
        return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    smooth = _smooth_fill(rgb, known, scale)
    if known.all() or not known.any() or want is None or not want.any():
        return smooth
    # fast marching costs per unknown pixel: march only over what is wanted
    # (the line) and the unknown pixels between it and the known ones
    holes = ~known & want
    source = np.where((~known & ~want)[..., None], smooth, rgb)
    rgb8 = np.clip(np.rint(source * 255), 0, 255).astype(np.uint8)
    filled = cv2.inpaint(rgb8, holes.astype(np.uint8), 3, cv2.INPAINT_TELEA).astype(np.float32) / 255.0
    return np.where(holes[..., None], filled, smooth).astype(np.float32)


def _smooth_fill(rgb: np.ndarray, known: np.ndarray, scale: float) -> np.ndarray:
    """A smooth background under the unknown pixels, from the ``known`` ones.

    Normalised convolution at growing Gaussian scales (from ``scale`` px up):
    each unknown pixel takes the finest scale whose kernel reaches enough
    known pixels, so the estimate stays as local as the gap allows. Known
    pixels get their local mean too (used to measure the texture)."""
    weight = known.astype(np.float32)
    out = np.zeros_like(rgb)
    done = np.zeros(known.shape, bool)
    sigma = max(1.5, float(scale))
    for _ in range(6):
        den = cv2.GaussianBlur(weight, (0, 0), sigma)
        num = cv2.GaussianBlur(rgb * weight[..., None], (0, 0), sigma)
        ok = (den > 0.08) & ~done
        out[ok] = num[ok] / den[ok][:, None]
        done |= ok
        if done.all():
            break
        sigma *= 2.0
    if not done.all():
        out[~done] = rgb[known].mean(axis=0) if known.any() else rgb.mean(axis=(0, 1))
    return out


def _fit_blend(obs: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Least-squares fit of ``obs = alpha * colour + (1 - alpha) * bg`` (Nx3 each),
    trimmed: refitted twice on the 70% of pixels it explains best, so texture
    and other colours among them do not pull it.

    Returns (colour RGB in [0, 1], alpha, rmse). Opaque (alpha 1, colour the
    mean) unless a semi-transparent fit explains the pixels clearly better:
    the background must vary enough along the pixels for its slope to be
    measurable, and the fitted colour must be a real colour. Where it does not
    vary (a faint logo over fur of one tone), the colour the pixels head for
    is taken at the edge of the RGB cube (:func:`_fit_exit`)."""
    mean = obs.mean(axis=0)
    opaque = (mean.astype(np.float32), 1.0, float(np.sqrt(((obs - mean) ** 2).sum(axis=1).mean())))
    if obs.shape[0] < 12:
        return opaque
    keep = np.ones(obs.shape[0], bool)
    for _ in range(3):
        o, b = obs[keep], bg[keep]
        b_c = b - b.mean(axis=0)
        spread = float((b_c ** 2).sum())
        if spread / max(1, keep.sum()) < 0.04 ** 2:  # the background must vary by > ~10 levels
            return _fit_exit(obs, bg, opaque)
        slope = min(max(float((b_c * (o - o.mean(axis=0))).sum() / spread), 0.0), 0.95)  # shared 1 - alpha
        premult = o.mean(axis=0) - slope * b.mean(axis=0)  # alpha * colour
        resid = _length(obs - (premult + slope * bg))
        keep = resid <= np.percentile(resid, 70)
    o = obs[keep]
    alpha = 1.0 - slope
    colour = premult / alpha
    rmse = float(np.sqrt((resid[keep] ** 2).mean()))
    kept_opaque = float(np.sqrt(((o - o.mean(axis=0)) ** 2).sum(axis=1).mean()))
    in_gamut = bool(np.all(colour >= -0.08) and np.all(colour <= 1.08))
    if alpha < 0.9 and in_gamut and rmse < 0.6 * kept_opaque:
        return np.clip(colour, 0.0, 1.0).astype(np.float32), alpha, rmse
    return _fit_exit(obs, bg, opaque)


def _fit_exit(obs: np.ndarray, bg: np.ndarray, opaque: tuple[np.ndarray, float, float]
              ) -> tuple[np.ndarray, float, float]:
    """A semi-transparent overlay's colour and alpha where the background does
    not vary enough to fit them (:func:`_fit_blend`): of the most common gamut
    exits of the pixels' change (:func:`worker.blend.exit_modes`), the one on
    whose alpha most of them agree, kept when it explains the pixels clearly
    better than ``opaque`` (colour, 1.0, rmse) does, trimmed as there (texture
    under the pixels, which no blend explains, keeps both high)."""
    if opaque[2] < EXIT_FROM:
        return opaque  # one colour explains them: a dark stamp over a dark sky is not a faint black one
    change = obs - bg
    n = obs.shape[0]
    best = opaque
    for colour in exit_modes(change, bg, EXIT_COLOURS, least=max(6, n // 20)):
        if float(colour.max() - colour.min()) < EXIT_CHROMA:
            continue  # white, black or grey: where a pale or dark opaque caption's change heads too
        alpha, cos = alpha_towards(change, bg, colour)
        agree = (cos > EXIT_COS) & (alpha > 0.1) & (alpha < 1.05)
        if agree.sum() < max(12, EXIT_AGREE * n):
            continue
        a0 = float(np.median(alpha[agree]))
        if a0 > EXIT_MAX_ALPHA:
            continue  # over a flat background, dark text at 0.8 is as likely as text of its own colour
        resid = _length(obs - (a0 * colour + (1.0 - a0) * bg))
        kept = resid <= np.percentile(resid, 70)
        rmse = float(np.sqrt((resid[kept] ** 2).mean()))
        if rmse < EXIT_BETTER * opaque[2] and rmse < best[2]:
            best = (colour, a0, rmse)
    return best


def _surest(obs: np.ndarray, bgs: np.ndarray, dev: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The members farthest from their background (stroke interiors, full
    coverage): the pixels a blend is fitted on."""
    strong = members.copy()
    strong[members] = dev[members] >= np.percentile(dev[members], 40)
    return obs[strong], bgs[strong]


def _clusters(lab: np.ndarray, max_k: int = 3, merge: float = 14.0) -> tuple[np.ndarray, np.ndarray]:
    """k-means in Lab (k up to ``max_k``), clusters closer than ``merge`` ΔE merged.
    Returns (labels N, centres Kx3)."""
    n = lab.shape[0]
    k = min(max_k, max(1, n // 20))
    if k == 1:
        return np.zeros(n, np.int32), lab.mean(axis=0, keepdims=True)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, labels, centres = cv2.kmeans(lab.astype(np.float32), k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    # merge close centres (union by order)
    mapping = list(range(k))
    for i in range(k):
        for j in range(i):
            if np.linalg.norm(centres[i] - centres[mapping[j]]) < merge:
                mapping[i] = mapping[j]
                break
    keep = sorted(set(mapping))
    remap = np.asarray([keep.index(m) for m in mapping], np.int32)
    labels = remap[labels]
    centres = np.stack([lab[labels == i].mean(axis=0) for i in range(len(keep))])
    return labels, centres


def line_crop(region: np.ndarray, box: list[int] | None = None,
              grow: int | None = None) -> tuple[tuple[slice, slice], float, int]:
    """The crop a text line is segmented on (its box, padded for strokes
    beyond the region and for the background ring), the line's height and
    how far its region is grown for strokes (``grow`` when given)."""
    h, w = region.shape
    if box is None:
        ys, xs = np.nonzero(region)
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    bx, by, bw, bh = box
    height = max(4.0, _line_height(region[by:by + bh, bx:bx + bw]))
    grow = max(2, int(round(0.15 * height))) if grow is None else grow
    pad = grow + int(round(EXTEND * height)) + max(6, int(round(0.6 * height)))
    y0, y1 = max(0, by - pad), min(h, by + bh + pad)
    x0, x1 = max(0, bx - pad), min(w, bx + bw + pad)
    return (slice(y0, y1), slice(x0, x1)), height, grow


def segment_line(rgb: np.ndarray, region: np.ndarray, others: np.ndarray, confidence: np.ndarray | None = None,
                 grow: int | None = None, box: list[int] | None = None,
                 reduce: bool = True) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, LineFit]:
    """Stroke probability and overlay estimate for one text line.

    ``region``: bool HxW, the line; ``others``: bool HxW, every text region
    (kept out of the background estimate); ``box``: the region's [x, y, w, h]
    when known (saves a search of the whole image). Returns (the crop's
    slices, stroke probability float32 over the crop, overlay float32 crop x 4,
    LineFit)."""
    sl, height, grow = line_crop(region, box, grow)
    reach = int(round(EXTEND * height))
    (y0, y1), (x0, x1) = (sl[0].start, sl[0].stop), (sl[1].start, sl[1].stop)
    if reduce and height > 2.0 * SEGMENT_HEIGHT:
        return sl, *_segment_reduced(rgb[sl], region[sl], others[sl],
                                     None if confidence is None else confidence[sl], height, (x0, y0))
    line = cv2.dilate(region[sl].astype(np.uint8), _disk(grow)).astype(bool)
    # glyphs the detector left out at the ends of a line ("©", a last digit):
    # searched along the line's direction, accepted only on strong evidence
    extended = cv2.dilate(line.astype(np.uint8), _along(region[sl], reach, grow)).astype(bool) | line
    blocked = cv2.dilate(others[sl].astype(np.uint8), _disk(grow)).astype(bool) | extended
    crop = np.ascontiguousarray(rgb[sl], np.float32)
    fit = LineFit(box=[int(x0), int(y0), int(x1 - x0), int(y1 - y0)])
    prob = np.zeros(line.shape, np.float32)
    overlay = np.zeros(line.shape + (4,), np.float32)
    known = ~blocked
    if known.sum() < 16:
        return sl, prob, overlay, fit
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2Lab)
    # background from outside the glyphs; a second pass drops known pixels that
    # are outliers (stray strokes outside the region: outlines, descenders)
    bg = fill_background(crop, known, 0.35 * height, extended)
    change = lab - cv2.cvtColor(bg, cv2.COLOR_RGB2Lab)
    dev = _length(change)
    ring = known & cv2.dilate(extended.astype(np.uint8), _disk(max(3, int(0.5 * height)))).astype(bool)
    if ring.sum() >= 16:
        cut = max(12.0, 2.5 * float(np.percentile(dev[ring], 75)))
        cleaner = known & (dev <= cut)
        if cleaner.sum() >= 16:
            known = cleaner
            bg = fill_background(crop, known, 0.35 * height, extended)
            change = lab - cv2.cvtColor(bg, cv2.COLOR_RGB2Lab)
            dev = _length(change)
    ring &= known
    texture = float(np.percentile(dev[ring], 95)) if ring.sum() >= 16 else 10.0
    # the evidence threshold follows the texture nearby: twice the local RMS of
    # the ring's deviation (a Gaussian's ~95th percentile), capped by the line's
    tau_line = max(6.0, texture)
    if ring.sum() >= 16:
        local, den = _local_mean((dev ** 2)[..., None], ring, max(2.0, float(height)))
        tau = np.clip(2.0 * np.sqrt(local[..., 0]), 6.0, tau_line)
    else:
        tau = np.full(dev.shape, tau_line, np.float32)
    fit.texture = round(texture, 2)
    cand = line & (dev > tau)
    if cand.sum() < 8:
        return sl, prob, overlay, fit
    labels, centres = _clusters(lab[cand])
    obs, bgs = crop[cand], bg[cand]
    # the surrounding photo's own outliers (texture, objects) with the same colour
    # as a cluster: text is dense inside the line and absent around it
    ring_out = ring & (dev > tau)
    ring_lab = lab[ring_out]
    ring_px, line_px = max(1, int(ring.sum())), max(1, int(line.sum()))
    best_t = np.zeros(line.shape, np.float32)
    best_score = np.full(line.shape, -np.inf, np.float32)
    best_k = np.full(line.shape, -1, np.int32)
    best_match = np.full(line.shape, np.inf, np.float32)  # ΔE from the fitted overlay at full coverage
    fits = []
    accepted = []
    for k in range(int(labels.max()) + 1):
        members = labels == k
        if members.sum() < max(6, 0.03 * cand.sum()):
            continue
        spread = max(10.0, 2.0 * float(np.sqrt(((lab[cand][members] - centres[k]) ** 2).sum(axis=1).mean())))
        around = int((_length(ring_lab - centres[k]) < spread).sum()) if ring_lab.size else 0
        density = members.sum() / line_px
        if density < 3.0 * around / ring_px:
            continue  # as common around the line as in it: the photo, not an overlay
        accepted.append((k, members, density / max(around / ring_px, 1e-6)))
    if accepted:
        # the line's main colour, and the others only where they hug it (an
        # outline, a shadow, a second line across it); scattered ones are texture
        # most evidence (count x distance), weighted by how much of the line's
        # length it spans: a caption runs along its line, an eye it crosses does not
        cand_dev = dev[cand]
        cy, cx = np.nonzero(cand)
        axis = _direction(region[sl])
        along = cx * np.cos(axis) + cy * np.sin(axis)
        ly, lx = np.nonzero(line)
        lo, hi = float((lx * np.cos(axis) + ly * np.sin(axis)).min()), float((lx * np.cos(axis) + ly * np.sin(axis)).max())
        bins = max(1, int((hi - lo) / max(2.0, 0.5 * height)))

        def span(members: np.ndarray) -> float:
            idx = np.clip(((along[members] - lo) / max(1e-6, hi - lo) * bins).astype(int), 0, bins - 1)
            return np.unique(idx).size / bins

        main = max(accepted, key=lambda a: float(cand_dev[a[1]].sum()) * span(a[1]) ** 2)
        main_px = np.zeros(line.shape, bool)
        main_px[cand] = main[1]
        near_main = cv2.dilate(main_px.astype(np.uint8), _disk(max(2, int(round(0.08 * height))))).astype(bool)[cand]
        ring_all = lab[ring]

        def plain_around(members: np.ndarray) -> bool:
            # an "outline" whose colour is simply the photo around the line (a white
            # cup rim beside dark text) is background showing between the glyphs
            centre = lab[cand][members].mean(axis=0)
            similar = int((_length(ring_all - centre) < 12.0).sum()) if ring_all.size else 0
            return members.sum() / line_px < 1.5 * similar / ring_px

        # ... or where they run along the line as a caption of their own would (a
        # second line the detector merged with the first, an overlapping one),
        # much denser inside than around it
        accepted = [a for a in accepted
                    if a is main or (near_main[a[1]].mean() >= ADJACENT and not plain_around(a[1]))
                    or (span(a[1]) >= SECOND_LINE_SPAN and a[2] >= SECOND_LINE_DENSITY)]
    joint = None
    if accepted:
        # one semi-transparent colour looks different over every background, so
        # clustering by observed colour splits it: try the kept clusters as one blend
        together = np.any([members for _, members, *_ in accepted], axis=0)
        colour, alpha, rmse = _fit_blend(*_surest(obs, bgs, dev[cand], together))
        if alpha < 1.0:
            joint = (colour, alpha, rmse, together)
    bg_lab = lab - change
    main_fit = 0 if joint or not accepted else next(i for i, a in enumerate(accepted) if a is main)
    for k, members, *_ in ([(-1, joint[3])] if joint else accepted):
        colour, alpha, rmse = joint[:3] if joint else _fit_blend(*_surest(obs, bgs, dev[cand], members))
        fits.append((colour, alpha, rmse, int(members.sum())))
        full = alpha * colour[None, None, :] + (1.0 - alpha) * bg  # this overlay at full coverage
        step = full - bg
        reach = np.maximum((step ** 2).sum(axis=2), 1e-6)
        t = ((crop - bg) * step).sum(axis=2) / reach
        perp = _length((crop - bg) - t[..., None] * step)
        # evidence: moved toward the overlay; a residual beyond the texture's spread counts against
        allow = np.sqrt(reach) * 0.5 + tau / 100.0
        score = np.clip(t, 0.0, 1.0) * np.exp(-(perp / allow) ** 2)
        full_lab = cv2.cvtColor(full.astype(np.float32), cv2.COLOR_RGB2Lab)
        # the overlay differs from its background by more than texture does (both in ΔE: a faint green
        # over brown fur is a small step in RGB and a large one to the eye)
        visible = _length(full_lab - bg_lab) > tau
        score = np.where(visible & (line | (extended & (dev > tau) & (score >= 0.5))), score, 0.0)
        match = _length(lab - full_lab)
        better = score > best_score
        best_match = np.where(better, match, best_match)
        best_score = np.where(better, score, best_score)
        best_t = np.where(better, np.clip(t, 0.0, 1.0), best_t)
        best_k = np.where(better, len(fits) - 1, best_k)
    if not fits:
        return sl, prob, overlay, fit
    prob = np.where(extended & (dev > 0.5 * tau), np.maximum(best_score, 0.0), 0.0).astype(np.float32)
    prob = _drop_blobs(prob, best_k, 0.35)
    prob = _glyphs_beyond(prob, line, best_match, best_t, best_k == main_fit, 0.35)
    prob = _with_shadow(prob, crop, bg, change, extended, height, fits, best_k, best_t, fit)
    strokes = prob >= 0.35
    total = max(1, int(strokes.sum()))
    for k, (colour, alpha, rmse, _) in enumerate(fits):
        sel = (best_k == k) & (prob > 0.05)
        overlay[sel, :3] = colour
        # reversing the blend amplifies any error in alpha by 1 / (1 - alpha): only a
        # fit that explains the strokes to within a few levels is trusted; else inpaint
        overlay[sel, 3] = alpha * best_t[sel] if alpha < 1.0 and rmse <= UNBLEND_RMSE else 1.0
        fit.colours.append([int(round(c * 255)) for c in colour])
        fit.alphas.append(round(alpha, 3))
        fit.rmse.append(round(rmse, 4))
        fit.shares.append(round(int((strokes & (best_k == k)).sum()) / total, 3))
    fit.stroke_share = round(int(strokes.sum()) / max(1, int(line.sum())), 4)
    return sl, prob, overlay, fit


def _with_shadow(prob: np.ndarray, crop: np.ndarray, bg: np.ndarray, change: np.ndarray, extended: np.ndarray,
                 height: float, fits: list, best_k: np.ndarray, best_t: np.ndarray, fit: LineFit) -> np.ndarray:
    """``prob`` with the line's drop shadow added (:mod:`worker.shadow`), its
    colour and opacity fitted as a blend like the other colours (appended to
    ``fits``; ``best_k`` and ``best_t`` updated in place where it wins; its
    offset recorded in ``fit``). ``change``: each pixel's Lab minus its background's."""
    strokes = prob >= 0.35
    near = cv2.dilate(strokes.astype(np.uint8), _disk(1)).astype(bool)
    within = cv2.dilate(extended.astype(np.uint8), _disk(shadow.reach(height))).astype(bool)
    found = shadow.find_shadow(prob, strokes, near, change, within, height)
    if found is None:
        return prob
    solid = found.weight >= 0.5
    if solid.sum() < 12:
        return prob
    colour, alpha, rmse = _fit_blend(crop[solid], bg[solid])
    step = alpha * colour[None, None, :] + (1.0 - alpha) * bg - bg
    t = np.clip(((crop - bg) * step).sum(axis=2) / np.maximum((step ** 2).sum(axis=2), 1e-6), 0.0, 1.0)
    wins = found.weight > prob
    fits.append((colour, alpha, rmse, int(solid.sum())))
    best_k[wins] = len(fits) - 1
    best_t[wins] = t[wins]
    fit.shadow = [int(found.offset[0]), int(found.offset[1])]
    return np.maximum(prob, found.weight)


def median_evidence(rgb: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Per-pixel probability (float32 HxW) that a pixel of ``region`` is a stroke,
    against a *local* background (the second, complementary estimate).

    A median filter wider than a stroke but narrower than the line estimates
    the local background, texture included: it follows an object's edge that
    a line crosses, where the ring's fill cannot, but inside dense bold text
    it sees mostly text, where the ring's fill does not; the mask takes the
    stronger of the two. The text colour
    is the mean of the region's pixels farthest from that background; each pixel
    is then text or background by which of the two it is closer to (Lab)."""
    prob = np.zeros(region.shape, np.float32)
    ys, xs = np.nonzero(region)
    if ys.size < 4:
        return prob
    thickness = 2.0 * float(_distance(region).max())
    k = int(max(5, round(thickness * 0.6))) | 1
    pad = k
    y0, y1 = max(0, ys.min() - pad), min(region.shape[0], ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(region.shape[1], xs.max() + 1 + pad)
    sub = region[y0:y1, x0:x1]
    crop = np.ascontiguousarray(rgb[y0:y1, x0:x1], np.float32)
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2Lab)
    crop8 = np.clip(np.rint(crop * 255), 0, 255).astype(np.uint8)
    background = cv2.cvtColor(cv2.medianBlur(crop8, min(k, 255)).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    dist_bg = _length(lab - background)
    inside = dist_bg[sub]
    far = sub & (dist_bg >= np.percentile(inside, 85))
    text = lab[far].mean(axis=0)
    separation = float(np.linalg.norm(text - np.median(background[sub], axis=0)))
    if separation < 6.0 or float(np.median(dist_bg[far])) < 6.0:
        return prob  # no distinct text colour (ΔE < 6): nothing to remove here
    d_text = _length(lab - text)
    member = np.clip(0.5 + (dist_bg - d_text) / (2 * separation), 0.0, 1.0)
    # Where the background happens to match the text colour (white text crossing a
    # white object), the median cannot tell them apart; such pixels are text-coloured,
    # and filling them costs little, while leaving them leaves glyph fragments.
    member = np.where(d_text <= MEDIAN_TEXT_DELTA_E, np.maximum(member, 0.75), member)
    # Closer to the text colour than to the background is not enough: dark eyes
    # under dark text are too. Text is one colour, so stay near it.
    member = np.where(d_text <= MEDIAN_TEXT_TOLERANCE * separation, member, member * 0.3)
    prob[y0:y1, x0:x1] = np.where(sub, member, 0.0)
    return prob


def _segment_reduced(rgb: np.ndarray, region: np.ndarray, others: np.ndarray, confidence: np.ndarray | None,
                     height: float, origin: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, LineFit]:
    """:func:`segment_line` for a tall line, on the crop reduced so the line is
    ``SEGMENT_HEIGHT`` px high (the cost grows with the line's area, the
    answer does not need more), enlarged back to the crop's size."""
    h, w = region.shape
    factor = height / SEGMENT_HEIGHT
    size = (max(8, int(round(w / factor))), max(8, int(round(h / factor))))

    def small(a: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        return cv2.resize(a.astype(np.float32), size, interpolation=interpolation)

    _, p, ov, fit = segment_line(small(rgb), small(region) > 0.5, small(others) > 0.5,
                                 None if confidence is None else small(confidence), reduce=False)
    full = np.zeros((size[1], size[0]), np.float32)
    full_ov = np.zeros((size[1], size[0], 4), np.float32)
    bx, by, bw, bh = fit.box  # the small crop is the whole reduced image: fit.box starts at 0, 0
    full[by:by + bh, bx:bx + bw] = p
    full_ov[by:by + bh, bx:bx + bw] = ov
    prob = cv2.resize(full, (w, h), interpolation=cv2.INTER_LINEAR)
    overlay = cv2.resize(full_ov, (w, h), interpolation=cv2.INTER_NEAREST)
    overlay[..., 3] = np.where(prob > 0.05, overlay[..., 3], 0.0)
    fit.box = [int(origin[0]), int(origin[1]), int(w), int(h)]
    if fit.shadow:
        fit.shadow = [int(round(v * factor)) for v in fit.shadow]
    return prob, overlay, fit


def build_mask(rgb: np.ndarray, confidence: np.ndarray, params: MaskParams, reader=None,
               segmenter=None, recover: bool = True) -> MaskResult:
    """The stroke-following mask and overlay estimate for a confidence map (see
    the module docstring).

    ``reader`` (``verdicts(rgb, regions, boxes) -> [(is_text, reading dict)]`` and
    ``read_lines(rgb, regions, boxes) -> [Reading]``, as
    :class:`worker.detect.recognize.LineReader`; None keeps every region) reads
    each region back; regions that do not read as text (a cat's eye: one
    uncertain letter) are dropped and listed in ``result.rejected``.
    ``segmenter`` (``probability(crop, height) -> HxW``, as
    :class:`worker.strokes.StrokeSegmenter`; None: colour evidence only) reads
    each kept line's glyphs by their shape (:func:`_with_learned`). With both,
    and ``recover``, lines the detector missed are looked for too
    (:func:`recover_lines`) and segmented like the others."""
    union, boxes, regions = text_regions(confidence, params)
    detected = union  # what recovery leaves alone: the detector's lines, read as text or not
    rejected, recovered, readings = [], [], [None] * len(regions)
    if reader is not None and regions:
        verdicts = reader.verdicts(rgb, regions, boxes)
        kept = [ok for ok, _ in verdicts]
        rejected = [{"box": b, **reading} for b, (ok, reading) in zip(boxes, verdicts) if not ok]
        readings = [reading for ok, reading in verdicts if ok]
        boxes = [b for b, k in zip(boxes, kept) if k]
        regions = [g for g, k in zip(regions, kept) if k]
        union = np.logical_or.reduce(regions) if regions else np.zeros(confidence.shape, bool)
    found = len(regions)  # the detector's lines; those after are recovered (their height is known)
    if reader is not None and segmenter is not None and recover:
        more, more_boxes, recovered = recover_lines(rgb, detected, segmenter, reader)
        union = np.logical_or.reduce([union, *more])
        regions, boxes, readings = regions + more, boxes + more_boxes, readings + recovered
    prob = np.zeros(confidence.shape, np.float32)
    overlay = np.zeros(confidence.shape + (4,), np.float32)
    lines = []
    for index, (region, box) in enumerate(zip(regions, boxes)):
        region, box, (sl, p, ov, fit) = _segment_continued(rgb, region, box, union, confidence, reader,
                                                           readings[index])
        union, boxes[index] = union | region, box
        lines.append(fit)
        local = median_evidence(rgb[sl], region[sl])
        local = _drop_blobs(local, np.zeros(local.shape, np.int32), 0.5 - params.stroke_margin)
        opaque = (local > p) & (local >= 0.5 - params.stroke_margin)
        ov[opaque, 3] = 1.0  # no alpha estimate from the median: inpaint, never unblend
        np.maximum(p, local, out=p)
        if segmenter is not None:
            by_detector = index < found
            height = max(4.0, _line_height(region[sl]) if by_detector else recovered[index - found]["height"])
            learned = learned_strokes(rgb[sl], region[sl], segmenter, height)
            beyond = None if by_detector else _unsupported_beyond(p, learned, region[sl], line_crop(region, box)[2])
            fit.learned = _with_learned(p, ov, learned, max(2, int(round(LEARNED_NEAR * height))), beyond)
        view, oview = prob[sl], overlay[sl]
        stronger = p > view
        view[stronger] = p[stronger]
        oview[stronger] = ov[stronger]
    strokes = prob >= 0.5 - params.stroke_margin
    strokes = _drop_specks(strokes, params.min_region_area)
    strokes = _fill_islands(rgb, strokes, prob, params.dilate, [b[3] for b in boxes])
    result = mask_from_strokes(strokes, params, union, boxes, prob)
    overlay *= result.core[..., None]
    result.overlay = overlay
    result.lines = lines
    result.rejected = rejected
    result.recovered = recovered
    return result


def _segment_continued(rgb: np.ndarray, region: np.ndarray, box: list[int], others: np.ndarray,
                       confidence: np.ndarray, reader=None, reading: dict | None = None
                       ) -> tuple[np.ndarray, list[int], tuple]:
    """:func:`segment_line`, then again with the line's region taking in the
    glyphs it found past its ends, while that finds more (CONTINUE rounds at
    most): the search past a line's ends reaches EXTEND line heights, and a
    caption DBNet cut short goes on as long as glyphs of its colour do ("Lot
    112" with "Lot 1" detected: the second "1" is found, the "2" lies past
    it). A line with a drop shadow is not continued. Only with ``reader`` (as
    :class:`worker.detect.recognize.LineReader`); the longer line is kept only
    when it reads as more characters, about as surely, than ``reading`` (its
    first reading, text and score; None: read here); within the first
    search the first segmentation stands (see docs/text.md). Returns the
    region, its box and segment_line's result for it."""
    segmented = first = segment_line(rgb, region, others, confidence, box=box)
    if reader is None:
        return region, box, first  # nothing to tell a longer caption from the photo past it
    first_region, first_box, first_height = region, box, line_crop(region, box)[1]
    for _ in range(CONTINUE):
        sl, p, fit = segmented[0], segmented[1], segmented[3]
        if fit.shadow:
            break  # its drop shadow lies past the glyphs too, and would be taken for more of them
        _, height, grow = line_crop(region, box)
        past = (p >= STROKE) & ~cv2.dilate(region[sl].astype(np.uint8), _disk(2 * grow)).astype(bool)
        if past.sum() < (CONTINUE_GLYPH * height) ** 2:
            break
        # only a glyph at the far end of the search says the caption may go on past it
        away = cv2.distanceTransform((~region[sl]).astype(np.uint8), cv2.DIST_L2, 3)  # from the line, not the crop's edge
        if away[past].max() < (EXTEND - CONTINUE_END) * height:
            break
        grown = region.copy()
        grown[sl] |= cv2.dilate(past.astype(np.uint8), _disk(grow)).astype(bool)
        x, y, w, h = cv2.boundingRect(grown.astype(np.uint8))
        region, box = grown, [x, y, w, h]
        segmented = segment_line(rgb, region, others | region, confidence, box=box)
    if segmented is not first:
        # the longer line must read as more text: photo past a complete caption reads as the same
        # characters with a few of noise, at a lower score
        if reading is None:
            reading = reader.read_lines(rgb, [first_region], [first_box])[0].to_dict()
        after = reader.read_lines(rgb, [region], [box])[0]
        if not (len(after.text.strip()) > len(reading["text"].strip())
                and after.score >= min(reading["score"] - CONTINUE_READ, CONTINUE_SURE)):
            return first_region, first_box, first
    if segmented is not first:
        # only what lies past the first search is taken from the longer line: within its reach the first
        # segmentation stands (the longer line's background ring and clusters find more photo there)
        sl, p, ov, _ = segmented
        start = first_region[sl].astype(np.uint8)
        beyond = cv2.distanceTransform(1 - start, cv2.DIST_L2, 3) > EXTEND * first_height
        lo = [max(a.start, b.start) for a, b in zip(first[0], sl)]
        hi = [min(a.stop, b.stop) for a, b in zip(first[0], sl)]
        into = tuple(slice(l - b.start, h - b.start) for l, h, b in zip(lo, hi, sl))
        out_of = tuple(slice(l - a.start, h - a.start) for l, h, a in zip(lo, hi, first[0]))
        p0, ov0 = np.zeros_like(p), np.zeros_like(ov)
        p0[into], ov0[into] = first[1][out_of], first[2][out_of]
        segmented = (sl, np.where(beyond, p, p0), np.where(beyond[..., None], ov, ov0), first[3])
    return region, box, segmented


def recovery_heights(shape: tuple[int, ...]) -> list[float]:
    """The line heights :func:`recover_lines` looks for in an image of this shape."""
    short = min(shape[:2])
    return sorted({round(max(RECOVER_MIN_HEIGHT, short / d), 1) for d in RECOVER_HEIGHTS})


def recover_lines(rgb: np.ndarray, known: np.ndarray, segmenter, reader) -> tuple[list, list, list[dict]]:
    """Text the detector missed: the learned segmenter over the whole image at
    a few line heights (:func:`recovery_heights`), its strokes joined into
    line-shaped candidates with strokes outside ``known`` (bool HxW, the lines
    already found), each kept when the reader reads it as RECOVER_CHARS+
    characters with RECOVER_SCORE confidence (stricter than a detected line's
    check: these candidates come from a network that also fires on texture).
    What a kept candidate adds is its part outside ``known``, where that part
    holds strokes and is more than a strip along a found line: a whole line
    DBNet missed, or a word it left out of one, which must then read as text
    by itself.

    Returns (bool HxW regions, their [x, y, w, h] boxes, one record per line:
    box, height, turn, reading)."""
    h, w = rgb.shape[:2]
    taken = known.copy()
    alone = None   # the image with the taken lines greyed out, made when first needed, then kept up to date
    regions, boxes, records = [], [], []
    for height in recovery_heights(rgb.shape):
        # candidates are found at the network's scale (LINE_PX per line height), then enlarged back
        x, (sh, sw) = segmenter.model_input(rgb, height)
        for degrees in (0.0, *RECOVER_TURNS):
            strokes = _turned_strokes(x, (sh, sw), segmenter, degrees) >= RECOVER_CUT
            small = cv2.resize(taken.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST).astype(bool)
            candidates = _line_candidates(strokes, LINE_PX, small)
            if not candidates:
                continue
            enlarged = [cv2.resize(c.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                        for c in candidates]
            found = [list(cv2.boundingRect(c.astype(np.uint8))) for c in enlarged]
            verdicts = reader.verdicts(rgb, enlarged, found)
            disk = _disk(max(1, int(RECOVER_JOIN * LINE_PX)))
            for candidate, box, (_, reading) in zip(candidates, found, verdicts):
                if not _reads_as_line(reading):
                    continue
                # read with the margin the strokes were joined by; segmented within their closing
                closed = candidate & cv2.erode(candidate.astype(np.uint8), disk).astype(bool)
                parts = _parts_with_strokes(closed & ~small, strokes)  # what the detector missed
                if (closed & small).any() and parts:
                    # beside a found line, each part must read as text by itself (the rule for a found line,
                    # at RECOVER_SCORE): a word left out ("only" of "preview only 333"), not the glove, the
                    # rocket's fin or the fur the network's blob also took in. The found lines are greyed
                    # out so that "Museum" above the fur is not read as part of it
                    if alone is None:
                        alone = np.where(taken[..., None], np.float32(0.5), rgb)
                    wide = [cv2.resize(p.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for p in parts]
                    readings = reader.verdicts(alone, [p.astype(bool) for p in wide],
                                               [list(cv2.boundingRect(p)) for p in wide])
                    parts = [p for p, (ok, r) in zip(parts, readings) if ok and r["score"] >= RECOVER_SCORE]
                if not parts:
                    continue
                closed = np.logical_or.reduce(parts)
                region = cv2.resize(closed.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                region &= ~taken
                taken |= region
                if alone is not None:
                    alone[region] = 0.5
                small |= closed
                regions.append(region)
                boxes.append(box)
                records.append({"box": box, "height": height, "turn": degrees, **reading})
    return regions, boxes, records


def _turned_strokes(x: np.ndarray, size: tuple[int, int], segmenter, degrees: float) -> np.ndarray:
    """The segmenter's stroke probability over the model input ``x`` (the
    image at the network's scale, ``size`` (h, w) of it the image) with the
    image turned by ``degrees`` first and the result turned back. The network
    finds far fewer strokes in a leaning line: a "Lot 112" at 32 degrees over
    grass gives an "o" and half a "2", turned level every glyph."""
    sh, sw = size
    if not degrees:
        return segmenter.run(x)[:sh, :sw]
    small = np.ascontiguousarray(x[0, :, :sh, :sw].transpose(1, 2, 0))
    turn = cv2.getRotationMatrix2D((sw / 2.0, sh / 2.0), degrees, 1.0)
    cos, sin = abs(turn[0, 0]), abs(turn[0, 1])
    canvas = (int(np.ceil(sw * cos + sh * sin)), int(np.ceil(sw * sin + sh * cos)))
    turn[:, 2] += (canvas[0] - sw) / 2.0, (canvas[1] - sh) / 2.0
    level = cv2.warpAffine(small, turn, canvas, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    turned, (th, tw) = segmenter.model_input(level, LINE_PX)   # already at the network's scale
    return cv2.warpAffine(segmenter.run(turned)[:th, :tw], turn, (sw, sh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def _reads_as_line(reading: dict) -> bool:
    return len(reading["text"].strip()) >= RECOVER_CHARS and reading["score"] >= RECOVER_SCORE


def _parts_with_strokes(region: np.ndarray, strokes: np.ndarray) -> list[np.ndarray]:
    """The connected parts of ``region`` (bool, at the network's scale)
    holding at least RECOVER_STROKES line heights squared of ``strokes`` and
    reaching RECOVER_DEPTH line heights deep: a found line's margin does not."""
    count, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    if count <= 1:
        return []
    held = np.bincount(labels[strokes & region], minlength=count)
    depth = np.zeros(count, np.float32)  # how far each part reaches inside itself: a margin is a thin strip
    np.maximum.at(depth, labels.ravel(), cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3).ravel())
    keep = (held >= RECOVER_STROKES * LINE_PX * LINE_PX) & (depth >= RECOVER_DEPTH * LINE_PX)
    return [labels == i for i in range(1, count) if keep[i]]


def _line_candidates(strokes: np.ndarray, height: float, taken: np.ndarray) -> list[np.ndarray]:
    """Line-shaped groups of ``strokes`` (bool HxW) for lines ``height`` px
    high with enough strokes outside ``taken``: a bool HxW region each."""
    joined = cv2.dilate(strokes.astype(np.uint8), _disk(max(1, int(RECOVER_JOIN * height))))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    low, high = (f * height for f in RECOVER_SHAPE[:2])
    long = RECOVER_SHAPE[2]
    out = []
    for i in range(1, count):
        x, y, w, h, area = stats[i]
        if max(w, h) < long * low:
            continue
        comp = labels[y:y + h, x:x + w] == i
        if (strokes[y:y + h, x:x + w] & comp & ~taken[y:y + h, x:x + w]).sum() < RECOVER_STROKES * height * height:
            continue  # too few strokes, or a line already found (its strokes inside it) seen again
        corners = cv2.boxPoints(min_area_rect(comp))
        sides = sorted((corners[1] - corners[0], corners[2] - corners[1]), key=lambda v: float(v @ v))
        across, along = (float(np.sqrt(v @ v)) for v in sides)
        if not low <= across <= high or along < long * across or abs(sides[1][1]) > abs(sides[1][0]):
            continue  # not a line's shape, or steeper than 45 degrees (captions; the network saw up to 35)
        region = np.zeros(strokes.shape, bool)
        region[y:y + h, x:x + w] = comp
        out.append(region)
    return out


def _unsupported_beyond(prob: np.ndarray, learned: np.ndarray, region: np.ndarray, grow: int) -> np.ndarray | None:
    """For a recovered line (the segmenter's find): outside its region, grown
    by ``grow``, when its colour evidence inside disagrees with the segmenter
    (under RECOVER_AGREE of its strokes where the segmenter sees a glyph):
    the colour fit found something other than the glyphs the line was
    recovered from (a white ring mark over a black collar: fitted black), and
    beyond the line's ends it would take in more of that (the dark suit
    beside it). None where the two agree (pale captions over grass: the
    letters past the segmenter's reach are found by their colour)."""
    inside = cv2.dilate(region.astype(np.uint8), _disk(grow)).astype(bool)
    strokes = inside & (prob >= STROKE)
    if not strokes.any() or float((learned[strokes] >= LEARNED_VETO).mean()) >= RECOVER_AGREE:
        return None
    return ~inside


def _with_learned(prob: np.ndarray, overlay: np.ndarray, learned: np.ndarray, reach: int,
                  beyond: np.ndarray | None = None) -> list[int]:
    """Merge a line's learned stroke probability into its colour evidence
    ``prob`` and overlay estimate (in place); returns how many pixels it
    added and dropped.

    The colour evidence loses glyphs over a background of their own colour and
    takes photo pixels of the text's colour for strokes; the network, which
    reads the glyphs' shape, is surer of both. Opaque colour evidence that the
    network calls background next to the glyphs it found (within ``reach``
    px) is dropped unless the colour evidence is near certain; where the
    network sees no glyph at all (a low-contrast hue on wood), it has no say.
    ``beyond`` (bool, None: nowhere): where it has the last word, near its
    glyphs or not and however sure the colour evidence (outside a line the
    network itself found).
    Where it finds a glyph the colour evidence missed, it is added, as opaque
    (it is a shape, not a blend fit: inpainted, never unblended). A
    semi-transparent fit stays as it is: its alpha is what lets the unblend
    stage bring the photo back."""
    glyphs = learned >= LEARNED_ADD
    near = cv2.distanceTransform((~glyphs).astype(np.uint8), cv2.DIST_L2, 3) <= reach  # no glyph: none near
    veto = near & (learned < LEARNED_VETO) & (overlay[..., 3] >= 1.0) & (prob < LEARNED_TRUST)
    if beyond is not None:
        veto |= beyond & (learned < LEARNED_VETO) & (overlay[..., 3] >= 1.0)
    dropped = int((veto & (prob >= STROKE)).sum())
    prob[veto] = 0.0
    added = glyphs & (learned > prob)
    gained = int((added & (prob < STROKE)).sum())
    overlay[added, 3] = 1.0
    prob[added] = learned[added]
    return [gained, dropped]


def learned_strokes(crop: np.ndarray, region: np.ndarray, segmenter, height: float) -> np.ndarray:
    """The learned segmenter's stroke probability over a line's crop, kept
    within reach of the line's region (glyph tops and tails stand out of it);
    ``height``: the line's, from its region in the crop."""
    prob = segmenter.probability(crop, height)
    # the reach (the region grown around and along the line) varies on the scale
    # of a line's height: computed on the region reduced to ~NEAR_PX per height
    scale = min(1.0, NEAR_PX / height)
    h, w = region.shape
    small = cv2.resize(region.astype(np.uint8), (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_NEAREST)
    if not small.any():
        small = cv2.resize(region.astype(np.float32), small.shape[::-1], interpolation=cv2.INTER_AREA) > 0
        small = small.astype(np.uint8)
    grow = max(1, int(round(LEARNED_REACH * height * scale)))
    near = cv2.dilate(small, _disk(grow)) | cv2.dilate(small, _along(small > 0, int(round(EXTEND * height * scale)), grow))
    near = cv2.resize(near, (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return np.where(near, prob, 0.0).astype(np.float32)


def _direction(region: np.ndarray) -> float:
    """The main direction of a text line's region, radians (image x right, y down)."""
    (_, _), (rw, rh), angle = min_area_rect(region)
    return float(np.radians(angle + 90.0 if rh > rw else angle))


def _along(region: np.ndarray, reach: int, width: int) -> np.ndarray:
    """A line-shaped structuring element along the region's main direction."""
    angle = np.degrees(_direction(region))
    k = 2 * reach + 1
    kernel = np.zeros((k, k), np.uint8)
    dx, dy = reach * np.cos(np.radians(angle)), reach * np.sin(np.radians(angle))
    cv2.line(kernel, (int(round(reach - dx)), int(round(reach - dy))), (int(round(reach + dx)), int(round(reach + dy))),
             1, thickness=max(1, 2 * width + 1))
    return kernel


def _drop_blobs(prob: np.ndarray, cluster: np.ndarray, cut: float) -> np.ndarray:
    """Remove parts much thicker than the line's strokes (a dark object the
    text crosses, not a glyph). A stroke's half-width is the distance to its
    edge along its ridge; where a colour cluster is deeper than ``BLOB_FACTOR``
    times the line's median half-width, that cluster's pixels around it are
    dropped (the glyphs of other colours it touches stay)."""
    strokes = (prob >= cut).astype(np.uint8)
    if strokes.sum() < 20:
        return prob
    dist = _distance(strokes)
    ridge = (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8))) & (dist > 1.0)
    half = max(1.5, float(np.median(dist[ridge]))) if ridge.any() else 0.0
    if half <= 0:
        return prob
    thick = dist > BLOB_FACTOR * half
    if not thick.any():
        return prob
    out = prob.copy()
    zone = _disk(int(np.ceil(BLOB_FACTOR * half)) + 1)
    for k in np.unique(cluster[thick]):
        if k < 0:
            continue
        near = cv2.dilate((thick & (cluster == k)).astype(np.uint8), zone).astype(bool)
        out[near & (cluster == k)] = 0.0
    return out


def _glyphs_beyond(prob: np.ndarray, line: np.ndarray, match: np.ndarray, coverage: np.ndarray,
                   main: np.ndarray, cut: float) -> np.ndarray:
    """Beyond the detected line, keep only what looks like a stray glyph of the
    same overlay (a "©" the detector left out): parts as thin as the line's own
    strokes, mostly of the line's ``main`` colour, whose fully covered pixels
    show the fitted overlay's colour (median
    ΔE under ``BEYOND_DELTA_E``). Text is drawn in one colour; an eye or a dark
    patch next to dark text is neither that thin nor that uniform.

    A part in the overlay's colour that is too thick is a photo object of the
    same colour merged with a glyph drawn over it (a white letter on a white
    cup rim: the detector leaves it out, and the background fill, taken from
    the photo around, calls the whole rim overlay). Of it only a glyph is
    kept: inside the *glyph slot* (the band the line's strokes occupy across
    the line, within ``SLOT`` strokes' heights beyond its last stroke), the
    pixels that show the overlay's colour more purely than the object around
    them does, grown by a stroke width. Filling those costs little (they are
    nearly the overlay's colour); leaving them leaves a readable letter. A
    plain object in the slot (a cup rim beyond a dark caption) has no such
    pixels and is dropped as before."""
    strokes = (prob >= cut).astype(np.uint8)
    beyond = strokes.astype(bool) & ~line
    if not beyond.any():
        return prob
    count, labels = cv2.connectedComponents(beyond.astype(np.uint8), connectivity=8)
    dist = _distance(strokes)
    ridge = (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8))) & (dist > 1.0) & line
    half = max(1.5, float(np.percentile(dist[ridge], 90))) if ridge.any() else 1.5
    slot = _glyph_slot(strokes.astype(bool) & line & main, line)
    purer = _purer_than_around(match, strokes.astype(bool), half) if slot is not None else None
    drop = np.zeros(prob.shape, bool)
    for i in range(1, count):
        part = labels == i
        solid = part & (coverage >= 0.8)
        # in the line's main colour (not an outline or shadow colour, which photo
        # surfaces share more often), and showing it as the fitted overlay does
        colour_ok = (solid.sum() >= 3 and main[part].mean() > 0.5
                     and float(np.median(match[solid])) < BEYOND_DELTA_E)
        if colour_ok and float(dist[part].max()) <= THIN_FACTOR * half:
            continue
        if colour_ok and slot is not None:
            # the glyph's purer pixels in the slot, grown to the glyph's strokes around them
            seeds = part & slot & purer
            glyph = cv2.dilate(seeds.astype(np.uint8), _disk(int(np.ceil(2 * half)))).astype(bool) if seeds.any() else seeds
            drop |= part & ~(slot & glyph)
        else:
            drop |= part
    return np.where(drop, 0.0, prob).astype(np.float32) if drop.any() else prob


def _purer_than_around(match: np.ndarray, within: np.ndarray, half: float) -> np.ndarray:
    """Pixels of ``within`` that show the overlay's colour more purely than
    their neighbours in it do: ΔE to it ``PURER`` below their local mean over
    a few stroke widths (bool HxW). A glyph drawn over an object of nearly
    its colour shows there, the object's plain surface does not."""
    around, _ = _local_mean(match[..., None], within, 2.0 * half)
    return within & (match < around[..., 0] - PURER)


def _glyph_slot(strokes: np.ndarray, line: np.ndarray) -> np.ndarray | None:
    """Where one more glyph of the line would sit beyond each of its ends: the
    band its ``strokes`` span across the line's direction, reaching
    ``SLOT`` times that span beyond its first and last stroke (bool HxW), or
    None without strokes to measure."""
    ys, xs = np.nonzero(strokes)
    if ys.size < 20:
        return None
    axis = _direction(line)
    c, s = np.cos(axis), np.sin(axis)
    along, across = xs * c + ys * s, -xs * s + ys * c
    a_lo, a_hi = np.percentile(across, [1, 99])
    lo, hi = np.percentile(along, [0.5, 99.5])
    reach = SLOT * (a_hi - a_lo)
    gy, gx = np.mgrid[:line.shape[0], :line.shape[1]]
    g_along, g_across = gx * c + gy * s, -gx * s + gy * c
    band = (g_across >= a_lo) & (g_across <= a_hi)
    ends = ((g_along >= lo - reach) & (g_along < lo)) | ((g_along > hi) & (g_along <= hi + reach))
    return band & ends


def _fill_islands(rgb: np.ndarray, strokes: np.ndarray, evidence: np.ndarray, dilate: int, heights: list[int]
                  ) -> np.ndarray:
    """``strokes`` with the small holes of the fill region that are overlay added.

    Where two overlays cross, a few pixels of one can stay out of the mask,
    enclosed by it. The inpainter then spreads them over the whole hole (a
    white smear where a white caption crossed a green one). A glyph's counter
    holds the photo, like the ground around the text; a left-over piece of
    overlay does not. So a hole up to ISLAND_AREA line heights squared
    (``heights``: the lines' box heights, their median taken) is
    compared with the photo inpainted over it from around the mark (Telea),
    and its clumps (single pixels too) standing ISLAND_DIFF off join the
    strokes when they also look like the mark they touch: ISLAND_RING of the
    stroke pixels around them within ISLAND_LIKE of their colour (the photo
    in a counter can differ from the ground filled in around the text, a
    vessel or a shadow, but is not the overlay's colour), and ``evidence``
    (the stroke probability, HxW) gives them ISLAND_EVIDENCE at least."""
    core = cv2.dilate(strokes.astype(np.uint8), _disk(dilate)) if dilate else strokes.astype(np.uint8)
    x, y, w, h = cv2.boundingRect(core)
    if not w or not heights:
        return strokes
    height = float(np.median(heights))
    limit = max(6.0, ISLAND_AREA * height * height)
    x0, y0, x1, y1 = max(0, x - 1), max(0, y - 1), min(core.shape[1], x + w + 1), min(core.shape[0], y + h + 1)
    hole = 1 - core[y0:y1, x0:x1]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hole, connectivity=4)
    edge = set(labels[0]) | set(labels[-1]) | set(labels[:, 0]) | set(labels[:, -1])
    small = [j for j in range(1, count) if j not in edge and stats[j, cv2.CC_STAT_AREA] <= limit]
    if not small:
        return strokes
    islands = np.isin(labels, small)
    crop = np.clip(np.rint(rgb[y0:y1, x0:x1] * 255), 0, 255).astype(np.uint8)
    photo = cv2.inpaint(crop, (core[y0:y1, x0:x1] | islands).astype(np.uint8), 3, cv2.INPAINT_TELEA)
    off = np.abs(crop.astype(np.int16) - photo.astype(np.int16)).max(axis=2)
    found = islands & (off >= ISLAND_DIFF * 255)
    count, clumps, boxes, _ = cv2.connectedComponentsWithStats(found.astype(np.uint8), connectivity=8)
    out = strokes.copy()
    reach = dilate + 2   # across the margin to the strokes (the margin itself is photo)
    near = _disk(reach)
    for j in range(1, count):   # each clump on its own window, reach px wider
        cx, cy, cw, ch = boxes[j, :4]
        wy = slice(max(0, cy - reach), cy + ch + reach)
        wx = slice(max(0, cx - reach), cx + cw + reach)
        clump = clumps[wy, wx] == j
        piece = crop[wy, wx].astype(np.int16)
        ring = cv2.dilate(clump.astype(np.uint8), near).astype(bool) & strokes[y0:y1, x0:x1][wy, wx]
        like = np.abs(piece[ring] - np.median(piece[clump], axis=0)).max(axis=1) <= ISLAND_LIKE * 255
        if (ring.any() and like.mean() >= ISLAND_RING   # it looks like the overlay it touches
                and np.median(evidence[y0:y1, x0:x1][wy, wx][clump]) >= ISLAND_EVIDENCE):   # and shows some of it
            out[y0:y1, x0:x1][wy, wx] |= clump
    return out


def _drop_specks(strokes: np.ndarray, min_area: int) -> np.ndarray:
    x, y, w, h = cv2.boundingRect(strokes.astype(np.uint8))
    if not w:
        return strokes
    count, labels, stats, _ = cv2.connectedComponentsWithStats(strokes[y:y + h, x:x + w].astype(np.uint8),
                                                               connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    if keep[1:].all():
        return strokes
    keep[0] = False
    out = np.zeros_like(strokes, dtype=bool)
    out[y:y + h, x:x + w] = keep[labels]
    return out


def mask_from_strokes(strokes: np.ndarray, params: MaskParams, regions: np.ndarray | None = None,
                      boxes: list[list[int]] | None = None, evidence: np.ndarray | None = None) -> MaskResult:
    """Dilate and feather a bool stroke mask (also used for user-supplied masks).

    The fill region (``binary``) is the strokes dilated by ``dilate`` px: every
    extra pixel the inpainter must invent costs quality, so feathering does not
    grow it. The soft mask is 1 on the strokes and falls off with a Gaussian of
    ``sigma`` across the dilation margin, so the fill fades into the real pixels
    at the region's edge instead of meeting them at a hard seam. ``evidence``
    (the stroke probability, float32 HxW) raises the margin's weights where
    the pixels there still show some of the overlay (anti-aliased edges)."""
    strokes = strokes.astype(bool)
    core = cv2.dilate(strokes.astype(np.uint8), _disk(params.dilate)).astype(bool) if params.dilate else strokes.copy()
    if params.type == "binary" or params.sigma <= 0 or not core.any():
        soft = core.astype(np.float32)
    else:
        soft = np.zeros(core.shape, np.float32)
        # computed on the core's box plus the kernel's reach (zeros beyond: the
        # same values as over the whole image); the soft mask is 0 outside the core
        x, y, w, h = cv2.boundingRect(core.astype(np.uint8))
        reach = int(np.ceil(4 * params.sigma)) + 2
        y0, y1 = max(0, y - reach), min(core.shape[0], y + h + reach)
        x0, x1 = max(0, x - reach), min(core.shape[1], x + w + reach)
        s = strokes[y0:y1, x0:x1].astype(np.float32)
        blurred = cv2.GaussianBlur(s, (0, 0), params.sigma)
        feather = np.clip(blurred / 0.5, 0.0, 1.0)  # a stroke edge pixel sees ~half the kernel
        if evidence is not None:
            feather = np.maximum(feather, np.clip(evidence[y0:y1, x0:x1], 0.0, 1.0))
        soft[y0:y1, x0:x1] = np.where(core[y0:y1, x0:x1], np.maximum(s, feather), 0.0)
    regions = core.copy() if regions is None else regions
    return MaskResult(soft=soft, binary=core.copy(), core=core, regions=regions, boxes=boxes or [],
                      strokes=strokes)


def stroke_width(strokes: np.ndarray) -> float:
    """Median stroke width in px: twice the distance to the edge along the skeleton."""
    from skimage.morphology import skeletonize

    rows, cols = np.flatnonzero(strokes.any(axis=1)), np.flatnonzero(strokes.any(axis=0))
    if rows.size == 0:
        return 0.0
    # on the strokes' box with a one-pixel margin of background: both the
    # thinning and the distance are local, so the answer is the same
    y0, y1 = max(0, rows[0] - 1), min(strokes.shape[0], rows[-1] + 2)
    x0, x1 = max(0, cols[0] - 1), min(strokes.shape[1], cols[-1] + 2)
    strokes = strokes[y0:y1, x0:x1]
    skeleton = skeletonize(strokes)
    dist = _distance(strokes)
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
        "lines": [line.to_dict() for line in result.lines],
        "rejected": result.rejected,
        "recovered": result.recovered,
    }


def confidence_sample(confidence: np.ndarray, core: np.ndarray, limit: int = 4096) -> np.ndarray:
    """A deterministic subsample of the confidences inside the bool mask ``core`` (for histograms)."""
    inside = confidence[core]
    if inside.size <= limit:
        return inside
    return inside[np.linspace(0, inside.size - 1, limit).astype(int)]
