"""Image validation and normalisation: real files made with Pillow, real bytes on disk."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mmdemo.data.images import (
    ImageLimits,
    ImageRejected,
    image_path,
    ingest_image_bytes,
    load_rgb,
    thumb_path,
    train_path,
)
from tests.conftest import make_image_bytes


# -- file makers (also used by test_importers) -----------------------------------------------
def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def halves(size=(64, 32), left=(220, 20, 20), right=(20, 20, 220), mode="RGB") -> Image.Image:
    """An image whose left half is one colour and right half another."""
    img = Image.new(mode, size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width``×``height`` pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data))
        return struct.pack(">I", len(data)) + tag + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def photo_jpeg(size=(1600, 1200), seed=0) -> bytes:
    """A photo-sized JPEG with smooth content (what cameras and phones produce)."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB")
    return encode(field.resize(size, Image.Resampling.BICUBIC), "JPEG", quality=90)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def png_16bit() -> bytes:
    array = np.zeros((32, 48), dtype=np.uint16)
    array[:, 16:32] = 32768
    array[:, 32:] = 65535
    return encode(Image.fromarray(array), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95)


def palette_png_with_transparency() -> bytes:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0, 0, 0] * 254)
    img.paste(1, (16, 0, 32, 32))
    return encode(img, "PNG", transparency=0)


def rgba_png() -> bytes:
    img = Image.new("RGBA", (48, 16), (255, 0, 0, 0))  # right third: red but fully transparent
    img.paste((255, 0, 0, 255), (0, 0, 16, 16))
    img.paste((0, 0, 255, 128), (16, 0, 32, 16))
    return encode(img, "PNG")


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """Wide pixels (red left, blue right) that a camera says to show rotated."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(halves((64, 32)), "JPEG", quality=95, exif=exif.tobytes())


def corrupt_png() -> bytes:
    data = bytearray(make_image_bytes(size=(64, 64)))
    at = data.index(b"IDAT") + 8
    data[at : at + 16] = b"\xff" * 16
    return bytes(data)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


# -- helpers ---------------------------------------------------------------------------------
def ingest(data: bytes, tmp_path, **limits):
    return ingest_image_bytes(data, tmp_path / "images", ImageLimits(**limits))


def stored_rgb(tmp_path, stored) -> np.ndarray:
    path = image_path(tmp_path / "images", stored.sha256, stored.ext)
    with Image.open(path) as img:
        assert img.mode == "RGB"
        return np.asarray(img.convert("RGB"), dtype=np.int16)


# -- what is stored as it is -----------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_rgb_image_is_stored_byte_for_byte_with_copies(tmp_path, fmt):
    data = make_image_bytes(size=(400, 300), fmt=fmt)
    stored = ingest(data, tmp_path)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.converted is None and (stored.width, stored.height) == (400, 300)
    assert image_path(tmp_path / "images", stored.sha256, stored.ext).read_bytes() == data
    with Image.open(train_path(tmp_path / "images", stored.sha256)) as train:
        assert min(train.size) == 224
    with Image.open(thumb_path(tmp_path / "images", stored.sha256)) as thumb:
        assert max(thumb.size) == 160


def test_small_image_is_not_upscaled(tmp_path):
    stored = ingest(make_image_bytes(size=(64, 48)), tmp_path)
    assert load_rgb(train_path(tmp_path / "images", stored.sha256)).size == (64, 48)


def test_ingesting_again_is_idempotent_and_rewrites_nothing(tmp_path):
    data = photo_jpeg((800, 600))
    first = ingest(data, tmp_path)
    files = sorted((tmp_path / "images").rglob("*"))
    mtimes = [p.stat().st_mtime_ns for p in files]
    assert ingest(data, tmp_path) == first
    assert sorted((tmp_path / "images").rglob("*")) == files
    assert [p.stat().st_mtime_ns for p in files] == mtimes


def test_reduced_scale_decode_gives_the_same_training_copy(tmp_path):
    data = photo_jpeg((1600, 1200))
    stored = ingest(data, tmp_path)
    assert (stored.width, stored.height) == (1600, 1200)
    copy = np.asarray(load_rgb(train_path(tmp_path / "images", stored.sha256)), dtype=np.int16)
    with Image.open(io.BytesIO(data)) as img:
        full = img.convert("RGB").resize((299, 224), Image.Resampling.BICUBIC)
    assert copy.shape == (224, 299, 3)
    assert np.abs(copy - np.asarray(full, dtype=np.int16)).mean() < 3.0


def test_truncated_photo_is_rejected_even_on_the_reduced_scale_path(tmp_path):
    with pytest.raises(ImageRejected, match="truncated"):
        ingest(truncated(photo_jpeg((1600, 1200))), tmp_path)
    assert not list((tmp_path / "images").rglob("*.*"))


# -- what is refused -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"just some text, not pixels" * 10, "not an image"),
        (corrupt_png(), "corrupt"),
        (truncated(make_image_bytes(size=(256, 256))), "truncated"),
        (truncated(photo_jpeg((320, 240))), "truncated"),
        (png_claiming(100_000, 100_000), "decompression bomb"),
        (png_claiming(9_000, 9_000), "over the cap"),
        (make_image_bytes(size=(8, 40)), "too small"),
    ],
    ids=["zero-byte", "text", "corrupt", "truncated-png", "truncated-jpeg", "bomb", "cap", "small"],
)
def test_unusable_bytes_are_refused_with_a_reason(tmp_path, data, reason):
    with pytest.raises(ImageRejected, match=reason):
        ingest(data, tmp_path)
    assert not list((tmp_path / "images").rglob("*.*"))


def test_lowered_pixel_cap_refuses_a_real_image(tmp_path):
    with pytest.raises(ImageRejected, match="over the cap of 10,000"):
        ingest(make_image_bytes(size=(200, 100)), tmp_path, max_pixels=10_000)


# -- what is converted ---------------------------------------------------------------------------
def test_animated_gif_keeps_the_first_frame(tmp_path):
    stored = ingest(animated_gif(), tmp_path)
    assert "first frame" in stored.converted
    assert np.abs(stored_rgb(tmp_path, stored)[16, 16] - (255, 0, 0)).max() <= 2


def test_16bit_png_is_scaled_to_8bit(tmp_path):
    stored = ingest(png_16bit(), tmp_path)
    assert "16-bit" in stored.converted and stored.ext == "png"
    pixels = stored_rgb(tmp_path, stored)
    assert pixels[5, 5].tolist() == [0, 0, 0]
    assert pixels[5, 20].tolist() == [128, 128, 128]
    assert pixels[5, 40].tolist() == [255, 255, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    stored = ingest(cmyk_jpeg(), tmp_path)
    assert "CMYK" in stored.converted and stored.ext == "jpg"
    assert np.abs(stored_rgb(tmp_path, stored)[15, 20] - (255, 0, 0)).max() <= 8


def test_palette_png_transparency_is_composited_on_white(tmp_path):
    stored = ingest(palette_png_with_transparency(), tmp_path)
    pixels = stored_rgb(tmp_path, stored)
    assert pixels[10, 5].tolist() == [255, 255, 255]
    assert pixels[10, 25].tolist() == [0, 200, 0]


def test_rgb_png_with_a_transparent_colour_is_composited_on_white(tmp_path):
    data = encode(halves((32, 32), (0, 0, 0), (10, 200, 10)), "PNG", transparency=(0, 0, 0))
    stored = ingest(data, tmp_path)
    assert stored.sha256 != hashlib.sha256(data).hexdigest()  # not stored as it is
    pixels = stored_rgb(tmp_path, stored)
    assert pixels[5, 5].tolist() == [255, 255, 255]
    assert pixels[5, 20].tolist() == [10, 200, 10]


def test_rgba_is_composited_on_white(tmp_path):
    stored = ingest(rgba_png(), tmp_path)
    assert "alpha" in stored.converted
    pixels = stored_rgb(tmp_path, stored)
    assert pixels[8, 8].tolist() == [255, 0, 0]  # opaque red stays red
    assert np.abs(pixels[8, 24] - (127, 127, 255)).max() <= 1  # half-transparent blue
    assert pixels[8, 40].tolist() == [255, 255, 255]  # transparent: white, not hidden red


def test_exif_orientation_6_is_stored_upright(tmp_path):
    stored = ingest(exif_rotated_jpeg(6), tmp_path)
    assert "orientation 6" in stored.converted
    assert (stored.width, stored.height) == (32, 64)
    pixels = stored_rgb(tmp_path, stored)
    assert pixels.shape == (64, 32, 3)
    assert pixels[8, 16, 0] > 180 and pixels[8, 16, 2] < 80  # top: red (was the left)
    assert pixels[56, 16, 2] > 180 and pixels[56, 16, 0] < 80  # bottom: blue
    with Image.open(image_path(tmp_path / "images", stored.sha256, stored.ext)) as img:
        assert img.getexif().get(0x0112, 1) == 1  # nothing left to rotate it twice


def test_grayscale_jpeg_becomes_rgb(tmp_path):
    stored = ingest(make_image_bytes(size=(40, 40), fmt="JPEG", mode="L"), tmp_path)
    assert stored.converted and stored_rgb(tmp_path, stored).shape == (40, 40, 3)
