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
    images = _check_images(images_uint8)
    draws = augmentation_draws(rng, len(images), crop_padding=crop_padding, hflip=hflip)
    return apply_augmentation(images, draws)


def augmentation_draws(rng: numpy.random.Generator, count: int, crop_padding: int = 0,
                       hflip: bool = False) -> dict:
    """The random choices `augment` makes for a batch of `count` images, drawn in its order:
    {"crop_padding": p, "dy": (N,), "dx": (N,), "flip": (N,) bool}; dy, dx are None without
    padding and flip None without flipping.

    A data-parallel rank that prepares images [a, b) of a batch draws for the whole batch and
    applies `select(draws, a, b)` to its images, so they match the one-process batch's.
    """
    options = check_augmentation({"crop_padding": crop_padding, "hflip": hflip})
    p, flip = options["crop_padding"], options["hflip"]
    draws = {"crop_padding": p, "dy": None, "dx": None, "flip": None}
    if p:
        draws["dy"] = rng.integers(0, 2 * p + 1, size=count)  # N
        draws["dx"] = rng.integers(0, 2 * p + 1, size=count)  # N
    if flip:
        draws["flip"] = rng.random(count) < 0.5  # N
    return draws


def select(draws: dict, start: int, stop: int) -> dict:
    """The draws of images [start, stop) of the batch."""
    return {key: value if key == "crop_padding" or value is None else value[start:stop]
            for key, value in draws.items()}


def apply_augmentation(images_uint8: numpy.ndarray, draws: dict) -> numpy.ndarray:
    """(N, C, H, W) uint8 -> (N, C, H, W) uint8, a new array: `draws` (N of each) applied."""
    images = _check_images(images_uint8)
    n, c, h, w = images.shape
    p, dy, dx, flipped = draws["crop_padding"], draws["dy"], draws["dx"], draws["flip"]
    if dy is not None:
        # numpy.pad and sliding_window_view cost 0.3 and 0.1 ms a call in checks: with a
        # data-parallel rank's few images per batch that was most of its loader's time.
        padded = numpy.zeros((n, c, h + 2 * p, w + 2 * p), images.dtype)  # N, C, H+2p, W+2p
        padded[:, :, p:p + h, p:p + w] = images
        # every H x W window of each padded image, as a read-only view: N, C, 2p+1, 2p+1, H, W
        sn, sc, sh, sw = padded.strides
        windows = numpy.lib.stride_tricks.as_strided(
            padded, (n, c, 2 * p + 1, 2 * p + 1, h, w), (sn, sc, sh, sw, sh, sw),
            writeable=False)
        out = windows[numpy.arange(n), :, dy, dx]  # N, C, H, W (a copy)
    else:
        out = images.copy()
    if flipped is not None:
        out[flipped] = out[flipped, :, :, ::-1]
    return out


def _check_images(images_uint8) -> numpy.ndarray:
    images = numpy.asarray(images_uint8)
    if images.ndim != 4:
        raise DataError(f"augment: expected images of shape (N, C, H, W), received shape "
                        f"{images.shape}")
    return images
