"""An archive corpus, generated here, through `retouch run` as a user runs it.

Every kind is broken, hostile, or valid but unusual. A broken or hostile kind
fails alone, with one line naming the file and the cause; a valid kind is
restored with its orientation applied, and its ICC profile, alpha, depth,
format and pixels kept (compared with the arrays it was made from). No kind
prints a traceback, and the inputs stay byte-identical. The plan is the
identity (lanczos at scale 1), so the output pixels are the input's pixels
and the comparison is exact for lossless formats.

The table of kinds, classes and results is printed by
``pytest tests/test_corpus.py -s -k table``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Callable

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps, TiffImagePlugin

from orchestration.cli import main
from worker.files import atomic_write
from worker.io import Image, ImageError, decode, write_image

REPO = Path(__file__).resolve().parent.parent
H, W = 32, 48
LONG_NAME = "n" * 246 + ".png"          # 250 bytes: legal; ".{name}.part" would not be


def _base(h: int = H, w: int = W) -> np.ndarray:
    """float32 HxWx3 in [0, 1]: smooth ramps and a red block in the top-left
    corner, so a wrong orientation cannot pass."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([x / max(w - 1, 1), y / max(h - 1, 1), 0.5 + 0.4 * np.sin(x / 5) * np.cos(y / 7)], axis=2)
    rgb[: h // 4, : w // 4] = (1.0, 0.0, 0.0)
    return rgb.astype(np.float32)


def _alpha(h: int = H, w: int = W) -> np.ndarray:
    return np.tile(np.linspace(0.0, 1.0, w, dtype=np.float32), (h, 1))


def _u8(a: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)


def _u16(a: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(a, 0, 1) * 65535).astype(np.uint16)


def _grey(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=2)


def _icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _pil_bytes(arr: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
    pil = PILImage.fromarray(arr)
    if mode:
        pil = pil.convert(mode)
    buf = BytesIO()
    pil.save(buf, fmt, **kw)
    return buf.getvalue()


def _tiff_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def _palette(fmt: str) -> tuple[Callable[[], bytes], Callable[[], np.ndarray]]:
    """A palette image (16 colours, no dithering) and its colours as Pillow maps them."""
    pil = PILImage.fromarray(_u8(B)).quantize(colors=16, dither=PILImage.Dither.NONE)

    def data() -> bytes:
        buf = BytesIO()
        pil.save(buf, fmt)
        return buf.getvalue()
    return data, lambda: np.asarray(pil.convert("RGB")).astype(np.float32) / 255


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_raw(width: int, height: int, rows: int, grey: np.ndarray | None = None) -> bytes:
    """An 8-bit grey PNG whose image data holds only ``rows`` of ``height`` rows."""
    grey = grey if grey is not None else np.full((height, width), 200, np.uint8)
    raw = b"".join(b"\x00" + grey[i].tobytes() for i in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def _exif_orientation(value, tagtype: int | None = None) -> bytes:
    exif = PILImage.Exif()
    exif[0x0112] = value
    if tagtype is not None:   # a type the tag should not have (e.g. ASCII)
        ifd = TiffImagePlugin.ImageFileDirectory_v2()
        ifd[0x0112] = value
        ifd.tagtype[0x0112] = tagtype
        out = BytesIO()
        ifd.save(out)
        return b"Exif\x00\x00" + out.getvalue()
    return exif.tobytes()


def _oriented(upright: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as stored with ``orientation``, so that Pillow's exif_transpose
    turns them back into ``upright`` (checked when the corpus is built)."""
    inverse = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
               5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, 1),
               7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
               8: lambda a: np.rot90(a, -1)}
    return np.ascontiguousarray(inverse[orientation](upright))


# --- the kinds ----------------------------------------------------------------

@dataclass
class Kind:
    name: str
    cls: str                                   # broken | hostile | valid
    make: Callable[[Path], None]               # writes into the corpus folder
    cause: str | None = None                   # expected failure cause (fails), or None (restored)
    file: str | None = None                    # the file the result is about (default: name.ext from make)
    truth: Callable[[], np.ndarray] | None = None   # upright float HxWxC the output must hold
    depth: int = 8
    fmt: str | None = None
    icc: bool = False
    lossy: bool = False
    lossless_webp: bool = False
    explicit: bool = False                     # given on the command line, not found in the folder


KINDS: list[Kind] = []


def kind(name, cls, file, data: Callable[[], bytes] | None = None, **kw):
    def make(folder: Path, data=data, file=file):
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).write_bytes(data())
    KINDS.append(Kind(name, cls, kw.pop("make", make), file=file, **kw))


B = _base()
A = _alpha()
RGBA = np.concatenate([B, A[:, :, None]], axis=2)
GREY = _grey(B)
ICC = _icc()

# valid, JPEG
kind("jpeg-rgb", "valid", "jpeg-rgb.jpg", lambda: _pil_bytes(_u8(B), "JPEG", quality=95),
     truth=lambda: B, fmt="JPEG", lossy=True)
kind("jpeg-grey", "valid", "jpeg-grey.jpg", lambda: _pil_bytes(_u8(GREY), "JPEG", quality=95),
     truth=lambda: GREY[:, :, None], fmt="JPEG", lossy=True)
kind("jpeg-progressive", "valid", "jpeg-progressive.jpg",
     lambda: _pil_bytes(_u8(B), "JPEG", quality=95, progressive=True), truth=lambda: B, fmt="JPEG", lossy=True)
kind("jpeg-icc", "valid", "jpeg-icc.jpg", lambda: _pil_bytes(_u8(B), "JPEG", quality=95, icc_profile=ICC),
     truth=lambda: B, fmt="JPEG", lossy=True, icc=True)
kind("jpeg-cmyk", "valid", "jpeg-cmyk.jpg", lambda: _pil_bytes(_u8(B), "JPEG", "CMYK", quality=95),
     truth=lambda: B, fmt="JPEG", lossy=True)
kind("jpeg-upper-ext", "valid", "UPPER.JPG", lambda: _pil_bytes(_u8(B), "JPEG", quality=95),
     truth=lambda: B, fmt="JPEG", lossy=True)
kind("jpeg-mpo-2-pictures", "valid", "jpeg-mpo.jpg",
     lambda: _pil_bytes(_u8(B), "MPO", save_all=True, append_images=[PILImage.fromarray(_u8(B[::-1]))], quality=95),
     truth=lambda: B, fmt="JPEG", lossy=True)   # the primary picture; the run logs that the other is not written
for o in range(1, 9):
    kind(f"jpeg-orientation-{o}", "valid", f"jpeg-orientation-{o}.jpg",
         lambda o=o: _pil_bytes(_u8(_oriented(B, o)), "JPEG", quality=95, exif=_exif_orientation(o)),
         truth=lambda: B, fmt="JPEG", lossy=True)

# valid, PNG
kind("png-rgb8", "valid", "png-rgb8.png", lambda: _pil_bytes(_u8(B), "PNG"), truth=lambda: B, fmt="PNG")
kind("png-rgba8", "valid", "png-rgba8.png", lambda: _pil_bytes(_u8(RGBA), "PNG"), truth=lambda: RGBA, fmt="PNG")
kind("png-grey8", "valid", "png-grey8.png", lambda: _pil_bytes(_u8(GREY), "PNG"),
     truth=lambda: GREY[:, :, None], fmt="PNG")
kind("png-grey-alpha8", "valid", "png-grey-alpha8.png",
     lambda: _pil_bytes(_u8(np.stack([GREY, A], 2)), "PNG"), truth=lambda: np.stack([GREY, A], 2), fmt="PNG")
kind("png-grey16", "valid", "png-grey16.png", lambda: imagecodecs.png_encode(_u16(GREY)),
     truth=lambda: GREY[:, :, None], fmt="PNG", depth=16)
kind("png-rgb16", "valid", "png-rgb16.png", lambda: imagecodecs.png_encode(_u16(B)), truth=lambda: B,
     fmt="PNG", depth=16)
kind("png-rgba16", "valid", "png-rgba16.png", lambda: imagecodecs.png_encode(_u16(RGBA)), truth=lambda: RGBA,
     fmt="PNG", depth=16)
kind("png-grey-alpha16", "valid", "png-grey-alpha16.png",
     lambda: imagecodecs.png_encode(_u16(np.stack([GREY, A], 2))), truth=lambda: np.stack([GREY, A], 2),
     fmt="PNG", depth=16)
kind("png-palette", "valid", "png-palette.png", _palette("PNG")[0], truth=_palette("PNG")[1], fmt="PNG")
kind("png-1bit", "valid", "png-1bit.png", lambda: _pil_bytes(_u8(GREY > 0.5), "PNG", "1"),
     truth=lambda: (GREY > 0.5).astype(np.float32)[:, :, None], fmt="PNG")
kind("png-icc", "valid", "png-icc.png", lambda: _pil_bytes(_u8(B), "PNG", icc_profile=ICC), truth=lambda: B,
     fmt="PNG", icc=True)
kind("png-icc16", "valid", "png-icc16.png",
     lambda: _pil_bytes(_u16(GREY), "PNG", icc_profile=ImageCms.ImageCmsProfile(
         ImageCms.createProfile("LAB")).tobytes()), truth=lambda: GREY[:, :, None], fmt="PNG", depth=16, icc=True)
kind("png-exif-orientation-6", "valid", "png-exif-orientation-6.png",
     lambda: _pil_bytes(_u8(_oriented(B, 6)), "PNG", exif=_exif_orientation(6)), truth=lambda: B, fmt="PNG")
kind("png-text-chunks", "valid", "png-text-chunks.png",
     lambda: _pil_bytes(_u8(B), "PNG", pnginfo=_pnginfo()), truth=lambda: B, fmt="PNG")
kind("png-1x1", "valid", "png-1x1.png", lambda: _pil_bytes(_u8(B[:1, :1]), "PNG"), truth=lambda: B[:1, :1],
     fmt="PNG")
kind("png-1x200", "valid", "png-1x200.png", lambda: _pil_bytes(_u8(_base(200, 1)), "PNG"),
     truth=lambda: _base(200, 1), fmt="PNG")
kind("png-named-jpg", "valid", "png-named-jpg.jpg", lambda: _pil_bytes(_u8(B), "PNG"), truth=lambda: B, fmt="PNG")
kind("png-long-name-250-bytes", "valid", LONG_NAME, lambda: _pil_bytes(_u8(B), "PNG"), truth=lambda: B, fmt="PNG")
kind("png-unicode-name", "valid", "sub dir/été ✓.png", lambda: _pil_bytes(_u8(B), "PNG"), truth=lambda: B,
     fmt="PNG")


def _pnginfo():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "archive scan")
    info.add_itxt("Description", "zurück ✓", lang="de")
    return info


# valid, TIFF
kind("tiff-rgb8", "valid", "tiff-rgb8.tif", lambda: _pil_bytes(_u8(B), "TIFF"), truth=lambda: B, fmt="TIFF")
kind("tiff-rgba8", "valid", "tiff-rgba8.tif", lambda: _pil_bytes(_u8(RGBA), "TIFF"), truth=lambda: RGBA,
     fmt="TIFF")
kind("tiff-grey8", "valid", "tiff-grey8.tif", lambda: _pil_bytes(_u8(GREY), "TIFF"),
     truth=lambda: GREY[:, :, None], fmt="TIFF")
kind("tiff-orientation-6", "valid", "tiff-orientation-6.tif",
     lambda: _pil_bytes(_u8(_oriented(B, 6)), "TIFF", tiffinfo={274: 6}), truth=lambda: B, fmt="TIFF")
kind("tiff-orientation-3-lzw", "valid", "tiff-orientation-3-lzw.tif",
     lambda: _pil_bytes(_u8(_oriented(B, 3)), "TIFF", tiffinfo={274: 3}, compression="tiff_lzw"),
     truth=lambda: B, fmt="TIFF")
kind("tiff-lzw8", "valid", "tiff-lzw8.tif", lambda: _pil_bytes(_u8(B), "TIFF", compression="tiff_lzw"),
     truth=lambda: B, fmt="TIFF")
kind("tiff-jpeg-compressed", "valid", "tiff-jpeg-compressed.tif",
     lambda: _pil_bytes(_u8(B), "TIFF", compression="jpeg", quality=95), truth=lambda: B, fmt="TIFF", lossy=True)
kind("tiff-packbits", "valid", "tiff-packbits.tif", lambda: _pil_bytes(_u8(B), "TIFF", compression="packbits"),
     truth=lambda: B, fmt="TIFF")
kind("tiff-palette", "valid", "tiff-palette.tif", _palette("TIFF")[0], truth=_palette("TIFF")[1], fmt="TIFF")
kind("tiff-1bit", "valid", "tiff-1bit.tif", lambda: _pil_bytes(_u8(GREY > 0.5), "TIFF", "1"),
     truth=lambda: (GREY > 0.5).astype(np.float32)[:, :, None], fmt="TIFF")
kind("tiff-cmyk", "valid", "tiff-cmyk.tif", lambda: _pil_bytes(_u8(B), "TIFF", "CMYK"), truth=lambda: B,
     fmt="TIFF", lossy=True)   # CMYK -> RGB by Pillow's naive conversion: close, not exact
kind("tiff-icc", "valid", "tiff-icc.tif", lambda: _pil_bytes(_u8(B), "TIFF", icc_profile=ICC), truth=lambda: B,
     fmt="TIFF", icc=True)
kind("tiff-big-endian16", "valid", "tiff-big-endian16.tif",
     lambda: _tiff_bytes(_u16(B), photometric="rgb", byteorder=">"), truth=lambda: B, fmt="TIFF", depth=16)
kind("tiff-tiled16", "valid", "tiff-tiled16.tif", lambda: _tiff_bytes(_u16(B), photometric="rgb", tile=(16, 16)),
     truth=lambda: B, fmt="TIFF", depth=16)
kind("tiff-zstd8", "valid", "tiff-zstd8.tif", lambda: _tiff_bytes(_u8(B), photometric="rgb", compression="zstd"),
     truth=lambda: B, fmt="TIFF")
kind("tiff-webp-compressed8", "valid", "tiff-webp8.tif",
     lambda: _tiff_bytes(_u8(B), photometric="rgb", compression="webp", compressionargs={"level": 100}),
     truth=lambda: B, fmt="TIFF", lossy=True)
kind("tiff-rgb16", "valid", "tiff-rgb16.tif", lambda: _tiff_bytes(_u16(B), photometric="rgb"), truth=lambda: B,
     fmt="TIFF", depth=16)
kind("tiff-lzw16", "valid", "tiff-lzw16.tif",
     lambda: _tiff_bytes(_u16(B), photometric="rgb", compression="lzw"), truth=lambda: B, fmt="TIFF", depth=16)
kind("tiff-planar16", "valid", "tiff-planar16.tif",
     lambda: _tiff_bytes(np.moveaxis(_u16(B), 2, 0), photometric="rgb", planarconfig="separate"),
     truth=lambda: B, fmt="TIFF", depth=16)
kind("tiff-rgba16", "valid", "tiff-rgba16.tif",
     lambda: _tiff_bytes(_u16(RGBA), photometric="rgb", extrasamples=["unassalpha"]), truth=lambda: RGBA,
     fmt="TIFF", depth=16)
kind("tiff-grey16", "valid", "tiff-grey16.tif", lambda: _tiff_bytes(_u16(GREY), photometric="minisblack"),
     truth=lambda: GREY[:, :, None], fmt="TIFF", depth=16)
kind("tiff-orientation-6-16bit", "valid", "tiff-orientation-6-16bit.tif",
     lambda: _tiff_bytes(_u16(_oriented(B, 6)), photometric="rgb", extratags=[(274, "H", 1, 6, True)]),
     truth=lambda: B, fmt="TIFF", depth=16)
kind("tiff-float32-rgb", "valid", "tiff-float32-rgb.tif", lambda: _tiff_bytes(B, photometric="rgb"),
     truth=lambda: B, fmt="TIFF", depth=32)
kind("tiff-float32-grey-deflate", "valid", "tiff-float32-grey-deflate.tif",
     lambda: _tiff_bytes(GREY, photometric="minisblack", compression="zlib"),
     truth=lambda: GREY[:, :, None], fmt="TIFF", depth=32)

# valid, WebP and BMP
kind("webp-lossy", "valid", "webp-lossy.webp", lambda: _pil_bytes(_u8(B), "WEBP", quality=95), truth=lambda: B,
     fmt="WEBP", lossy=True)
kind("webp-lossless", "valid", "webp-lossless.webp", lambda: _pil_bytes(_u8(B), "WEBP", lossless=True),
     truth=lambda: B, fmt="WEBP", lossless_webp=True)
kind("webp-lossless-alpha", "valid", "webp-lossless-alpha.webp",
     lambda: _pil_bytes(_u8(RGBA), "WEBP", lossless=True, exact=True), truth=lambda: RGBA, fmt="WEBP",
     lossless_webp=True)
kind("webp-lossy-alpha", "valid", "webp-lossy-alpha.webp", lambda: _pil_bytes(_u8(RGBA), "WEBP", quality=95),
     truth=lambda: RGBA, fmt="WEBP", lossy=True)
kind("webp-icc", "valid", "webp-icc.webp", lambda: _pil_bytes(_u8(B), "WEBP", quality=95, icc_profile=ICC),
     truth=lambda: B, fmt="WEBP", lossy=True, icc=True)
kind("webp-exif-orientation-8", "valid", "webp-exif-orientation-8.webp",
     lambda: _pil_bytes(_u8(_oriented(B, 8)), "WEBP", lossless=True, exif=_exif_orientation(8)),
     truth=lambda: B, fmt="WEBP", lossless_webp=True)
def _bmp_top_down(arr: np.ndarray) -> bytes:
    """Pillow's 32-bit BMP turned top-down (negative height), as some writers store it."""
    data = bytearray(_pil_bytes(arr, "BMP"))
    offset, width, height = struct.unpack_from("<I", data, 10)[0], *struct.unpack_from("<ii", data, 18)
    rows = np.frombuffer(bytes(data[offset:offset + width * height * 4]), np.uint8).reshape(height, width * 4)
    data[offset:offset + rows.size] = rows[::-1].tobytes()
    struct.pack_into("<i", data, 22, -height)
    return bytes(data)


kind("bmp-rgba32-top-down", "valid", "bmp-rgba32-top-down.bmp", lambda: _bmp_top_down(_u8(RGBA)),
     truth=lambda: RGBA, fmt="BMP")
kind("tiff-miniswhite8", "valid", "tiff-miniswhite8.tif",
     lambda: _tiff_bytes(255 - _u8(GREY), photometric="miniswhite"), truth=lambda: GREY[:, :, None], fmt="TIFF")
kind("tiff-rgba16-associated-alpha", "valid", "tiff-rgba16-assoc.tif",
     lambda: _tiff_bytes(_u16(np.concatenate([B * A[:, :, None], A[:, :, None]], 2)), photometric="rgb",
                         extrasamples=["assocalpha"]),
     truth=lambda: np.concatenate([np.where(A[:, :, None] > 0, B, 0), A[:, :, None]], 2), fmt="TIFF", depth=16,
     lossy=True)
kind("bmp-rgb24", "valid", "bmp-rgb24.bmp", lambda: _pil_bytes(_u8(B), "BMP"), truth=lambda: B, fmt="BMP")
kind("bmp-rgba32", "valid", "bmp-rgba32.bmp", lambda: _pil_bytes(_u8(RGBA), "BMP"), truth=lambda: RGBA, fmt="BMP")
kind("bmp-palette8", "valid", "bmp-palette8.bmp", _palette("BMP")[0], truth=_palette("BMP")[1], fmt="BMP")
kind("bmp-grey8", "valid", "bmp-grey8.bmp", lambda: _pil_bytes(_u8(GREY), "BMP"),
     truth=lambda: GREY[:, :, None], fmt="BMP")
kind("bmp-1bit", "valid", "bmp-1bit.bmp", lambda: _pil_bytes(_u8(GREY > 0.5), "BMP", "1"),
     truth=lambda: (GREY > 0.5).astype(np.float32)[:, :, None], fmt="BMP")


def _symlink_to_valid(folder: Path):
    (folder / "linked").mkdir(exist_ok=True)
    (folder / "linked" / "target.png").write_bytes(_pil_bytes(_u8(B), "PNG"))
    os.symlink("linked/target.png", folder / "symlink-to-valid.png")


KINDS.append(Kind("symlink-to-valid-file", "valid", _symlink_to_valid, file="symlink-to-valid.png",
                  truth=lambda: B, fmt="PNG"))
KINDS.append(Kind("symlink-to-valid-file (target)", "valid", lambda folder: None, file="linked/target.png",
                  truth=lambda: B, fmt="PNG"))

# broken
_JPEG = _pil_bytes(_u8(_base(200, 200)), "JPEG", quality=95)
_PNG = _pil_bytes(_u8(_base(200, 200)), "PNG")
_TIFF = _pil_bytes(_u8(_base(200, 200)), "TIFF")
_WEBP = _pil_bytes(_u8(_base(200, 200)), "WEBP", quality=90)
_BMP = _pil_bytes(_u8(_base(200, 200)), "BMP")
CORRUPT = "truncated or corrupt"
kind("empty-file", "broken", "empty.png", lambda: b"", cause="empty file")
kind("text-as-jpeg", "broken", "notes.jpg", lambda: b"this is a text file, not a photo\n" * 4,
     cause="not a recognised image")
kind("html-as-png", "broken", "page.png", lambda: b"<!doctype html><html><body>404</body></html>\n",
     cause="not a recognised image")
kind("random-bytes-png", "broken", "random.png", lambda: np.random.default_rng(1).bytes(4096),
     cause="not a recognised image")
kind("zeros-as-tiff", "broken", "zeros.tif", lambda: bytes(2048), cause="not a recognised image")
kind("jpeg-header-only", "broken", "jpeg-header-only.jpg", lambda: _JPEG[:300], cause=CORRUPT)
kind("jpeg-cut-mid-scan", "broken", "jpeg-cut.jpg", lambda: _JPEG[: len(_JPEG) // 2], cause=CORRUPT)
kind("png-rows-10-of-1000", "broken", "png-rows-10-of-1000.png", lambda: _png_raw(50, 1000, 10), cause=CORRUPT)
kind("png-idat-crc-wrong", "broken", "png-idat-crc.png",
     lambda: _png_raw(50, 100, 100)[:-16] + b"\xde\xad\xbe\xef" + _chunk(b"IEND", b""), cause="fails its CRC")
kind("png-ihdr-crc-wrong", "broken", "png-ihdr-crc.png",
     lambda: _PNG[:29] + bytes(4) + _PNG[33:], cause="corrupt header")
kind("png-cut-half", "broken", "png-cut-half.png", lambda: _PNG[: len(_PNG) // 2], cause=CORRUPT)
kind("png-no-iend", "broken", "png-no-iend.png", lambda: _PNG[:-12], cause="without an IEND")
kind("png-signature-only", "broken", "png-signature-only.png", lambda: _PNG[:8], cause="corrupt header")
kind("tiff-cut", "broken", "tiff-cut.tif", lambda: _TIFF[: len(_TIFF) // 3], cause=CORRUPT)
kind("tiff16-cut", "broken", "tiff16-cut.tif",
     lambda: (lambda d: d[: len(d) // 2])(_tiff_bytes(_u16(_base(200, 200)), photometric="rgb")), cause=CORRUPT)
kind("tiff8-lzw-cut", "broken", "tiff8-lzw-cut.tif",
     lambda: (lambda d: d[: len(d) // 2])(_tiff_bytes(_u8(_base(200, 200)), photometric="rgb", compression="lzw",
                                                      rowsperstrip=16)), cause=CORRUPT)
kind("png-iccp-garbage", "broken", "png-iccp-garbage.png",
     lambda: _PNG[:33] + _chunk(b"iCCP", b"sRGB\x00\x00" + b"not zlib at all" * 4) + _PNG[33:],
     cause="corrupt embedded ICC profile")
kind("tiff-header-garbage", "broken", "tiff-garbage.tif", lambda: b"II*\x00" + b"\xff" * 60,
     cause="truncated or corrupt image data (the TIFF holds no readable page)")
kind("webp-cut", "broken", "webp-cut.webp", lambda: _WEBP[: len(_WEBP) // 2], cause=CORRUPT)
kind("bmp-cut", "broken", "bmp-cut.bmp", lambda: _BMP[: len(_BMP) // 2], cause=CORRUPT)
kind("gif-named-png", "broken", "gif-named.png", lambda: _pil_bytes(_u8(B), "GIF"), cause="unsupported format GIF")

# hostile
kind("pixel-bomb", "hostile", "bomb.png", lambda: _pil_bytes(np.zeros((3000, 3000), np.uint8), "PNG"),
     cause="exceeds the limit of 4000000")
kind("png-header-claims-huge", "hostile", "huge-claim.png", lambda: _png_raw(100000, 100000, 1),
     cause="exceeds the limit")
kind("tiff-multi-page", "hostile", "multi-page.tif",
     lambda: _pil_bytes(_u8(B), "TIFF", save_all=True, append_images=[PILImage.fromarray(_u8(B[::-1]))] * 2),
     cause="multi-page TIFF with 3 pages: retouch restores one picture per file and would drop pages 2..3")
kind("webp-animated", "hostile", "animated.webp",
     lambda: _pil_bytes(_u8(B), "WEBP", save_all=True, append_images=[PILImage.fromarray(_u8(B[::-1]))],
                        lossless=True),
     cause="animated WebP with 2 frames: retouch restores one picture per file and would drop frame 2")
kind("png-animated", "hostile", "animated.png",
     lambda: _pil_bytes(_u8(B), "PNG", save_all=True, append_images=[PILImage.fromarray(_u8(B[::-1]))]),
     cause="animated PNG with 2 frames")
kind("orientation-out-of-range", "hostile", "orientation-9.jpg",
     lambda: _pil_bytes(_u8(B), "JPEG", exif=_exif_orientation(9)), cause="malformed EXIF Orientation tag (9)")
# two values where the tag has one: Pillow takes the first (with a warning), so it is applied
kind("orientation-two-values", "hostile", "orientation-pair.jpg",
     lambda: _pil_bytes(_u8(_oriented(B, 6)), "JPEG", quality=95, exif=_exif_orientation((6, 6))),
     truth=lambda: B, fmt="JPEG", lossy=True)
kind("orientation-zero-unknown", "hostile", "orientation-0.png",
     lambda: _pil_bytes(_u8(B), "PNG", exif=_exif_orientation(0)), truth=lambda: B, fmt="PNG")
kind("orientation-ascii", "hostile", "orientation-ascii.png",
     lambda: _pil_bytes(_u8(B), "PNG", exif=_exif_orientation("six", tagtype=2)),
     cause="malformed EXIF Orientation tag ('six')")
kind("tiff-float-hdr", "hostile", "hdr.tif", lambda: _tiff_bytes(B * 8.0, photometric="rgb"),
     cause="float TIFF samples span 0..8")
kind("tiff-float-nan", "hostile", "nan.tif",
     lambda: _tiff_bytes(np.where(B > 0.9, np.nan, B).astype(np.float32), photometric="rgb"), cause="NaN")
kind("tiff-int32", "hostile", "int32.tif", lambda: _tiff_bytes((B[:, :, 0] * 1e6).astype(np.int32)),
     cause="unsupported")
kind("tiff-five-samples", "hostile", "five-samples.tif",
     lambda: _tiff_bytes(_u16(np.concatenate([RGBA, A[:, :, None]], 2)), photometric="rgb",
                         extrasamples=["unassalpha", "unspecified"]), cause="5 samples per pixel")


def _fifo(folder: Path):
    os.mkfifo(folder / "fifo.png")


def _unreadable_file(folder: Path):
    (folder / "locked.png").write_bytes(_pil_bytes(_u8(B), "PNG"))
    os.chmod(folder / "locked.png", 0)


def _unreadable_folder(folder: Path):
    (folder / "locked-folder").mkdir()
    (folder / "locked-folder" / "inside.png").write_bytes(_pil_bytes(_u8(B), "PNG"))
    os.chmod(folder / "locked-folder", 0)


def _dangling(folder: Path):
    os.symlink("gone/away.png", folder / "dangling.png")


def _loop_folder(folder: Path):
    (folder / "loopy").mkdir()
    os.symlink("..", folder / "loopy" / "back-up")


def _self_loop(folder: Path):
    os.symlink("self-loop.png", folder / "self-loop.png")


def _explicit(target: str, name: str):
    def make(folder: Path):
        os.symlink(target, folder.parent / "explicit" / name)
    return make


KINDS += [
    Kind("unreadable-file", "hostile", _unreadable_file, file="locked.png", cause="Permission denied"),
    Kind("unreadable-sub-folder", "hostile", _unreadable_folder, file="locked-folder",
         cause="cannot read folder (Permission denied)"),
    Kind("dangling-symlink-in-folder", "hostile", _dangling, file="dangling.png", cause="dangling symbolic link"),
    Kind("symlink-loop-in-folder", "hostile", _loop_folder, file="loopy/back-up", cause="symbolic link loop"),
    Kind("symlink-self-loop-in-folder", "hostile", _self_loop, file="self-loop.png", cause="symbolic link loop"),
    Kind("explicit-symlink-loop", "hostile", _explicit("loop.png", "loop.png"), file="loop.png",
         cause="symbolic link loop", explicit=True),
    Kind("explicit-dangling-symlink", "hostile", _explicit("nowhere.png", "dangling.png"), file="dangling.png",
         cause="dangling symbolic link", explicit=True),
    Kind("fifo-in-folder", "hostile", _fifo, file="fifo.png", cause="not a regular file (a FIFO)"),
    Kind("explicit-fifo", "hostile", lambda folder: os.mkfifo(folder.parent / "explicit" / "pipe.jpg"),
         file="pipe.jpg", cause="not a regular file (a FIFO)", explicit=True),
    Kind("explicit-missing-path", "hostile", lambda folder: None, file="missing.png",
         cause="no such file or folder", explicit=True),
    Kind("explicit-gif-unsupported", "broken",
         lambda folder: (folder.parent / "explicit" / "anim.gif").write_bytes(_pil_bytes(_u8(B), "GIF")),
         file="anim.gif", cause="unsupported format GIF; supported: JPEG, PNG, TIFF, WEBP, BMP", explicit=True),
]


# --- one run over the corpus ---------------------------------------------------

def _can_lock() -> bool:
    """Whether unreadable paths are unreadable to the run: not as root unless
    capsh can drop root's override of file permissions."""
    return os.geteuid() != 0 or shutil.which("capsh") is not None


def _active() -> list[Kind]:
    """The kinds this machine can make: as root without capsh, a locked path
    is not locked, so those kinds are left out (and skipped)."""
    return [k for k in KINDS if _can_lock() or not k.name.startswith("unreadable")]


def _digest(folder: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):   # links not followed; root reads locked paths
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    folder, out = base / "archive", base / "out"
    folder.mkdir()
    (base / "explicit").mkdir()
    for k in _active():
        k.make(folder)
    before = _digest(folder)
    explicit = [str(base / "explicit" / k.file) for k in KINDS if k.explicit]
    cmd = [sys.executable, "-m", "orchestration.cli", "run", str(folder), *explicit, "--out", str(out),
           "--ops", "upscale", "--upscale", "lanczos", "--scale", "1", "--max-pixels", "4000000"]
    if os.geteuid() == 0 and shutil.which("capsh"):
        cmd = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", shlex.join(cmd)]
    # stderr is a pipe, not a terminal: no progress bar may be drawn into it
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    after = _digest(folder)
    for p in (folder / "locked.png", folder / "locked-folder"):
        if p.exists():
            os.chmod(p, 0o755)   # so that pytest can clean up
    failed = [line.strip()[len("FAILED "):] for line in proc.stdout.splitlines()
              if line.strip().startswith("FAILED ")]
    return {"folder": folder, "out": out, "base": base, "proc": proc, "failed": failed,
            "before": before, "after": after}


def _result(corpus, k: Kind) -> tuple[str, str]:
    """("failed", its line) or ("ok", output path) or ("missing", "")."""
    where = corpus["base"] / "explicit" / k.file if k.explicit else corpus["folder"] / k.file
    lines = [line for line in corpus["failed"] if line.startswith(f"{where}: ")]
    if lines:
        return "failed", lines[0]
    if not k.explicit and (corpus["out"] / k.file).exists():
        return "ok", str(corpus["out"] / k.file)
    return "missing", ""


def _read_output(path: Path) -> tuple[np.ndarray, int, str, bytes | None, int, bytes]:
    """(float HxWxC, depth, format, ICC, orientation tag, bytes), read with
    libraries independent of worker.io's choices where possible."""
    data = path.read_bytes()
    if data[:4] in (b"II*\x00", b"MM\x00*"):   # Pillow cannot open float RGB TIFF
        fmt = "TIFF"
    else:
        pil = PILImage.open(BytesIO(data))
        fmt = pil.format
    if fmt == "TIFF":
        with tifffile.TiffFile(BytesIO(data)) as tif:
            page = tif.pages.first
            arr = page.asarray()
            icc = page.tags[34675].value if 34675 in page.tags else None
            orientation = page.tags[274].value if 274 in page.tags else 1
        assert len(tif.pages) == 1
    elif fmt == "PNG":
        arr, icc, orientation = imagecodecs.png_decode(data), pil.info.get("icc_profile"), pil.getexif().get(274, 1)
    else:
        pil.load()
        mode = pil.mode if pil.mode in ("L", "LA", "RGB", "RGBA") else "RGB"
        arr, icc, orientation = np.asarray(pil.convert(mode)), pil.info.get("icc_profile"), pil.getexif().get(274, 1)
    depth = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.float32): 32}[arr.dtype]
    scale = {8: 255.0, 16: 65535.0, 32: 1.0}[depth]
    arr = arr.astype(np.float32) / scale
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, depth, fmt, bytes(icc) if icc else None, int(orientation), data


@pytest.mark.parametrize("k", KINDS, ids=[k.name for k in KINDS])
def test_kind(corpus, k: Kind):
    if k.cls == "hostile" and k.name.startswith("unreadable") and not _can_lock():
        pytest.skip("running as root without capsh: permissions cannot lock root out")
    status, detail = _result(corpus, k)
    if k.cause is not None:
        assert status == "failed", f"{k.name}: expected a failure naming {k.file} ({k.cause}), got {status}"
        assert k.cause in detail and "\n" not in detail, detail
        return
    assert status == "ok", f"{k.name}: {status} {detail}"
    out, depth, fmt, icc, orientation, data = _read_output(Path(detail))
    truth = k.truth()
    assert fmt == k.fmt and depth == k.depth and orientation == 1
    assert out.shape == truth.shape, (out.shape, truth.shape)   # orientation applied; alpha, grey kept
    err = np.abs(out - truth)
    if k.lossy:
        assert err[..., :3].mean() < 0.03, err.mean()
    else:
        assert err.max() <= 0.5 / {8: 255, 16: 65535, 32: 1 << 24}[k.depth] + 1e-7, err.max()
    if k.icc:
        source = PILImage.open(corpus["folder"] / k.file).info.get("icc_profile")
        assert icc == source and icc
    if k.lossless_webp:
        assert b"VP8L" in data[12:64]
    sidecar = json.loads((Path(detail).parent / f"{Path(detail).name}.json").read_text())
    assert sidecar["input"]["sha256"] == hashlib.sha256((corpus["folder"] / k.file).read_bytes()).hexdigest()


def test_no_traceback_and_a_summary(corpus):
    proc = corpus["proc"]
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "unexpected failure" not in text, text[-3000:]
    fails = sum(k.cause is not None for k in _active())
    oks = sum(k.cause is None for k in _active())
    assert f"retouch: {oks} restored, 0 skipped (up to date), {fails} failed" in proc.stdout, proc.stdout[-2000:]
    assert proc.returncode == 1
    assert len(corpus["failed"]) == fails


def test_inputs_byte_identical(corpus):
    assert corpus["after"] == corpus["before"]


def test_log_lines_whole_without_a_terminal(corpus):
    """stderr is a pipe: no progress bar, every line a whole JSON record or a
    one-line `retouch run:` failure."""
    lines = corpus["proc"].stderr.splitlines()
    assert lines and "\r" not in corpus["proc"].stderr and "img/s" not in corpus["proc"].stderr
    for line in lines:
        if not line.startswith("retouch run: "):
            assert isinstance(json.loads(line), dict), line


def test_mpo_further_pictures_are_logged(corpus):
    lines = [json.loads(line) for line in corpus["proc"].stderr.splitlines() if line.startswith("{")]
    assert any("jpeg-mpo.jpg: a multi-picture JPEG (MPO) with 2 pictures" in r["msg"] for r in lines)


def test_table(corpus):
    """The table for the report: kind, class, result."""
    rows, tally = [], {}
    for k in _active():
        status, detail = _result(corpus, k)
        clear = status == "failed" and k.cause is not None and k.cause in detail
        kept = status == "ok" and k.cause is None
        result = "fails clearly" if clear else "processed, kept" if kept else f"UNEXPECTED {status}"
        rows.append((k.name, k.cls, result))
        tally.setdefault(k.cls, {}).setdefault(result, 0)
        tally[k.cls][result] += 1
    width = max(len(r[0]) for r in rows)
    print()
    for name, cls, result in rows:
        print(f"{name:<{width}}  {cls:<8}  {result}")
    print(json.dumps(tally, indent=1))
    assert len(KINDS) >= 60 and all(not r[2].startswith("UNEXPECTED") for r in rows)


# --- the rest of the input half of issue 12 ------------------------------------

def test_long_names_have_short_temporary_names(tmp_path):
    """A 255-byte name (the limit) is written through a short temporary name."""
    name = "x" * 251 + ".png"
    atomic_write(tmp_path / name, b"data")
    write_image(Image(rgb=B), tmp_path / ("y" * 251 + ".png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, "y" * 251 + ".png"]


def test_long_name_with_maps_and_sidecar(tmp_path, capsys):
    """250-byte name: sidecar and maps would pass 255 bytes; they are shortened, not an abort."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / LONG_NAME).write_bytes(_pil_bytes(_u8(B), "PNG"))
    (folder / "after.png").write_bytes(_pil_bytes(_u8(B), "PNG"))
    assert main(["run", str(folder), "--out", str(tmp_path / "out"), "--ops", "upscale", "--upscale", "lanczos",
                 "--scale", "1", "--no-progress"]) == 0
    assert "2 restored" in capsys.readouterr().out
    names = [p.name for p in (tmp_path / "out").iterdir()]
    assert LONG_NAME in names and all(len(n.encode()) <= 255 for n in names)
    assert any(n.endswith(".json") and n.startswith("n" * 200) for n in names)


def test_same_stem_keeps_its_own_maps(tmp_path, overlaid):
    """x.png and x.jpg in one folder, both with text: each keeps its own mask
    and confidence map, the same bytes as when each runs alone."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.png").write_bytes(_pil_bytes(_u8(overlaid["coffee"][1]), "PNG"))
    (folder / "x.jpg").write_bytes(_pil_bytes(_u8(overlaid["rocket"][1]), "JPEG", quality=95))
    assert main(["run", str(folder), "--out", str(tmp_path / "both"), "--save-masks", "--no-progress"]) == 0
    for name in ("x.png", "x.jpg"):
        assert main(["run", str(folder / name), "--out", str(tmp_path / name), "--save-masks",
                     "--no-progress"]) == 0
        for tail in (".mask.png", ".confidence.png"):
            together = (tmp_path / "both" / f"{name}{tail}").read_bytes()
            assert together == (tmp_path / name / f"{name}{tail}").read_bytes()
    assert (tmp_path / "both" / "x.png.mask.png").read_bytes() != (tmp_path / "both" / "x.jpg.mask.png").read_bytes()
    assert not (tmp_path / "both" / "x.mask.png").exists()
    for name, photo_name in (("x.png", "coffee"), ("x.jpg", "rocket")):   # each mask is its own text's
        mask = np.asarray(PILImage.open(tmp_path / "both" / f"{name}.mask.png")) > 32767
        truth = overlaid[photo_name][2] > 0.5
        assert (mask & truth).sum() > 0.5 * truth.sum(), name


def test_format_collision_fails_the_second_alone(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.bmp").write_bytes(_pil_bytes(_u8(B), "BMP"))
    (folder / "x.tif").write_bytes(_pil_bytes(_u8(B[::-1]), "TIFF"))
    code = main(["run", str(folder), "--out", str(tmp_path / "out"), "--format", "png", "--ops", "upscale",
                 "--upscale", "lanczos", "--scale", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "1 restored, 0 skipped (up to date), 1 failed" in out
    assert f"FAILED {folder / 'x.tif'}: its output {tmp_path / 'out' / 'x.png'} is also the output of" in out
    restored = np.asarray(PILImage.open(tmp_path / "out" / "x.png"))
    assert np.array_equal(restored, _u8(B))   # the first is not overwritten


def _run_cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "orchestration.cli", "run", *args], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=300)


def test_missing_model_provisioned_on_first_use(tmp_path):
    """A learned upscaler before `make models`: the shipped Real-ESRGAN weights
    are converted into the empty store, and the image is upscaled."""
    (tmp_path / "a.png").write_bytes(_pil_bytes(_u8(_base(16, 16)), "PNG"))
    proc = _run_cli([str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--ops", "upscale", "--scale", "2",
                     "--upscale", "realesr-animevideov3", "--no-progress"],
                    env={"RETOUCH_MODEL_DIR": str(tmp_path / "store")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert PILImage.open(tmp_path / "out" / "a.png").size == (32, 32)
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert "realesr-animevideov3" in json.dumps(manifest)


def test_missing_model_that_cannot_be_provisioned_is_one_line(tmp_path):
    (tmp_path / "a.png").write_bytes(_pil_bytes(_u8(_base(16, 16)), "PNG"))
    (tmp_path / "store").write_text("a file where the store should be\n")
    proc = _run_cli([str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--ops", "upscale", "--scale", "2",
                     "--upscale", "realesr-animevideov3", "--no-progress"],
                    env={"RETOUCH_MODEL_DIR": str(tmp_path / "store")})
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    line = next(line for line in (proc.stdout + proc.stderr).splitlines() if "realesr-animevideov3" in line
                and "store" in line)
    assert "model" in line


def test_oriented_helper_matches_pillow():
    """The corpus stores pixels so that Pillow's exif_transpose makes them upright."""
    for o in range(1, 9):
        pil = PILImage.fromarray(_u8(_oriented(B, o)))
        exif = pil.getexif()
        exif[0x0112] = o
        buf = BytesIO()
        pil.save(buf, "PNG", exif=exif.tobytes())
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(PILImage.open(buf))), _u8(B)), o


def test_mutated_files_raise_one_line_image_errors_only():
    """Hostile bytes: 60 random mutations (bytes changed, tails cut) of each
    format. Whatever decodes is fine; whatever does not must be one
    ImageError line naming the file, never another exception."""
    rgba = _u8(RGBA)
    seeds = {"jpg": _pil_bytes(rgba[:, :, :3], "JPEG"), "png": _pil_bytes(rgba, "PNG"),
             "tif": _pil_bytes(rgba, "TIFF"), "webp": _pil_bytes(rgba, "WEBP", lossless=True),
             "bmp": _pil_bytes(rgba, "BMP"), "png16": imagecodecs.png_encode(_u16(RGBA)),
             "tif16": _tiff_bytes(_u16(RGBA), photometric="rgb", compression="lzw"),
             "tif32": _tiff_bytes(B, photometric="rgb")}
    rng = np.random.default_rng(12)
    refused = 0
    for ext, data in seeds.items():
        for _ in range(60):
            x = bytearray(data)
            for _ in range(int(rng.integers(1, 6))):
                x[int(rng.integers(0, len(x)))] = int(rng.integers(0, 256))
            if rng.random() < 0.2:
                x = x[: int(rng.integers(1, len(x)))]
            try:
                decode(bytes(x), f"archive/f.{ext}", max_pixels=10_000_000)
            except ImageError as err:
                refused += 1
                assert str(err).startswith(f"archive/f.{ext}: ") and "\n" not in str(err)
    assert refused > 100   # the mutations do reach the error paths
