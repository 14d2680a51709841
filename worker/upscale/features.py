"""Measured artifact features: what the upscale router reads before it picks
a pre-pass (deblock, denoise) and an upscaler. Each is a plain function of the
pixels (float32 HxWx3 RGB in [0, 1]) or of the file's own JPEG tables, and
returns JSON-able numbers (they go into the decision log and the sidecar).

- **JPEG quality** (:func:`jpeg_quality_from_tables`): the least-squares fit of
  the file's quantisation tables to the IJG-scaled ITU-T T.81 Annex K tables
  (what libjpeg, Pillow, OpenCV, ImageMagick and most cameras' firmware write).
  A table that fits no IJG quality (residual above :data:`TABLE_FIT_MAX`) is
  ``odd``: its quality is not trusted and the router goes by the pixels.
- **Blockiness** (:func:`blockiness`): blind, from the pixels: how much larger
  the luminance steps across an 8x8 grid are than the steps inside the blocks,
  at the best of the 64 grid offsets. Finds JPEG history in a PNG or TIFF that
  was once a JPEG; :func:`quality_from_blockiness` maps it to an equivalent
  IJG quality (calibrated on scikit-image's photos).
- **Double compression** (:func:`double_compression`): the pixels are blockier
  than the file's own tables can explain, or blocky on a shifted grid (an
  earlier JPEG, cropped and re-saved).
- **Noise sigma** (:func:`noise_sigma`): Immerkaer's fast estimator on the
  flattest blocks, per channel, in 8-bit units.
- **Grain** (:func:`grain_features`): film grain is spatially correlated
  (clumps of a pixel or more), mostly in the luminance, and its strength
  depends on the intensity; sensor noise at the pixel level is white and
  independent per channel.
- **Fine texture** (:func:`texture_features`): how much of the local contrast
  sits at the finest scale (one pixel), against the contrast of whole 8x8
  blocks. Dense stochastic texture (grass, gravel, brick at low resolution)
  scores high, smooth surfaces and clean edges low; Real-ESRGAN alone paints
  blotches into the former, so it gets a smoothing pre-pass first.
- **Scan traits** (:func:`scan_features`): dust specks, vertical scratches,
  faded colour (low contrast and saturation, lifted blacks), a colour cast.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# ITU-T T.81 Annex K, natural (row-major) order, as Pillow's ``Image.quantization`` gives them.
ANNEX_K_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64)
ANNEX_K_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, np.float64)
# Mean squared residual (in table units) above which a table is not an IJG-scaled
# Annex K table: rounding alone leaves < 0.5; other encoders' tables leave tens.
TABLE_FIT_MAX = 2.0
# Immerkaer's kernel: a difference of two Laplacians, blind to planes and to
# smooth gradients, so its response on flat blocks is the noise.
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_BLOCK = 8
# A correlated residual this strong (8-bit units, luminance, on the flattest
# blocks) counts fully as grain; texture left in "flat" blocks of small images is 1-3.
GRAIN_SIGMA_FULL = 8.0
FLAT_SHARE = 0.2          # the flattest fifth of the blocks measures the noise
# Blockiness -> IJG quality: the median blockiness per quality of scikit-image's
# five colour photos at 256-512 px and x4 smaller (the eval's inputs), saved
# by Pillow (4:2:0). The spread is wide (at q50 the 10-90% range is 0.17-0.64):
# textured photos look blockier, so the blind estimate is coarse.
BLOCKINESS_TO_QUALITY = ((0.05, 95), (0.075, 90), (0.127, 80), (0.178, 70), (0.233, 60), (0.296, 50),
                         (0.354, 40), (0.458, 25), (0.718, 15), (1.044, 8))
# Double compression is claimed only beyond the single-compression spread above.
DOUBLE_MIN_BLOCKINESS = 0.3
DOUBLE_QUALITY_GAP = 40


def ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
    """``base`` scaled the way libjpeg's ``jpeg_quality_scaling`` does, clamped to 1..255 (baseline)."""
    q = min(100, max(1, int(quality)))
    scale = 5000 / q if q < 50 else 200 - 2 * q
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255)


def jpeg_quality_from_tables(tables) -> dict:
    """The IJG quality whose scaled Annex K tables fit ``tables`` best (least
    squares over q = 1..100, luminance and, where present, chrominance).

    ``tables``: Pillow's ``Image.quantization`` (a dict or sequence of 64-value
    tables, natural order), or None. Returns ``{"jpeg_quality": int | None,
    "table_fit": mean squared residual | None, "tables": "ijg" | "odd" | "none"}``."""
    if tables is None:
        return {"jpeg_quality": None, "table_fit": None, "tables": "none"}
    seq = list(tables.values()) if isinstance(tables, dict) else list(tables)
    arrays = [np.asarray(t, np.float64).ravel() for t in seq]
    if not arrays or any(a.size != 64 for a in arrays):
        return {"jpeg_quality": None, "table_fit": None, "tables": "odd"}
    bases = [ANNEX_K_LUMA] + [ANNEX_K_CHROMA] * (len(arrays) - 1)
    best_q, best_err = 0, math.inf
    for q in range(1, 101):
        err = float(np.mean(np.concatenate([(a - ijg_table(b, q)) ** 2 for a, b in zip(arrays, bases)])))
        if err < best_err:
            best_q, best_err = q, err
    kind = "ijg" if best_err <= TABLE_FIT_MAX else "odd"
    return {"jpeg_quality": best_q if kind == "ijg" else None, "table_fit": round(best_err, 3), "tables": kind}


def _luma8(rgb: np.ndarray) -> np.ndarray:
    """Luminance in 8-bit units, float32 (noise and steps are quoted in these)."""
    return np.asarray(rgb, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) * 255.0


def blockiness(rgb: np.ndarray) -> dict:
    """Blind 8x8 blockiness of the luminance.

    For each of the 8 column (and row) phases, the mean absolute step between
    neighbouring columns at that phase; JPEG leaves the steps at one phase (the
    block boundary) larger than at the other seven. ``blockiness`` = boundary
    step / median of the other phases - 1 (about 0 for a clean image),
    averaged over the two directions; ``grid`` = the (x, y) phase of the
    boundary (0, 0 for a JPEG decoded as is; other values: cropped after
    compression)."""
    y = _luma8(rgb)
    out = {}
    for axis, key in ((1, "x"), (0, "y")):
        d = np.abs(np.diff(y, axis=axis))
        n = d.shape[axis]
        if n < 16:
            return {"blockiness": 0.0, "grid": [0, 0]}
        # Steps inside strong edges say nothing about blocks: cap them.
        d = np.minimum(d, 20.0)
        phase = np.array([float(np.take(d, np.arange(p, n, 8), axis=axis).mean()) for p in range(8)])
        best = int(np.argmax(phase))
        rest = np.median(np.delete(phase, best))
        # a floor of one grey level: in flat areas (sky) a faint block edge must not read as a huge ratio
        out[key] = (float(phase[best] / max(rest, 1.0) - 1.0), (best + 1) % 8)
    return {"blockiness": round(max(0.0, (out["x"][0] + out["y"][0]) / 2), 4),
            "grid": [out["x"][1], out["y"][1]]}


def quality_from_blockiness(value: float) -> int:
    """An equivalent IJG quality for a blind blockiness (interpolated in
    :data:`BLOCKINESS_TO_QUALITY`; 100 below its first point)."""
    points = BLOCKINESS_TO_QUALITY
    if value <= points[0][0]:
        return 100 if value < points[0][0] / 2 else points[0][1]
    if value >= points[-1][0]:
        return points[-1][1]
    xs = [p[0] for p in points]
    qs = [p[1] for p in points]
    return int(round(float(np.interp(value, xs, qs))))


def double_compression(table_quality: int | None, block: dict) -> dict:
    """Evidence that the pixels went through JPEG more than once.

    - ``blocky-beyond-tables``: the blind blockiness implies a quality at
      least :data:`DOUBLE_QUALITY_GAP` below what the file's own tables say (an image saved at q30,
      then re-saved at q90);
    - ``shifted-grid``: the pixels are blocky on a grid not aligned with
      this file's (an earlier JPEG cropped and re-saved).
    Returns ``{"double_jpeg": bool, "double_jpeg_evidence": [...]}``."""
    evidence = []
    blind_q = quality_from_blockiness(block["blockiness"])
    strong = block["blockiness"] >= DOUBLE_MIN_BLOCKINESS
    if table_quality is not None and strong and blind_q <= table_quality - DOUBLE_QUALITY_GAP:
        evidence.append("blocky-beyond-tables")
    if table_quality is not None and strong and tuple(block["grid"]) != (0, 0):
        evidence.append("shifted-grid")
    return {"double_jpeg": bool(evidence), "double_jpeg_evidence": evidence}


def _block_view(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    a = a[: h - h % size, : w - w % size]
    return a.reshape(h // size, size, w // size, size, *a.shape[2:]).swapaxes(1, 2)


def _flat_blocks(rgb: np.ndarray) -> np.ndarray:
    """Bool (rows, cols) of the :data:`FLAT_SHARE` blocks with the least structure
    (the gradient of a smoothed luminance, so the noise itself does not decide)."""
    y = cv2.GaussianBlur(_luma8(rgb), (0, 0), 2.0)
    g = np.hypot(cv2.Sobel(y, cv2.CV_32F, 1, 0), cv2.Sobel(y, cv2.CV_32F, 0, 1))
    per = _block_view(g, _BLOCK).mean(axis=(2, 3))
    k = max(1, int(per.size * FLAT_SHARE))
    cut = np.partition(per.ravel(), k - 1)[k - 1]
    return per <= cut


def noise_sigma(rgb: np.ndarray) -> dict:
    """Noise standard deviation in 8-bit units by Immerkaer's estimator
    (sigma = sqrt(pi/2) / 6 * mean |I * M|), on the flattest :data:`FLAT_SHARE`
    of the 16x16 blocks, per RGB channel.

    Returns ``{"sigma": mean over channels, "sigma_rgb": [r, g, b],
    "sigma_luma": on the luminance}``; 0 for images under 32 px."""
    rgb = np.asarray(rgb, np.float32)
    if min(rgb.shape[:2]) < 2 * _BLOCK:
        return {"sigma": 0.0, "sigma_rgb": [0.0, 0.0, 0.0], "sigma_luma": 0.0}
    flat = _flat_blocks(rgb)

    def estimate(plane: np.ndarray) -> float:
        r = np.abs(cv2.filter2D(plane, cv2.CV_32F, _IMMERKAER, borderType=cv2.BORDER_REFLECT))
        per = _block_view(r, _BLOCK).mean(axis=(2, 3))
        return float(math.sqrt(math.pi / 2) / 6.0 * per[flat].mean())

    channels = [estimate(np.ascontiguousarray(rgb[:, :, c]) * 255.0) for c in range(3)]
    return {"sigma": round(float(np.mean(channels)), 3), "sigma_rgb": [round(c, 3) for c in channels],
            "sigma_luma": round(estimate(_luma8(rgb)), 3)}


def grain_features(rgb: np.ndarray) -> dict:
    """Film grain against sensor noise, on the high-pass residual of the flattest blocks.

    - ``grain_correlation``: correlation of the residual with its neighbour one
      pixel over (mean of x and y). White noise gives about -0.1 (the high-pass
      itself); grain a pixel or more across gives 0.2-0.6.
    - ``grain_luma_share``: share of the residual variance that is common to the
      three channels (1: monochrome grain; 1/3 for independent channel noise).
    - ``grain_intensity_slope``: how the residual's strength changes with the
      local intensity (the relative difference between the bright and dark
      half of the flat blocks; about 0 for signal-independent noise).
    - ``grain_score`` in [0, 1]: 0 = white, per-channel noise; 1 = correlated,
      monochrome grain (the product of the two measures, scaled)."""
    rgb = np.asarray(rgb, np.float32)
    empty = {"grain_score": 0.0, "grain_sigma": 0.0, "grain_correlation": 0.0, "grain_luma_share": 0.0, "grain_intensity_slope": 0.0}
    if min(rgb.shape[:2]) < 2 * _BLOCK:
        return empty
    flat = _flat_blocks(rgb)
    resid = (rgb - cv2.GaussianBlur(rgb, (0, 0), 1.2)) * 255.0
    blocks = _block_view(resid, _BLOCK)[flat]          # (n, B, B, 3)
    if blocks.size == 0 or float(blocks.var()) < 0.25:   # too little residual to say anything
        return empty
    b = blocks - blocks.mean(axis=(1, 2), keepdims=True)
    var = float((b ** 2).mean())
    cx = float((b[:, :, 1:] * b[:, :, :-1]).mean()) / var
    cy = float((b[:, 1:] * b[:, :-1]).mean()) / var
    corr = (cx + cy) / 2
    common = b.mean(axis=3)
    luma_share = float((common ** 2).mean()) / var      # 1/3 for independent channels, 1 for identical ones
    means = _block_view(rgb, _BLOCK)[flat].mean(axis=(1, 2, 3))
    strength = np.sqrt((b ** 2).mean(axis=(1, 2, 3)))
    order = np.argsort(means)
    half = len(order) // 2
    slope = 0.0
    if half >= 2:
        dark, bright = strength[order[:half]].mean(), strength[order[half:]].mean()
        slope = float((bright - dark) / max(1e-6, (bright + dark) / 2))
    # The correlated part of the residual: what white noise (Immerkaer's sigma,
    # which sees only the finest scale) does not explain.
    resid_luma = float(np.sqrt((common ** 2).mean()))
    white = noise_sigma(rgb)["sigma_luma"]
    correlated = math.sqrt(max(0.0, resid_luma ** 2 - white ** 2))
    corr_part = np.clip((corr + 0.05) / 0.35, 0.0, 1.0)
    share_part = np.clip((luma_share - 0.4) / 0.4, 0.0, 1.0)
    amount = np.clip(correlated / GRAIN_SIGMA_FULL, 0.0, 1.0)
    return {"grain_score": round(float(corr_part * share_part * amount), 4), "grain_sigma": round(correlated, 3),
            "grain_correlation": round(corr, 4),
            "grain_luma_share": round(luma_share, 4), "grain_intensity_slope": round(slope, 4)}


def scan_features(rgb: np.ndarray) -> dict:
    """Traits of scanned prints and film:

    - ``dust_per_mpx``: small isolated specks (2-40 px, at least 40/255 from a
      7x7 median and six times its local spread) per megapixel;
    - ``scratch_columns``: columns whose median step from their neighbours is
      an outlier along most of their height (vertical scratches on film);
    - ``contrast`` (luminance p99 - p1), ``black_level`` (p1), ``saturation``
      (mean HSV saturation), ``faded`` (low contrast with lifted blacks, or
      little saturation in a colour image);
    - ``cast``: the mean chroma of near-neutral pixels in CIELAB a*b* units,
      ``cast_hue`` its direction in degrees (a colour cast: yellowed paper, a
      faded dye layer)."""
    rgb = np.clip(np.asarray(rgb, np.float32), 0.0, 1.0)
    h, w = rgb.shape[:2]
    y8 = (_luma8(rgb) + 0.5).astype(np.uint8)
    med = cv2.medianBlur(y8, 7).astype(np.int16)
    # A speck stands out from a smooth neighbourhood; texture and edges do not count.
    medf = med.astype(np.float32)
    local_sd = np.sqrt(np.maximum(cv2.blur(medf ** 2, (9, 9)) - cv2.blur(medf, (9, 9)) ** 2, 0.0))
    diff = np.abs(y8.astype(np.int16) - med)
    speck = ((diff >= 40) & (diff >= 6.0 * local_sd)).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(speck, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA] if n > 1 else np.array([])
    dust = int(np.sum((areas >= 2) & (areas <= 40)))
    yf = y8.astype(np.float32)
    scratches = 0
    if w >= 8 and h >= 16:
        step = yf[:, 1:-1] - (yf[:, :-2] + yf[:, 2:]) / 2
        score = np.median(step, axis=0)
        spread = np.median(np.abs(score - np.median(score))) + 0.5
        scratches = int(np.sum(np.abs(score - np.median(score)) > 8 * spread))
    p1, p99 = np.percentile(yf / 255.0, [1, 99])
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    sat = float(hsv[..., 1].mean())
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    neutral = chroma <= np.percentile(chroma, 30)
    a, bb = float(lab[..., 1][neutral].mean()), float(lab[..., 2][neutral].mean())
    contrast = float(p99 - p1)
    grey_image = float(np.percentile(chroma, 95)) < 3.0
    faded = (contrast < 0.6 and p1 > 0.08) or (not grey_image and sat < 0.12)
    return {"dust_per_mpx": round(dust / (h * w / 1e6), 1), "scratch_columns": scratches,
            "contrast": round(contrast, 4), "black_level": round(float(p1), 4), "saturation": round(sat, 4),
            "faded": bool(faded), "cast": round(math.hypot(a, bb), 2),
            "cast_hue": round(math.degrees(math.atan2(bb, a)) % 360, 1)}


def jpeg_features(rgb: np.ndarray, tables=None) -> dict:
    """The JPEG part of :func:`measure`: table quality, blockiness, double
    compression, and ``jpeg_q``: the quality the router uses (the tables' when
    they are IJG tables and the pixels agree; else the blind estimate),
    with ``jpeg_q_source`` ("tables", "pixels" or "pixels, tables odd")."""
    fit = jpeg_quality_from_tables(tables)
    block = blockiness(rgb)
    double = double_compression(fit["jpeg_quality"], block)
    blind = quality_from_blockiness(block["blockiness"])
    if fit["tables"] == "ijg":
        q = min(fit["jpeg_quality"], blind) if double["double_jpeg"] else fit["jpeg_quality"]
        source = "tables+pixels" if double["double_jpeg"] else "tables"
    else:
        q, source = blind, "pixels" if fit["tables"] == "none" else "pixels, tables odd"
    return {"jpeg_q": int(q), "jpeg_q_source": source, **fit, "blockiness": block["blockiness"],
            "blockiness_grid": block["grid"], "blockiness_quality": blind, **double}


def texture_features(rgb: np.ndarray) -> dict:
    """``texture``: the mean absolute high-pass of the luminance (the image less
    its Gaussian blur at sigma 1 px) over the mean standard deviation of its
    8x8 blocks. About 0.3-0.45 for photos of smooth surfaces and edges, 0.55
    and more for dense fine texture (and for strong noise); 0 for an image
    under 8 px or without contrast."""
    y = _luma8(rgb)
    if min(y.shape[:2]) < _BLOCK:
        return {"texture": 0.0}
    contrast = float(_block_view(y, _BLOCK).std(axis=(2, 3)).mean())
    if contrast < 0.5:
        return {"texture": 0.0}
    fine = float(np.abs(y - cv2.GaussianBlur(y, (0, 0), 1.0)).mean())
    return {"texture": round(fine / contrast, 4)}


def measure(rgb: np.ndarray, tables=None) -> dict:
    """Every feature the router reads, in one flat JSON-able dict (see the module docstring)."""
    return {**jpeg_features(rgb, tables), **noise_sigma(rgb), **grain_features(rgb), **texture_features(rgb),
            **scan_features(rgb)}
