"""Reproducible synthetic degradations of clean photos, with their ground truth.

Used by the tests, the bundled samples and the evaluation suite: every function
takes an explicit ``numpy.random.Generator`` or explicit parameters, so the same
seed gives the same degraded image and the same true mask.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

# DejaVu fonts ship inside matplotlib, so overlays need no system fonts.
FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf")
WORDS = ("ARCHIVE", "Copyright", "SAMPLE", "do not copy", "Photo 1987", "Museum", "scan 042",
         "PROOF", "© Agency", "Collection", "Negative 17", "preview only", "Catalogue", "Lot 112")


@dataclass(frozen=True)
class TextSpec:
    """One line of overlaid text. ``xy`` is the top-left of the text box in
    pixels, ``colour`` RGB 0-255, ``opacity`` in (0, 1], ``angle`` in degrees.
    ``outline``: px of an outline in ``outline_colour`` around the glyphs;
    ``shadow``: (dx, dy) offset of a drop shadow in ``shadow_colour`` at
    ``shadow_opacity`` ((0, 0): none). Outline and shadow share ``opacity``."""

    text: str
    xy: tuple[int, int]
    size: int
    font: str = "DejaVuSans-Bold.ttf"
    colour: tuple[int, int, int] = (255, 255, 255)
    opacity: float = 1.0
    angle: float = 0.0
    outline: int = 0
    outline_colour: tuple[int, int, int] = (0, 0, 0)
    shadow: tuple[int, int] = (0, 0)
    shadow_colour: tuple[int, int, int] = (0, 0, 0)
    shadow_opacity: float = 0.7


def random_text_specs(rng: np.random.Generator, width: int, height: int, lines: int = 2,
                      min_size: int = 14, max_size: int = 28, max_angle: float = 0.0,
                      min_opacity: float = 1.0) -> list[TextSpec]:
    """Random captions that fit inside a width x height image."""
    specs = []
    band = height / lines  # one line per horizontal band, so lines do not pile up
    for line in range(lines):
        size = int(rng.integers(min_size, max_size + 1))
        text = str(rng.choice(WORDS))
        if rng.random() < 0.5:
            text += " " + "".join(rng.choice(list(string.digits), size=int(rng.integers(2, 5))))
        font = str(rng.choice(FONTS))
        box_w = int(size * 0.62 * len(text)) + 4
        x = int(rng.integers(0, max(1, width - box_w)))
        top = int(line * band)
        y = int(rng.integers(top, max(top + 1, int(top + band - size * 1.3))))
        bright = rng.random() < 0.5
        base = rng.integers(200, 256, size=3) if bright else rng.integers(0, 60, size=3)
        specs.append(TextSpec(
            text=text, xy=(x, y), size=size, font=font,
            colour=tuple(int(c) for c in base),
            opacity=float(rng.uniform(min_opacity, 1.0)),
            angle=float(rng.uniform(-max_angle, max_angle)) if max_angle else 0.0,
        ))
    return specs


def legible(rgb: np.ndarray, specs: list[TextSpec]) -> list[TextSpec]:
    """The same specs with each colour flipped to light or dark so it contrasts
    with the photo under its box (captions are meant to be read). The hue
    variation of the original colour is kept."""
    from dataclasses import replace

    out = []
    for spec in specs:
        background = ground_luma(rgb, spec)
        c = np.asarray(spec.colour, np.float32)
        light = c.mean() > 127
        if light == (background > 0.5):
            c = 255.0 - c
        out.append(replace(spec, colour=tuple(int(v) for v in c)))
    return out


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of float RGB in [0, 1] (any leading shape)."""
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def ground_luma(rgb: np.ndarray, spec: TextSpec) -> float:
    """The mean luma (0-1) of the photo under the box ``spec``'s text will
    roughly cover (0.5 where that box lies outside the photo)."""
    h, w = rgb.shape[:2]
    x, y = spec.xy
    box = rgb[max(0, y):min(h, y + int(spec.size * 1.3)), max(0, x):min(w, x + int(spec.size * 0.62 * len(spec.text)))]
    return float(luma(box).mean()) if box.size else 0.5


def render_text_layer(width: int, height: int, specs: list[TextSpec]) -> tuple[np.ndarray, np.ndarray]:
    """The overlay as (colour float32 HxWx3 in [0,1], coverage float32 HxW in [0,1]);
    coverage already includes each line's opacity."""
    colour = np.zeros((height, width, 3), np.float32)
    cover = np.zeros((height, width), np.float32)
    for spec in specs:
        font = ImageFont.truetype(str(FONT_DIR / spec.font), spec.size)
        layers = []  # (coverage, colour), painted in order: shadow, outline, fill
        if spec.shadow != (0, 0):
            xy = (spec.xy[0] + spec.shadow[0], spec.xy[1] + spec.shadow[1])
            layers.append((_glyphs(width, height, spec, font, xy, spec.outline) * spec.shadow_opacity,
                           spec.shadow_colour))
        if spec.outline:
            layers.append((_glyphs(width, height, spec, font, spec.xy, spec.outline), spec.outline_colour))
        layers.append((_glyphs(width, height, spec, font, spec.xy, 0), spec.colour))
        for glyphs, rgb in layers:
            a = glyphs * spec.opacity
            colour = colour * (1 - a[..., None]) + np.asarray(rgb, np.float32) / 255.0 * a[..., None]
            cover = cover + a * (1 - cover)
    return colour, cover


def _glyphs(width: int, height: int, spec: TextSpec, font, xy: tuple[int, int], stroke: int) -> np.ndarray:
    """One line's glyph coverage (float32 HxW in [0, 1]), drawn at ``xy`` with
    ``stroke`` px of outline, rotated by ``spec.angle`` about the text's centre."""
    layer = PILImage.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    draw.text(xy, spec.text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    if spec.angle:
        left, top, right, bottom = draw.textbbox(spec.xy, spec.text, font=font)
        layer = layer.rotate(spec.angle, resample=PILImage.BICUBIC, center=((left + right) / 2, (top + bottom) / 2))
    return np.asarray(layer, np.float32) / 255.0


def overlay_text(rgb: np.ndarray, specs: list[TextSpec]) -> tuple[np.ndarray, np.ndarray]:
    """Composite text onto ``rgb`` (float32 HxWx3 in [0,1]).

    Returns (degraded float32 HxWx3, true mask bool HxW: the pixels the overlay
    touched). The input is not modified."""
    h, w = rgb.shape[:2]
    colour, cover = render_text_layer(w, h, specs)
    # colour was accumulated pre-multiplied; un-premultiply where covered
    safe = np.where(cover > 0, cover, 1.0)[..., None]
    straight = np.clip(colour / safe, 0, 1)
    out = rgb * (1 - cover[..., None]) + straight * cover[..., None]
    return out.astype(np.float32), cover > 0.02


# --- shared compositing -----------------------------------------------------

def composite(rgb: np.ndarray, cover: np.ndarray, colour: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Alpha-composite a single-colour layer (``cover`` float32 HxW in [0, 1], the
    opacity per pixel; ``colour`` RGB 0-255) onto ``rgb``. Returns (degraded
    float32 HxWx3, true mask bool HxW: pixels the layer changed visibly, cover > 0.02)."""
    c = np.asarray(colour, np.float32) / 255.0
    out = rgb * (1 - cover[..., None]) + c * cover[..., None]
    return out.astype(np.float32), cover > 0.02


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / name), size)


# --- tiled semi-transparent watermarks ---------------------------------------

@dataclass(frozen=True)
class WatermarkSpec:
    """Text repeated on a grid (``step`` px between tiles, x and y), the grid
    rotated by ``angle`` degrees about the image centre and shifted by ``offset``."""

    text: str = "© SAMPLE"
    size: int = 18
    font: str = "DejaVuSans-Bold.ttf"
    colour: tuple[int, int, int] = (255, 255, 255)
    opacity: float = 0.35
    angle: float = 30.0
    step: tuple[int, int] = (150, 70)
    offset: tuple[int, int] = (0, 0)


def random_watermark_spec(rng: np.random.Generator, width: int, height: int) -> WatermarkSpec:
    """A random tiled watermark for a width x height image (3 or more tiles across)."""
    size = int(rng.integers(12, max(14, min(width, height) // 9) + 1))
    text = str(rng.choice(("© SAMPLE", "PROOF", "© Agency", "preview", "ARCHIVE")))
    tile_w = int(size * 0.7 * len(text)) + size
    bright = rng.random() < 0.6
    return WatermarkSpec(
        text=text, size=size, font=str(rng.choice(FONTS)),
        colour=(255, 255, 255) if bright else (int(rng.integers(0, 50)),) * 3,
        opacity=float(rng.uniform(0.25, 0.6)), angle=float(rng.uniform(-40, 40)),
        step=(tile_w + int(rng.integers(size, 3 * size)), int(size * rng.uniform(2.5, 4.5))),
        offset=(int(rng.integers(0, tile_w)), int(rng.integers(0, 2 * size))),
    )


def watermark_layer(width: int, height: int, spec: WatermarkSpec) -> np.ndarray:
    """The watermark's per-pixel opacity, float32 HxW in [0, spec.opacity]."""
    side = int(np.ceil(np.hypot(width, height))) + 2 * max(spec.step)
    layer = PILImage.new("L", (side, side), 0)
    draw = ImageDraw.Draw(layer)
    font = _font(spec.font, spec.size)
    sx, sy = spec.step
    for row, y in enumerate(range(spec.offset[1] % sy - sy, side, sy)):
        shift = (sx // 2) * (row % 2)  # brick pattern, as stock-photo watermarks do
        for x in range(spec.offset[0] % sx - sx + shift, side, sx):
            draw.text((x, y), spec.text, fill=255, font=font)
    layer = layer.rotate(spec.angle, resample=PILImage.BICUBIC)
    left, top = (side - width) // 2, (side - height) // 2
    cover = np.asarray(layer.crop((left, top, left + width, top + height)), np.float32) / 255.0
    return cover * spec.opacity


def tiled_watermark(rgb: np.ndarray, spec: WatermarkSpec) -> tuple[np.ndarray, np.ndarray]:
    """Semi-transparent tiled text over the whole of ``rgb`` (float32 HxWx3 in
    [0, 1]). Returns (degraded float32 HxWx3, true mask bool HxW)."""
    h, w = rgb.shape[:2]
    return composite(rgb, watermark_layer(w, h, spec), spec.colour)


# --- logos --------------------------------------------------------------------

@dataclass(frozen=True)
class LogoSpec:
    """A ring-and-initials logo: ``xy`` is its top-left, ``size`` its diameter in px."""

    xy: tuple[int, int]
    size: int = 48
    letters: str = "RA"
    font: str = "DejaVuSans-Bold.ttf"
    colour: tuple[int, int, int] = (255, 255, 255)
    opacity: float = 0.8
    shape: str = "circle"  # "circle" | "square"


def random_logo_spec(rng: np.random.Generator, width: int, height: int) -> LogoSpec:
    """A random logo in one of the four corners of a width x height image."""
    size = int(rng.integers(max(24, min(width, height) // 6), max(25, min(width, height) // 3) + 1))
    pad = int(rng.integers(4, 12))
    corner = int(rng.integers(0, 4))
    x = pad if corner in (0, 2) else width - size - pad
    y = pad if corner in (0, 1) else height - size - pad
    bright = rng.random() < 0.5
    base = rng.integers(200, 256, size=3) if bright else rng.integers(0, 60, size=3)
    letters = "".join(rng.choice(list(string.ascii_uppercase), size=int(rng.integers(1, 4))))
    return LogoSpec(xy=(max(0, x), max(0, y)), size=size, letters=letters, font=str(rng.choice(FONTS[:4])),
                    colour=tuple(int(c) for c in base), opacity=float(rng.uniform(0.5, 0.95)),
                    shape=str(rng.choice(("circle", "square"))))


def logo_layer(width: int, height: int, spec: LogoSpec) -> np.ndarray:
    """The logo's per-pixel opacity, float32 HxW in [0, spec.opacity]."""
    layer = PILImage.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    x, y, s = spec.xy[0], spec.xy[1], spec.size
    ring = max(2, s // 12)
    box = (x, y, x + s - 1, y + s - 1)
    if spec.shape == "square":
        draw.rounded_rectangle(box, radius=s // 6, outline=255, width=ring)
    else:
        draw.ellipse(box, outline=255, width=ring)
    font = _font(spec.font, max(8, int(s * 0.8 / max(1, len(spec.letters)) * 1.2)))
    draw.text((x + s / 2, y + s / 2), spec.letters, fill=255, font=font, anchor="mm")
    return np.asarray(layer, np.float32) / 255.0 * spec.opacity


def overlay_logo(rgb: np.ndarray, spec: LogoSpec) -> tuple[np.ndarray, np.ndarray]:
    """Composite a logo onto ``rgb`` (float32 HxWx3 in [0, 1]).
    Returns (degraded float32 HxWx3, true mask bool HxW)."""
    h, w = rgb.shape[:2]
    return composite(rgb, logo_layer(w, h, spec), spec.colour)


# --- compression and resolution -------------------------------------------------

def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through baseline JPEG (4:2:0) at ``quality`` (1-95), float32 HxWx3.
    Raises ValueError for a quality outside 1-95."""
    import io

    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be between 1 and 95 but is {quality}")
    img = PILImage.fromarray(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return np.asarray(PILImage.open(buf).convert("RGB"), np.float32) / 255.0


def downscale(rgb: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Low-resolution version for upscaling tests.

    The image is cropped to a multiple of ``factor`` (the crop is the ground
    truth) and reduced by pixel-area averaging (an anti-aliased box filter).
    Returns (low float32 h/f x w/f x 3, ground truth float32 HxWx3). Raises
    ValueError if the factor is < 2 or leaves no pixels."""
    import cv2

    if factor < 2:
        raise ValueError(f"downscale factor must be >= 2 but is {factor}")
    h, w = (rgb.shape[0] // factor) * factor, (rgb.shape[1] // factor) * factor
    if h == 0 or w == 0:
        raise ValueError(f"a {rgb.shape[1]}x{rgb.shape[0]} image is smaller than the factor {factor}")
    truth = np.ascontiguousarray(rgb[:h, :w], np.float32)
    low = cv2.resize(truth, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    return low.astype(np.float32), truth


def gaussian_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor-like noise: independent Gaussian per pixel and channel, ``sigma`` in
    8-bit units, clipped to [0, 1]. float32 HxWx3."""
    noise = rng.normal(0.0, sigma / 255.0, rgb.shape).astype(np.float32)
    return np.clip(rgb + noise, 0.0, 1.0).astype(np.float32)


def film_grain(rgb: np.ndarray, strength: float, rng: np.random.Generator, size: float = 0.9) -> np.ndarray:
    """Film grain: clumps about ``size`` px across (white noise blurred, then
    renormalised), 85% common to the three channels, strongest in the mid-tones
    (amplitude ``strength`` 8-bit units at mid-grey, ``strength``/2 at black and
    white). float32 HxWx3 in [0, 1]."""
    import cv2

    h, w = rgb.shape[:2]

    def clumps(shape):
        n = cv2.GaussianBlur(rng.normal(0.0, 1.0, shape).astype(np.float32), (0, 0), size)
        return n / max(float(n.std()), 1e-6)

    grain = 0.85 * clumps((h, w))[..., None] + 0.15 * np.stack([clumps((h, w)) for _ in range(3)], axis=2)
    grain /= max(float(grain.std()), 1e-6)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    amplitude = strength / 255.0 * (0.5 + 2.0 * luma * (1.0 - luma))[..., None]
    return np.clip(rgb + grain * amplitude, 0.0, 1.0).astype(np.float32)


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` px (an out-of-focus or soft scan), float32 HxWx3."""
    import cv2

    return cv2.GaussianBlur(np.ascontiguousarray(rgb, np.float32), (0, 0), sigma).astype(np.float32)
