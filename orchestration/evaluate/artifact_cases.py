"""Upscale cases with artifacts: the labelled benchmark the upscale router's
thresholds come from (``retouch eval --ops upscale --kinds clean,jpeg10,...``).

Every case is an x4 upscale of a photo reduced by area averaging, then
degraded at the low resolution, as archives and uploads are:

| kind | the low-resolution input |
| --- | --- |
| ``clean`` | as reduced |
| ``jpeg10`` ``jpeg20`` ``jpeg40`` ``jpeg70`` | a JPEG at that quality (4:2:0), with its quantisation tables |
| ``noise5`` ``noise15`` ``noise30`` | Gaussian sensor noise of that sigma (8-bit units), per pixel and channel |
| ``grain`` | film grain (``worker.degrade.film_grain``, strength 14, clumps 0.9 px) |
| ``blur-jpeg`` | a 1.2 px Gaussian blur, then JPEG q35, then saved as PNG (no tables: the blind path) |
| ``illustration`` | a generated flat-colour drawing (outlined shapes), instead of the photo |

The ``label`` in a case's params is what the router should see (``jpeg``,
``noise``, ``grain``, ``clean``, ``illustration``).
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image as PILImage

from worker import degrade

ARTIFACT_KINDS = ("clean", "jpeg10", "jpeg20", "jpeg40", "jpeg70", "noise5", "noise15", "noise30", "grain",
                  "blur-jpeg", "illustration")
FACTOR = 4
GRAIN_STRENGTH = 14.0
BLUR_SIGMA, BLUR_JPEG_Q = 1.2, 35


def jpeg_with_tables(rgb: np.ndarray, quality: int) -> tuple[np.ndarray, list[list[int]]]:
    """The decoded pixels of a JPEG at ``quality`` and its quantisation tables (lists, natural order)."""
    buf = io.BytesIO()
    PILImage.fromarray(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)).save(buf, format="JPEG",
                                                                                   quality=int(quality))
    pil = PILImage.open(io.BytesIO(buf.getvalue()))
    tables = [list(pil.quantization[k]) for k in sorted(pil.quantization)]
    return np.asarray(pil.convert("RGB"), np.float32) / 255.0, tables


def drawing(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Flat-colour shapes with dark anti-aliased outlines on a plain ground, float32 HxWx3."""
    img = np.full((height, width, 3), rng.integers(150, 255, 3), np.uint8)
    for _ in range(10):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(max(4, min(height, width) // 20), max(5, min(height, width) // 4)))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            cv2.circle(img, centre, radius, colour, -1, cv2.LINE_AA)
            cv2.circle(img, centre, radius, (20, 20, 20), 2, cv2.LINE_AA)
        else:
            corner = (centre[0] + radius, centre[1] + int(radius * 0.7))
            cv2.rectangle(img, centre, corner, colour, -1, cv2.LINE_AA)
            cv2.rectangle(img, centre, corner, (20, 20, 20), 2, cv2.LINE_AA)
    return img.astype(np.float32) / 255.0


def artifact_case(clean_photo: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """(ground truth HxWx3, degraded low-resolution input, params) for one kind."""
    source = drawing(*clean_photo.shape[:2], rng) if kind == "illustration" else clean_photo
    low, truth = degrade.downscale(source, FACTOR)
    params: dict = {"factor": FACTOR, "filter": "area", "artifact": kind}
    if kind.startswith("jpeg"):
        q = int(kind[4:])
        low, tables = jpeg_with_tables(low, q)
        params.update(label="jpeg", quality=q, jpeg_tables=tables)
    elif kind.startswith("noise"):
        sigma = float(kind[5:])
        low = degrade.gaussian_noise(low, sigma, rng)
        params.update(label="noise", sigma=sigma)
    elif kind == "grain":
        low = degrade.film_grain(low, GRAIN_STRENGTH, rng)
        params.update(label="grain", strength=GRAIN_STRENGTH)
    elif kind == "blur-jpeg":
        low, _ = jpeg_with_tables(degrade.blur(low, BLUR_SIGMA), BLUR_JPEG_Q)
        params.update(label="jpeg", blur=BLUR_SIGMA, quality=BLUR_JPEG_Q, saved_as="PNG")
    else:
        params["label"] = kind      # clean, illustration
    return truth, low.astype(np.float32), params
