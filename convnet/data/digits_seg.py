"""digits-seg: semantic segmentation canvases built from the real digits of mnist-5k.

Each 64x64 canvas holds 2 to 4 digits at random positions and sizes; its mask labels every pixel
with the class of the digit covering it: 0 for background, d + 1 for digit d (11 classes). The
train canvases are made only of mnist-5k's 4,000 training digits and the test canvases only of
its 1,000 test digits, so no test digit is ever seen in training, and everything follows from a
fixed seed per split.

How pixels become labels:
- a digit's 28x28 picture is scaled to a side drawn from 24..44 pixels (bilinear, antialiased,
  as `convert.resize` does) and placed at a random position inside the canvas;
- the canvas is the brightest of the digits at each pixel (ink over ink stays ink);
- a pixel belongs to a digit where that digit's scaled ink is at least INK_THRESHOLD (64 of 255,
  a quarter of full brightness): the faint antialiased rim below it is background;
- where digits overlap, the later digit wins. Positions are drawn again (up to PLACEMENT_TRIES
  times) while more than MAX_OVERLAP of a new digit's ink would fall on earlier digits' ink, so
  most digits stay readable; after that the last position is kept.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
from pathlib import Path

import numpy

from convnet.core.files import atomic_write, cache_root
from convnet.data.convert import resize_weights
from convnet.data.dataset import Dataset
from convnet.data.embedded import load_mnist_5k

NAME = "digits-seg"
CANVAS = 64  # pixels per side
CLASS_NAMES = ["background", *(str(d) for d in range(10))]  # digit d is class d + 1
# Canvases per split. 4,000 training canvases were too few: unet-mini fitted them (train loss
# 0.031 against 0.096 on validation) and reached a test mean IoU of 0.73; 16,000 gave 0.79 and
# 32,000 0.80 with the same number of steps. The first 4,000 are those of the smaller set.
SIZES = {"train": 32000, "test": 1000}
DIGITS_PER_CANVAS = (2, 4)  # inclusive
DIGIT_SIDE = (24, 44)  # pixels, inclusive: a 28x28 MNIST box scaled by 0.86 to 1.57
INK_THRESHOLD = 64  # of 255: pixels at least this bright belong to the digit
MAX_OVERLAP = 0.1  # of a new digit's ink falling on earlier ink
PLACEMENT_TRIES = 20
# Fixed forever, like mnist-5k's split: a new seed would make different canvases under one name.
SEEDS = {"train": 6400, "test": 6401}


@functools.lru_cache(maxsize=64)
def _weights(n_in: int, side: int) -> numpy.ndarray:
    return resize_weights(n_in, side)  # side, n_in


def _scaled(digit: numpy.ndarray, side: int) -> numpy.ndarray:
    """(28, 28) uint8 -> (side, side) uint8, bilinear with antialiasing (convert.resize's)."""
    r = _weights(digit.shape[0], side)  # side, 28
    return numpy.rint(r @ digit @ r.T).clip(0, 255).astype(numpy.uint8)


def make_canvases(digits: numpy.ndarray, labels: numpy.ndarray, count: int, seed: int
                  ) -> tuple[numpy.ndarray, numpy.ndarray, list[list[int]]]:
    """`count` canvases from `digits` (N, 28, 28) uint8 with `labels` (N,) 0..9.

    Returns images (count, 1, 64, 64) uint8, masks (count, 64, 64) uint8 (0 background,
    d + 1 for digit d) and, per canvas, the indices into `digits` it used (in drawing order).
    A pure function of its arguments.
    """
    rng = numpy.random.default_rng(seed)
    images = numpy.zeros((count, 1, CANVAS, CANVAS), numpy.uint8)  # N, 1, 64, 64
    masks = numpy.zeros((count, CANVAS, CANVAS), numpy.uint8)  # N, 64, 64
    sources: list[list[int]] = []
    for i in range(count):
        k = int(rng.integers(DIGITS_PER_CANVAS[0], DIGITS_PER_CANVAS[1] + 1))
        chosen = rng.choice(len(digits), size=k, replace=False)
        canvas, mask = images[i, 0], masks[i]
        for index in chosen:
            side = int(rng.integers(DIGIT_SIDE[0], DIGIT_SIDE[1] + 1))
            ink = _scaled(digits[index], side)  # side, side
            inked = ink >= INK_THRESHOLD
            allowed = MAX_OVERLAP * numpy.count_nonzero(inked)
            for _ in range(PLACEMENT_TRIES):
                top, left = rng.integers(0, CANVAS - side + 1, size=2).tolist()
                under = mask[top:top + side, left:left + side]
                if numpy.count_nonzero(under[inked]) <= allowed:
                    break
            window = canvas[top:top + side, left:left + side]
            numpy.maximum(window, ink, out=window)
            mask[top:top + side, left:left + side][inked] = labels[index] + 1
        sources.append([int(v) for v in chosen])
    return images, masks, sources


@functools.lru_cache(maxsize=2)
def _split(split: str) -> tuple[numpy.ndarray, numpy.ndarray, tuple]:
    images, masks, sources = _cached(split)
    for array in (images, masks):
        array.flags.writeable = False
    return images, masks, tuple(tuple(s) for s in sources)


def cache_path(split: str) -> Path:
    """Where the canvases of `split` are kept once built (the convnet cache folder): named by
    the split's size and seed and by this module's source, so a change to how canvases are made
    never reads old ones."""
    source = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]
    return cache_root() / NAME / f"{split}-{SIZES[split]}-{SEEDS[split]}-{source}.npz"


def _cached(split: str) -> tuple[numpy.ndarray, numpy.ndarray, list[list[int]]]:
    """The split's canvases from the cache (0.8 s for the 32,000 training ones, 33 MB) or built
    (5.6 s) and kept there. A file that cannot be read or does not hold what it should is built
    again; a cache folder that cannot be written to only costs the time."""
    count, path = SIZES[split], cache_path(split)
    try:
        with open(path, "rb") as stream:  # ours to close, whatever numpy makes of the bytes
            stored = numpy.load(stream, allow_pickle=False)
            if not isinstance(stored, numpy.lib.npyio.NpzFile):
                raise ValueError(f"{path} is not an .npz archive")
            images, masks = stored["images"], stored["masks"]
            counts, flat = stored["counts"], stored["flat"]
        shapes_ok = (images.shape == (count, 1, CANVAS, CANVAS) and images.dtype == numpy.uint8
                     and masks.shape == (count, CANVAS, CANVAS) and masks.dtype == numpy.uint8
                     and counts.shape == (count,) and flat.shape == (int(counts.sum()),))
        if shapes_ok:
            parts = numpy.split(flat, numpy.cumsum(counts)[:-1])
            return images, masks, [part.tolist() for part in parts]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    digits = load_mnist_5k(split)
    images, masks, sources = make_canvases(digits.images[:, 0], digits.labels, count,
                                           SEEDS[split])
    counts = numpy.array([len(s) for s in sources], numpy.int64)
    flat = numpy.array([i for s in sources for i in s], numpy.int64)
    try:
        atomic_write(path, lambda tmp: _save(tmp, images=images, masks=masks, counts=counts,
                                             flat=flat))
    except OSError:
        pass
    return images, masks, sources


def _save(tmp: Path, **arrays) -> None:
    with open(tmp, "wb") as stream:  # an open file: savez would add ".npz" to a bare name
        numpy.savez_compressed(stream, **arrays)


def canvas_sources(split: str) -> tuple[tuple[int, ...], ...]:
    """For each canvas of `split`, the positions in mnist-5k's `split` of the digits on it."""
    return _split(split)[2]


def load_digits_seg(split: str) -> Dataset:
    """split "train": 32,000 canvases of mnist-5k's training digits; "test": 1,000 canvases of
    its test digits. Images (N, 1, 64, 64) uint8, masks (N, 64, 64) uint8 in 0..10."""
    images, masks, _ = _split(split)
    return Dataset(images=images, labels=masks, class_names=list(CLASS_NAMES), name=NAME,
                   split=split)
