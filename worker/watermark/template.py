"""A watermark template: the mark's colour and alpha, read from a file, and
warped (scale, rotation, position) onto an image.

A template file is either an RGBA image (colour in RGB, opacity in A) or a
picture of the mark on a flat background: the background is the median of the
border, the mark's colour the most distant colour from it, and the alpha the
projection of each pixel onto that colour (1 where the picture shows the pure
mark colour; a watermark blended more faintly is matched with a smaller alpha
scale, see :mod:`worker.watermark.match`).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage

from worker.errors import RetouchError

ALPHA_FLOOR = 0.02  # below: no mark (as worker.unblend.ALPHA_MIN)


class WatermarkError(RetouchError):
    """A watermark template or collection that cannot be used (one line, naming it)."""


@dataclass(frozen=True)
class Template:
    """``colour``: float32 hxwx3 RGB in [0, 1]; ``alpha``: float32 hxw in [0, 1];
    ``name``: where it came from (a path, or ``learned``). ``anchor``: for a
    mark learned from a collection, its centre (x, y) in the collection's
    frame and that frame's (width, height): it is looked for there, at its
    own scale and angle, in images of that size."""

    colour: np.ndarray
    alpha: np.ndarray
    name: str
    anchor: tuple[float, float, int, int] | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.alpha.shape[1], self.alpha.shape[0]


def _crop(alpha: np.ndarray, name: str) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the marked part of ``alpha``, 2 px around."""
    ys, xs = np.nonzero(alpha > ALPHA_FLOOR)
    if ys.size == 0:
        raise WatermarkError(f"{name}: the template has no visible mark (its alpha is 0 everywhere)")
    return (max(0, xs.min() - 2), max(0, ys.min() - 2), min(alpha.shape[1], xs.max() + 3),
            min(alpha.shape[0], ys.max() + 3))


def from_rgba(rgba: np.ndarray, name: str) -> Template:
    """A template from float32 hxwx4 (colour, alpha), cropped to its marked part."""
    alpha = np.clip(rgba[..., 3], 0, 1).astype(np.float32)
    x0, y0, x1, y1 = _crop(alpha, name)
    return Template(np.ascontiguousarray(rgba[y0:y1, x0:x1, :3], np.float32),
                    np.ascontiguousarray(alpha[y0:y1, x0:x1]), name)


def from_flat_background(rgb: np.ndarray, name: str) -> Template:
    """A template from a picture (float32 hxwx3) of the mark on a flat background."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    distance = np.linalg.norm(rgb - background, axis=2)
    if distance.max() < 0.1:
        raise WatermarkError(f"{name}: the picture shows no mark (it differs from its border colour by under 10%)")
    far = distance >= np.percentile(distance[distance > 0.05], 90)
    colour = np.median(rgb[far], axis=0)
    direction = colour - background
    alpha = np.clip((rgb - background) @ direction / float(direction @ direction), 0, 1)
    rgba = np.dstack([np.broadcast_to(colour, rgb.shape), alpha]).astype(np.float32)
    return from_rgba(rgba, name)


def load_template(path: str | Path) -> Template:
    """Read a template file (RGBA PNG, or a picture of the mark on a flat
    background). Raises WatermarkError (one line) if it cannot be read or shows no mark."""
    path = Path(path)
    try:
        with PILImage.open(path) as img:
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            array = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise WatermarkError(f"{path}: cannot read the watermark template ({exc})") from None
    if min(array.shape[:2]) < 4:
        raise WatermarkError(f"{path}: the watermark template is too small ({array.shape[1]}x{array.shape[0]})")
    if has_alpha and array[..., 3].min() < 0.99:
        template = from_rgba(array, str(path))
        return replace(template, anchor=_anchor(path, array, template))
    return from_flat_background(array[..., :3], str(path))


def _anchor(path: Path, rgba: np.ndarray, template: Template) -> tuple[float, float, int, int] | None:
    """The learned position, from the JSON that ``retouch watermark learn``
    writes next to its template (``box``: where this PNG lies in the frame)."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        info = json.loads(sidecar.read_text())
        box, size = info["box"], info["size"]
        if info.get("template") != path.name or (box["x1"] - box["x0"], box["y1"] - box["y0"]) != rgba.shape[1::-1]:
            return None
        x0, y0, _, _ = _crop(np.clip(rgba[..., 3], 0, 1), str(path))
        h, w = template.alpha.shape
        return (box["x0"] + x0 + (w - 1) / 2, box["y0"] + y0 + (h - 1) / 2, int(size["width"]), int(size["height"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_template(template: Template, path: str | Path) -> None:
    """Write the template as an 8-bit RGBA PNG."""
    Path(path).write_bytes(template_png(template))


def template_png(template: Template) -> bytes:
    """The template as 8-bit RGBA PNG bytes (what :func:`save_template` writes)."""
    rgba = np.dstack([template.colour, template.alpha])
    buf = io.BytesIO()
    PILImage.fromarray(np.clip(np.rint(rgba * 255), 0, 255).astype(np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Pose:
    """Where an occurrence lies: the template's centre at (``x``, ``y``) in image
    pixels, scaled by ``scale`` and rotated by ``angle`` degrees (counter-clockwise,
    as cv2.getRotationMatrix2D)."""

    x: float
    y: float
    scale: float
    angle: float


def affine(template: Template, pose: Pose, origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The 2x3 matrix taking template pixels to image pixels (minus ``origin``)."""
    h, w = template.alpha.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), pose.angle, pose.scale)
    m[0, 2] += pose.x - (w - 1) / 2 - origin[0]
    m[1, 2] += pose.y - (h - 1) / 2 - origin[1]
    return m


def extent(template: Template, pose: Pose, pad: int = 2) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the integer box covering the warped template, padded."""
    h, w = template.alpha.shape
    m = affine(template, pose)
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float64) @ m.T
    return (math.floor(corners[:, 0].min()) - pad, math.floor(corners[:, 1].min()) - pad,
            math.ceil(corners[:, 0].max()) + pad + 1, math.ceil(corners[:, 1].max()) + pad + 1)


def warp(template: Template, pose: Pose, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The template warped into ``box`` (x0, y0, x1, y1 in image pixels):
    (colour float32 hxwx3, alpha float32 hxw), alpha 0 outside the mark.
    Colour is interpolated pre-multiplied, so edges do not bleed black."""
    x0, y0, x1, y1 = box
    m = affine(template, pose, (x0, y0))
    size = (x1 - x0, y1 - y0)
    premult = np.dstack([template.colour * template.alpha[..., None], template.alpha])
    out = cv2.warpAffine(premult, m, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.clip(out[..., 3], 0, 1)
    colour = out[..., :3] / np.maximum(alpha, 1e-6)[..., None]
    return np.clip(colour, 0, 1).astype(np.float32), alpha.astype(np.float32)
