"""`convnet summary`, `models`, `datasets` and `calc`: questions about shapes, answered."""

from __future__ import annotations

import json
import re
from pathlib import Path

from convnet.cli import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "summary", "Layer-by-layer table: output shapes, parameter formulas, "
        "receptive fields, multiply-adds, memory.",
        "convnet summary lenet5\nconvnet summary my_model.toml\nconvnet summary runs/lenet --json\n"
        "convnet summary detector.onnx --input-shape 3 96 160")
    parser.add_argument("target", metavar="MODEL_OR_FILE_OR_RUN",
                        help="zoo name, .toml model file, run folder, checkpoint or .onnx file")
    parser.add_argument("--input-shape", type=int, nargs="+", default=None, metavar="N",
                        help="per-sample input size to summarize at (C H W; an .onnx file's "
                             "own layout), for an ONNX file that leaves sizes open or a fully "
                             "convolutional model at another size")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.set_defaults(func=run_summary)

    parser = add_command(
        subparsers, "gradcheck", "Check backpropagation: every layer's analytic gradients "
        "against centred differences in float64 on a few random samples, as a table of "
        "relative errors with a verdict (exit status 1 when one is wrong).",
        "convnet gradcheck lenet5\nconvnet gradcheck my_model.toml --samples 3\n"
        "convnet gradcheck runs/lenet --json")
    parser.add_argument("target", metavar="MODEL_OR_RUN",
                        help="zoo name, .toml model file, run folder, checkpoint or .onnx file")
    parser.add_argument("--samples", type=_positive, default=2,
                        help="random inputs (standard normal) in the batch [default: 2]")
    parser.add_argument("--coords", type=_positive, default=8,
                        help="coordinates compared per array [default: 8]")
    parser.add_argument("--seed", type=int, default=0, help="[default: 0]")
    parser.add_argument("--no-layers", action="store_true",
                        help="only the whole model through the loss, not each layer alone")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.set_defaults(func=run_gradcheck)

    parser = add_command(subparsers, "models", "List the built-in models.",
                         "convnet models\nconvnet models --json")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_models)

    parser = add_command(subparsers, "datasets", "List the datasets convnet can read.",
                         "convnet datasets")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_datasets)

    parser = add_command(
        subparsers, "calc", "Conv/pool arithmetic: output volume and parameters, with the "
        "formulas; explains configurations that do not fit.",
        "convnet calc 32x32x3 --filter 5 --stride 1 --pad 2 --filters 10   # -> 32x32x10, 760\n"
        "convnet calc 7x7 --filter 3 --stride 3                             # does not fit: why\n"
        "convnet calc 56x56x64 --filter 1 --filters 32                      # 1x1 convolution\n"
        "convnet calc 32x32x10 --pool --filter 2 --stride 2                 # max pooling\n"
        "convnet calc 14x14x8 --transposed -F 3 -S 2 -P 1 --output-padding 1 -K 4  # -> 28x28x4")
    parser.add_argument("input", metavar="HxWxD",
                        help="input volume, height x width x depth as in the lecture "
                             "(depth 1 if left out)")
    parser.add_argument("--filter", "-F", type=_size, required=True,
                        help="filter size F (or HxW)")
    parser.add_argument("--stride", "-S", type=_size, default=None,
                        help="stride S [default: 1; F for --pool]")
    parser.add_argument("--pad", "-P", default="0",
                        help="zero padding P per side, or 'same' [default: 0]")
    parser.add_argument("--dilation", type=_size, default=(1, 1),
                        help="spacing D of the filter's taps: a 3x3 filter with dilation 2 "
                             "covers 5x5 (D*(F - 1) + 1) with 9 weights [default: 1]")
    parser.add_argument("--no-strict", action="store_true",
                        help="floor a window that does not fit, as PyTorch does (the last "
                             "border pixels are never covered) instead of refusing it")
    parser.add_argument("--filters", "-K", type=int, default=1,
                        help="number of filters K (conv only) [default: 1]")
    parser.add_argument("--pool", action="store_true",
                        help="a pooling window instead of a convolution")
    parser.add_argument("--transposed", action="store_true",
                        help="a transposed convolution (ConvTranspose2d): output "
                             "(N - 1)*S - 2P + D*(F - 1) + output_padding + 1")
    parser.add_argument("--output-padding", type=_non_negative_size, default=None,
                        help="rows/cols a transposed convolution adds at the bottom/right, "
                             "below the stride or dilation [default: 0]")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_calc)


def _positive(text: str) -> int:
    import argparse

    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {text!r}")
    return int(text)


def _size(text: str) -> tuple[int, int]:
    import argparse

    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", text)
    if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < 1):
        raise argparse.ArgumentTypeError(f"expected a positive size like 5 or 3x5, "
                                         f"received {text!r}")
    first = int(match.group(1))
    return (first, int(match.group(2) or first))


def _non_negative_size(text: str) -> tuple[int, int]:
    import argparse

    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size >= 0 like 1 or 0x1, "
                                         f"received {text!r}")
    first = int(match.group(1))
    return (first, int(match.group(2) or first))


def resolve_model(target: str, input_shape=None):
    """(model, input_shape) for a zoo name, model file, run folder, checkpoint or ONNX file
    (an ONNX file read at `input_shape` where it leaves sizes open)."""
    from convnet.io import checkpoint, modelfile, zoo

    path = Path(target)
    if path.suffix == ".onnx" and path.exists():
        from convnet.io.onnx import OnnxImportError, load

        try:
            model = load(path, input_shape=input_shape)
        except OnnxImportError as error:
            if input_shape is None or "does not fit input" not in str(error):
                raise
            model = load(path)  # sizes fixed by the file: summarized at the size asked
        return model, model.input_shapes if model.multi_input else model.input_shape
    if target in zoo.MODELS:
        model = zoo.build_model(target)
        return model, zoo.MODELS[target].input_shape
    if path.suffix == ".toml":
        spec = modelfile.load_spec(path)
        return modelfile.build(spec), tuple(spec["input_shape"])
    if path.exists():
        loaded = checkpoint.load(path)
        return loaded.model, loaded.input_shape
    raise checkpoint.CheckpointError(
        f"{target!r} is neither a zoo model ({', '.join(zoo.MODELS)}) nor an existing model "
        f"file, run folder or checkpoint")


def run_summary(args) -> int:
    model, input_shape = resolve_model(args.target, args.input_shape)
    if args.input_shape is not None:
        input_shape = tuple(args.input_shape)  # re-checked at this size by the summary
    summary = model.describe(input_shape)
    print(json.dumps(summary.to_dict()) if args.json else summary)
    return 0


def run_gradcheck(args) -> int:
    import numpy

    from convnet.nn.gradcheck import gradcheck
    from convnet.nn.graph import first_output_shape

    model, input_shape = resolve_model(args.target)
    generator = numpy.random.default_rng(args.seed)
    shapes = list(getattr(model, "input_shapes", None) or [tuple(input_shape)])
    x = [generator.standard_normal((args.samples, *shape)) for shape in shapes]
    out = first_output_shape(model, shapes if len(shapes) > 1 else shapes[0])
    y = generator.integers(0, out[0], args.samples) if len(out) == 1 else None
    report = gradcheck(model, x if len(x) > 1 else x[0], y, coords=args.coords,
                       seed=args.seed, layers=not args.no_layers)
    print(json.dumps(report.to_dict()) if args.json else report)
    return 0 if report.ok else 1


def run_models(args) -> int:
    from convnet.io import zoo

    rows = []
    for name, entry in zoo.MODELS.items():
        summary = zoo.build_model(name).describe(entry.input_shape)
        rows.append({"name": name, "description": entry.description,
                     "input_shape": list(entry.input_shape), "params": summary.total_params,
                     "macs": summary.total_macs, "task": entry.task})
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        shape = "x".join(str(v) for v in r["input_shape"])
        print(f"{r['name'].ljust(width)}  {shape:>8}  {r['params']:>9,} params  "
              f"{r['description']}")
    return 0


def run_datasets(args) -> int:
    from convnet import data

    rows = [{"name": info.name, "description": info.description,
             "input_shape": list(info.input_shape), "num_classes": info.num_classes,
             "task": info.task}
            for info in data.list_datasets()]
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        shape = "x".join(str(v) for v in r["input_shape"]) if r["input_shape"] else "any"
        print(f"{r['name'].ljust(width)}  {shape:>8}  {r['description']}")
    return 0


def run_calc(args) -> int:
    from convnet.core.arithmetic import effective_size, window_output
    from convnet.core.errors import ShapeError

    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*(?:x\s*(\d+))?\s*", args.input)
    if not match:
        raise ShapeError(f"input must look like 32x32x3 (height x width x depth) or 7x7, "
                         f"received {args.input!r}")
    height, width, depth = int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)
    if min(height, width, depth) < 1:
        raise ShapeError(f"input sizes must be positive, received {args.input!r}")
    if args.transposed and args.pool:
        raise ShapeError("--transposed and --pool do not go together: a transposed "
                         "convolution has weights; leave one out")
    if args.output_padding is not None and not args.transposed:
        raise ShapeError("--output-padding is for a transposed convolution; add --transposed")
    if args.transposed:
        return _transposed_calc(args, (height, width, depth))
    kernel = args.filter
    stride = args.stride or (kernel if args.pool else (1, 1))
    if args.filters < 1 and not args.pool:
        raise ShapeError(f"--filters must be 1 or more (the number of filters K), received "
                         f"{args.filters}")
    if args.pad == "same":
        padding = "same"
    elif args.pad == "0":
        padding = (0, 0)
    else:
        match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", args.pad)
        if not match:
            raise ShapeError(f"--pad must be a size of 0 or more like 2 or 1x2, or 'same', "
                             f"received {args.pad!r}")
        padding = (int(match.group(1)), int(match.group(2) or match.group(1)))
    label = "pool" if args.pool else "conv"
    try:
        shape = window_output((height, width), kernel, stride, padding, args.dilation,
                              strict=not args.no_strict, layer=label)
    except ShapeError as error:
        raise ShapeError(cli_words(str(error))) from None
    out_h, out_w = shape.out_hw
    pad = shape.padding
    depth_out = depth if args.pool else args.filters
    eff = (effective_size(kernel[0], args.dilation[0]), effective_size(kernel[1], args.dilation[1]))
    per_filter = kernel[0] * kernel[1] * depth + 1
    params = 0 if args.pool else args.filters * per_filter
    result = {
        "input": [height, width, depth], "output": [out_h, out_w, depth_out],
        "filter": list(kernel), "stride": list(stride),
        "padding": [pad.top, pad.bottom, pad.left, pad.right], "params": params,
    }
    if args.json:
        print(json.dumps(result))
        return 0

    def formula(n, f, s, before, after, out):
        padding_text = f"2*{before}" if before == after else f"{before}+{after}"
        return f"({n} - {f} + {padding_text})/{s} + 1 = {out}"

    print(f"input    {height}x{width}x{depth}  (height x width x depth)")
    what = (f"{kernel[0]}x{kernel[1]} max pool window" if args.pool else
            f"{args.filters} filter(s) of {kernel[0]}x{kernel[1]}x{depth}")
    print(f"window   {what}, stride {_pair_text(stride)}, pad {_pad_text(pad)}")
    if args.dilation != (1, 1):
        d = args.dilation
        print(f"dilation {_pair_text(d)}: the taps are {_pair_text(d)} pixels apart, so the "
              f"{kernel[0]}x{kernel[1]} filter covers {eff[0]}x{eff[1]} "
              f"(F_eff = D*(F - 1) + 1 = {d[0]}*({kernel[0]} - 1) + 1 = {eff[0]}"
              + (f", {d[1]}*({kernel[1]} - 1) + 1 = {eff[1]}" if eff[0] != eff[1] or
                 d[0] != d[1] else "") + f") with {kernel[0] * kernel[1]} weights per slice")
    for axis, name, n, (before, after), out in (
            (0, "height", height, (pad.top, pad.bottom), out_h),
            (1, "width ", width, (pad.left, pad.right), out_w)):
        text = formula(n, eff[axis], stride[axis], before, after, out)
        if shape.dropped[axis]:
            exact = (n - eff[axis] + before + after) / stride[axis] + 1
            text = text.replace(f" = {out}", f" = {exact:.2f}, floored to {out}")
        print(f"{name}   {text}" + _floored(shape.dropped[axis], ("row", "column")[axis]))
    print(f"output   {out_h}x{out_w}x{depth_out}" + (
        "  (depth unchanged: each map is pooled on its own)" if args.pool else
        f"  (one {out_h}x{out_w} activation map per filter)"))
    if not args.pool:
        print(f"params   {kernel[0]}*{kernel[1]}*{depth} + 1 = {per_filter} per filter "
              f"(weights + bias); {args.filters} x {per_filter} = {params:,} in all")
    else:
        print("params   0 (pooling has no weights)")
    return 0


def _transposed_calc(args, volume) -> int:
    """`calc --transposed`: sizes, the formula with the numbers, and the parameters."""
    from convnet.core.arithmetic import transposed_formula, transposed_output
    from convnet.core.errors import ShapeError

    height, width, depth = volume
    kernel, stride, dilation = args.filter, args.stride or (1, 1), args.dilation
    output_padding = args.output_padding or (0, 0)
    padding = args.pad if args.pad in ("same", "valid") else (
        _non_negative_size(args.pad) if args.pad != "0" else (0, 0))
    try:
        shape = transposed_output((height, width), kernel, stride, padding, dilation,
                                  output_padding, layer="deconv")
    except ShapeError as error:
        raise ShapeError(cli_words(str(error))) from None
    out_h, out_w = shape.out_hw
    pads = (shape.padding.top, shape.padding.left)
    per_output = kernel[0] * kernel[1] * depth + 1
    params = args.filters * per_output
    if args.json:
        print(json.dumps({
            "input": [height, width, depth], "output": [out_h, out_w, args.filters],
            "filter": list(kernel), "stride": list(stride),
            "padding": [pads[0], pads[0], pads[1], pads[1]],
            "output_padding": list(output_padding), "params": params, "transposed": True}))
        return 0
    lines = [transposed_formula((height, width)[a], kernel[a], stride[a], pads[a], dilation[a],
                                output_padding[a]) + f" = {shape.out_hw[a]}" for a in range(2)]
    extra = f", output_padding {_pair_text(output_padding)}" if any(output_padding) else ""
    dilated = f", dilation {_pair_text(dilation)}" if dilation != (1, 1) else ""
    print(f"input    {height}x{width}x{depth}  (height x width x depth)")
    print(f"window   {args.filters} transposed filter(s) of {kernel[0]}x{kernel[1]}x{depth}, "
          f"stride {_pair_text(stride)}, pad {_pair_text(pads)}{extra}{dilated}")
    print(f"height   {lines[0]}")
    print(f"width    {lines[1]}")
    cropped = "; padding cropped off" if any(pads) else ""
    print(f"output   {out_h}x{out_w}x{args.filters}  (each input pixel adds a "
          f"{kernel[0]}x{kernel[1]}x{args.filters} stamp, {_pair_text(stride)} apart{cropped})")
    print(f"params   {kernel[0]}*{kernel[1]}*{depth} + 1 = {per_output} per output channel; "
          f"{args.filters} x {per_output} = {params:,} in all (weight "
          f"{(depth, args.filters, *kernel)}, bias ({args.filters},))")
    return 0


def _floored(dropped: int, unit: str) -> str:
    if not dropped:
        return ""
    return f"  (the last {dropped} {unit}{'s' if dropped > 1 else ''} never covered)"


# The arithmetic's messages speak Python (they are raised by layers too); on the command line
# the same advice names the flags.
_CLI_WORDS = [
    (re.compile(r"padding='same'"), "--pad same"),
    (re.compile(r"Pass strict=False to floor like PyTorch"),
     "Pass --no-strict to floor like PyTorch"),
    (re.compile(r"use a smaller kernel_size or more padding"),
     "use a smaller --filter or more --pad"),
    (re.compile(r"choose padding so that"), "choose --pad so that"),
]


def cli_words(message: str) -> str:
    """An arithmetic message with the calc command's flags instead of Python keywords."""
    for pattern, words in _CLI_WORDS:
        message = pattern.sub(words, message)
    return message


def _pair_text(value) -> str:
    return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"


def _pad_text(pad) -> str:
    if pad.top == pad.bottom == pad.left == pad.right:
        return str(pad.top)
    return f"top {pad.top}, bottom {pad.bottom}, left {pad.left}, right {pad.right}"
