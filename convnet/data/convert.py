"""Size and channel conversion of uint8 image arrays, vectorised over the batch.

Resizing is separable: out = Ry @ X @ Rx^T with the bilinear (triangle) weights Pillow uses,
widened when shrinking so every input pixel contributes (antialiasing). Gray from RGB uses
Pillow's ITU-R 601-2 luma in the same fixed-point arithmetic, so a picture converted here and
one converted by Pillow agree.
"""

from __future__ import annotations

import os

import numpy

from convnet.data.errors import DataError

# Pillow's "L" conversion: L = R * 299/1000 + G * 587/1000 + B * 114/1000, in 16-bit fixed point.
LUMA_WEIGHTS = (19595, 38470, 7471)


def memory_budget() -> int:
    """Bytes one conversion may allocate: half the machine's memory (8 GiB if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):
        return 8 * 1024**3


def check_image_size(image_size, what: str = "image_size") -> tuple[int, int] | None:
    """None, an int (square) or (H, W) of positive ints -> (H, W) or None."""
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        h, w = image_size
        ok = all(isinstance(v, int | numpy.integer) and not isinstance(v, bool) and v > 0
                 for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"{what} must be (height, width) with positive integers, e.g. (32, 32), "
                        f"received {image_size!r}")
    return int(h), int(w)


def check_channels(channels, what: str = "channels") -> int | None:
    if channels is None:
        return None
    if isinstance(channels, bool) or channels not in (1, 3):
        raise DataError(f"{what} must be 1 (gray) or 3 (RGB), received {channels!r}")
    return int(channels)


def resize_weights(n_in: int, n_out: int) -> numpy.ndarray:
    """(n_out, n_in) float64 rows summing to 1: bilinear interpolation, antialiased when
    shrinking (the triangle is stretched by the scale, as in Pillow)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (numpy.arange(n_out) + 0.5) * scale  # in input pixel units
    x = (numpy.arange(n_in) + 0.5 - centers[:, None]) / support  # n_out, n_in
    w = numpy.clip(1.0 - numpy.abs(x), 0.0, None)
    return w / w.sum(axis=1, keepdims=True)


def resize(images: numpy.ndarray, size: tuple[int, int]) -> numpy.ndarray:
    """(N, C, H, W) uint8 -> (N, C, h, w) uint8."""
    n, c, h_in, w_in = images.shape
    h, w = size
    if (h_in, w_in) == (h, w):
        return images
    ry = resize_weights(h_in, h).astype(numpy.float32)  # h, H
    rx = resize_weights(w_in, w).astype(numpy.float32)  # w, W
    out = numpy.empty((n, c, h, w), dtype=numpy.uint8)
    step = max(1, (1 << 22) // max(1, c * h_in * w_in))  # bound the float32 temporaries
    for start in range(0, n, step):
        x = images[start:start + step].astype(numpy.float32)  # B, C, H, W
        y = ry @ x @ rx.T  # B, C, h, w
        out[start:start + step] = numpy.clip(numpy.rint(y), 0, 255)
    return out


def to_gray(images: numpy.ndarray) -> numpy.ndarray:
    """(N, 3, H, W) uint8 -> (N, 1, H, W) uint8, Pillow's luma."""
    r, g, b = (images[:, i].astype(numpy.uint32) for i in range(3))
    wr, wg, wb = LUMA_WEIGHTS
    luma = (r * wr + g * wg + b * wb + 0x8000) >> 16
    return luma.astype(numpy.uint8)[:, None]


def to_rgb(images: numpy.ndarray) -> numpy.ndarray:
    """(N, 1, H, W) uint8 -> (N, 3, H, W) uint8 by repeating the gray channel."""
    return numpy.repeat(images, 3, axis=1)


def convert_images(images: numpy.ndarray, image_size: tuple[int, int] | None = None,
                   channels: int | None = None, what: str = "images"
                   ) -> tuple[numpy.ndarray, list[str]]:
    """Convert (N, C, H, W) uint8 to the requested channels and size; the notes say what changed.

    Channels change first (fewer values to resize when going to gray), then the size.
    """
    image_size = check_image_size(image_size)
    channels = check_channels(channels)
    notes = []
    n, c, h, w = images.shape
    out_h, out_w = image_size or (h, w)
    depth = channels or c
    # The uint8 result, and resize's float32 products for one image (out_h x w, out_h x out_w).
    needed = n * depth * out_h * out_w + 4 * depth * out_h * (w + out_w)
    if needed > memory_budget():
        raise DataError(f"{what}: converting {n:,} image(s) to {depth}x{out_h}x{out_w} needs "
                        f"{needed / 1024**3:,.1f} GiB, more than half of this machine's memory; "
                        f"is the model's input shape right?")
    if channels is not None and channels != c:
        if c == 1 and channels == 3:
            images = to_rgb(images)
            notes.append(f"{what}: gray repeated into 3 channels (RGB) for a 3-channel input")
        elif c == 3 and channels == 1:
            images = to_gray(images)
            notes.append(f"{what}: RGB converted to 1 gray channel (luma 0.299 R + 0.587 G "
                         "+ 0.114 B) for a 1-channel input")
        else:
            raise DataError(f"{what}: cannot convert {c} channels to {channels}; only "
                            "1 <-> 3 is supported")
    if image_size is not None and image_size != (h, w):
        images = resize(images, image_size)
        aspect = "" if h * image_size[1] == w * image_size[0] else ", aspect ratio not kept"
        notes.append(f"{what}: resized from {h}x{w} to {image_size[0]}x{image_size[1]} "
                     f"(bilinear{aspect})")
    return images, notes
