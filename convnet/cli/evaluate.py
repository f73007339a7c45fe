"""`convnet evaluate` and `convnet predict`: a trained model on a dataset split or on images."""

from __future__ import annotations

import json
import sys

import numpy as np

from convnet.cli import add_cache_dir, add_command, require


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "evaluate", "Accuracy, per-class accuracy and confusion matrix of a trained "
        "model on a dataset split.",
        "convnet evaluate runs/lenet                      # its own dataset, test split\n"
        "convnet evaluate runs/lenet --dataset mnist --data-dir ~/data/mnist --split test")
    parser.add_argument("run", metavar="RUN_FOLDER", help="run folder or checkpoint")
    parser.add_argument("--dataset", default=None, help="[default: the run's own dataset]")
    parser.add_argument("--data-dir", default=None)
    add_cache_dir(parser)
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_evaluate)

    parser = add_command(
        subparsers, "predict", "Class probabilities (top-k) of a trained model for image files.",
        "convnet predict runs/lenet digit.png another.jpg --top-k 3")
    parser.add_argument("run", metavar="RUN_FOLDER", help="run folder, checkpoint or .onnx file")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="PNG/JPEG files")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_predict)


def evaluate(loaded, dataset, batch_size: int = 256):
    """An Evaluation of `loaded` (a LoadedModel) on a uint8 Dataset."""
    from convnet.nn.losses import CrossEntropyLoss
    from convnet.training.metrics import Evaluation, confusion_matrix

    total_loss, predictions = 0.0, []
    for start in range(0, len(dataset), batch_size):
        images = dataset.images[start : start + batch_size]
        labels = dataset.labels[start : start + batch_size]
        scores = loaded.scores(images)
        total_loss += CrossEntropyLoss().forward(scores, labels) * len(labels)
        predictions.append(scores.argmax(axis=1))
    predicted = np.concatenate(predictions)
    confusion = confusion_matrix(dataset.labels, predicted, len(loaded.class_names))
    return Evaluation(total_loss / len(dataset), confusion, list(loaded.class_names))


def run_evaluate(args) -> int:
    from convnet import data
    from convnet.io import checkpoint

    require(args.batch_size >= 1, f"--batch-size must be 1 or more, received {args.batch_size}")
    loaded = checkpoint.load(args.run, args.checkpoint)
    name = args.dataset or loaded.config.get("dataset")
    if name is None:
        raise data.DataError("this model has no dataset of its own; pass --dataset")
    channels, height, width = loaded.input_shape
    dataset = data.load_dataset(name, args.split, data_dir=args.data_dir,
                                image_size=(height, width), channels=channels)
    if len(dataset.class_names) != len(loaded.class_names):
        raise data.DataError(f"{name} has {len(dataset.class_names)} classes but the model "
                             f"predicts {len(loaded.class_names)}")
    result = evaluate(loaded, dataset, args.batch_size)
    if args.json:
        print(json.dumps({"dataset": name, "split": args.split, **result.to_dict()}))
    else:
        print(f"{name} ({args.split} split), checkpoint {loaded.path}")
        print(result.format())
    return 0


def run_predict(args) -> int:
    from convnet import data
    from convnet.io import checkpoint

    require(args.top_k >= 1, f"--top-k must be 1 or more (how many classes to list), received "
                             f"{args.top_k}")
    loaded = checkpoint.load(args.run, args.checkpoint)
    images, notes = [], []
    for path in args.images:
        pixels, converted = data.read_image(path, loaded.input_shape)
        images.append(pixels)
        notes.append(converted)
        for note in converted:
            print(f"convnet: {path}: {note}", file=sys.stderr)
    probabilities = loaded.predict_proba(np.stack(images))
    k = max(1, min(args.top_k, probabilities.shape[1]))
    results = []
    for path, row in zip(args.images, probabilities, strict=True):
        top = np.argsort(-row)[:k]
        results.append({"image": path, "top": [
            {"class": loaded.class_names[i], "index": int(i), "probability": float(row[i])}
            for i in top]})
    if args.json:
        print(json.dumps(results))
    else:
        for result in results:
            best = ", ".join(f"{t['class']} {t['probability']:.1%}" for t in result["top"])
            print(f"{result['image']}: {best}")
    return 0
