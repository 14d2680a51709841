"""Rebuild the bundled samples from scikit-image's sample photos.

The photos are scikit-image's bundled data (public domain / CC0 / free to use:
see skimage/data/README.txt and examples/LICENSE.md); the overlays are drawn
with the DejaVu fonts that ship inside matplotlib. Deterministic: the same
files come out every time. Run: python examples/make_samples.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data as data
from PIL import Image

from worker.degrade import TextSpec, overlay_text

HERE = Path(__file__).parent

SAMPLES = [
    # name, photo, crop (y0, y1, x0, x1), overlays, format
    ("astronaut-caption", data.astronaut, (0, 320, 60, 460), [
        TextSpec("NASA ARCHIVE 1984", (18, 268), 26, "DejaVuSans-Bold.ttf", (255, 255, 255)),
    ], "JPEG"),
    ("chelsea-watermark", data.chelsea, (0, 300, 0, 451), [
        TextSpec("© Photo Agency", (150, 40), 30, "DejaVuSerif-Bold.ttf", (250, 250, 245), 0.85),
        TextSpec("preview only", (30, 250), 22, "DejaVuSans.ttf", (20, 20, 20)),
    ], "PNG"),
    ("coffee-label", data.coffee, (0, 400, 0, 600), [
        TextSpec("Catalogue No. 4471", (330, 20), 24, "DejaVuSans-Bold.ttf", (255, 255, 255)),
        TextSpec("scan 042", (20, 360), 20, "DejaVuSansMono.ttf", (240, 230, 40)),
    ], "JPEG"),
    ("rocket-stamp", data.rocket, (0, 427, 100, 540), [
        TextSpec("MUSEUM COPY", (120, 380), 28, "DejaVuSans-Bold.ttf", (230, 30, 30), 0.9, 4.0),
    ], "PNG"),
]


def main() -> None:
    for name, photo, (y0, y1, x0, x1), overlays, fmt in SAMPLES:
        rgb = photo()[y0:y1, x0:x1, :3].astype(np.float32) / 255.0
        degraded, _ = overlay_text(rgb, overlays)
        img = Image.fromarray(np.clip(np.rint(degraded * 255), 0, 255).astype(np.uint8))
        suffix = ".jpg" if fmt == "JPEG" else ".png"
        kwargs = {"quality": 92} if fmt == "JPEG" else {}
        img.save(HERE / f"{name}{suffix}", format=fmt, **kwargs)
        print(f"wrote examples/{name}{suffix} ({img.width}x{img.height})")


if __name__ == "__main__":
    main()
