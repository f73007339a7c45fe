"""Tiny image folders and TOML model files for the tests that train for real (training,
distributed, viz and web tests; this module holds no tests). Everything trains in well under
a second.

- `make_bars_folder`: two classes, horizontal and vertical bars (the viz and web tests' run),
  with `TWO_CONV_MODEL` for it.
- `make_angles_folder`: three classes, horizontal, vertical and diagonal bars (the training
  and distributed tests), with `three_class_model(...)` for it.
- `StopAt`: a trainer callback that stops the run at a given step (an interrupted run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 12
CLASSES = ("horizontal", "vertical")
ANGLES = ("horizontal", "vertical", "diagonal")

TWO_CONV_MODEL = """\
name = "tiny"
description = "two conv layers for 12x12 bars"
input_shape = [1, 12, 12]

[[layers]]
type = "conv"
out_channels = 4
kernel_size = 3
padding = 1

[[layers]]
type = "relu"

[[layers]]
type = "maxpool"
kernel_size = 2

[[layers]]
type = "conv"
out_channels = 6
kernel_size = 3

[[layers]]
type = "relu"

[[layers]]
type = "flatten"

[[layers]]
type = "linear"
out_features = 2
"""


def three_class_model(*, batchnorm: bool = False, dropout: float | None = None) -> str:
    """A model file for 12x12 grey images of 3 classes: conv (4 filters, 3x3, padding 1),
    [batchnorm], relu, maxpool 2, flatten, [dropout], linear (3, xavier)."""
    layers = ['type = "conv"\nout_channels = 4\nkernel_size = 3\npadding = 1\n',
              *(['type = "batchnorm"\n'] if batchnorm else []),
              'type = "relu"\n',
              'type = "maxpool"\nkernel_size = 2\n',
              'type = "flatten"\n',
              *([f'type = "dropout"\np = {dropout}\n'] if dropout is not None else []),
              'type = "linear"\nout_features = 3\ninit = "xavier"\n']
    return "input_shape = [1, 12, 12]\n" + "".join(f"\n[[layers]]\n{layer}" for layer in layers)


def bar_image(kind: str, position: int, rng, size: int = SIZE) -> np.ndarray:
    """(size, size) uint8: a bright bar (row or column `position`) on dim noise."""
    image = rng.integers(0, 40, (size, size)).astype(np.uint8)
    if kind == "horizontal":
        image[position, :] = 230
    else:
        image[:, position] = 230
    return image


def make_bars_folder(root: Path, per_class: int = 20, seed: int = 0) -> Path:
    """root/horizontal/*.png and root/vertical/*.png."""
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            position = int(rng.integers(1, SIZE - 1))
            Image.fromarray(bar_image(kind, position, rng)).save(folder / f"{index:03d}.png")
    return root


def make_angles_folder(root: Path, per_class: int, size: int, offsets: tuple[int, int],
                       seed: int = 0) -> Path:
    """root/{horizontal,vertical,diagonal}/{index}.png: (size, size) grey noise below 60 with a
    white bar: a row or a column at an offset in range(*offsets), or the diagonal."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(ANGLES):
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 60, (size, size)).astype(np.uint8)
            offset = rng.integers(*offsets)
            if label == 0:
                pixels[offset, :] = 255
            elif label == 1:
                pixels[:, offset] = 255
            else:
                np.fill_diagonal(pixels, 255)
            Image.fromarray(pixels, mode="L").save(folder / f"{index}.png")
    return root


class StopAt:
    """Trainer callback: ask the run to stop after global step `step`."""

    def __init__(self, step):
        self.step = step

    def on_batch(self, trainer, stats):
        if stats["step"] == self.step:
            trainer.stop("test")


# A graph for the same 12x12 grey images of 3 classes: two branches (1x1 and 3x3 convs)
# concatenated, a channel gate, and two outputs (the class scores first, then the maps).
GRAPH_MODEL = """\
name = "tiny-graph"
input_shape = [1, 12, 12]
outputs = ["scores", "gated"]

[[layers]]
type = "conv"
name = "wide"
out_channels = 3
kernel_size = 3
padding = 1
inputs = ["input"]

[[layers]]
type = "conv"
name = "narrow"
out_channels = 2
kernel_size = 1
inputs = ["input"]

[[layers]]
type = "concat"
name = "both"
inputs = ["wide", "narrow"]

[[layers]]
type = "relu"

[[layers]]
type = "gap"
name = "squeeze"

[[layers]]
type = "sigmoid"
name = "gate"

[[layers]]
type = "mul"
name = "gated"
inputs = ["relu1", "gate"]

[[layers]]
type = "maxpool"
kernel_size = 2

[[layers]]
type = "flatten"

[[layers]]
type = "linear"
name = "scores"
out_features = 3
init = "xavier"
"""


# -- segmentation ----------------------------------------------------------------------------------
SEGMENT_CLASSES = ("background", "square", "bar")

# A fully convolutional chain for 16x16 grey images with masks of 3 classes: a score per class
# and pixel, (3, 16, 16).
TINY_SEGMENTER = """\
name = "tiny-segmenter"
input_shape = [1, 16, 16]

[[layers]]
type = "conv"
out_channels = 6
kernel_size = 3
padding = 1

[[layers]]
type = "relu"

[[layers]]
type = "conv"
out_channels = 3
kernel_size = 1
init = "xavier"
"""


def make_mask_folder(root: Path, count: int = 24, size: int = 16, seed: int = 0) -> Path:
    """root/images/{i}.png with root/masks/{i}.png and root/classes.txt: dim noise (below 40)
    with a bright square (220, class 1) and a mid-grey bar two rows high across the image
    (130, class 2, behind the square) at random places; one pixel of each mask is 255
    (ignored)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in SEGMENT_CLASSES))
    for index in range(count):
        image = rng.integers(0, 40, (size, size)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        side = int(rng.integers(5, 9))
        top, left = (int(v) for v in rng.integers(0, size - side, 2))
        image[top:top + side, left:left + side] = 220
        mask[top:top + side, left:left + side] = 1
        row = int(rng.integers(0, size - 1))
        image[row:row + 2] = np.where(mask[row:row + 2] == 0, 130, image[row:row + 2])
        mask[row:row + 2] = np.where(mask[row:row + 2] == 0, 2, mask[row:row + 2])
        mask[size - 1, 0] = 255
        Image.fromarray(image, mode="L").save(root / "images" / f"{index:03d}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{index:03d}.png")
    return root
