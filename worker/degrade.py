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
    pixels, ``colour`` RGB 0-255, ``opacity`` in (0, 1], ``angle`` in degrees."""

    text: str
    xy: tuple[int, int]
    size: int
    font: str = "DejaVuSans-Bold.ttf"
    colour: tuple[int, int, int] = (255, 255, 255)
    opacity: float = 1.0
    angle: float = 0.0


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
    h, w = rgb.shape[:2]
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    for spec in specs:
        x, y = spec.xy
        box = luma[max(0, y):min(h, y + int(spec.size * 1.3)), max(0, x):min(w, x + int(spec.size * 0.62 * len(spec.text)))]
        background = float(box.mean()) if box.size else 0.5
        c = np.asarray(spec.colour, np.float32)
        light = c.mean() > 127
        if light == (background > 0.5):
            c = 255.0 - c
        out.append(replace(spec, colour=tuple(int(v) for v in c)))
    return out


def render_text_layer(width: int, height: int, specs: list[TextSpec]) -> tuple[np.ndarray, np.ndarray]:
    """The overlay as (colour float32 HxWx3 in [0,1], coverage float32 HxW in [0,1]);
    coverage already includes each line's opacity."""
    colour = np.zeros((height, width, 3), np.float32)
    cover = np.zeros((height, width), np.float32)
    for spec in specs:
        font = ImageFont.truetype(str(FONT_DIR / spec.font), spec.size)
        layer = PILImage.new("L", (width, height), 0)
        ImageDraw.Draw(layer).text(spec.xy, spec.text, fill=255, font=font)
        if spec.angle:
            left, top, right, bottom = ImageDraw.Draw(layer).textbbox(spec.xy, spec.text, font=font)
            centre = ((left + right) / 2, (top + bottom) / 2)
            layer = layer.rotate(spec.angle, resample=PILImage.BICUBIC, center=centre)
        a = np.asarray(layer, np.float32) / 255.0 * spec.opacity
        colour = colour * (1 - a[..., None]) + np.asarray(spec.colour, np.float32) / 255.0 * a[..., None]
        cover = cover + a * (1 - cover)
    return colour, cover


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
