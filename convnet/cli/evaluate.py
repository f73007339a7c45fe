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
        "convnet predict runs/lenet digit.png another.jpg --top-k 3\n"
        "convnet predict runs/lenet photo_of_a_digit.jpg --invert yes")
    parser.add_argument("run", metavar="RUN_FOLDER", help="run folder, checkpoint or .onnx file")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="PNG/JPEG files")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                        help="turn dark-on-light images into light-on-dark; auto: when the "
                             "model was trained on light strokes on a dark background (MNIST) "
                             "and the image's border is light [default: auto]")
    parser.add_argument("--centre", choices=["auto", "yes", "no"], default="auto",
                        help="centre a digit as MNIST does (its ink scaled to fit 20x20, "
                             "aspect ratio kept, centre of mass in the middle); auto: for "
                             "MNIST models and images not already 28x28 [default: auto]")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_predict)


def evaluate(loaded, dataset, batch_size: int = 256, group=None):
    """An Evaluation of `loaded` (a LoadedModel) on a uint8 Dataset.

    With a process group (under mpiexec), each process scores a share of the batches and the
    per-image results are gathered: the same figures as one process, to the last digit
    (`convnet.training.metrics`)."""
    from convnet.training.metrics import evaluation, joined, sample_losses
    from convnet.training.trainer import LocalGroup

    group = group or LocalGroup()
    first, stop = group.share(-(-len(dataset) // batch_size))
    losses, predictions = [], []
    for b in range(first, stop):
        images = dataset.images[b * batch_size:(b + 1) * batch_size]
        labels = dataset.labels[b * batch_size:(b + 1) * batch_size]
        scores = loaded.scores(images)
        losses.append(sample_losses(scores, labels))
        predictions.append(scores.argmax(axis=1))
    labels = dataset.labels[first * batch_size:stop * batch_size]
    return evaluation(group.allgather(joined(losses, np.float64)), group.allgather(labels),
                      group.allgather(joined(predictions, np.int64)), list(loaded.class_names))


def run_evaluate(args) -> int:
    from convnet import data
    from convnet.io import checkpoint
    from convnet.training import distributed

    require(args.batch_size >= 1, f"--batch-size must be 1 or more, received {args.batch_size}")
    group = distributed.process_group()  # None unless started by mpiexec with several processes
    loaded = checkpoint.load(args.run, args.checkpoint)
    name = args.dataset or loaded.config.get("dataset")
    if name is None:
        raise data.DataError("this model has no dataset of its own; pass --dataset")
    if args.batch_size < 1:
        raise data.DataError(f"--batch-size must be at least 1, received {args.batch_size}")
    channels, height, width = loaded.input_shape

    def load():
        return data.load_dataset(name, args.split, data_dir=args.data_dir,
                                 image_size=(height, width), channels=channels)

    # Under mpiexec rank 0 loads first, so that a download happens once.
    dataset = group.root_first(load, "load the dataset") if group is not None else load()
    if len(dataset.class_names) != len(loaded.class_names):
        raise data.DataError(f"{name} has {len(dataset.class_names)} classes but the model "
                             f"predicts {len(loaded.class_names)}")
    result = evaluate(loaded, dataset, args.batch_size, group)
    if group is not None and not group.is_root:
        return 0
    from convnet.io.checkpoint import checkpoint_epoch, which_checkpoint

    which = which_checkpoint(loaded.path)
    epoch = checkpoint_epoch(loaded.path) if which else None
    if args.json:
        print(json.dumps({"dataset": name, "split": args.split, "checkpoint": which,
                          "epoch": epoch, "path": str(loaded.path), **result.to_dict()}))
    else:
        which_text = (f"the {which} checkpoint" + (f" (epoch {epoch})" if epoch else "")
                      if which else "checkpoint")
        print(f"{name} ({args.split} split), {which_text}: {loaded.path}")
        print(result.format())
    return 0


def run_predict(args) -> int:
    from convnet.data.images import check_input_shape, open_image
    from convnet.data.prepare import expects_light_on_dark, is_mnist_like, prepare_image
    from convnet.io import checkpoint

    require(args.top_k >= 1, f"--top-k must be 1 or more (how many classes to list), received "
                             f"{args.top_k}")
    loaded = checkpoint.load(args.run, args.checkpoint)
    dataset = loaded.config.get("dataset")
    light = expects_light_on_dark(loaded.input_shape, loaded.normalization, dataset)
    mnist = is_mnist_like(loaded.input_shape, dataset)
    images, notes = [], []
    for path in args.images:
        array, opened = open_image(path)
        pixels, prepared = prepare_image(array, check_input_shape(loaded.input_shape),
                                         invert=args.invert, centre=args.centre,
                                         light_on_dark=light, mnist_like=mnist)
        converted = [text for _, text in opened] + prepared
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
