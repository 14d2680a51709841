"""What one request hands to the next, exactly: the mask document and the raw fill.

The seed's flow is three calls: ``/detect-mask`` writes ``mask.json``,
``/inpaint`` takes it back with the image, a post-process blends the result
with the mask. For the chained calls to give the same bytes as one
``retouch run``, what passes between them must be exact:

- the **mask document** (``/v1/detect-mask``'s JSON, ``format
  retouch-mask/1``): the confidence map and the soft mask as 16-bit PNGs (the
  files ``retouch run --save-masks`` writes, for people and other tools), the
  mask statistics, and for retouch itself ``arrays`` (base64 ``.npz`` of the
  detect stage's artifacts ``confidence``, ``mask``, ``region`` as float32 /
  bool, read with ``allow_pickle=False``) and ``trace`` (what the stage
  reported: the mask statistics later stages choose variants by). It names
  the image by sha256; given with another image it is refused.
- the **raw fill** (``/v1/inpaint`` with ``postprocess=false``): the
  inpainter's float32 output as a float32 RGB(A) TIFF, since 8 or 16 bits
  would round it. ``/v1/postprocess`` reads that exactly, or any ordinary
  image (a fill made by another tool).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import zipfile
from typing import Literal

import numpy as np
import tifffile
from pydantic import BaseModel, Field, ValidationError

from worker.errors import RetouchError, one_line
from worker.io import encode_map
from worker.pipeline.artifacts import Pixels
from worker.pipeline.record import Trace

MASK_FORMAT = "retouch-mask/1"
MAPS = ("confidence", "mask", "region")   # the detect stage's products
_DTYPES = {"confidence": np.float32, "mask": np.float32, "region": np.bool_}


class HandoffError(RetouchError):
    """A mask document or raw fill that cannot be used with this image."""


class ImageRef(BaseModel):
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class MaskDocument(BaseModel):
    """The JSON of ``/v1/detect-mask`` (``record`` and ``stats`` are for people)."""

    format: Literal["retouch-mask/1"]
    image: ImageRef
    trace: Trace
    arrays: str
    confidence_png: str
    mask_png: str
    stats: dict = Field(default_factory=dict)
    record: dict = Field(default_factory=dict)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mask_document(image: ImageRef, arts: dict, trace: Trace, record: dict) -> dict:
    """The document for the detect stage's artifacts in ``arts`` (JSON-able)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{name: np.asarray(arts[name], dtype=_DTYPES[name]) for name in MAPS})
    return MaskDocument(format=MASK_FORMAT, image=image, trace=trace, arrays=b64(buf.getvalue()),
                        confidence_png=b64(encode_map(arts["confidence"])), mask_png=b64(encode_map(arts["mask"])),
                        stats=trace.details.get("mask", {}), record=record).model_dump(mode="json")


def looks_like_json(data: bytes) -> bool:
    return data[:64].lstrip().startswith(b"{")


def read_mask_document(data: bytes, name: str, image_sha256: str, size: tuple[int, int]) -> tuple[dict, Trace]:
    """(the detect stage's artifacts by name, its trace) from a mask document.
    ``size`` is the image's (width, height). Raises HandoffError naming ``name``."""
    try:
        doc = MaskDocument.model_validate_json(data)
    except ValidationError as exc:
        raise HandoffError(f"{name}: not a retouch mask document ({one_line(exc)})") from None
    if doc.image.sha256 != image_sha256:
        raise HandoffError(f"{name}: made for another image ({doc.image.name}, sha256 {doc.image.sha256[:12]}...); "
                           f"call /v1/detect-mask with this image")
    _check_stats(name, doc.trace.details.get("mask"))
    try:
        raw = base64.b64decode(doc.arrays, validate=True)
        with np.load(io.BytesIO(raw), allow_pickle=False) as loaded:
            arrays = {k: loaded[k] for k in loaded.files}
    except (binascii.Error, ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise HandoffError(f"{name}: unreadable arrays ({one_line(exc)})") from None
    width, height = size
    for map_name in MAPS:
        arr = arrays.get(map_name)
        if arr is None:
            raise HandoffError(f"{name}: arrays lack {map_name!r}")
        if arr.shape != (height, width) or arr.dtype != _DTYPES[map_name]:
            raise HandoffError(f"{name}: {map_name} is {arr.dtype} {arr.shape}, expected "
                               f"{np.dtype(_DTYPES[map_name])} ({height}, {width}) for this image")
        if arr.dtype == np.float32 and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
            raise HandoffError(f"{name}: {map_name} has values outside [0, 1]")
    return {k: arrays[k] for k in MAPS}, doc.trace


def _check_stats(name: str, stats) -> None:
    """The mask statistics later stages choose by must be numbers where they use them."""
    if not isinstance(stats, dict):
        raise HandoffError(f"{name}: trace.details.mask (the mask statistics) is missing")
    for key, low, high in (("coverage", 0.0, 1.0), ("stroke_width", 0.0, float("inf")),
                           ("regions", 0, float("inf"))):
        value = stats.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise HandoffError(f"{name}: mask statistic {key}={value!r} is not a number in [{low}, {high}]")


# --- the raw fill -------------------------------------------------------------

def encode_exact(pixels: Pixels) -> bytes:
    """Pixels (float32 RGB, optional alpha) as a float32 TIFF, zlib-compressed: exact."""
    planes = [pixels.rgb] + ([pixels.alpha[:, :, None]] if pixels.alpha is not None else [])
    out = io.BytesIO()
    tifffile.imwrite(out, np.concatenate(planes, axis=2).astype(np.float32), photometric="rgb",
                     extrasamples=("unassalpha",) if pixels.alpha is not None else None, compression="zlib")
    return out.getvalue()


def decode_exact(data: bytes, name: str, size: tuple[int, int]) -> Pixels | None:
    """A float32 TIFF from :func:`encode_exact` as Pixels; None if ``data`` is
    not a float TIFF (decode it as an ordinary image). Raises HandoffError if
    it is one but does not fit the image (``size`` = width, height)."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            if page.dtype != np.float32:
                return None
            arr = page.asarray()
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise HandoffError(f"{name}: unreadable float TIFF ({one_line(exc)})") from None
    width, height = size
    if arr.ndim != 3 or arr.shape[:2] != (height, width) or arr.shape[2] not in (3, 4):
        raise HandoffError(f"{name}: a {arr.shape} float TIFF, expected ({height}, {width}, 3 or 4)")
    if not np.isfinite(arr).all():
        raise HandoffError(f"{name}: float TIFF holds NaN or infinite values")
    rgb = np.ascontiguousarray(arr[:, :, :3])
    alpha = np.ascontiguousarray(arr[:, :, 3]) if arr.shape[2] == 4 else None
    return Pixels(rgb, alpha)

