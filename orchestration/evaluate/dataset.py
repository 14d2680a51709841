"""Evaluation cases: clean photos and reproducible degraded versions of them.

A :class:`Case` holds the clean ground truth, the degraded input, the true
overlay mask (remove-text cases) and a JSON-able description of the
degradation. Every random choice comes from a generator seeded by
``(seed, photo index, kind index, jpeg index)``, so the same seed and photos
always give the same cases, whatever subset of kinds is asked for.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from orchestration.evaluate.artifact_cases import ARTIFACT_KINDS, artifact_case
from orchestration.local import discover
from orchestration.storage import open_storage
from worker import degrade
from worker.errors import RetouchError
from worker.io import EXTENSIONS, decode, read_image

log = logging.getLogger(__name__)

class EvalError(RetouchError):
    """A dataset, degradation or variant the evaluation cannot use."""


BUNDLED = "bundled"
BUNDLED_WIDE = "bundled-wide"
# scikit-image's bundled photos (no download; licences in skimage/data/README.txt)
BUNDLED_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")
# ... and the rest of its photographs (grey ones as RGB), for evaluations over 10+ photos
WIDE_PHOTOS = BUNDLED_PHOTOS + ("motorcycle_right", "hubble_deep_field", "ihc", "retina", "camera", "brick",
                                "grass")
TEXT_KINDS = ("text", "watermark", "logo")
# the captions users bring that a plain white or black line does not test; asked for by name
HARD_TEXT_KINDS = ("text-bold", "text-outline", "text-shadow", "text-overlap", "text-alpha", "text-photo-colour",
                   "text-rotated")
UPSCALE_KINDS = ("x2", "x4")
PHOTO_COLOUR_CONTRAST = 0.2   # text-photo-colour: luma between the caption's colour and the ground under it


@dataclass
class Photo:
    name: str
    rgb: np.ndarray  # float32 HxWx3 in [0, 1]


@dataclass
class Case:
    """One degraded input with its ground truth.

    ``op``: "remove-text" or "upscale"; ``clean``: float32 HxWx3 ground truth;
    ``degraded``: the input (for upscale cases, ``factor`` times smaller);
    ``mask``: bool HxW true overlay mask, or None; ``params``: JSON-able."""

    id: str
    photo: str
    op: str
    kind: str
    jpeg: int
    clean: np.ndarray
    degraded: np.ndarray
    mask: np.ndarray | None = None
    factor: int = 1
    params: dict = field(default_factory=dict)


def _fit(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Reduce so the longer side is at most ``max_side`` (area filter), crop to even size."""
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(rgb[: h - h % 4, : w - w % 4], np.float32)


def bundled_photos(max_side: int, names: tuple[str, ...] = BUNDLED_PHOTOS) -> list[Photo]:
    """scikit-image's bundled photos, each fitted into ``max_side``."""
    from PIL import Image as PILImage
    from skimage import data

    folder = Path(data.__file__).parent
    photos = []
    for name in names:
        path = next(folder.glob(f"{name}.*"))
        rgb = np.asarray(PILImage.open(path).convert("RGB"), np.float32) / 255.0
        photos.append(Photo(name, _fit(rgb, max_side)))
    return photos


def folder_photos(root: Path, max_side: int, max_pixels: int) -> list[Photo]:
    """Every image under ``root`` (recursively, sorted). Raises EvalError if there is none."""
    files = discover([root])
    if not files:
        raise EvalError(f"{root}: no images found")
    return [Photo(str(path.relative_to(base)), _fit(read_image(path, max_pixels).rgb, max_side))
            for path, base in files]


def s3_photos(url: str, max_side: int, max_pixels: int, storage=None) -> list[Photo]:
    """Every image under an ``s3://bucket/prefix``: ``storage`` (or
    ``orchestration.storage.open_storage(url)``) gives ``list(url) -> keys`` and
    ``get(key) -> bytes``."""
    store = storage if storage is not None else open_storage(url)
    keys = sorted(k for k in store.list(url) if Path(k).suffix.lower() in EXTENSIONS)
    if not keys:
        raise EvalError(f"{url}: no images found")
    return [Photo(key, _fit(decode(store.get(key), key, max_pixels).rgb, max_side)) for key in keys]


def load_photos(source: str, max_side: int = 384, max_pixels: int = 100_000_000, storage=None) -> list[Photo]:
    """``bundled`` | a folder | ``s3://bucket/prefix``. Raises EvalError naming the source."""
    if source == BUNDLED:
        return bundled_photos(max_side)
    if source == BUNDLED_WIDE:
        return bundled_photos(max_side, WIDE_PHOTOS)
    if source.startswith("s3://"):
        return s3_photos(source, max_side, max_pixels, storage)
    root = Path(source)
    if not root.exists():
        raise EvalError(f"{source}: no such folder (use a folder of clean photos, s3://..., or '{BUNDLED}')")
    return folder_photos(root, max_side, max_pixels)


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *path]))


def _text_case(photo: Photo, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    rgb = photo.rgb
    h, w = rgb.shape[:2]
    if kind == "text":
        specs = degrade.random_text_specs(rng, w, h, lines=int(rng.integers(1, 4)),
                                          min_size=max(10, h // 16), max_size=max(14, h // 7),
                                          max_angle=12.0, min_opacity=0.6)
        specs = degrade.legible(rgb, specs)
        degraded, mask = degrade.overlay_text(rgb, specs)
        return degraded, mask, {"texts": [asdict(s) for s in specs]}
    if kind == "watermark":
        spec = degrade.random_watermark_spec(rng, w, h)
        degraded, mask = degrade.tiled_watermark(rgb, spec)
        return degraded, mask, {"watermark": asdict(spec)}
    if kind == "logo":
        spec = degrade.random_logo_spec(rng, w, h)
        degraded, mask = degrade.overlay_logo(rgb, spec)
        return degraded, mask, {"logo": asdict(spec)}
    if kind in HARD_TEXT_KINDS:
        specs = hard_text_specs(rgb, kind, rng)
        degraded, mask = degrade.overlay_text(rgb, specs)
        return degraded, mask, {"texts": [asdict(s) for s in specs]}
    raise EvalError(f"unknown remove-text degradation {kind!r}; known: {', '.join(TEXT_KINDS + HARD_TEXT_KINDS)}")


def hard_text_specs(rgb: np.ndarray, kind: str, rng: np.random.Generator) -> list[degrade.TextSpec]:
    """Captions of one hard kind (see HARD_TEXT_KINDS) for ``rgb``."""
    from dataclasses import replace

    h, w = rgb.shape[:2]
    lines = int(rng.integers(1, 3))
    specs = degrade.random_text_specs(rng, w, h, lines=lines, min_size=max(12, h // 14), max_size=max(16, h // 7))
    specs = degrade.legible(rgb, specs)
    if kind == "text-bold":
        return [replace(s, font=str(rng.choice(("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf"))),
                        size=int(s.size * 1.3)) for s in specs]
    if kind == "text-outline":
        out = []
        for s in specs:
            light = np.mean(s.colour) > 127
            out.append(replace(s, font="DejaVuSans-Bold.ttf", outline=int(rng.integers(1, 4)),
                               outline_colour=(0, 0, 0) if light else (255, 255, 255)))
        return out
    if kind == "text-shadow":
        return [replace(s, shadow=(int(rng.integers(2, 5)), int(rng.integers(2, 5))),
                        shadow_colour=(0, 0, 0) if np.mean(s.colour) > 127 else (90, 90, 90),
                        shadow_opacity=float(rng.uniform(0.5, 0.9))) for s in specs]
    if kind == "text-overlap":
        # a second line of another colour crossing the first, a few px lower
        first = specs[0]
        other = (255 - first.colour[0], int(rng.integers(0, 256)), 255 - first.colour[2])
        second = replace(first, text=str(rng.choice(degrade.WORDS)), colour=other,
                         xy=(first.xy[0] + int(rng.integers(0, first.size)), first.xy[1] + first.size // 2),
                         angle=float(rng.uniform(-8, 8)))
        return [first, second]
    if kind == "text-alpha":
        return [replace(s, opacity=float(rng.uniform(0.3, 1.0))) for s in specs]
    if kind == "text-photo-colour":
        # the caption's colour is taken from the photo itself, somewhere else in it, and as for
        # every other kind it is one a reader can see over the ground under the caption
        return [replace(s, colour=_photo_colour(rgb, s, rng)) for s in specs]
    if kind == "text-rotated":
        return [replace(s, angle=float(rng.uniform(-35, 35)), size=int(s.size * rng.uniform(0.8, 1.5)))
                for s in specs]
    raise EvalError(f"unknown hard text kind {kind!r}")


def _photo_colour(rgb: np.ndarray, spec: degrade.TextSpec, rng: np.random.Generator,
                  tries: int = 256) -> tuple[int, int, int]:
    """A colour of a pixel of ``rgb`` that a reader can tell from the ground
    under ``spec``'s box: luma at least PHOTO_COLOUR_CONTRAST away from it,
    the first such of ``tries`` random pixels (else the most contrasting of
    them). A pixel's colour alone, as before, was often the ground's own:
    dark grey over the Hubble field's black, grey over grey grass, captions
    nobody could read or would need removed."""
    h, w = rgb.shape[:2]
    ys, xs = rng.integers(0, h, tries), rng.integers(0, w, tries)
    colours = rgb[ys, xs]
    contrast = np.abs(degrade.luma(colours) - degrade.ground_luma(rgb, spec))
    readable = np.flatnonzero(contrast >= PHOTO_COLOUR_CONTRAST)
    pick = int(readable[0]) if readable.size else int(np.argmax(contrast))
    return tuple(int(round(c * 255)) for c in colours[pick])


def build_cases(photos: list[Photo], ops: list[str], seed: int, kinds: list[str] | None = None,
                jpeg_levels: list[int] | None = None) -> list[Case]:
    """Cases for every photo x kind x JPEG level (0 = no compression).

    remove-text kinds: text, watermark, logo (JPEG applied after the overlay);
    upscale kinds: x2, x4 (JPEG applied to the low-resolution input), and the
    artifact kinds of :mod:`.artifact_cases` (x4; clean, jpeg10..70, noise5..30,
    grain, blur-jpeg, illustration).
    Raises EvalError for an unknown kind or a JPEG level outside 0-95."""
    jpeg_levels = jpeg_levels or [0]
    for q in jpeg_levels:
        if not (q == 0 or 1 <= q <= 95):
            raise EvalError(f"JPEG level must be 0 (none) or 1-95 but is {q}")
    known = TEXT_KINDS + UPSCALE_KINDS + HARD_TEXT_KINDS + ARTIFACT_KINDS
    wanted = {"remove-text": [k for k in (kinds or TEXT_KINDS) if k in TEXT_KINDS + HARD_TEXT_KINDS],
              "upscale": [k for k in (kinds or UPSCALE_KINDS) if k in UPSCALE_KINDS + ARTIFACT_KINDS]}
    unknown = [k for k in kinds or [] if k not in known]
    if unknown:
        raise EvalError(f"unknown degradation(s) {', '.join(unknown)}; known: {', '.join(known)}")
    cases: list[Case] = []
    for p_i, photo in enumerate(photos):
        for op in ops:
            for kind in wanted.get(op, []):
                k_i = known.index(kind)
                for j_i, q in enumerate(jpeg_levels):
                    rng = _rng(seed, p_i, k_i, j_i)
                    case_id = f"{Path(photo.name).with_suffix('').as_posix().replace('/', '_')}-{kind}" + (f"-q{q}" if q else "")
                    if op == "remove-text":
                        degraded, mask, params = _text_case(photo, kind, rng)
                        if q:
                            degraded = degrade.jpeg(degraded, q)
                        cases.append(Case(case_id, photo.name, op, kind, q, photo.rgb, degraded, mask, 1, params))
                    elif kind in ARTIFACT_KINDS:   # x4 with artifacts (artifact_cases); JPEG levels do not apply
                        if j_i == 0:   # seeded by the kind's own index: stable when kind lists grow
                            art_rng = _rng(seed, p_i, 1000 + ARTIFACT_KINDS.index(kind))
                            truth, low, params = artifact_case(photo.rgb, kind, art_rng)
                            cases.append(Case(case_id.rsplit("-q", 1)[0] if q else case_id, photo.name, op, kind, 0,
                                              truth, low, None, params["factor"], params))
                    else:
                        factor = int(kind[1:])
                        low, truth = degrade.downscale(photo.rgb, factor)
                        if q:
                            low = degrade.jpeg(low, q)
                        cases.append(Case(case_id, photo.name, op, kind, q, truth, low, None, factor,
                                          {"factor": factor, "filter": "area"}))
    return cases
