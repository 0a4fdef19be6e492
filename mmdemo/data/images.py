"""Image validation, normalisation and the content-addressed image folder.

Every image enters the store through :func:`ingest_image_bytes`. It rejects what cannot be used
with a reason a person understands (:class:`ImageRejected`), normalises the rest (EXIF
orientation applied, RGB, first frame of an animation, 16-bit scaled to 8-bit, alpha composited on
white) and writes three files once, each atomically (temp file + rename):

- ``images/<sha[:2]>/<sha>.<ext>``: the normalised original, the identity of the image;
- ``images/<sha[:2]>/<sha>.train.jpg``: shorter side resized to the model input resolution,
  so training reads small files instead of decoding photos;
- ``images/<sha[:2]>/<sha>.thumb.jpg``: the gallery thumbnail.

The SHA-256 is of the normalised file's bytes. An image that needs no normalisation is stored
byte for byte, so importing an export gives back the same hashes.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats stored as they are when already RGB without an EXIF rotation.
_PASSTHROUGH_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
IMAGE_EXTENSIONS = frozenset(_PASSTHROUGH_FORMATS.values())
"""Every ``ext`` a stored original has (a normalised image is a jpg or a png)."""
_LOSSY_FORMATS = {"JPEG", "WEBP", "MPO"}


class ImageRejected(ValueError):
    """An input that cannot become an image in the store; ``str(exc)`` is the reason."""


@dataclass(frozen=True)
class ImageLimits:
    """The caps that protect the store from unusable or hostile images."""

    max_pixels: int = 64_000_000
    min_side: int = 16
    train_size: int = 224
    thumbnail_size: int = 160

    @classmethod
    def from_settings(cls, settings) -> ImageLimits:  # noqa: ANN001 - avoid import cycle
        return cls(
            max_pixels=settings.max_image_pixels,
            min_side=settings.min_image_side,
            train_size=settings.train_image_size,
            thumbnail_size=settings.thumbnail_size,
        )


@dataclass(frozen=True)
class StoredImage:
    """Metadata of an image in the folder; ``as_row()`` feeds :meth:`Store.add_pair`."""

    sha256: str
    width: int
    height: int
    ext: str
    bytes: int
    converted: str | None = None
    """What normalisation did, e.g. ``"CMYK→RGB"``; ``None`` when stored as is."""

    def as_row(self) -> dict:
        return {
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "ext": self.ext,
            "bytes": self.bytes,
        }


def image_path(images_dir: Path, sha256: str, ext: str) -> Path:
    """Where the normalised original of an image lives."""
    return Path(images_dir) / sha256[:2] / f"{sha256}.{ext}"


def train_path(images_dir: Path, sha256: str) -> Path:
    """Where the pre-resized training copy of an image lives."""
    return Path(images_dir) / sha256[:2] / f"{sha256}.train.jpg"


def thumb_path(images_dir: Path, sha256: str) -> Path:
    """Where the gallery thumbnail of an image lives."""
    return Path(images_dir) / sha256[:2] / f"{sha256}.thumb.jpg"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Convert any Pillow mode to 8-bit RGB; alpha is composited on white."""
    mode = img.mode
    if mode in ("P", "RGB", "L") and "transparency" in img.info:
        img, mode = img.convert("RGBA"), f"{mode}+transparency"
    if mode == "RGB":
        return img, None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        eight = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(eight, "L").convert("RGB"), f"{mode} 16-bit→RGB"
    if mode == "F":
        array = np.asarray(img, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        scaled = (array - lo) / (hi - lo or 1.0) * 255.0
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB"), "float→RGB"
    if mode == "P":
        return img.convert("RGB"), "palette→RGB"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or mode.endswith("+transparency"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), f"{mode} alpha→RGB on white"
    if mode == "CMYK":
        return img.convert("RGB"), "CMYK→RGB"
    return img.convert("RGB"), f"{mode}→RGB"


_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    NotImplementedError,
    struct.error,
)
"""What Pillow raises on damaged or hostile files (it is not limited to ``OSError``)."""


def open_image(data: bytes, limits: ImageLimits) -> tuple[Image.Image, str, list[str]]:
    """Open image bytes and check the caps from the header alone, without decoding pixels.

    Returns the lazily opened image, its format and notes about what was odd. Raises
    :class:`ImageRejected` with a person-readable reason.
    """
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            frames = getattr(img, "n_frames", 1)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"too many pixels (decompression bomb?): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("not an image, or an image format Pillow cannot read") from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected(f"unreadable image: {exc}") from exc
    if width * height > limits.max_pixels:
        raise ImageRejected(
            f"too many pixels: {width}×{height} is over the cap of {limits.max_pixels:,}"
            " (decompression bomb?)"
        )
    if min(width, height) < limits.min_side:
        raise ImageRejected(
            f"too small to use: {width}×{height}, the smaller side must be at least"
            f" {limits.min_side} px"
        )
    image_format = img.format or "UNKNOWN"
    if frames > 1:
        what = "multi-picture JPEG" if image_format == "MPO" else f"animated ({frames} frames)"
        notes.append(f"{what}: kept the first frame")
        img.seek(0)
    return img, image_format, notes


def _load(img: Image.Image) -> None:
    """Decode every byte of the pixel data; truncation or damage raises :class:`ImageRejected`."""
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"too many pixels (decompression bomb?): {exc}") from exc
    except _DECODE_ERRORS as exc:
        reason = "truncated or corrupt image" if "truncated" in str(exc) else "corrupt image"
        raise ImageRejected(f"{reason}: {exc}") from exc


def decode_image(data: bytes, limits: ImageLimits) -> tuple[Image.Image, str, list[str]]:
    """Open, validate and fully decode image bytes (see :func:`open_image`)."""
    img, image_format, notes = open_image(data, limits)
    _load(img)
    return img, image_format, notes


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except _DECODE_ERRORS:
        return 1  # unreadable EXIF: show the pixels as stored


def _is_passthrough(img: Image.Image, image_format: str, notes: list[str]) -> bool:
    """Stored byte for byte: RGB in a common format, upright, one frame."""
    return (
        image_format in _PASSTHROUGH_FORMATS
        and img.mode == "RGB"
        and not notes
        and _orientation(img) in (0, 1)
        and not (image_format == "PNG" and "transparency" in img.info)
    )


def normalise(data: bytes, limits: ImageLimits) -> tuple[bytes, Image.Image, str, str | None]:
    """Return ``(stored_bytes, rgb_image, ext, conversion_note)`` for raw image bytes."""
    img, image_format, notes = decode_image(data, limits)
    if _is_passthrough(img, image_format, notes):
        return data, img, _PASSTHROUGH_FORMATS[image_format], None
    return _normalised(img, image_format, notes)


def _normalised(
    img: Image.Image, image_format: str, notes: list[str]
) -> tuple[bytes, Image.Image, str, str]:
    """Fully decode, orient and convert an image that cannot be stored as it is."""
    _load(img)
    orientation = _orientation(img)
    try:
        if orientation not in (0, 1):
            img = ImageOps.exif_transpose(img)
            notes.append(f"EXIF orientation {orientation} applied")
        rgb, conversion = _to_rgb(img)
    except _DECODE_ERRORS as exc:
        raise ImageRejected(f"corrupt image: {exc}") from exc
    if conversion:
        notes.append(conversion)
    buffer = io.BytesIO()
    if image_format in _LOSSY_FORMATS:
        rgb.save(buffer, format="JPEG", quality=95)
        ext = "jpg"
    else:
        rgb.save(buffer, format="PNG")
        ext = "png"
    if not notes:
        notes.append(f"{image_format}→{ext.upper()}")
    return buffer.getvalue(), rgb, ext, "; ".join(notes)


def _draft_for_copies(img: Image.Image, limits: ImageLimits) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the copies need no more pixels.

    Every byte of the file is still entropy-decoded, so truncation is still detected; only the
    inverse DCT runs at the smaller size. Used only for JPEGs stored byte for byte.
    """
    width, height = img.size
    scale = max(limits.train_size / min(width, height), limits.thumbnail_size / max(width, height))
    if scale < 0.5:
        img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))


def _resized(img: Image.Image, shorter_side: int | None, longer_side: int | None) -> Image.Image:
    width, height = img.size
    if shorter_side is not None:
        scale = shorter_side / min(width, height)
    else:
        scale = longer_side / max(width, height)
    if scale >= 1.0:
        return img
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _jpeg_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def ingest_image_bytes(data: bytes, images_dir: Path, limits: ImageLimits) -> StoredImage:
    """Validate, normalise and store image bytes (idempotent: same content, same files).

    Fast paths, without weakening validation: bytes already in the folder (same hash, so
    already validated) are not decoded again; a JPEG stored as it is decodes at reduced scale.
    Raises :class:`ImageRejected` with a reason when the bytes cannot be used.
    """
    img, image_format, notes = open_image(data, limits)
    width, height = img.size
    if image_format != "JPEG":
        _load(img)  # only JPEG profits from a reduced-scale decode (and PNG EXIF needs a load)
    if _is_passthrough(img, image_format, notes):
        stored, ext, note = data, _PASSTHROUGH_FORMATS[image_format], None
        sha = hashlib.sha256(stored).hexdigest()
        original = image_path(images_dir, sha, ext)
        if original.exists():  # written last, so all three files are complete
            return StoredImage(sha, width, height, ext, len(stored), None)
        if image_format == "JPEG":
            _draft_for_copies(img, limits)
            _load(img)
        rgb = img
    else:
        stored, rgb, ext, note = _normalised(img, image_format, notes)
        width, height = rgb.size
        sha = hashlib.sha256(stored).hexdigest()
        original = image_path(images_dir, sha, ext)
    train = train_path(images_dir, sha)
    thumb = thumb_path(images_dir, sha)
    train_img = _resized(rgb, limits.train_size, None)
    if not train.exists():
        _atomic_write(train, _jpeg_bytes(train_img))
    if not thumb.exists():
        source = train_img if max(train_img.size) >= limits.thumbnail_size else rgb
        _atomic_write(thumb, _jpeg_bytes(_resized(source, None, limits.thumbnail_size)))
    # The original goes last: its presence means all three files are complete.
    if not original.exists():
        _atomic_write(original, stored)
    return StoredImage(sha, width, height, ext, len(stored), note)


def load_rgb(path: Path | str) -> Image.Image:
    """Open a stored image as a fully loaded RGB PIL image."""
    with Image.open(path) as img:
        return img.convert("RGB")
