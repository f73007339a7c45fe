"""Random crop with zero padding and horizontal flip, one gather for the whole batch."""

from __future__ import annotations

import numpy

from convnet.data.errors import DataError

AUGMENTATION_KEYS = ("crop_padding", "hflip")


def check_augmentation(augmentation: dict | None) -> dict:
    """Validate an augmentation dict ({"crop_padding": int >= 0, "hflip": bool})."""
    if augmentation is None:
        return {"crop_padding": 0, "hflip": False}
    if not isinstance(augmentation, dict):
        raise DataError(f"augmentation must be a dict like {{'crop_padding': 4, 'hflip': True}}, "
                        f"received {augmentation!r}")
    unknown = sorted(set(augmentation) - set(AUGMENTATION_KEYS))
    if unknown:
        raise DataError(f"augmentation: unknown key(s) {unknown}; the known ones are "
                        f"{list(AUGMENTATION_KEYS)}")
    padding = augmentation.get("crop_padding", 0)
    if isinstance(padding, bool) or not isinstance(padding, int | numpy.integer) or padding < 0:
        raise DataError(f"augmentation: crop_padding must be an integer >= 0, "
                        f"received {padding!r}")
    hflip = augmentation.get("hflip", False)
    if not isinstance(hflip, bool | numpy.bool_):
        raise DataError(f"augmentation: hflip must be true or false, received {hflip!r}")
    return {"crop_padding": int(padding), "hflip": bool(hflip)}


def augment(images_uint8: numpy.ndarray, rng: numpy.random.Generator, crop_padding: int = 0,
            hflip: bool = False) -> numpy.ndarray:
    """(N, C, H, W) uint8 -> (N, C, H, W) uint8, a new array; the input is left as it is.

    Each image is padded with `crop_padding` zeros on every side and cropped back to H x W at a
    random offset, then mirrored left-right with probability 1/2. The draws (offsets first,
    then flips) come only from `rng`, so the same generator state gives the same batch.
    """
    options = check_augmentation({"crop_padding": crop_padding, "hflip": hflip})
    p, flip = options["crop_padding"], options["hflip"]
    images = numpy.asarray(images_uint8)
    if images.ndim != 4:
        raise DataError(f"augment: expected images of shape (N, C, H, W), received shape "
                        f"{images.shape}")
    n, c, h, w = images.shape
    if p == 0 and not flip:
        return images.copy()
    if p:
        padded = numpy.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))  # N, C, H+2p, W+2p
        dy = rng.integers(0, 2 * p + 1, size=n)  # N
        dx = rng.integers(0, 2 * p + 1, size=n)  # N
        # every H x W window of each padded image, as a view: N, C, 2p+1, 2p+1, H, W
        windows = numpy.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
        out = windows[numpy.arange(n), :, dy, dx]  # N, C, H, W (a copy)
    else:
        out = images.copy()
    if flip:
        flipped = rng.random(n) < 0.5  # N
        out[flipped] = out[flipped, :, :, ::-1]
    return out
