"""Builders shared by the viz and web tests (this module holds no tests): a trained run folder
of the tiny two-conv model on the folder of horizontal and vertical bars (both from
tiny_data), and PNG bytes of an array.

Everything is small enough to train in well under a second, so the tests exercise real run
folders, real checkpoints and the real Trainer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tiny_data import TWO_CONV_MODEL, make_bars_folder


def make_run(base: Path, epochs: int = 3, callbacks=()) -> Path:
    """A trained run folder (config, metrics, checkpoints) of the tiny model on the bars."""
    from convnet.training.trainer import TrainConfig, Trainer

    data = make_bars_folder(base / "bars")
    model = base / "tiny.toml"
    model.write_text(TWO_CONV_MODEL)
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
