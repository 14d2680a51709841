"""Learning a watermark from a collection that shares it (Dekel et al., CVPR
2017, "On the Effectiveness of Visible Watermarks").

Every image is ``J_k = alpha * W + (1 - alpha) * I_k``: the same mark (colour
``W``, opacity ``alpha``) over different photos ``I_k``.

1. The mark's edges: the median over the collection of the image gradients
   (per channel).
   Photo edges fall in different places in each image and cancel in the
   median; the mark's stay. Their magnitude, against the median's own noise
   level, says whether the collection shares a mark at all.
2. The mark's shape: a Poisson reconstruction of that median gradient field
   (DCT solver) gives the matted mark up to a constant; thresholded and
   dilated, it is the support, filled inside where the edges only outline it.
3. Alpha and colour, jointly: the photo under the support is estimated per
   image by inpainting (Telea) from around it. Per pixel, a regression over
   the collection of ``J_k`` on that estimate gives ``1 - alpha`` (slope) and
   ``alpha * W`` (intercept); the mark's colour starts as their robust ratio
   over the confidently opaque pixels. Then alpha (per pixel) and colour are
   solved by alternating least squares on ``J_k - I_k = alpha * (W - I_k)``,
   each image weighted by how smooth its photo is around the mark (where the
   inpainted estimate of the photo is good); the inpainting errors bias this
   far less than the regression slope.

Images of the most common size are used (the mark is taken to sit at the same
pixel position in each); the mark found is returned as a :class:`Template`
cropped around its support, with its position in that frame.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.fft import dctn, idctn

from worker.watermark.template import ALPHA_FLOOR, Template, WatermarkError

MIN_IMAGES = 8
EDGE_SNR = 4.0       # a median gradient this far above its noise level may be a mark's edge
MAX_JITTER = 12      # px a mark may move between images of the collection
MIN_STRENGTH = 20.0  # the strongest must stand this far above it (unmarked ones measured 5-10)


@dataclass
class Learned:
    """``template``: the mark (colour, alpha), cropped; ``box``: its (x0, y0,
    x1, y1) in the collection's frame; ``size``: that frame (width, height);
    ``used``: indices of the images it was learned from; ``edge_strength``:
    the median-gradient peak over its noise level."""

    template: Template
    box: tuple[int, int, int, int]
    size: tuple[int, int]
    used: list[int] = field(default_factory=list)
    edge_strength: float = 0.0


def _gradients(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    gx[..., :-1] = grey[..., 1:] - grey[..., :-1]
    gy[..., :-1, :] = grey[..., 1:, :] - grey[..., :-1, :]
    return gx, gy


def poisson(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The image (up to a constant) whose forward differences best match
    (gx, gy) in least squares: the Neumann Poisson equation solved with a DCT."""
    div = gx.copy()
    div[:, 1:] -= gx[:, :-1]
    div += gy
    div[1:, :] -= gy[:-1, :]
    h, w = div.shape
    transformed = dctn(div, type=2, norm="ortho")
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    denominator = (2 * np.cos(np.pi * xx / w) - 2) + (2 * np.cos(np.pi * yy / h) - 2)
    denominator[0, 0] = 1.0
    transformed /= denominator
    transformed[0, 0] = 0.0
    return idctn(transformed, type=2, norm="ortho")


def _median_edges(stack: np.ndarray):
    """(median gx, median gy per channel, their magnitude, its noise level, peak strength)."""
    gx, gy = _gradients(np.moveaxis(stack, 3, 1))                         # N x 3 x H x W
    mx, my = np.median(gx, axis=0), np.median(gy, axis=0)                 # 3 x H x W: per channel
    magnitude = np.sqrt((mx * mx + my * my).sum(axis=0))
    noise = 1.4826 * float(np.median(np.abs(magnitude - np.median(magnitude)))) + 1e-4
    return mx, my, magnitude, noise, float(np.percentile(magnitude, 99.9)) / noise


def _shifted(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REFLECT)


def align(stack: np.ndarray, reach: int = MAX_JITTER, rounds: int = 3) -> np.ndarray:
    """Integer (dx, dy) per image that bring a mark shared up to ``reach`` px
    apart onto one place (zeros when no such mark shows). Gradient magnitudes
    are aligned to their running median, which keeps the mark's edges and
    drops each photo's own."""
    n = len(stack)
    mags = []
    for img in stack:
        gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
        mags.append(np.sqrt((gx * gx + gy * gy).sum(axis=2)))
    mags = np.stack(mags)
    # where the mark is: the median magnitude, blurred over the jitter, stands out
    blob = cv2.GaussianBlur(np.median(mags, axis=0), (0, 0), reach / 2 + 1)
    level = np.median(blob) + 6 * 1.4826 * np.median(np.abs(blob - np.median(blob)))
    ys, xs = np.nonzero(blob > level)
    if ys.size == 0:
        return np.zeros((n, 2), int)
    h, w = mags.shape[1:]
    y0, y1 = max(reach, ys.min() - reach), min(h - reach, ys.max() + reach + 1)
    x0, x1 = max(reach, xs.min() - reach), min(w - reach, xs.max() + reach + 1)
    if y1 - y0 < 8 or x1 - x0 < 8:
        return np.zeros((n, 2), int)
    shifts = np.zeros((n, 2), int)
    reference = mags[int(np.argmax(mags[:, y0:y1, x0:x1].sum(axis=(1, 2))))][y0:y1, x0:x1]
    for _ in range(rounds):
        for k in range(n):
            window = mags[k][y0 - reach:y1 + reach, x0 - reach:x1 + reach]
            score = cv2.matchTemplate(window, reference, cv2.TM_CCOEFF_NORMED)
            _, _, _, (bx, by) = cv2.minMaxLoc(score)
            shifts[k] = (bx - reach, by - reach)
        shifts -= np.round(np.median(shifts, axis=0)).astype(int)
        reference = np.median([mags[k][y0 + dy:y1 + dy, x0 + dx:x1 + dx] for k, (dx, dy) in enumerate(shifts)],
                              axis=0).astype(np.float32)
    return shifts


def learn(images: list[np.ndarray], name: str = "learned", min_images: int = MIN_IMAGES) -> Learned:
    """The mark shared by ``images`` (float32 HxWx3 in [0, 1] each).

    Raises WatermarkError with one line when the collection is too small
    (fewer than ``min_images`` of one size) or shares no mark (no median edge
    stands above the noise)."""
    sizes = Counter(img.shape[:2] for img in images)
    if not sizes:
        raise WatermarkError(f"{name}: no images to learn a watermark from")
    (h, w), count = sizes.most_common(1)[0]
    if count < min_images:
        raise WatermarkError(f"{name}: {count} image(s) of one size ({w}x{h}); learning a shared watermark needs at "
                             f"least {min_images}")
    used = [i for i, img in enumerate(images) if img.shape[:2] == (h, w)]
    stack = np.stack([images[i] for i in used]).astype(np.float32)        # N x H x W x 3
    mx, my, magnitude, noise, strength = _median_edges(stack)
    shifts = np.zeros((len(used), 2), int)
    if strength < MIN_STRENGTH:
        # perhaps the mark moves a little from image to image: align the images on it, then look again
        shifts = align(stack)
        if shifts.any():
            stack = np.stack([_shifted(img, -dx, -dy) for img, (dx, dy) in zip(stack, shifts)])
            mx, my, magnitude, noise, strength = _median_edges(stack)
    # an edge: above the noise, and not negligible next to the strongest shared edge
    edges = magnitude > max(EDGE_SNR * noise, 0.1 * float(np.percentile(magnitude, 99.9)))
    if strength < MIN_STRENGTH or edges.sum() < 12:
        raise WatermarkError(f"{name}: the {len(used)} images share no visible mark (median edge strength "
                             f"{strength:.1f}x the noise, {MIN_STRENGTH:.0f}x needed): too few or too varied")
    # the mark's edges hang together; isolated noise peaks do not: keep the strong connected groups
    joined = cv2.dilate(edges.astype(np.uint8), np.ones((5, 5), np.uint8))
    count_cc, labels = cv2.connectedComponents(joined)
    mass = np.bincount(labels[edges], weights=magnitude[edges], minlength=count_cc)
    mass[0] = 0.0
    edges &= np.isin(labels, np.nonzero(mass >= 0.2 * mass.max())[0])
    # the support: the edges' neighbourhood, filled by the Poisson reconstruction of the matted mark
    ys, xs = np.nonzero(edges)
    pad = 6
    y0, y1, x0, x1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1), max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    luma = np.array([0.299, 0.587, 0.114], np.float32)[:, None, None]
    crop_edges = edges[y0:y1, x0:x1]
    matted = poisson((luma * mx[:, y0:y1, x0:x1]).sum(axis=0) * crop_edges,
                     (luma * my[:, y0:y1, x0:x1]).sum(axis=0) * crop_edges)
    matted -= np.median(np.concatenate([matted[0], matted[-1], matted[:, 0], matted[:, -1]]))
    level = np.abs(matted)
    near = cv2.dilate(edges[y0:y1, x0:x1].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    support = near | (level > 0.5 * np.percentile(level[near], 50))
    support = cv2.dilate(support.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    crops = stack[:, y0:y1, x0:x1]
    hole = support.astype(np.uint8)
    photos = np.stack([cv2.inpaint(np.clip(np.rint(c * 255), 0, 255).astype(np.uint8), hole, 5, cv2.INPAINT_TELEA)
                       for c in crops]).astype(np.float32) / 255.0
    # per-pixel regression over the collection: J = (1 - alpha) * I + alpha * W
    j_mean, i_mean = crops.mean(axis=0), photos.mean(axis=0)
    dj, di = crops - j_mean, photos - i_mean
    slope = (dj * di).sum(axis=(0, 3)) / np.maximum((di * di).sum(axis=(0, 3)), 1e-9)
    alpha0 = np.clip(1.0 - slope, 0.0, 1.0) * support
    premult = j_mean - (1.0 - alpha0)[..., None] * i_mean                 # alpha * W
    strong = alpha0 > max(0.15, float(np.percentile(alpha0[support], 75)) * 0.5)
    if strong.sum() < 4:
        raise WatermarkError(f"{name}: the shared edges of the {len(used)} images give no consistent mark")
    colour = np.clip(np.median(premult[strong] / alpha0[strong][:, None], axis=0), 0.0, 1.0)
    # then alpha and colour by alternating least squares on J - I = alpha * (W - I), over images and
    # channels, each image weighted by how well inpainting knows its photo under the mark (the texture in
    # a ring around the support): the regression slope above is biased by the inpainting errors
    ring = cv2.dilate(hole, np.ones((9, 9), np.uint8)).astype(bool) & ~support
    texture = np.array([float(np.abs(c - cv2.GaussianBlur(c, (0, 0), 2.0))[ring].mean()) if ring.any() else 1.0
                        for c in crops])
    weight = (1.0 / (texture + 0.005) ** 2)[:, None, None, None]
    change = crops - photos                                                 # J - I_k
    for _ in range(10):
        diff = colour - photos                                              # W - I_k
        alpha = ((weight * change * diff).sum(axis=(0, 3)) / np.maximum((weight * diff * diff).sum(axis=(0, 3)), 1e-9))
        alpha = np.clip(alpha, 0.0, 1.0) * support
        a = alpha[None, ..., None]
        # J - (1 - alpha) I = alpha W, per channel
        colour = np.clip((weight * a * (crops - (1 - a) * photos)).sum(axis=(0, 1, 2))
                         / max(float((weight * a * a).sum()), 1e-9), 0.0, 1.0)
    diff = colour - photos
    alpha = ((weight * change * diff).sum(axis=(0, 3)) / np.maximum((weight * diff * diff).sum(axis=(0, 3)), 1e-9))
    alpha = np.clip(alpha, 0.0, 1.0) * support
    alpha[alpha < ALPHA_FLOOR] = 0.0
    template = Template(np.broadcast_to(colour.astype(np.float32), alpha.shape + (3,)).copy(),
                        alpha.astype(np.float32), name)
    return Learned(template, (int(x0), int(y0), int(x1), int(y1)), (w, h), used, round(strength, 2))


def describe(learned: Learned, template: str, images: list[str]) -> dict:
    """The JSON written next to a learned template (``template``: the PNG's
    file name; ``images``: names of the images given to :func:`learn`, in
    order): size and box in the collection's frame, colour, the alpha map,
    and the images it was learned from. :func:`worker.watermark.template.load_template`
    reads the box back as the mark's anchor."""
    t = learned.template
    return {"template": template, "size": {"width": learned.size[0], "height": learned.size[1]},
            "box": dict(zip(("x0", "y0", "x1", "y1"), learned.box)),
            "colour": [round(float(c), 4) for c in t.colour[0, 0]],
            "alpha": np.round(t.alpha, 4).tolist(), "alpha_max": round(float(t.alpha.max()), 4),
            "edge_strength": learned.edge_strength, "images": [images[i] for i in learned.used]}
