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

The run folder then works with summary, the explorer, evaluate and predict. Operators
convnet cannot compute exactly are refused, with the node named.
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
                          help="per-sample input shape C H W, for graphs whose input sizes "
                               "are symbolic")
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


def run_import(args) -> int:
    from convnet.cli.outputs import run_file
    from convnet.io.checkpoint import save_model
    from convnet.io.onnx.importer import load
    from convnet.io.runlock import claim

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
        with claim(output, new=True):  # as a training claims its folder: one writer at a time
            save_model(output, model, model.input_shape, class_names=model.class_names,
                       normalization=model.normalization)
    except _errors() as error:
        return _fail("import", error)
    print(f"imported {args.source}: {len(model.layers)} layers, {model.num_parameters():,} "
          f"parameters, input {tuple(model.input_shape)} -> {args.output}")
    return 0
