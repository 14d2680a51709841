"""Decode and encode archive images, keeping what archives care about.

Every image inside retouch is an :class:`Image`: colour as float32 HxWx3 in
[0, 1] (grey inputs are replicated to three channels and written back as grey),
an optional float32 HxW alpha in [0, 1], the source bit depth (8 or 16), the ICC
profile and the EXIF block (orientation already applied and reset to 1), and the
source format, so that the output can keep it.

Pillow decodes everything except 16-bit colour, which Pillow truncates: 16-bit
RGB(A) PNG goes through OpenCV and 16-bit RGB(A) TIFF through tifffile.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from worker.errors import RetouchError

# retouch applies its own, configurable pixel limit before decoding (see
# ``decode``); Pillow's fixed global limit would otherwise pre-empt it.
PILImage.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 100_000_000
FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP")
EXTENSIONS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
    ".webp": "WEBP", ".bmp": "BMP",
}
SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff", "WEBP": "image/webp", "BMP": "image/bmp"}
_SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
_ORIENTATION_TAG = 0x0112


def format_name(name: str) -> str:
    """A format as retouch names it: ``jpg``/``JPG`` -> ``JPEG``, ``tif`` -> ``TIFF``,
    others upper-cased (``png`` -> ``PNG``). Not validated: see FORMATS."""
    upper = name.upper().lstrip(".")
    return {"JPG": "JPEG", "TIF": "TIFF"}.get(upper, upper)


class ImageError(RetouchError):
    """An input image cannot be decoded or an output cannot be encoded.

    ``str(err)`` is one line naming the file and the cause.
    """

    def __init__(self, name: str, cause: str):
        super().__init__(f"{name}: {cause}")
        self.name = name
        self.cause = cause


@dataclass(frozen=True)
class Image:
    """A decoded image; see the module docstring for the conventions."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    grey: bool = False
    icc_profile: bytes | None = None
    exif: bytes | None = None
    format: str = "PNG"
    name: str = "<memory>"
    # A JPEG's own quantisation tables (64 values each, natural order), or None:
    # the upscale router estimates the JPEG quality from them (worker.upscale.features).
    jpeg_tables: tuple[tuple[int, ...], ...] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.rgb.shape[1], self.rgb.shape[0]

    def with_pixels(self, rgb: np.ndarray, alpha: np.ndarray | None = None) -> "Image":
        """The same image metadata around new pixels (e.g. after a stage)."""
        return replace(self, rgb=rgb, alpha=alpha)


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Read and decode a file; raises :class:`ImageError` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(str(path), f"cannot read file ({exc.strerror or exc})") from exc
    return decode(data, str(path), max_pixels)


def decode(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode image bytes. Raises :class:`ImageError` for every kind of bad input:
    empty, not an image, unsupported format or mode, truncated, too many pixels."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pil = PILImage.open(BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(name, "not a recognised image file (unknown or corrupt header)") from None
    except OSError as exc:
        raise ImageError(name, f"truncated or corrupt image data ({exc})") from None
    fmt = "JPEG" if pil.format == "MPO" else pil.format
    if fmt not in FORMATS:
        raise ImageError(name, f"unsupported format {pil.format}; supported: {', '.join(FORMATS)}")
    width, height = pil.size
    if width * height > max_pixels:
        raise ImageError(
            name,
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(decompression-bomb guard; raise --max-pixels to allow it)",
        )
    icc = pil.info.get("icc_profile") or None
    exif = pil.getexif()
    orientation = int(exif.get(_ORIENTATION_TAG, 1) or 1)
    if _ORIENTATION_TAG in exif:
        exif[_ORIENTATION_TAG] = 1
    exif_bytes = exif.tobytes() if len(exif) else None

    try:
        pixels, bit_depth = _decode_pixels(pil, data, fmt, name)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise ImageError(name, f"truncated or corrupt image data ({exc})") from None

    if pil.mode == "CMYK":
        icc = None  # a CMYK profile does not describe the RGB we converted to
    pixels = _apply_orientation(pixels, orientation)
    scale = 65535.0 if bit_depth == 16 else 255.0
    arr = pixels.astype(np.float32) / scale
    grey = arr.ndim == 2 or arr.shape[2] in (1, 2)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    alpha = None
    if arr.shape[2] in (2, 4):
        alpha = np.ascontiguousarray(arr[:, :, -1])
        arr = arr[:, :, :-1]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return Image(
        rgb=np.ascontiguousarray(arr), alpha=alpha, bit_depth=bit_depth, grey=grey,
        icc_profile=icc, exif=exif_bytes, format=fmt, name=name,
        jpeg_tables=_jpeg_tables(pil) if fmt == "JPEG" else None,
    )


def _jpeg_tables(pil: PILImage.Image) -> tuple[tuple[int, ...], ...] | None:
    """The quantisation tables Pillow read from a JPEG, in table order (None if it has none)."""
    tables = getattr(pil, "quantization", None)
    if not tables:
        return None
    return tuple(tuple(int(v) for v in tables[k]) for k in sorted(tables))


def _decode_pixels(pil: PILImage.Image, data: bytes, fmt: str, name: str) -> tuple[np.ndarray, int]:
    """Pixels as uint8/uint16 HxW, HxWx2, HxWx3 or HxWx4 (RGB order), and the bit depth."""
    if fmt == "PNG" and _png_is_16bit_colour(data):
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ImageError(name, "truncated or corrupt image data (16-bit PNG did not decode)")
        return _bgr_to_rgb(arr), 16
    if fmt == "TIFF" and (_tiff_is_16bit_colour(pil) or (
            pil.mode not in ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK") and not pil.mode.startswith("I;16"))):
        arr = tifffile.imread(BytesIO(data))
        if arr.dtype == np.uint16 and arr.ndim == 3 and arr.shape[2] in (3, 4):
            return arr, 16
        raise ImageError(name, f"unsupported pixel mode {pil.mode} ({arr.dtype}, shape {arr.shape})")

    pil.load()
    mode = pil.mode
    if mode.startswith("I;16"):
        return np.asarray(pil).astype(np.uint16), 16
    if mode == "I":
        arr = np.asarray(pil)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageError(name, "unsupported pixel mode I (32-bit integer samples)")
        return arr.astype(np.uint16), 16
    if mode in ("RGB", "RGBA", "L", "LA"):
        return np.asarray(pil), 8
    if mode == "1":
        return np.asarray(pil.convert("L")), 8
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in pil.info
        return np.asarray(pil.convert("RGBA" if has_alpha else "RGB")), 8
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(pil.convert("RGB")), 8
    raise ImageError(name, f"unsupported pixel mode {mode}")


def _png_is_16bit_colour(data: bytes) -> bool:
    # IHDR: 8-byte signature, length, "IHDR", width, height, bit depth, colour type
    if len(data) < 26 or data[12:16] != b"IHDR":
        return False
    return data[24] == 16 and data[25] in (2, 6)


def _tiff_is_16bit_colour(pil: PILImage.Image) -> bool:
    bits = pil.tag_v2.get(258, (8,)) if hasattr(pil, "tag_v2") else (8,)
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max(bits) == 16 and len(bits) >= 3


def _bgr_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr[:, :, ::-1]
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr[:, :, [2, 1, 0, 3]]
    return arr


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) so the array is upright."""
    swap = (1, 0) + tuple(range(2, arr.ndim))
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(swap),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(swap),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(arr))


def format_for(path: str | Path) -> str | None:
    """The format implied by a file name's extension, or None."""
    return EXTENSIONS.get(Path(path).suffix.lower())


def to_uint(arr: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float [0, 1] -> uint8 or uint16, rounded and clipped."""
    top = 65535 if bit_depth == 16 else 255
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    return np.clip(np.rint(arr * top), 0, top).astype(dtype)


def encode(img: Image, fmt: str | None = None, quality: int = 95) -> bytes:
    """Encode ``img`` as ``fmt`` (default: its source format).

    PNG and TIFF keep 16-bit depth; JPEG, WebP and BMP are 8-bit. The ICC profile
    and EXIF block are written where the format holds them. Raises
    :class:`ImageError` when the format cannot hold the image (alpha in JPEG).
    """
    fmt = format_name(fmt or img.format)
    if fmt not in FORMATS:
        raise ImageError(img.name, f"cannot write format {fmt}; supported: {', '.join(FORMATS)}")
    if img.alpha is not None and fmt == "JPEG":
        raise ImageError(img.name, "JPEG cannot store the alpha channel; choose --format png, tiff or webp")
    depth = img.bit_depth if fmt in _SIXTEEN_BIT_FORMATS else 8
    colour = img.rgb.mean(axis=2, keepdims=True) if img.grey else img.rgb
    planes = [colour] + ([img.alpha[:, :, None]] if img.alpha is not None else [])
    pixels = to_uint(np.concatenate(planes, axis=2), depth)
    if pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]

    if depth == 16 and fmt == "PNG":
        ok, buf = cv2.imencode(".png", _bgr_to_rgb(pixels), [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise ImageError(img.name, "OpenCV could not encode the 16-bit PNG")
        return _png_insert_chunks(buf.tobytes(), img.icc_profile, img.exif)
    if depth == 16 and fmt == "TIFF":
        out = BytesIO()
        tifffile.imwrite(
            out, pixels, photometric="minisblack" if pixels.ndim == 2 else "rgb",
            extrasamples=("unassalpha",) if img.alpha is not None else None,
            iccprofile=img.icc_profile, compression="zlib",
        )  # tifffile cannot write an EXIF IFD here; 16-bit TIFF output keeps ICC, not EXIF
        return out.getvalue()

    mode = {2: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2] if pixels.ndim == 3 else 2]
    if pixels.ndim == 3 and pixels.shape[2] == 2:
        mode = "LA"
    pil = PILImage.fromarray(pixels, mode=mode) if mode != "LA" else PILImage.fromarray(pixels)
    kwargs: dict = {}
    if img.icc_profile and fmt != "BMP":
        kwargs["icc_profile"] = img.icc_profile
    if img.exif and fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
        kwargs["exif"] = img.exif
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = int(quality)
    if fmt == "JPEG":
        kwargs["subsampling"] = 0 if quality >= 90 else 2
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate"
    out = BytesIO()
    pil.save(out, format=fmt, **kwargs)
    return out.getvalue()


def write_image(img: Image, path: str | Path, fmt: str | None = None, quality: int = 95) -> bytes:
    """Encode and write atomically (temp file + rename); returns the bytes written."""
    data = encode(img, fmt, quality)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_insert_chunks(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks right after IHDR (OpenCV writes neither)."""
    chunks = b""
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        body = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
        chunks += _png_chunk(b"eXIf", body)
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + chunks + png[ihdr_end:]


def encode_map(arr: np.ndarray) -> bytes:
    """A float [0, 1] HxW map (confidence, mask) as a 16-bit grey PNG."""
    ok, buf = cv2.imencode(".png", to_uint(arr, 16))
    if not ok:
        raise ValueError("could not encode map as PNG")
    return buf.tobytes()


def decode_map(data: bytes, name: str = "<map>") -> np.ndarray:
    """Inverse of :func:`encode_map`; also reads 8-bit grey PNG masks (user masks).

    Returns float32 HxW in [0, 1]. Raises :class:`ImageError`."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if arr is None:
        raise ImageError(name, "not a readable mask/map image")
    if arr.ndim == 3:
        arr = arr[:, :, :3].max(axis=2)
    top = 65535.0 if arr.dtype == np.uint16 else 255.0
    return arr.astype(np.float32) / top
