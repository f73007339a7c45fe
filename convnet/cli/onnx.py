"""`convnet export` and `convnet import`: the CLI side of ONNX exchange.

The CLI calls `register(subparsers)`; each subcommand's `func(args)` returns the exit status.
Run folders and checkpoints are read and written through `convnet.io.checkpoint`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convnet.cli.outputs import add_force, checked_output

EXPORT_EPILOG = """\
examples:
  convnet export runs/resnet8 -o resnet8.onnx
  convnet export runs/lenet5/checkpoints/best.safetensors -o lenet5.onnx --opset 18

The file carries the class names and the input normalization as metadata; check it with
onnxruntime or open it in Netron.
"""

IMPORT_EPILOG = """\
examples:
  convnet import resnet8.onnx -o runs/resnet8-imported
  convnet import model.onnx -o runs/imported --input-shape 3 224 224
  convnet import cls.onnx -o runs/cls --input-shape 3 48 192 --classes 0,180 --mean 0.5 --std 0.5
  convnet train --model runs/cls --replace-head 4 --dataset my_folder --out runs/tuned

The run folder then works with summary, the explorer, evaluate, predict and train (as the
starting point of a fine-tuning). Any graph of supported operators imports (several inputs
and outputs too); a model whose file leaves sizes open runs at any size its arithmetic fits,
--input-shape fixing the one shown. Operators convnet cannot compute exactly are refused, with
the node named.
"""


def register(subparsers) -> None:
    """Add the `export` and `import` subcommands to an argparse subparsers object."""
    export = subparsers.add_parser(
        "export", help="write a trained model as an ONNX file",
        description="Write the model of a run folder or checkpoint as an ONNX file (opset 17 "
                    "by default) that onnxruntime, Netron and other frameworks read.",
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                        help="a run folder or a checkpoint file")
    export.add_argument("-o", "--output", required=True, metavar="MODEL.onnx",
                        help="the ONNX file to write")
    export.add_argument("--opset", type=int, default=None,
                        help="ONNX opset version (default 17; 13 or newer)")
    add_force(export)
    export.set_defaults(func=run_export)

    imported = subparsers.add_parser(
        "import", help="read an ONNX model into a run folder",
        description="Read an ONNX model (Conv, pooling, Gemm/MatMul, BatchNormalization, "
                    "residual Adds, ...) into a convnet run folder, with its weights.",
        epilog=IMPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    imported.add_argument("source", metavar="MODEL.onnx", help="the ONNX file to read")
    imported.add_argument("-o", "--output", required=True, metavar="RUN_FOLDER",
                          help="the run folder to create")
    imported.add_argument("--input-shape", type=int, nargs="+", metavar="N", default=None,
                          help="per-sample input shape (C H W, or H W C for an NHWC input: "
                               "the file's own layout) where the file leaves sizes open")
    imported.add_argument("--classes", default=None, metavar="NAMES",
                          help="class names of the first output: comma-separated, or a text "
                               "file with one per line [default: the file's metadata]")
    imported.add_argument("--mean", type=float, nargs="+", default=None,
                          help="input normalization the model was trained with, in [0, 1] "
                               "pixel units (1 value or one per channel); with --std")
    imported.add_argument("--std", type=float, nargs="+", default=None)
    imported.set_defaults(func=run_import)


def _fail(command: str, error: Exception) -> int:
    print(f"convnet {command}: error: {error}", file=sys.stderr)
    return 1


def _errors() -> tuple[type[Exception], ...]:
    """What a bad file, folder or model raises: reported in one line, exit status 1."""
    from convnet.io import checkpoint

    own = getattr(checkpoint, "CheckpointError", ValueError)
    return (own, OSError, ValueError, TypeError, KeyError)


def run_export(args) -> int:
    from convnet.io.checkpoint import load as load_checkpoint
    from convnet.io.onnx.export import OPSET, export

    try:
        checked_output(args.output, (".onnx",), force=args.force, what="an ONNX model")
        checkpoint = load_checkpoint(args.source)
        model = checkpoint.model
        opset = OPSET if args.opset is None else args.opset
        onnx_model = export(model, args.output, input_shape=checkpoint.input_shape,
                            class_names=checkpoint.class_names,
                            normalization=checkpoint.normalization, opset=opset)
    except _errors() as error:
        return _fail("export", error)
    shape = ", ".join(str(v) for v in checkpoint.input_shape)
    print(f"wrote {args.output}: {len(onnx_model.graph.node)} nodes, opset {opset}, "
          f"{model.num_parameters():,} parameters, input 'input' (batch, {shape})")
    return 0


def _class_names(text: str | None):
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [name.strip() for name in text.split(",")]


def _normalization(args, model):
    if args.mean is None and args.std is None:
        return model.normalization
    if args.mean is None or args.std is None:
        raise ValueError("--mean and --std go together (the normalization x = (pixel/255 - "
                         "mean) / std)")
    channels = model.input_shape[0]
    mean, std = list(args.mean), list(args.std)
    for values in (mean, std):
        if len(values) == 1:
            values *= channels  # one value for every channel
        elif len(values) != channels:
            raise ValueError(f"--mean/--std take 1 value or one per input channel "
                             f"({channels}), received {len(values)}")
    return {"mean": mean, "std": std}


def run_import(args) -> int:
    from convnet.cli.outputs import run_file
    from convnet.io.checkpoint import save_model
    from convnet.io.onnx.importer import load
    from convnet.io.runlock import claim
    from convnet.nn.graph import first_output_shape

    try:
        output = Path(args.output)
        if output.exists() and not output.is_dir():
            raise FileExistsError(f"{output} is a file; -o names the run folder to create")
        if output.is_dir() and any(output.iterdir()):
            raise FileExistsError(f"{output} exists and is not empty; choose a new folder")
        if run_file(output) is not None:
            raise FileExistsError(f"{output} is inside a run folder's checkpoints; choose a new "
                                  f"folder")
        model = load(args.source, input_shape=args.input_shape)
        names = _class_names(args.classes) or model.class_names
        scores = first_output_shape(model, model.input_shape)
        if names is not None and (len(scores) != 1 or len(names) != scores[0]):
            raise ValueError(f"{len(names)} class names for a first output of per-sample shape "
                             f"{scores}; give one name per score")
        with claim(output, new=True):  # as a training claims its folder: one writer at a time
            save_model(output, model, model.input_shape, class_names=names,
                       normalization=_normalization(args, model),
                       extra={"imported_from": str(args.source),
                              "output_names": getattr(model, "output_names", None)})
    except _errors() as error:
        return _fail("import", error)
    inputs = ", ".join(f"{model.slot_names[s]} {shape}" for s, shape in
                       zip(model.input_slots, model.input_shapes, strict=True))
    outputs = ", ".join(f"{name} {shape}" for name, shape in
                        zip(model.output_names, model.output_shapes(), strict=True))
    print(f"imported {args.source}: {len(model.layers)} layers, {model.num_parameters():,} "
          f"parameters; inputs {inputs}; outputs {outputs} -> {args.output}")
    return 0
