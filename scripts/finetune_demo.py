"""The README's fine-tuning figures: PP-OCR's published text-direction classifier (from the
rapidocr-onnxruntime wheel) imported, its 2-way head replaced by a 3-way one, and trained on a
small folder of rendered text lines (upright, upside down) and blank pages, 48x96 pixels (the
model is fully convolutional up to its global pooling, so it runs at this width too), then
evaluated on a held-out folder.

Run from the repository root: python scripts/finetune_demo.py [WORK_DIR]"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from published import MODELS, path_of  # noqa: E402

from convnet.cli import main  # noqa: E402

WORDS = ["convnet", "lecture", "filter", "stride", "padding", "ReLU", "pooling", "softmax",
         "gradient", "kernel", "2026", "ONNX", "layer", "neuron", "batch", "epoch"]
CLASSES = ("upright", "upside_down", "blank")
WIDTH = 96


def text_line(rng, words: bool = True) -> Image.Image:
    """A 48xWIDTH line of one or two words, dark on a light, slightly noisy page."""
    page = Image.new("L", (WIDTH, 48), int(rng.integers(200, 250)))
    draw = ImageDraw.Draw(page)
    text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 3))))
    font = ImageFont.load_default(size=int(rng.integers(16, 24)))
    if words:
        draw.text((int(rng.integers(2, 12)), int(rng.integers(4, 16))), text,
                  fill=int(rng.integers(0, 60)), font=font)
    pixels = np.asarray(page, np.int16) + rng.integers(-12, 12, (48, WIDTH))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")


def make_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
    for index in range(per_class):
        for name in CLASSES:
            line = text_line(rng, words=name != "blank")
            if name == "upside_down":
                line = line.rotate(180)
            line.save(root / name / f"{index:03d}.png")
    return root


def run(argv: list[str]) -> None:
    if main(argv) != 0:
        raise SystemExit(f"convnet {argv[0]} failed")


def main_demo(work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    train = make_folder(work / "train", per_class=30, seed=0)
    test = make_folder(work / "test", per_class=20, seed=1)
    source = path_of(MODELS["ppocr-cls"].package, MODELS["ppocr-cls"].member)
    start = time.perf_counter()
    run(["import", str(source), "-o", str(work / "cls"), "--input-shape", "3", "48",
                 str(WIDTH), "--classes", "0,180", "--mean", "0.5", "--std", "0.5"])
    print(f"import: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    run(["train", "--model", str(work / "cls"), "--replace-head", "3", "--dataset",
                 str(train), "--epochs", "8", "--batch-size", "16", "--lr", "0.01",
                 "--val-fraction", "0.2", "--out", str(work / "tuned"), "--no-progress"])
    print(f"fine-tuning: {time.perf_counter() - start:.1f} s")
    run(["evaluate", str(work / "tuned"), "--dataset", str(test)])


if __name__ == "__main__":
    main_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/convnet-finetune"))
