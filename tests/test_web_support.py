"""Builders shared by the viz and web tests (this module holds no tests): a tiny image folder
of horizontal and vertical bars, a small model file, and a trained run folder made from them.

Everything is small enough to train in well under a second, so the tests exercise real run
folders, real checkpoints and the real Trainer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 12
CLASSES = ("horizontal", "vertical")

TINY_MODEL = """\
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


def make_model_file(path: Path) -> Path:
    path.write_text(TINY_MODEL)
    return path


def make_run(base: Path, epochs: int = 3, callbacks=()) -> Path:
    """A trained run folder (config, metrics, checkpoints) of the tiny model on the bars."""
    from convnet.train import TrainConfig, Trainer

    data = make_bars_folder(base / "bars")
    model = make_model_file(base / "tiny.toml")
    out = base / "run"
    config = TrainConfig(model=str(model), dataset=str(data), epochs=epochs, batch_size=8,
                         lr=0.05, val_fraction=0.25, seed=0)
    Trainer(config, out, callbacks=list(callbacks), progress=False, log=lambda message: None).fit()
    return out


def png_bytes(array: np.ndarray, mode: str | None = None, format: str = "PNG") -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=format)
    return buffer.getvalue()
