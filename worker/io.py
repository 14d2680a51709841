"""Decode and encode archive images, keeping what archives care about.

Every image inside retouch is an :class:`Image`: colour as float32 HxWx3 in
[0, 1] (grey inputs are replicated to three channels and written back as grey),
an optional float32 HxW alpha in [0, 1], the source bit depth (8, 16, or 32 for
float samples), the ICC profile and the EXIF block (orientation already applied
and reset to 1), the source format, and whether a WebP was lossless, so that
the output can keep them.

PNG is decoded by libpng (imagecodecs), which refuses missing rows, after
every chunk's CRC is checked; 16-bit, float and planar-separate TIFF by
tifffile; the rest by Pillow, except 32-bit BMP alpha, which Pillow reads as
padding. A file holding several pages or frames is refused, never cut to its
first one. Everything a decoder raises on bad bytes becomes one
:class:`ImageError` line naming the file and the cause.
"""

from __future__ import annotations

import logging
import struct
import warnings
import zlib
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import ImageFile, UnidentifiedImageError

from worker.errors import RetouchError
from worker.files import atomic_write

# retouch applies its own, configurable pixel limit before decoding (see
# ``decode``); Pillow's fixed global limit would otherwise pre-empt it.
PILImage.MAX_IMAGE_PIXELS = None
# Truncated data is an error, never a padded image (a library elsewhere may have flipped this).
ImageFile.LOAD_TRUNCATED_IMAGES = False
# tifffile and imagecodecs log what they recover from in a damaged file without naming it;
# a file that cannot be decoded is reported once, by ImageError, naming it.
logging.getLogger("tifffile").setLevel(logging.CRITICAL)   # it logs recovered damage as errors
logging.getLogger("imagecodecs").setLevel(logging.ERROR)

log = logging.getLogger(__name__)

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
    lossless: bool = False      # a lossless WebP source: written back lossless
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
    empty, not an image, unsupported format, mode or sample type, truncated or
    corrupt (PNG chunk CRCs and missing image data included), several pages or
    frames, a malformed orientation, too many pixels. The whole decode, pixels
    and metadata, runs inside this error handling."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if data[:4] in _TIFF_MAGIC:
                return _decode_tiff(data, name, max_pixels)
            return _decode_pillow(PILImage.open(BytesIO(data)), data, name, max_pixels)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, "not a recognised image file (unknown or corrupt header)") from None
    except _DECODER_ERRORS as exc:
        raise ImageError(name, f"truncated or corrupt image data ({_one_line(exc)})") from None


# What decoders raise on hostile or damaged bytes (imagecodecs' codec errors are RuntimeErrors).
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, EOFError,
                   SystemError, RuntimeError, zlib.error)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    # a bare number or key ("0") says nothing without the kind of error
    return text if any(c.isalpha() for c in text) else f"{type(exc).__name__} {text}".strip()


def _decode_pillow(pil: PILImage.Image, data: bytes, name: str, max_pixels: int) -> Image:
    fmt = "JPEG" if pil.format == "MPO" else pil.format
    if fmt not in FORMATS:
        raise ImageError(name, f"unsupported format {pil.format}; supported: {', '.join(FORMATS)}")
    _check_pixels(name, *pil.size, max_pixels)
    if fmt != "JPEG":
        _check_single(name, fmt, getattr(pil, "n_frames", 1))
    elif getattr(pil, "n_frames", 1) > 1:   # MPO: the further pictures are previews, gain maps or other views
        log.warning("%s: a multi-picture JPEG (MPO) with %d pictures: the primary picture is restored, the "
                    "others are not written", name, pil.n_frames)
    if fmt == "PNG":
        _check_png_chunks(data, name)
        pixels = imagecodecs.png_decode(data)   # libpng: refuses missing rows, which Pillow pads with black
        depth = 16 if pixels.dtype == np.uint16 else 8
    elif fmt == "BMP" and _bmp_has_alpha_bytes(data):
        pixels, depth = _bmp_bgra(data), 8
    else:
        pixels, depth = _pillow_pixels(pil, name)   # TIFF: Pillow applies (and drops) its orientation here
    icc = pil.info.get("icc_profile") or None
    if pil.mode == "CMYK":
        icc = None  # a CMYK profile does not describe the RGB we converted to
    orientation, exif = _exif(pil, name)
    lossless = fmt == "WEBP" and b"VP8L" in data[12:64] and b"VP8 " not in data[12:64]
    img = _image(pixels, depth, orientation, icc, exif, fmt, name, lossless)
    return replace(img, jpeg_tables=_jpeg_tables(pil)) if fmt == "JPEG" else img


def _jpeg_tables(pil: PILImage.Image) -> tuple[tuple[int, ...], ...] | None:
    """The quantisation tables Pillow read from a JPEG, in table order (None if it has none)."""
    tables = getattr(pil, "quantization", None)
    if not tables:
        return None
    return tuple(tuple(int(v) for v in tables[k]) for k in sorted(tables))


def _pillow_pixels(pil: PILImage.Image, name: str) -> tuple[np.ndarray, int]:
    """Pixels as uint8/uint16 HxW, HxWx2, HxWx3 or HxWx4 (RGB order), and the bit depth."""
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


def _check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            name,
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(decompression-bomb guard; raise --max-pixels to allow it)",
        )


def _check_single(name: str, fmt: str, count: int) -> None:
    """Refuse files holding several pictures: retouch writes one picture per
    input, and must not drop pages 2..n without a word."""
    if count > 1:
        what = {"TIFF": "multi-page TIFF", "WEBP": "animated WebP", "PNG": "animated PNG"}.get(fmt, fmt)
        unit = "pages" if fmt == "TIFF" else "frames"
        dropped = f"{unit[:-1]} 2" if count == 2 else f"{unit} 2..{count}"
        raise ImageError(name, f"{what} with {count} {unit}: retouch restores one picture per file and would "
                               f"drop {dropped}; split it into single-{unit[:-1]} files first")


def _check_png_chunks(data: bytes, name: str) -> None:
    """Verify every chunk's CRC up to IEND (Pillow skips the IDAT CRCs), and
    that an embedded ICC profile decompresses."""
    pos = 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            chunk = kind.decode("latin-1")
            raise ImageError(name, f"truncated or corrupt image data (PNG {chunk} chunk cut short at byte "
                                   f"{len(data)} of {end + 4})")
        crc = struct.unpack(">I", data[end:end + 4])[0]
        if zlib.crc32(data[pos + 4:end]) & 0xFFFFFFFF != crc:
            chunk = kind.decode("latin-1")
            raise ImageError(name, f"truncated or corrupt image data (PNG {chunk} chunk at byte {pos} fails its "
                                   "CRC check)")
        if kind == b"iCCP":   # Pillow drops a profile that does not decompress without a word
            body = data[pos + 8:end]
            try:
                zlib.decompress(body[body.index(b"\x00") + 2:])
            except (ValueError, zlib.error) as exc:
                raise ImageError(name, f"corrupt embedded ICC profile (PNG iCCP chunk: {_one_line(exc)})") from None
        if kind == b"IEND":
            return
        pos = end + 4
    raise ImageError(name, "truncated or corrupt image data (PNG ends without an IEND chunk)")


def _bmp_has_alpha_bytes(data: bytes) -> bool:
    """A 32-bit uncompressed BMP whose fourth bytes are not all zero: an alpha
    channel by the common convention (Pillow reads it as padding)."""
    if len(data) < 54 or data[:2] != b"BM":
        return False
    header, bits, compression = struct.unpack_from("<I", data, 14)[0], *struct.unpack_from("<HI", data, 28)
    if header < 40 or bits != 32 or compression != 0:
        return False
    return bool(_bmp_bgra(data)[:, :, 3].any())


def _bmp_bgra(data: bytes) -> np.ndarray:
    offset = struct.unpack_from("<I", data, 10)[0]
    width, height = struct.unpack_from("<ii", data, 18)
    rows = abs(height)
    need = offset + width * rows * 4
    if width <= 0 or rows == 0 or need > len(data):
        raise OSError(f"BMP pixel data ends at byte {len(data)}, needs {need}")
    arr = np.frombuffer(data, np.uint8, width * rows * 4, offset).reshape(rows, width, 4)
    if height > 0:   # bottom-up rows
        arr = arr[::-1]
    return np.ascontiguousarray(arr[:, :, [2, 1, 0, 3]])


def _exif(pil: PILImage.Image, name: str) -> tuple[int, bytes | None]:
    """The EXIF orientation (still to apply; 1 when the decoder applied it) and
    the EXIF block to write back, with its orientation reset to 1. Read after the
    pixels, and from a copy: a TIFF's tags drive its own decoding."""
    exif = pil.getexif()
    orientation = _orientation(exif.get(_ORIENTATION_TAG), name)
    if not len(exif):
        return orientation, None
    copy = PILImage.Exif()
    copy.load(exif.tobytes())
    for tag in _TIFF_LAYOUT_TAGS & set(copy):   # a TIFF's own layout, not metadata to carry over
        del copy[tag]
    if _ORIENTATION_TAG in copy:
        copy[_ORIENTATION_TAG] = 1
    return orientation, copy.tobytes() if len(copy) else None


# Baseline TIFF tags that describe a file's pixel layout (Pillow's getexif() of a
# TIFF lists them); written into another file they would contradict its pixels.
_TIFF_LAYOUT_TAGS = {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324,
                     325, 338, 339, 340, 341, 530, 531, 532, 34675}


def _orientation(value, name: str) -> int:
    """An EXIF/TIFF Orientation value as 1-8 (0, "unknown", counts as 1);
    anything else raises ImageError."""
    if value is None:
        return 1
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value <= 8:
        return int(value) or 1
    raise ImageError(name, f"malformed EXIF Orientation tag ({value!r:.40}); expected one integer 1-8")


def _decode_tiff(data: bytes, name: str, max_pixels: int) -> Image:
    """Grey and RGB(A) TIFFs of 8 bits or more go to tifffile (imagecodecs
    decodes LZW, Deflate, ZSTD, WebP, JPEG XL...; a cut strip is an error, and
    libtiff prints nothing); palette, YCbCr, CMYK and 1-bit ones to Pillow."""
    with tifffile.TiffFile(BytesIO(data)) as tif:
        if not len(tif.pages):
            raise ImageError(name, "truncated or corrupt image data (the TIFF holds no readable page)")
        page = tif.pages.first
        _check_pixels(name, page.imagewidth, page.imagelength, max_pixels)
        _check_single(name, "TIFF", len(tif.pages))
        photometric = page.photometric
        if page.bitspersample < 8 or photometric not in _TIFF_PHOTOMETRIC:
            if page.bitspersample > 8:
                raise ImageError(name, f"unsupported TIFF photometric interpretation {_enum_name(photometric)} at "
                                       f"{page.bitspersample} bits per sample")
            return _decode_pillow(PILImage.open(BytesIO(data)), data, name, max_pixels)
        arr = page.asarray()
        if "S" in page.axes and page.axes.index("S") < page.axes.index("Y"):
            arr = np.moveaxis(arr, 0, -1)   # planar-separate: planes first
        arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
        base = 3 if photometric == tifffile.PHOTOMETRIC.RGB else 1
        if arr.shape[2] not in (base, base + 1):
            raise ImageError(name, f"unsupported TIFF layout: {arr.shape[2]} samples per pixel for "
                                   f"{_enum_name(photometric)}")
        tags = page.tags
        orientation = _orientation(tags[274].value if 274 in tags else None, name)
        icc = tags[34675].value if 34675 in tags else None
        premultiplied = arr.shape[2] == base + 1 and tuple(page.extrasamples or (0,))[0] == 1   # ASSOCALPHA
    arr, depth = _tiff_samples(arr, name)
    img = _image(arr[:, :, 0] if arr.shape[2] == 1 else arr, depth, orientation,
                 bytes(icc) if icc else None, _tiff_exif(data, name), "TIFF", name, False)
    if premultiplied:   # associated alpha: retouch's colour is straight, as Pillow's RGBa gives it
        a = img.alpha[:, :, None]
        img = img.with_pixels(np.where(a > 0, np.clip(img.rgb / np.maximum(a, 1e-12), 0, 1), 0).astype(np.float32),
                              img.alpha)
    return img


def _tiff_exif(data: bytes, name: str) -> bytes | None:
    """The EXIF block of a TIFF that tifffile decoded, as Pillow reads it
    (without decoding pixels); None where Pillow cannot open the file (float RGB)."""
    try:
        pil = PILImage.open(BytesIO(data))
    except (UnidentifiedImageError, OSError):
        return None
    return _exif(pil, name)[1]


_TIFF_PHOTOMETRIC = (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.MINISBLACK)


def _enum_name(value) -> str:
    """A tifffile enum's name; a value outside the enum (a damaged tag) is a plain int."""
    return getattr(value, "name", str(value))


def _tiff_samples(arr: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """uint8 -> 8, uint16 -> 16, float in [0, 1] -> 32 (float32); others refused."""
    if arr.dtype == np.uint8:
        return arr, 8
    if arr.dtype == np.uint16:
        return arr, 16
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError(name, "float TIFF holds NaN or infinite samples")
        low, high = float(arr.min()), float(arr.max())
        if low < 0.0 or high > 1.0:
            raise ImageError(name, f"float TIFF samples span {low:.4g}..{high:.4g}: retouch restores display-"
                                   "referred images with samples in [0, 1], not HDR or scene-referred ones; "
                                   "tone-map it or convert it to 16-bit first")
        return arr.astype(np.float32), 32
    raise ImageError(name, f"unsupported TIFF sample type {arr.dtype} (supported: 8/16-bit unsigned, float)")


def _image(pixels: np.ndarray, bit_depth: int, orientation: int, icc: bytes | None, exif: bytes | None,
           fmt: str, name: str, lossless: bool) -> Image:
    pixels = _apply_orientation(pixels, orientation)
    scale = {8: 255.0, 16: 65535.0, 32: 1.0}[bit_depth]
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
        icc_profile=icc, exif=exif, format=fmt, name=name, lossless=lossless,
    )



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
    """Float [0, 1] -> uint8 or uint16 (bit_depth 16), rounded and clipped;
    bit_depth 32: float32 clipped to [0, 1]."""
    if bit_depth == 32:
        return np.clip(arr, 0.0, 1.0).astype(np.float32)
    top = 65535 if bit_depth == 16 else 255
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    return np.clip(np.rint(arr * top), 0, top).astype(dtype)


def encode(img: Image, fmt: str | None = None, quality: int = 95) -> bytes:
    """Encode ``img`` as ``fmt`` (default: its source format).

    PNG and TIFF keep 16-bit depth (and TIFF float samples; a float image
    becomes a 16-bit PNG); JPEG, WebP and BMP are 8-bit. A lossless WebP source
    is written lossless. The ICC profile and EXIF block are written where the
    format holds them. Raises :class:`ImageError` when the format cannot hold
    the image (alpha in JPEG).
    """
    fmt = format_name(fmt or img.format)
    if fmt not in FORMATS:
        raise ImageError(img.name, f"cannot write format {fmt}; supported: {', '.join(FORMATS)}")
    if img.alpha is not None and fmt == "JPEG":
        raise ImageError(img.name, "JPEG cannot store the alpha channel; choose --format png, tiff or webp")
    depth = img.bit_depth if fmt in _SIXTEEN_BIT_FORMATS else 8
    if depth == 32 and fmt == "PNG":
        depth = 16
    colour = img.rgb
    if img.grey:   # the mean of three equal float channels is not always that value
        same = np.array_equal(colour[:, :, 0], colour[:, :, 1]) and np.array_equal(colour[:, :, 0], colour[:, :, 2])
        colour = colour[:, :, :1] if same else colour.mean(axis=2, keepdims=True)
    planes = [colour] + ([img.alpha[:, :, None]] if img.alpha is not None else [])
    pixels = to_uint(np.concatenate(planes, axis=2), depth)
    if pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]

    if depth == 16 and fmt == "PNG":   # libpng writes grey+alpha at 16 bits too (OpenCV cannot)
        return _png_insert_chunks(imagecodecs.png_encode(pixels, level=6), img.icc_profile, img.exif)
    if depth in (16, 32) and fmt == "TIFF":
        out = BytesIO()
        tifffile.imwrite(
            out, pixels, photometric="minisblack" if pixels.ndim == 2 else "rgb",
            extrasamples=("unassalpha",) if img.alpha is not None else None,
            iccprofile=img.icc_profile, compression="zlib",
        )  # tifffile cannot write an EXIF IFD here; 16-bit and float TIFF output keeps ICC, not EXIF
        return out.getvalue()

    if fmt == "BMP" and pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        return _bmp_rgba(pixels)
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
    if fmt == "WEBP" and img.lossless:
        kwargs["lossless"] = True
        kwargs["exact"] = True   # keep the colour under transparent pixels, as the source did
    if fmt == "JPEG":
        kwargs["subsampling"] = 0 if quality >= 90 else 2
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate"
    out = BytesIO()
    pil.save(out, format=fmt, **kwargs)
    return out.getvalue()


def write_image(img: Image, path: str | Path, fmt: str | None = None, quality: int = 95) -> bytes:
    """Encode and write atomically (``worker.files``: a short temporary name,
    so a 255-byte file name works); returns the bytes written."""
    data = encode(img, fmt, quality)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return data


def _bmp_rgba(pixels: np.ndarray) -> bytes:
    """A 32-bit BMP with a BITMAPV4HEADER and an alpha mask (BI_BITFIELDS): the
    form readers take as alpha (Pillow writes BI_RGB, read back as padding)."""
    if pixels.shape[2] == 2:
        pixels = pixels[:, :, [0, 0, 0, 1]]
    height, width = pixels.shape[:2]
    body = np.ascontiguousarray(pixels[::-1][:, :, [2, 1, 0, 3]]).tobytes()
    info = struct.pack("<IiiHHIIiiII4I4s36x12x", 108, width, height, 1, 32, 3, len(body), 2835, 2835, 0, 0,
                       0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000, b"BGRs")
    head = struct.pack("<2sIHHI", b"BM", 14 + len(info) + len(body), 0, 0, 14 + len(info))
    return head + info + body


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
