"""Any image input -> a clean, upright RGB PIL image, or an InvalidImage that says why not.

Decisions (see README, "What images are accepted"):
- Caption: JPEG/MPO, PNG, GIF, WebP, BMP, TIFF, in any mode; EXIF orientation applied;
  transparency composited on white; 16-bit and float images rescaled to their range; CMYK
  converted; animated and multi-page files use their first frame; 1x1 and extreme aspect ratios
  are captioned (the model sees them stretched to a square, as the model card's code does).
- Refuse: empty files, files over `max_file_bytes`, anything that is not one of those formats
  (HTML, SVG, EPS, PDF, text...), truncated or corrupt data, more than `max_pixels` pixels
  (decompression bombs).
- Huge but valid photos (over `reduce_above_pixels`) are decoded at reduced size (JPEG draft
  mode) and shrunk early, so they cost little memory.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImage

log = logging.getLogger("captioner.images")
CORRUPT = "the image data is truncated or corrupt"

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

# Formats are sniffed from magic bytes; EPS (Ghostscript) and PDF are never opened.
# JPEG covers MPO (phone photos): Pillow's JPEG opener returns those as MPO.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".mpo"}
)


@dataclass(frozen=True)
class ImageLimits:
    max_file_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000  # refused above this: 150 MB of RGB, a decompression bomb
    reduce_above_pixels: int = 16_000_000  # decoded small and shrunk above this
    reduced_max_side: int = 2048

    def with_caps(self, max_file_mb: int, max_megapixels: int) -> ImageLimits:
        """These limits with an operator's --max-file-mb and --max-megapixels (the app and the CLI)."""
        return dataclasses.replace(self, max_file_bytes=max_file_mb * 1024 * 1024, max_pixels=max_megapixels * 1_000_000)


DEFAULT_LIMITS = ImageLimits()


def image_cell(value, folder: Path) -> str | bytes:
    """What load_image reads for a dataset's image cell (Hugging Face layout): a `{bytes, path}`
    struct, raw bytes, or a path, relative paths resolved against `folder` (the Parquet file's)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, bytes):
        return value
    if not value:
        return b""  # load_image: "the file is empty"
    path = Path(value)
    return str(path if path.is_absolute() else folder / path)


def load_image(source: ImageInput, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode and normalise one image.

    >>> load_image(Image.new("RGBA", (4, 4))).mode
    'RGB'
    """
    if isinstance(source, Image.Image):
        _check_pixels(source.size, limits)
        return normalise(source, limits)
    if isinstance(source, np.ndarray):
        return normalise(_array_to_image(source), limits)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        _check_byte_count(len(data), limits)
        return _decode(io.BytesIO(data), data[:512], limits)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except (OSError, ValueError):  # ValueError: a NUL in the name
            raise InvalidImage(f"{path.name}: file not found") from None
        if not path.is_file():
            raise InvalidImage(f"{path.name}: not a file")
        _check_byte_count(size, limits)
        try:
            with path.open("rb") as handle:
                head = handle.read(512)
                handle.seek(0)
                return _decode(handle, head, limits)
        except OSError as error:  # no permission to read it, or the disk failed under it
            raise InvalidImage(f"{path.name}: cannot be read ({error.strerror or 'read error'})") from None
    raise InvalidImage(f"expected an image file, bytes, PIL image or array; got {type(source).__name__}")


def normalise(image: Image.Image, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """First frame, upright, shrunk if huge, RGB with transparency on white."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    is_huge = image.size[0] * image.size[1] > limits.reduce_above_pixels
    if is_huge:
        _draft_smaller(image, limits)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise _corrupt(error) from None
    if is_huge:
        image.thumbnail((limits.reduced_max_side, limits.reduced_max_side), Image.Resampling.BILINEAR)
    return _to_rgb(image)


def _decode(stream, head: bytes, limits: ImageLimits) -> Image.Image:
    kind = _sniff_non_image(head)
    if kind:
        raise InvalidImage(f"this is {kind}, not a photo; upload a JPEG, PNG, WebP, GIF, BMP or TIFF image")
    try:
        with warnings.catch_warnings():
            # Our own pixel cap below is stricter; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise InvalidImage(_too_many_pixels_message(None, limits)) from None
    except UnidentifiedImageError:
        raise InvalidImage(
            "not a supported image; upload a JPEG, PNG, WebP, GIF, BMP or TIFF image"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise _corrupt(error) from None
    _check_pixels(image.size, limits)
    return normalise(image, limits)


def _corrupt(error: Exception) -> InvalidImage:
    """Pillow's own words are for the server's log; the person sending the image gets a sentence."""
    log.info("image refused as corrupt: %s: %s", type(error).__name__, error)
    return InvalidImage(CORRUPT)


def _sniff_non_image(head: bytes) -> str | None:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not text:
        return "an empty file"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "an SVG drawing"
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        return "an HTML or XML document"
    if text.startswith(b"%pdf"):
        return "a PDF document"
    if text.startswith(b"%!ps"):
        return "a PostScript/EPS file"
    return None


def _check_byte_count(size: int, limits: ImageLimits) -> None:
    if size == 0:
        raise InvalidImage("the file is empty")
    if size > limits.max_file_bytes:
        raise InvalidImage(
            f"the file is {size / 1e6:.1f} MB; the limit is {limits.max_file_bytes / 1e6:.0f} MB"
        )


def _check_pixels(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImage(f"the image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise InvalidImage(_too_many_pixels_message(size, limits))


def _too_many_pixels_message(size: tuple[int, int] | None, limits: ImageLimits) -> str:
    dims = f" ({size[0]}x{size[1]})" if size else ""
    return (
        f"the image is too large{dims}: at most {limits.max_pixels / 1e6:.0f} megapixels are "
        "accepted"
    )


def _draft_smaller(image: Image.Image, limits: ImageLimits) -> None:
    """Before decoding, ask JPEG for a DCT-scaled draft: a 48 MP photo decodes at 1/2 to 1/8 size."""
    if image.format not in ("JPEG", "MPO"):
        return
    width, height = image.size
    scale = limits.reduced_max_side / max(width, height)
    image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _rescale_to_8bit(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    elif mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        image = image.convert("RGB")
    elif mode == "RGB" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _rescale_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float images keep their contrast: scale by the format's range, not clip at 255."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        scaled = values / 257.0
    elif image.mode == "F" and values.size and 0.0 <= np.nanmin(values) and np.nanmax(values) <= 1.0:
        scaled = values * 255.0
    else:
        finite = values[np.isfinite(values)]
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 0.0
        if image.mode == "I" and low >= 0 and high <= 255:
            scaled = values
        elif image.mode == "I" and low >= 0 and high <= 65535:
            scaled = values / 257.0
        else:
            scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    return grey.convert("RGB")


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidImage(f"an image array must be HxW, HxWx3 or HxWx4; got shape {array.shape}")
    _check_pixels((array.shape[1], array.shape[0]), DEFAULT_LIMITS)
    if array.dtype == np.uint8:
        return Image.fromarray(array)
    if array.ndim == 2 and array.dtype == np.uint16:
        return Image.fromarray(array.astype(np.int32), mode="I")
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
        values = array.astype(np.float64)
        if array.ndim == 2:
            return Image.fromarray(values.astype(np.float32), mode="F")
        finite = values[np.isfinite(values)]
        high = float(finite.max()) if finite.size else 1.0
        scale = 255.0 if high <= 1.0 else (255.0 / 65535.0 if high > 255 else 1.0)
        values = np.nan_to_num(values * scale, nan=0.0, posinf=255.0, neginf=0.0)
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    raise InvalidImage(f"unsupported image array type {array.dtype}")
