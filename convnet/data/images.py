"""Reading one image file with Pillow into (C, H, W) uint8, converting where it is safe.

Safe conversions, each reported in a note: gray <-> RGB, dropping an alpha channel, palette and
CMYK/YCbCr to RGB, 16-bit to 8-bit, EXIF rotation, the first frame of an animation, and
resizing. Anything Pillow cannot decode raises DataError naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy
from PIL import Image, ImageOps, UnidentifiedImageError

from convnet.data.convert import check_channels, convert_images
from convnet.data.errors import DataError

# Modes whose values average meaningfully (not palette indices, not 16-bit gray): reducible.
REDUCIBLE_MODES = ("L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".pgm")


def large_picture_bound(input_hw) -> tuple[int, int]:
    """The `reduce_to` for a file given to a model of input (H, W) on the command line: only a
    picture over 4 x 256 = 1,024 pixels along both sides (more for larger inputs) is
    block-averaged while it is read, so an ordinary picture is resized exactly as before and a
    144-megapixel one no longer takes gigabytes (2.2 GB and 10 s for a 12000x12000 PNG into
    LeNet-5; 0.19 GB and 1.2 s reduced)."""
    return tuple(max(int(v), 256) for v in input_hw)


def check_input_shape(input_shape) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in input_shape)
        ok = c in (1, 3) and h > 0 and w > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"input_shape must be (channels, height, width) with 1 or 3 channels, "
                        f"e.g. (1, 28, 28), received {input_shape!r}")
    return c, h, w


def open_image(path: str | os.PathLike, reduce_to: tuple[int, int] | None = None
               ) -> tuple[numpy.ndarray, list[tuple[str, str]]]:
    """Decode `path` into (C, H, W) uint8 with C = 1 (gray) or 3 (RGB), as it is stored.

    reduce_to: (H, W) the image is for; a picture more than 4 times as large along both sides
    is first shrunk by an integer factor (JPEG decodes at that scale, others average blocks of
    pixels) to no less than 4 times that size, so a photo never costs more memory than that.
    Returns the array and (kind, text) notes on what had to change to get there.
    """
    path = Path(path)
    notes: list[tuple[str, str]] = []
    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            width, height = img.size
            factor = _reduction(img.size, reduce_to)
            if factor > 1 and img.format == "JPEG":  # decodes at 1/2, 1/4 or 1/8 of the size
                img.draft(img.mode, (width // factor, height // factor))
            img.load()
            if frames > 1:
                notes.append(("frames", f"first of {frames} frames used"))
            upright = img
            if _orientation(img) > 1:
                upright = ImageOps.exif_transpose(img)
                notes.append(("exif", "rotated as its EXIF orientation says"))
            rest = _reduction(upright.size, reduce_to)
            if rest > 1 and upright.mode in REDUCIBLE_MODES:
                upright = upright.reduce(rest)  # the mean of each rest x rest block
            if factor > 1 and upright.size not in ((width, height), (height, width)):
                notes.append(("reduce", f"reduced from {height}x{width} to {upright.height}x"
                                        f"{upright.width} (block mean) before resizing"))
            array = _to_array(upright, notes, path)
    except FileNotFoundError as e:
        raise DataError(f"image file not found: {path}") from e
    except IsADirectoryError as e:
        raise DataError(f"{path} is a folder, expected an image file") from e
    except UnidentifiedImageError as e:
        raise DataError(f"{path} is not an image Pillow can read (it starts with bytes "
                        f"{_head(path)}); expected a PNG, JPEG, BMP, GIF, WebP or TIFF file") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: {e}; resize the image before passing it") from e
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: the image is corrupt or truncated ({e}); expected a "
                        "complete PNG/JPEG file") from e
    return array, notes


def _reduction(size: tuple[int, int], reduce_to: tuple[int, int] | None) -> int:
    """The integer factor that shrinks `size` (W, H) to no less than 4 x reduce_to (H, W)."""
    if reduce_to is None:
        return 1
    width, height = size
    return max(1, min(width // (4 * reduce_to[1]), height // (4 * reduce_to[0])))


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except (TypeError, ValueError, OSError):
        return 1


def _head(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return "(unreadable)"
    return head.hex(" ") if head else "(empty file)"


def _to_array(img: Image.Image, notes: list, path: Path) -> numpy.ndarray:
    mode = img.mode
    if mode in ("1", "L"):
        return numpy.asarray(img.convert("L"), dtype=numpy.uint8)[None]
    if mode == "LA" or mode == "La":
        notes.append(("alpha", "alpha channel dropped"))
        return numpy.asarray(img.convert("L"), dtype=numpy.uint8)[None]
    if mode.startswith("I"):  # 16- or 32-bit integer gray
        values = numpy.asarray(img).astype(numpy.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"{path}: 32-bit gray values from {values.min()} to {values.max()} "
                            "do not map to 8 bits; save it as an 8-bit PNG")
        if values.size and values.max() > 255:
            notes.append(("depth", "16-bit values scaled to 8 bits"))
            values = (values * 255 + 32767) // 65535
        return values.astype(numpy.uint8)[None]
    if mode == "F":
        raise DataError(f"{path}: a 32-bit floating-point image; save it as an 8-bit PNG "
                        "or JPEG")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
    if mode in ("RGBA", "RGBa", "RGBX"):
        if mode != "RGBX":
            notes.append(("alpha", "alpha channel dropped"))
        img = img.convert("RGB")
    elif mode != "RGB":
        notes.append(("mode", f"converted from {mode} to RGB"))
        img = img.convert("RGB")
    return numpy.asarray(img, dtype=numpy.uint8).transpose(2, 0, 1)


def fit_image(array: numpy.ndarray, input_shape: tuple[int, int, int]
              ) -> tuple[numpy.ndarray, list[tuple[str, str]]]:
    """(C, H, W) uint8 -> input_shape, with (kind, text) notes for each conversion."""
    c, h, w = input_shape
    notes = []
    converted, texts = convert_images(array[None], (h, w), check_channels(c), what="image")
    for text in texts:
        kind = "resize" if "resized" in text else ("to_rgb" if c == 3 else "to_gray")
        notes.append((kind, text.removeprefix("image: ")))
    return converted[0], notes


def read_image(path: str | os.PathLike, input_shape) -> tuple[numpy.ndarray, list[str]]:
    """One image file -> ((C, H, W) uint8 matching input_shape, notes on what was converted).

    input_shape: (C, H, W) of the model, C = 1 or 3.
    """
    input_shape = check_input_shape(input_shape)
    array, opened = open_image(path, reduce_to=large_picture_bound(input_shape[1:]))
    fitted, converted = fit_image(array, input_shape)
    return fitted, [text for _, text in opened + converted]
