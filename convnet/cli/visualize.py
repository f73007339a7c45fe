"""`convnet visualize` (one picture as PNG) and `convnet report` (the HTML report of a run)."""

from __future__ import annotations

import sys
from pathlib import Path

from convnet.cli import add_command, require
from convnet.cli.outputs import add_force, checked_output

WHAT = {
    "filters": "a conv layer's filters (--layer, default the first conv)",
    "activations": "every layer's activation maps for one image (--image or --sample)",
    "curves": "loss, accuracy and learning rate per epoch from metrics.jsonl",
    "confusion": "the confusion matrix on the validation images",
    "mistakes": "the most confident wrong predictions on the validation images",
    "saliency": "saliency and Grad-CAM for one image (--class, --layer for Grad-CAM)",
    "top": "the validation images that excite one filter most (--layer, --filter)",
}


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "visualize", "Draw a picture of a run as PNG: filters, activation maps, "
        "curves, confusion matrix, mistakes, saliency, top-activating images.",
        "convnet visualize runs/lenet filters -o filters.png\n"
        "convnet visualize runs/lenet activations --image digit.png -o maps.png\n"
        "convnet visualize runs/lenet curves -o - | display     # PNG on stdout\n"
        "convnet visualize runs/lenet top --layer conv2 --filter 3\n"
        "convnet visualize lenet5 filters                        # untrained weights")
    parser.description = "Draw one picture of a model or run as PNG.\n\n" + "\n".join(
        f"  {name:12} {text}" for name, text in WHAT.items())
    parser.add_argument("run", metavar="RUN",
                        help="run folder or checkpoint (filters, activations and saliency also "
                             "take a zoo model name or a .toml model file)")
    parser.add_argument("what", choices=list(WHAT), help="which picture")
    parser.add_argument("-o", "--output", default=None,
                        help="PNG file to write, '-' for stdout [default: WHAT.png]")
    parser.add_argument("--layer", default=None, help="layer name, e.g. conv2 (see "
                        "`convnet summary RUN`)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", default=None, help="an image file (PNG, JPEG, ...)")
    source.add_argument("--sample", type=int, default=0,
                        help="index of a validation image [default: 0]")
    parser.add_argument("--class", dest="class_", metavar="CLASS", default=None,
                        help="class name or index to explain [default: the predicted class]")
    parser.add_argument("--filter", type=int, default=0, help="filter index for 'top'")
    parser.add_argument("--count", type=int, default=16,
                        help="how many images for 'mistakes' and 'top' [default: 16]")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    add_force(parser)
    parser.set_defaults(func=run_visualize)

    parser = add_command(
        subparsers, "report", "Write a self-contained HTML report of a run (summary, curves, "
        "filters, activation maps, confusion matrix, worst mistakes) into its folder.",
        "convnet report runs/lenet                 # -> runs/lenet/report.html\n"
        "convnet report runs/lenet -o /tmp/lenet.html --samples 5")
    parser.add_argument("run", metavar="RUN", help="run folder or checkpoint")
    parser.add_argument("-o", "--output", default=None,
                        help="HTML file to write [default: RUN/report.html]")
    parser.add_argument("--samples", type=int, default=3,
                        help="validation images with activation maps [default: 3]")
    parser.add_argument("--mistakes", type=int, default=16, help="[default: 16]")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    add_force(parser)
    parser.set_defaults(func=run_report)


class UsageError(Exception):
    """A request this run cannot answer (no validation images, unknown class, ...)."""


def _input_image(run, args):
    """(uint8 (C, H, W), label or None, description) from --image or --sample."""
    if args.image:
        from convnet.data import read_image

        image, notes = read_image(args.image, run.loaded.input_shape)
        for note in notes:
            print(f"convnet: {args.image}: {note}", file=sys.stderr)
        return image, None, Path(args.image).name
    validation = _validation(run)
    if not 0 <= args.sample < len(validation):
        raise UsageError(f"--sample must be in [0, {len(validation) - 1}], received "
                         f"{args.sample}")
    return (validation.images[args.sample], int(validation.labels[args.sample]),
            f"validation image {args.sample}")


def _validation(run):
    validation = run.validation()
    if validation is None:
        raise UsageError(f"no validation images: {run.validation_error}; pass --image FILE")
    return validation


def _class_index(run, text: str | None, default: int) -> int:
    names = run.loaded.class_names
    if text is None:
        return default
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise UsageError(f"--class {text!r} is neither a class name nor an index; classes: "
                     f"{', '.join(names)}")


def make_figure(run, args):
    """The matplotlib Figure that `convnet visualize` writes."""
    from convnet.viz import (
        activations,
        confusion,
        curves,
        filters,
        mistakes,
        probe,
        saliency,
        top_images,
    )

    loaded = run.loaded
    model = loaded.model
    what = args.what
    if what == "filters":
        return filters.filters_figure(model, args.layer)
    if what == "curves":
        if run.folder is None:
            raise UsageError("curves need a run folder with metrics.jsonl")
        return curves.curves_figure(curves.read_metrics(run.folder), title=run.folder.name)
    if what in ("activations", "saliency"):
        image, label, description = _input_image(run, args)
        x = loaded.preprocess(image[None])
        probabilities = probe.class_probabilities(model, loaded.preprocess, image[None])[0]
        predicted = int(probabilities.argmax())
        names = loaded.class_names
        truth = f", true {names[label]}" if label is not None else ""
        title = (f"{description}: predicted {names[predicted]} "
                 f"({probabilities[predicted]:.0%}){truth}")
        if what == "activations":
            return activations.activations_figure(model, x, image, title=title,
                                                  class_names=names)
        index = _class_index(run, args.class_, predicted)
        sal = saliency.saliency_map(model, x, index)
        cam = saliency.grad_cam(model, x, index, args.layer)
        fig = saliency.explanation_figure(image, sal, cam, names[index])
        fig.suptitle(title, fontsize=9)
        return fig
    validation = _validation(run)
    if what == "top":
        layer = args.layer or filters.resolve_conv(model, None).name
        strengths = top_images.filter_strengths(model, loaded.preprocess(validation.images),
                                                layer)
        indices, values = top_images.top_activating(strengths, args.filter, args.count)
        captions = [loaded.class_names[validation.labels[i]] for i in indices]
        return top_images.top_images_figure(validation.images, indices, values, layer,
                                            args.filter, captions)
    probabilities = probe.class_probabilities(model, loaded.preprocess, validation.images)
    if what == "confusion":
        from convnet.training.metrics import confusion_matrix

        matrix = confusion_matrix(validation.labels, probabilities.argmax(axis=1),
                                  len(loaded.class_names))
        return confusion.confusion_figure(matrix, loaded.class_names)
    worst = mistakes.worst_mistakes(probabilities, validation.labels, args.count)
    return mistakes.mistakes_figure(validation.images, worst, loaded.class_names)


def run_visualize(args) -> int:
    require(args.count >= 1, f"--count must be 1 or more, received {args.count}")
    require(args.filter >= 0, f"--filter must be 0 or more, received {args.filter}")
    from convnet.viz.figures import save_figure
    from convnet.viz.run import open_target

    output = None
    if args.output != "-":
        output = checked_output(args.output or f"{args.what}.png", (".png",), force=args.force,
                                what="a PNG picture")
    run = open_target(args.run, args.checkpoint)
    try:
        fig = make_figure(run, args)
    except (UsageError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"convnet: error: {message}", file=sys.stderr)
        return 1
    if args.output == "-":
        save_figure(fig, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    save_figure(fig, output)
    print(output)
    return 0


def run_report(args) -> int:
    require(args.samples >= 0 and args.mistakes >= 0, f"--samples and --mistakes must be 0 or "
            f"more, received {args.samples} and {args.mistakes}")
    from convnet.viz.report import REPORT, write_report

    output = None
    if args.output is not None:
        # The run's own report may be written again: it is what `convnet report RUN` makes.
        folder = Path(args.run) if Path(args.run).is_dir() else None
        output = checked_output(args.output, (".html", ".htm"), force=args.force,
                                what="an HTML report",
                                replaceable=folder / REPORT if folder else None)
    path = write_report(args.run, output, samples=args.samples, mistakes=args.mistakes,
                        which=args.checkpoint)
    print(path)
    return 0
