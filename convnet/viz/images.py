"""Pictures as arrays: scaling to [0, 1], tiling into grids, colour maps and PNG bytes.

Every helper here is pure: arrays in, arrays (or bytes) out. Figures, the report and the web
page all draw from these, so a filter looks the same wherever it is shown.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def rescale(values, axes=None) -> np.ndarray:
    """Map values to [0, 1] by their min and max over `axes` (all by default), as float32.

    A constant slice has no range to stretch: it becomes 0.5 (mid-gray) instead of a division
    by zero (the trap in CS231n's visualize_grid).
    """
    values = np.asarray(values, dtype=np.float64)
    low = values.min(axis=axes, keepdims=True)
    high = values.max(axis=axes, keepdims=True)
    span = high - low
    flat = span <= 1e-12 * np.maximum(np.abs(high), 1.0)
    scaled = np.where(flat, 0.5, (values - low) / np.where(flat, 1.0, span))
    return scaled.astype(np.float32)


def tile_grid(tiles, columns: int | None = None, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """(N, h, w) or (N, h, w, 3) tiles -> one (H, W) or (H, W, 3) picture, row by row.

    `columns` defaults to a near-square grid; `pad` pixels of `fill` separate the tiles.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim not in (3, 4) or tiles.shape[0] == 0:
        raise ValueError(f"tile_grid: expected tiles of shape (N, h, w) or (N, h, w, 3) with "
                         f"N >= 1, received shape {tiles.shape}")
    count, h, w = tiles.shape[:3]
    columns = columns or int(np.ceil(np.sqrt(count)))
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    shape = (rows * h + (rows - 1) * pad, columns * w + (columns - 1) * pad, *tiles.shape[3:])
    grid = np.full(shape, fill, dtype=tiles.dtype)
    for index in range(count):
        r, c = divmod(index, columns)
        top, left = r * (h + pad), c * (w + pad)
        grid[top:top + h, left:left + w] = tiles[index]
    return grid


def enlarge(picture, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor: (H, W[, 3]) -> (H*f, W*f[, 3])."""
    factor = max(1, int(factor))
    picture = np.asarray(picture)
    return picture.repeat(factor, axis=0).repeat(factor, axis=1)


def resize_bilinear(values, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float -> (H, W) float, interpolating between pixel centres (edges clamped)."""
    values = np.asarray(values, dtype=np.float64)
    out_h, out_w = size
    rows = _positions(values.shape[0], out_h)
    cols = _positions(values.shape[1], out_w)
    along_rows = np.stack([np.interp(rows, np.arange(values.shape[0]), values[:, j])
                           for j in range(values.shape[1])], axis=1)  # H, w
    return np.stack([np.interp(cols, np.arange(values.shape[1]), along_rows[i])
                     for i in range(out_h)], axis=0)  # H, W


def _positions(n_in: int, n_out: int) -> np.ndarray:
    """Where each output pixel centre falls in input pixel coordinates."""
    return (np.arange(n_out) + 0.5) * n_in / n_out - 0.5


def to_uint8(picture01) -> np.ndarray:
    """[0, 1] floats -> uint8 0..255 (values outside are clipped)."""
    return np.clip(np.rint(np.asarray(picture01, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def colorize(values01, cmap: str = "viridis") -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 through a matplotlib colour map."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](np.clip(np.asarray(values01, dtype=np.float64), 0, 1))
    return to_uint8(rgba[..., :3])


def image_hwc(image_chw) -> np.ndarray:
    """A (C, H, W) image -> (H, W) for one channel or (H, W, 3) for three, for display."""
    image = np.asarray(image_chw)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (1, H, W) or (3, H, W), received "
                         f"{image.shape}")
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def as_rgb(picture) -> np.ndarray:
    """(H, W) gray or (H, W, 3) uint8 -> (H, W, 3) uint8."""
    picture = np.asarray(picture)
    return np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture


def overlay(image_chw_uint8, heat01, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """An input image with a [0, 1] heat map of the same size blended over it: (H, W, 3) uint8."""
    base = as_rgb(image_hwc(image_chw_uint8)).astype(np.float64)
    heat = colorize(heat01, cmap).astype(np.float64)
    return np.clip(np.rint((1 - alpha) * base + alpha * heat), 0, 255).astype(np.uint8)


def png_bytes(picture) -> bytes:
    """(H, W) or (H, W, 3) uint8 -> PNG file contents."""
    from PIL import Image

    picture = np.ascontiguousarray(picture)
    if picture.dtype != np.uint8:
        raise TypeError(f"png_bytes: expected uint8 pixels, received {picture.dtype}; "
                        f"convert [0, 1] floats with to_uint8")
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    """PNG bytes as a data: URL, for <img src> in self-contained HTML and JSON answers."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
