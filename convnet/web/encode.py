"""Arrays as compact JSON for the page: uint8 pixels in base64, with the range they came from.

An activation map of 28x28 floats travels as 784 bytes plus its min and max; the page draws
the bytes on a canvas and can rescale maps of one layer to a common range from min and max.
"""

from __future__ import annotations

import base64

import numpy as np

from convnet.viz.images import rescale, to_uint8


def b64(array_uint8) -> str:
    """Raw bytes of a uint8 array (C order) in base64."""
    array = np.ascontiguousarray(array_uint8)
    if array.dtype != np.uint8:
        raise TypeError(f"b64: expected uint8, received {array.dtype}")
    return base64.b64encode(array.tobytes()).decode("ascii")


def encode_maps(maps, limit: int) -> dict:
    """One image's maps (C, H, W) -> each map scaled to 0..255 by its own min and max."""
    maps = np.asarray(maps, dtype=np.float64)
    shown = maps[:limit]
    low = shown.min(axis=(1, 2))
    high = shown.max(axis=(1, 2))
    scaled = to_uint8(rescale(shown, axes=(1, 2)))
    return {"kind": "maps", "count": int(maps.shape[0]), "shown": int(shown.shape[0]),
            "height": int(maps.shape[1]), "width": int(maps.shape[2]),
            "min": [float(v) for v in low], "max": [float(v) for v in high],
            "data": [b64(m) for m in scaled]}


def encode_vector(values, limit: int = 4096) -> dict:
    """A (F,) vector -> one row of 0..255 values with its min and max."""
    values = np.asarray(values, dtype=np.float64).ravel()
    shown = values[:limit]
    return {"kind": "vector", "count": int(values.size), "shown": int(shown.size),
            "min": float(shown.min()), "max": float(shown.max()),
            "values": [round(float(v), 5) for v in shown] if shown.size <= 256 else None,
            "data": b64(to_uint8(rescale(shown)))}


def encode_image(image_chw_uint8) -> dict:
    image = np.asarray(image_chw_uint8)
    return {"shape": [int(v) for v in image.shape], "data": b64(image)}
