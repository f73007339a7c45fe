"""Regenerate docs/segmentation.png, the README's segmentation picture, from a trained run.

    .venv/bin/python scripts/make_segmentation_image.py --run runs/unet   # a trained unet-mini
    .venv/bin/python scripts/make_segmentation_image.py                   # trains one first

The picture shows held-out canvases of digits-seg's test split (digits never seen in
training): input, true mask, predicted mask and overlay, beside the IoU of each class over the
whole test split. It is reduced to a palette PNG, as scripts/make_docs_images.py does.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from make_docs_images import DOCS, small_png  # noqa: E402 - the script's sibling


def train(folder: Path, epochs: int) -> Path:
    from convnet.training.trainer import TrainConfig, Trainer

    run = folder / "unet-mini"
    Trainer(TrainConfig(model="unet-mini", dataset="digits-seg", optimizer="adam", lr=0.003,
                        batch_size=32, epochs=epochs, schedule="cosine"), run,
            progress=False).fit()
    return run


def picture(run: Path) -> bytes:
    import numpy as np
    from PIL import Image

    from convnet import data
    from convnet.io import checkpoint
    from convnet.training.metrics import SegmentationEvaluation, confusion_matrix
    from convnet.viz import figure_png
    from convnet.viz.segmentation import (
        iou_figure,
        predict_masks,
        segmentation_figure,
        varied_samples,
    )

    loaded = checkpoint.load(run)
    test = data.load_dataset("digits-seg", "test")
    names = loaded.class_names
    predicted = predict_masks(loaded.model, loaded.preprocess, test.images)
    result = SegmentationEvaluation(float("nan"), confusion_matrix(test.labels, predicted,
                                                                   len(names)), names,
                                    images=len(test))
    picks = varied_samples(test.labels, 4)
    left = figure_png(segmentation_figure(test.images[picks], test.labels[picks],
                                          predicted[picks], names,
                                          titles=[f"test {i}" for i in picks]), dpi=70)
    right = figure_png(iou_figure(result.per_class_iou, names, result.mean_iou,
                                  title=f"IoU per class, {len(test):,} held-out canvases"),
                       dpi=70)
    a, b = (Image.open(io.BytesIO(png)).convert("RGB") for png in (left, right))
    canvas = Image.new("RGB", (a.width + b.width, max(a.height, b.height)), "white")
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, (canvas.height - b.height) // 2))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    print(f"mean IoU {result.mean_iou:.4f}, pixel accuracy {result.accuracy:.2%} on the test "
          f"split; per class: " + ", ".join(f"{n} {v:.3f}" for n, v in
                                           zip(names, np.asarray(result.per_class_iou),
                                               strict=True)))
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None,
                        help="a trained unet-mini run folder [default: train one now]")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        run = args.run or train(Path(folder), args.epochs)
        small_png(picture(run), DOCS / "segmentation.png", colours=96)
    return 0


if __name__ == "__main__":
    sys.exit(main())
