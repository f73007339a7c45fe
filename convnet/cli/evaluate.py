"""`convnet evaluate` and `convnet predict`: a trained model on a dataset split or on images.

A classifier gives accuracy, per-class accuracy and the confusion matrix, and class
probabilities; a segmenter (a model whose output is a score per class and pixel) gives pixel
accuracy, per-class IoU and mean IoU, and a colour mask and an overlay per image.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from convnet.cli import add_cache_dir, add_command, require


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "evaluate", "Accuracy, per-class accuracy and confusion matrix of a trained "
        "model on a dataset split (a segmenter: pixel accuracy, per-class IoU, mean IoU).",
        "convnet evaluate runs/lenet                      # its own dataset, test split\n"
        "convnet evaluate runs/lenet --dataset mnist --data-dir ~/data/mnist --split test\n"
        "convnet evaluate runs/unet --json                # a segmenter on digits-seg's test")
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
        subparsers, "predict", "Class probabilities (top-k) of a trained model for image files; "
        "a segmenter's mask of each image (-o: a colour mask and an overlay).",
        "convnet predict runs/lenet digit.png another.jpg --top-k 3\n"
        "convnet predict runs/lenet photo_of_a_digit.jpg --invert yes\n"
        "convnet predict runs/unet canvas.png -o mask.png  # also writes mask-overlay.png")
    parser.add_argument("run", metavar="RUN_FOLDER", help="run folder, checkpoint or .onnx file")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="PNG/JPEG files")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("-o", "--out", default=None, metavar="MASK.png_OR_FOLDER",
                        help="segmenters: where the mask goes (a palette PNG whose colours are "
                             "class indices) with the overlay beside it as NAME-overlay.png; "
                             "for several images a folder")
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


def model_task(loaded, dataset=None):
    """The Task of a loaded model: its run's (loss weights and ignored label included), else
    what its output implies (maps: segment); a dataset of masks supplies the ignored label."""
    from convnet.nn.graph import first_output_shape
    from convnet.training import tasks

    saved = loaded.config.get("task") if isinstance(loaded.config, dict) else None
    saved = saved if isinstance(saved, dict) else {}
    name = saved.get("name") or tasks.for_output(first_output_shape(loaded.model,
                                                                    loaded.input_shape))
    if name != "segment":
        return tasks.make_task("classify")
    ignore = saved.get("ignore_index")
    if ignore is None or ignore == tasks.NO_IGNORE:
        ignore = getattr(dataset, "ignore_label", None)
    return tasks.make_task("segment", class_weight=saved.get("class_weight"),
                           ignore_index=ignore)


def evaluate(loaded, dataset, batch_size: int = 256, group=None):
    """An Evaluation of `loaded` (a LoadedModel) on a uint8 Dataset (a SegmentationEvaluation
    for a segmenter on masks).

    With a process group (under mpiexec), each process scores a share of the batches and the
    per-image results are gathered: the same figures as one process, to the last digit
    (`convnet.training.tasks`)."""
    from convnet import data
    from convnet.training.trainer import LocalGroup

    task = model_task(loaded, dataset)
    if (task.name == "segment") != dataset.has_masks:
        what = ("a segmenter needs a dataset of masks (digits-seg, or a folder of images/ and "
                "masks/)" if task.name == "segment" else
                "a classifier needs a class per image, and this dataset has masks")
        raise data.DataError(f"{dataset.name}: {what}")
    group = group or LocalGroup()
    first, stop = group.share(-(-len(dataset) // batch_size))
    tally = task.tally(list(loaded.class_names))
    for b in range(first, stop):
        tally.add(loaded.scores(dataset.images[b * batch_size:(b + 1) * batch_size]),
                  dataset.labels[b * batch_size:(b + 1) * batch_size])
    return tally.result(group.allgather)


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
    from convnet import data
    from convnet.data.images import check_input_shape, large_picture_bound, open_image
    from convnet.data.prepare import expects_light_on_dark, is_mnist_like, prepare_image
    from convnet.io import checkpoint

    require(args.top_k >= 1, f"--top-k must be 1 or more (how many classes to list), received "
                             f"{args.top_k}")
    loaded = checkpoint.load(args.run, args.checkpoint)
    if model_task(loaded).name == "segment":
        return _predict_masks(loaded, args)
    if args.out is not None:
        raise data.DataError("-o/--out is for segmenters (a mask per image); a classifier "
                             "prints its probabilities: leave -o out")
    dataset = loaded.config.get("dataset")
    light = expects_light_on_dark(loaded.input_shape, loaded.normalization, dataset)
    mnist = is_mnist_like(loaded.input_shape, dataset)
    images, notes = [], []
    for path in args.images:
        array, opened = open_image(path, reduce_to=large_picture_bound(loaded.input_shape[1:]))
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


def _predict_masks(loaded, args) -> int:
    """Each image's predicted mask: the share of each class, and with -o a colour mask (a
    palette PNG of class indices) and an overlay."""

    from convnet import data
    from convnet.core.files import atomic_write
    from convnet.viz.images import png_bytes
    from convnet.viz.segmentation import mask_png, overlay_mask, predict_masks

    names = list(loaded.class_names)
    images = []
    for path in args.images:
        pixels, converted = data.read_image(path, loaded.input_shape)
        images.append(pixels)
        for note in converted:
            print(f"convnet: {path}: {note}", file=sys.stderr)
    masks = predict_masks(loaded.model, loaded.preprocess, np.stack(images))
    targets = _mask_paths(args.images, args.out)
    results = []
    for path, image, mask, target in zip(args.images, images, masks, targets, strict=True):
        counts = np.bincount(mask.ravel(), minlength=len(names))
        shares = {names[i]: float(counts[i] / mask.size) for i in np.argsort(-counts)
                  if counts[i]}
        result = {"image": path, "size": list(mask.shape), "classes": shares}
        if target is not None:
            mask_path, overlay_path = target
            atomic_write(mask_path, lambda tmp, m=mask: tmp.write_bytes(mask_png(m, len(names))))
            atomic_write(overlay_path, lambda tmp, i=image, m=mask: tmp.write_bytes(
                png_bytes(overlay_mask(i, m, len(names)))))
            result["mask"], result["overlay"] = str(mask_path), str(overlay_path)
        results.append(result)
    if args.json:
        print(json.dumps(results))
        return 0
    for result in results:
        shown = ", ".join(f"{name} {share:.1%}" for name, share in result["classes"].items())
        height, width = result["size"]
        print(f"{result['image']}: {height}x{width} pixels: {shown}")
        if "mask" in result:
            print(f"  mask: {result['mask']} (palette PNG: colours = class indices), overlay: "
                  f"{result['overlay']}")
    return 0


def _mask_paths(images, out):
    """(mask, overlay) paths per image: -o FILE.png for one image (overlay FILE-overlay.png),
    -o FOLDER for any number (NAME-mask.png, NAME-overlay.png); None each without -o."""
    from pathlib import Path

    from convnet import data

    if out is None:
        return [None] * len(images)
    out = Path(out)
    if out.suffix.lower() == ".png" and not out.is_dir():
        if len(images) > 1:
            raise data.DataError(f"-o {out} names one file but {len(images)} images were given; "
                                 f"give a folder for several (-o masks/)")
        if not out.parent.is_dir():
            raise data.DataError(f"-o {out}: folder {out.parent} does not exist")
        return [(out, out.with_name(f"{out.stem}-overlay.png"))]
    if out.suffix and not out.is_dir():
        raise data.DataError(f"-o {out}: expected a .png file (one image) or a folder, received "
                             f"a {out.suffix} name")
    out.mkdir(parents=True, exist_ok=True)
    stems = [Path(image).stem for image in images]
    if len(set(stems)) < len(stems):
        raise data.DataError("-o FOLDER: two images share a name "
                             f"({', '.join(s for s in stems if stems.count(s) > 1)}); their "
                             "masks would overwrite each other")
    return [(out / f"{stem}-mask.png", out / f"{stem}-overlay.png") for stem in stems]
