"""Archive image I/O: orientation, ICC, alpha, 16-bit, formats, bad input."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from worker.io import ImageError, decode, encode, encode_map, decode_map


def _gradient(h=40, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x / w, y / h, (x + y) / (w + h)], axis=2).astype(np.float32)


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow(orientation):
    pixels = (np.random.default_rng(orientation).random((30, 50, 3)) * 255).astype(np.uint8)
    pil = PILImage.fromarray(pixels)
    exif = pil.getexif()
    exif[0x0112] = orientation
    buf = BytesIO()
    pil.save(buf, "PNG", exif=exif.tobytes())
    img = decode(buf.getvalue(), "rotated.png")
    expected = np.asarray(ImageOps.exif_transpose(PILImage.open(BytesIO(buf.getvalue()))).convert("RGB"))
    assert np.array_equal(np.rint(img.rgb * 255).astype(np.uint8), expected)
    # written back upright, with orientation reset to 1
    again = PILImage.open(BytesIO(encode(img)))
    assert again.getexif().get(0x0112, 1) == 1
    assert again.size == (expected.shape[1], expected.shape[0])


def test_jpeg_exif_rotation_and_icc_round_trip():
    icc = _srgb_icc()
    pil = PILImage.fromarray((_gradient() * 255).astype(np.uint8))
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = BytesIO()
    pil.save(buf, "JPEG", quality=95, exif=exif.tobytes(), icc_profile=icc)
    img = decode(buf.getvalue(), "scan.jpg")
    assert img.size == (40, 60) and img.format == "JPEG" and img.icc_profile == icc
    out = PILImage.open(BytesIO(encode(img, quality=90)))
    assert out.format == "JPEG" and out.info.get("icc_profile") == icc and out.size == (40, 60)


def test_rgba_alpha_kept():
    rgba = np.concatenate([_gradient(), np.linspace(0, 1, 60, dtype=np.float32)[None, :, None].repeat(40, 0)], 2)
    buf = BytesIO()
    PILImage.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(buf, "PNG")
    img = decode(buf.getvalue(), "logo.png")
    assert img.alpha is not None and img.alpha.shape == (40, 60)
    out = PILImage.open(BytesIO(encode(img)))
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[:, :, 3], (rgba[:, :, 3] * 255).round().astype(np.uint8))
    with pytest.raises(ImageError, match="alpha"):
        encode(img, "jpeg")


def test_16bit_rgb_png_keeps_depth_and_icc():
    import cv2

    icc = _srgb_icc()
    rgb16 = (_gradient() * 65535).round().astype(np.uint16)
    ok, buf = cv2.imencode(".png", rgb16[:, :, ::-1])
    from worker.io import _png_insert_chunks

    data = _png_insert_chunks(buf.tobytes(), icc, None)
    img = decode(data, "deep.png")
    assert img.bit_depth == 16 and img.icc_profile == icc
    assert np.array_equal(np.rint(img.rgb * 65535).astype(np.uint16), rgb16)
    out = encode(img)
    assert out[24] == 16  # IHDR bit depth
    back = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    assert back.dtype == np.uint16 and np.array_equal(back, rgb16)
    assert PILImage.open(BytesIO(out)).info.get("icc_profile") == icc


def test_16bit_grey_png_and_tiff():
    grey16 = (np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16)
    buf = BytesIO()
    PILImage.fromarray(grey16).save(buf, "PNG")
    img = decode(buf.getvalue(), "grey16.png")
    assert img.bit_depth == 16 and img.grey
    back = np.asarray(PILImage.open(BytesIO(encode(img))))
    assert back.dtype.itemsize == 2 or back.dtype == np.int32
    assert np.array_equal(back.astype(np.uint16), grey16)
    tif = encode(img.with_pixels(img.rgb), "tiff")
    import tifffile

    assert tifffile.imread(BytesIO(tif)).dtype == np.uint16


def test_16bit_rgb_tiff_round_trip():
    import tifffile

    rgb16 = (_gradient() * 65535).round().astype(np.uint16)
    buf = BytesIO()
    tifffile.imwrite(buf, rgb16, photometric="rgb")
    img = decode(buf.getvalue(), "deep.tif")
    assert img.bit_depth == 16 and img.format == "TIFF"
    assert np.array_equal(tifffile.imread(BytesIO(encode(img))), rgb16)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP", "BMP"])
def test_formats_decode_and_keep_format(fmt):
    buf = BytesIO()
    PILImage.fromarray((_gradient() * 255).astype(np.uint8)).save(buf, fmt)
    img = decode(buf.getvalue(), f"x.{fmt.lower()}")
    assert img.format == fmt
    assert PILImage.open(BytesIO(encode(img))).format == fmt


def _jpeg_bytes() -> bytes:
    buf = BytesIO()
    PILImage.fromarray((_gradient(200, 200) * 255).astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("data,cause", [
    (b"", "empty file"),
    (b"hello, I am a text file\n" * 10, "not a recognised image"),
    (_jpeg_bytes()[:600], "truncated or corrupt"),
])
def test_bad_inputs_raise_one_line_errors(data, cause):
    with pytest.raises(ImageError) as err:
        decode(data, "archive/bad.jpg")
    msg = str(err.value)
    assert msg.startswith("archive/bad.jpg: ") and cause in msg and "\n" not in msg


def test_pixel_bomb_refused_before_decoding():
    buf = BytesIO()
    PILImage.new("L", (5000, 5000)).save(buf, "PNG")
    with pytest.raises(ImageError, match="exceeds the limit of 1000000"):
        decode(buf.getvalue(), "bomb.png", max_pixels=1_000_000)


def test_float_tiff_kept_float_and_hdr_refused():
    import tifffile

    grey = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    buf = BytesIO()
    PILImage.fromarray(grey, "F").save(buf, "TIFF")
    img = decode(buf.getvalue(), "float.tif")
    assert img.bit_depth == 32 and img.grey and np.array_equal(img.rgb[:, :, 0], grey)
    back = tifffile.imread(BytesIO(encode(img)))
    assert back.dtype == np.float32 and np.array_equal(back, grey)
    buf = BytesIO()
    tifffile.imwrite(buf, np.full((10, 10, 3), 4.0, np.float32), photometric="rgb")
    with pytest.raises(ImageError, match=r"float TIFF samples span 4\.\.4: .*HDR"):
        decode(buf.getvalue(), "hdr.tif")


def test_maps_round_trip_at_16_bit():
    m = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    assert np.abs(decode_map(encode_map(m)) - m).max() < 1 / 65535
