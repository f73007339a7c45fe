"""Images people have, made to look like what a model was trained on: a digit drawn or
photographed dark on light is inverted for a model of light digits on a dark background, and
centred as MNIST's digits are. Every step says what it did in a note.

    image, notes = prepare_image(array, (1, 28, 28), invert="auto", centre="auto",
                                 light_on_dark=True, mnist_like=True)

MNIST's own recipe (LeCun et al.): each digit was scaled to fit a 20x20 box keeping its aspect
ratio, then placed in the 28x28 field with its centre of mass at the centre.
"""

from __future__ import annotations

import numpy

from convnet.data.convert import check_channels, convert_images, resize
from convnet.data.errors import DataError

CHOICES = ("auto", "yes", "no")
MNIST_DATASETS = ("mnist", "mnist-5k")
INK = 0.2  # a pixel is ink when brighter than this fraction of the brightest pixel
BORDER = 0.1  # the outer 10% of each side is the background ring


def check_choice(value: str, what: str) -> str:
    if value not in CHOICES:
        raise DataError(f"{what} must be auto, yes or no, received {value!r}")
    return value


def background_brightness(image: numpy.ndarray) -> float:
    """The median of the outer ring of a (C, H, W) uint8 image, 0..255 (luma for RGB)."""
    gray = image.astype(numpy.float64).mean(axis=0) if image.shape[0] != 1 else \
        image[0].astype(numpy.float64)
    h, w = gray.shape
    band_h, band_w = max(1, round(BORDER * h)), max(1, round(BORDER * w))
    ring = numpy.concatenate([gray[:band_h].ravel(), gray[-band_h:].ravel(),
                              gray[:, :band_w].ravel(), gray[:, -band_w:].ravel()])
    return float(numpy.median(ring))


def is_dark_on_light(image: numpy.ndarray) -> bool:
    """A light background (its border ring brighter than mid-gray): ink darker than paper."""
    return background_brightness(image) > 127.5


def expects_light_on_dark(input_shape, normalization: dict | None = None,
                          dataset: str | None = None) -> bool:
    """Whether a model sees light strokes on a dark background: a gray model whose training
    images were mostly dark (their mean pixel below one half), or, without statistics, one of
    the MNIST family or any 1x28x28 model."""
    if int(input_shape[0]) != 1:
        return False
    if normalization and normalization.get("mean"):
        return float(numpy.mean(normalization["mean"])) < 0.5
    if dataset:
        return dataset in (*MNIST_DATASETS, "fashion-mnist")
    return tuple(int(v) for v in input_shape) == (1, 28, 28)


def is_mnist_like(input_shape, dataset: str | None = None) -> bool:
    """A digit model that expects MNIST's centring: trained on mnist or mnist-5k, or a 1x28x28
    model whose dataset is unknown."""
    if int(input_shape[0]) != 1:
        return False
    if dataset:
        return dataset in MNIST_DATASETS
    return tuple(int(v) for v in input_shape[1:]) == (28, 28)


def centre_like_mnist(gray: numpy.ndarray, size: tuple[int, int]) -> tuple[numpy.ndarray, str]:
    """(1, H, W) uint8, light on dark -> (1, h, w) for `size`: the ink's bounding box scaled to
    fit a box of 20/28 of the field (aspect ratio kept), its centre of mass at the centre."""
    plane = gray[0]
    h, w = size
    if plane.max() == 0 or not (plane > INK * plane.max()).any():
        raise DataError("nothing to centre: the image is blank")
    ink = plane > INK * plane.max()
    rows, cols = numpy.flatnonzero(ink.any(axis=1)), numpy.flatnonzero(ink.any(axis=0))
    crop = plane[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    box = max(1, round(min(h, w) * 20 / 28))
    scale = box / max(crop.shape)
    new = (max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale)))
    scaled = resize(crop[None, None], new)[0, 0].astype(numpy.float64)
    total = scaled.sum()
    centre_y = (scaled.sum(axis=1) * numpy.arange(new[0])).sum() / total + 0.5
    centre_x = (scaled.sum(axis=0) * numpy.arange(new[1])).sum() / total + 0.5
    top = int(numpy.clip(round(h / 2 - centre_y), 0, h - new[0]))
    left = int(numpy.clip(round(w / 2 - centre_x), 0, w - new[1]))
    out = numpy.zeros((1, h, w), dtype=numpy.uint8)
    out[0, top:top + new[0], left:left + new[1]] = numpy.clip(numpy.rint(scaled), 0, 255)
    note = (f"centred as MNIST digits are: the {crop.shape[0]}x{crop.shape[1]} ink box scaled "
            f"to {new[0]}x{new[1]} (aspect ratio kept, fits {box}x{box}) and its centre of "
            f"mass put at the middle of {h}x{w}")
    return out, note


def prepare_image(image: numpy.ndarray, input_shape, *, invert: str = "auto",
                  centre: str = "auto", light_on_dark: bool = False,
                  mnist_like: bool = False) -> tuple[numpy.ndarray, list[str]]:
    """(C, H, W) uint8 as read -> input_shape, with a note for each conversion.

    invert: "yes", "no", or "auto" (invert a dark-on-light image when the model expects
    light_on_dark). centre: "yes", "no", or "auto" (MNIST's centring when mnist_like, for a
    gray image not already of the model's size). Channels are converted first, then
    inversion, then centring or resizing.
    """
    check_choice(invert, "invert")
    check_choice(centre, "centre")
    c, h, w = (int(v) for v in input_shape)
    check_channels(c)
    notes: list[str] = []
    converted, texts = convert_images(image[None], None, c, what="image")
    notes += [text.removeprefix("image: ") for text in texts]
    array = converted[0]
    flip = invert == "yes" or (invert == "auto" and light_on_dark and is_dark_on_light(array))
    if flip:
        array = 255 - array
        notes.append("inverted (dark on light became light on dark, as the model was trained)"
                     if invert == "auto" else "inverted (as asked)")
    # auto leaves an image already of the model's size alone: it is as the dataset gives it.
    if centre == "yes" or (centre == "auto" and mnist_like and c == 1
                           and array.shape[1:] != (h, w)):
        if c != 1:
            raise DataError("centring like MNIST is for gray digit images; this model takes "
                            f"{c} channels")
        try:
            array, note = centre_like_mnist(array, (h, w))
            notes.append(note)
            return array, notes
        except DataError as error:
            if centre == "yes":
                raise
            notes.append(f"not centred: {error}")
    if array.shape[1:] != (h, w):
        resized, texts = convert_images(array[None], (h, w), None, what="image")
        array = resized[0]
        notes += [text.removeprefix("image: ") for text in texts]
    return array, notes
