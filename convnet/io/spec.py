"""Models as plain data: a JSON/TOML-friendly spec of layers, and back.

A spec is {"input_shape": [C, H, W], "strict": bool, "layers": [{"type": "conv", ...}, ...]}.
Checkpoints store it, model files (TOML) are written in it, and `build` turns it into a
model. Channel and feature counts may be left out: they are taken from the shape that
reaches the layer, through the same `output_shape` the layers validate with.

A chain of layers becomes a Sequential. A graph says where each layer reads from: an entry
may carry a `name` and `inputs = ["a", "b"]` (tensor names: an earlier entry's name, a model
input, "split1:0" for the first output of a layer with several); an entry without `inputs`
reads the entry before it. `outputs = [...]` lists the model's outputs (default: the last
entry); several model inputs are given as `inputs = [{"name": "x", "shape": [C, H, W]}]`
instead of input_shape. An entry {"type": "reuse", "layer": "conv3", "inputs": [...]} calls
an earlier layer again, sharing its weights. Such a spec becomes a `cn.Model`.
"""

from __future__ import annotations

import math
from collections import Counter

from convnet.core.errors import ShapeError
from convnet.nn.activations import (
    ELU,
    GELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSoftmax,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from convnet.nn.batchnorm import BatchNorm2d
from convnet.nn.constant import Constant
from convnet.nn.containers import Residual, Sequential
from convnet.nn.conv import Conv2d
from convnet.nn.conv_transpose import ConvTranspose2d
from convnet.nn.graph import Model
from convnet.nn.layer import Layer
from convnet.nn.linear import Dropout, Flatten, Linear
from convnet.nn.matmul import MatMul
from convnet.nn.merge import Add, Concat, Div, Mul, Sub
from convnet.nn.normalization import LayerNorm, LocalResponseNorm
from convnet.nn.padding import Pad, ZeroPad2d
from convnet.nn.pixel_shuffle import DepthToSpace, PixelShuffle, PixelUnshuffle, SpaceToDepth
from convnet.nn.pointwise import Abs, Erf, Exp, Log, Neg, Pow, Reciprocal, Sqrt
from convnet.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from convnet.nn.reduce import ReduceMax, ReduceMean, ReduceSum
from convnet.nn.reshape import Permute, Reshape
from convnet.nn.resize import Resize, Upsample
from convnet.nn.slice import Slice
from convnet.nn.split import Split
from convnet.nn.symbolic import Input


class SpecError(ValueError):
    """A model spec that cannot be built; `layer_index` says which (0-based, top level)."""

    def __init__(self, message: str, layer_index: int | None = None):
        super().__init__(message)
        self.layer_index = layer_index


# type name in specs -> (class, accepted arguments)
LAYER_TYPES: dict[str, tuple[type[Layer], tuple[str, ...]]] = {
    "conv": (Conv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                      "dilation", "groups", "bias", "init")),
    "convtranspose": (ConvTranspose2d, ("in_channels", "out_channels", "kernel_size", "stride",
                                        "padding", "output_padding", "groups", "bias",
                                        "dilation", "init")),
    "maxpool": (MaxPool2d, ("kernel_size", "stride", "padding")),
    "avgpool": (AvgPool2d, ("kernel_size", "stride", "padding", "count_include_pad")),
    "gap": (GlobalAvgPool2d, ()),
    "relu": (ReLU, ()),
    "leakyrelu": (LeakyReLU, ("negative_slope",)),
    "sigmoid": (Sigmoid, ()),
    "tanh": (Tanh, ()),
    "softmax": (Softmax, ("dim",)),
    "linear": (Linear, ("in_features", "out_features", "bias", "init")),
    "flatten": (Flatten, ()),
    "dropout": (Dropout, ("p",)),
    "batchnorm": (BatchNorm2d, ("num_features", "eps", "momentum")),
    "residual": (Residual, ("body", "projection")),
    "sequential": (Sequential, ("layers",)),
    "concat": (Concat, ("axis",)),
    "add": (Add, ()),
    "sub": (Sub, ()),
    "mul": (Mul, ()),
    "div": (Div, ()),
    "upsample": (Upsample, ("size", "scale_factor", "mode", "align_corners",
                            "recompute_scale_factor")),
    "resize": (Resize, ("size", "scales", "mode", "coordinate_transformation_mode",
                        "nearest_mode")),
    "pixelshuffle": (PixelShuffle, ("upscale_factor",)),
    "pixelunshuffle": (PixelUnshuffle, ("downscale_factor",)),
    "depthtospace": (DepthToSpace, ("blocksize", "mode")),
    "spacetodepth": (SpaceToDepth, ("blocksize",)),
    "relu6": (ReLU6, ()),
    "hardsigmoid": (Hardsigmoid, ("alpha", "beta")),
    "hardswish": (Hardswish, ()),
    "silu": (SiLU, ()),
    "elu": (ELU, ("alpha",)),
    "gelu": (GELU, ("approximate",)),
    "hardtanh": (Hardtanh, ("min_val", "max_val")),
    "prelu": (PReLU, ("num_parameters", "init")),
    "zeropad": (ZeroPad2d, ("padding",)),
    "pad": (Pad, ("padding", "mode", "value")),
    "logsoftmax": (LogSoftmax, ("dim",)),
    "reshape": (Reshape, ("shape", "start_dim", "end_dim")),
    "permute": (Permute, ("dims",)),
    "split": (Split, ("split_sizes", "dim")),
    "slice": (Slice, ("dims", "starts", "ends", "steps")),
    "reducemean": (ReduceMean, ("dim", "keepdim")),
    "reducesum": (ReduceSum, ("dim", "keepdim")),
    "reducemax": (ReduceMax, ("dim", "keepdim")),
    "matmul": (MatMul, ()),
    "constant": (Constant, ("shape", "trainable")),  # the value comes from the state dict
    "layernorm": (LayerNorm, ("normalized_shape", "eps", "elementwise_affine", "bias")),
    "lrn": (LocalResponseNorm, ("size", "alpha", "beta", "k")),
    "erf": (Erf, ()),
    "sqrt": (Sqrt, ()),
    "exp": (Exp, ()),
    "log": (Log, ()),
    "abs": (Abs, ()),
    "neg": (Neg, ()),
    "reciprocal": (Reciprocal, ()),
    "pow": (Pow, ("exponent",)),
}
ALIASES = {"conv2d": "conv", "maxpool2d": "maxpool", "pool": "maxpool", "avgpool2d": "avgpool",
           "globalavgpool2d": "gap", "globalavgpool": "gap", "fc": "linear", "dense": "linear",
           "bn": "batchnorm", "batchnorm2d": "batchnorm", "leaky_relu": "leakyrelu",
           "concatenate": "concat", "cat": "concat", "subtract": "sub", "multiply": "mul",
           "divide": "div",
           "pixel_shuffle": "pixelshuffle", "pixel_unshuffle": "pixelunshuffle",
           "depth_to_space": "depthtospace", "space_to_depth": "spacetodepth",
           "hard_sigmoid": "hardsigmoid", "hard_swish": "hardswish", "swish": "silu",
           "hard_tanh": "hardtanh", "clip": "hardtanh", "zeropad2d": "zeropad",
           "zero_pad": "zeropad", "zero_pad2d": "zeropad", "log_softmax": "logsoftmax",
           "upsampling": "upsample", "convtranspose2d": "convtranspose",
           "deconv": "convtranspose",
           "view": "reshape", "transpose": "permute", "mean": "reducemean",
           "sum": "reducesum", "amax": "reducemax", "const": "constant",
           "localresponsenorm": "lrn", "ln": "layernorm"}
# Nested residual blocks deeper than this are refused: a summary, an export and Python's own
# recursion all walk the nesting, and no real network nests this deep.
MAX_NESTING = 64
TYPE_OF_CLASS = {cls: name for name, (cls, _) in LAYER_TYPES.items()}


def _canonical(kind: str) -> str:
    key = str(kind).lower().replace("-", "")
    key = ALIASES.get(key, key)
    if key not in LAYER_TYPES:
        known = ", ".join(sorted(LAYER_TYPES))
        raise SpecError(f"unknown layer type {kind!r}; known types: {known}")
    return key


def _tuple_or_value(value):
    return tuple(value) if isinstance(value, list) else value


def build_layer(entry: dict, input_shape, strict: bool, nesting: int = 0,
                counts: Counter | None = None) -> Layer:
    """One layer from its spec entry, filling in in_channels/in_features from input_shape."""
    if not isinstance(entry, dict) or "type" not in entry:
        raise SpecError(f"each layer needs a 'type', received {entry!r}")
    kind = _canonical(entry["type"])
    cls, accepted = LAYER_TYPES[kind]
    args = {k: v for k, v in entry.items() if k not in ("type", "name", "inputs")}
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise SpecError(f"{kind}: unknown argument(s) {', '.join(unknown)}; accepted: "
                        f"{', '.join(accepted) or 'none'}")
    if kind in ("residual", "sequential"):
        # The names the finished model will give (see _name_modules), so that a message from
        # inside the block names its layers as the summary will: the block itself comes first.
        inner = Counter(counts or {})
        inner["res" if kind == "residual" else "seq"] += 1
        if kind == "residual":
            inner["seq"] += 1  # its body is a Sequential
            return _build_residual(args, input_shape, strict, nesting + 1, inner)
        return _build_sequential(args.get("layers"), input_shape, strict, nesting + 1, inner)
    args = {k: _tuple_or_value(v) for k, v in args.items()}
    if kind in ("conv", "convtranspose"):
        args.setdefault("in_channels", input_shape[0])
        if "out_channels" not in args:
            raise SpecError(f"{kind}: out_channels is required (the number of filters K)")
        if "kernel_size" not in args:
            raise SpecError(f"{kind}: kernel_size is required (the filter size F)")
    elif kind == "batchnorm":
        args.setdefault("num_features", input_shape[0])
    elif kind == "linear":
        args.setdefault("in_features", math.prod(input_shape))
        if "out_features" not in args:
            raise SpecError("linear: out_features is required")
    elif kind in ("maxpool", "avgpool") and "kernel_size" not in args:
        raise SpecError(f"{kind}: kernel_size is required")
    elif kind == "constant":
        import numpy

        if "shape" not in args:
            raise SpecError("constant: shape is required (the per-sample shape of its value)")
        args["value"] = numpy.zeros(args.pop("shape"), dtype=numpy.float32)
    try:
        layer = cls(**args)
    except TypeError as error:
        raise SpecError(f"{kind}: {error}") from None
    if hasattr(layer, "strict") and layer.strict is None and not strict:
        layer.strict = False
    return layer


def _check_nesting(nesting: int) -> None:
    if nesting > MAX_NESTING:
        raise SpecError(f"blocks nested {nesting} deep; at most {MAX_NESTING} levels of "
                        f"residual or sequential blocks are accepted: write deep networks as "
                        f"a flat list of blocks")


def _chain(entries, input_shape, strict: bool, nesting: int, counts: Counter,
           where: str) -> tuple[list[Layer], tuple]:
    """Build a list of layer entries in order; each one's input is the previous one's output.
    Names are handed out as Sequential does (conv1, relu1, ...), before each layer's shape is
    checked, so messages carry them; one pass, so a long list builds in linear time."""
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{where} must be a non-empty list of layers")
    layers, shape = [], tuple(input_shape)
    for entry in entries:
        layer = build_layer(entry, shape, strict, nesting, counts)
        _name_modules(layer, counts)
        shape = layer.output_shape(shape)
        layers.append(layer)
    return layers, shape


def _name_modules(layer: Layer, counts: Counter) -> None:
    """Sequential's names (kind + running count, in pre-order) for `layer` and its modules."""
    for module in layer.modules():
        counts[module.kind] += 1
        if not module.user_named:
            module.name = f"{module.kind}{counts[module.kind]}"
            if hasattr(module, "_geometry_cache"):
                del module._geometry_cache  # messages carry the name: recompute with it


def _build_residual(args: dict, input_shape, strict: bool, nesting: int,
                    counts: Counter) -> Residual:
    _check_nesting(nesting)
    body, _ = _chain(args.get("body"), input_shape, strict, nesting, counts, "residual: 'body'")
    projection = None
    if args.get("projection") is not None:
        projection = build_layer(args["projection"], input_shape, strict, nesting, counts)
        _name_modules(projection, counts)
    return Residual(*body, projection=projection)


def _build_sequential(entries, input_shape, strict: bool, nesting: int,
                      counts: Counter) -> Sequential:
    _check_nesting(nesting)
    layers, _ = _chain(entries, input_shape, strict, nesting, counts, "sequential: 'layers'")
    return Sequential(*layers, strict=strict)


def _shape(value, what: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise SpecError(f"{what} must be a list of positive sizes such as [1, 28, 28], "
                        f"received {value!r}") from None
    if not shape or min(shape) < 1 or any(isinstance(v, bool) for v in value):
        raise SpecError(f"{what} must be a list of positive sizes such as [1, 28, 28], "
                        f"received {value!r}")
    return shape


def model_inputs(spec: dict) -> list[tuple[str, tuple[int, ...]]]:
    """The model's inputs as (name, per-sample shape): input_shape names one 'input'."""
    if "inputs" in spec:
        listed = spec["inputs"]
        if not isinstance(listed, list) or not listed or not all(
                isinstance(item, dict) and "shape" in item for item in listed):
            raise SpecError('inputs must be a list like [{name = "x", shape = [1, 28, 28]}]')
        return [(str(item.get("name", f"input{i + 1}")), _shape(item["shape"], "inputs.shape"))
                for i, item in enumerate(listed)]
    if "input_shape" not in spec:
        raise SpecError("the model spec needs input_shape = [C, H, W]")
    return [("input", _shape(spec["input_shape"], "input_shape"))]


def is_graph(spec: dict) -> bool:
    """Whether the spec wires layers as a graph (names with inputs, merges, several
    inputs or outputs) rather than a plain chain."""
    if "inputs" in spec or "outputs" in spec:
        return True
    for entry in spec.get("layers") or []:
        if isinstance(entry, dict) and ("inputs" in entry or str(entry.get("type", "")).lower()
                                        in ("reuse", *_MERGES)):
            return True
    return False


_MERGES = ("concat", "add", "sub", "mul", "div", "concatenate", "cat", "subtract",
           "multiply", "divide")


def build(spec: dict) -> Layer:
    """A validated model from a spec (a Sequential for a chain, a Model for a graph); errors
    name the layer index at fault."""
    if not isinstance(spec, dict):
        raise SpecError(f"a model spec is a table of input_shape and layers, received "
                        f"{type(spec).__name__}")
    inputs = model_inputs(spec)
    strict = bool(spec.get("strict", True))
    entries = spec.get("layers")
    if not isinstance(entries, list) or not entries:
        raise SpecError("the model spec needs a non-empty list of layers")
    if is_graph(spec):
        return _build_graph(spec, inputs, entries, strict)
    (_, input_shape), = inputs
    if len(input_shape) != 3:
        raise SpecError(f"input_shape must be [C, H, W] with positive sizes, received "
                        f"{list(input_shape)}")
    counts: Counter = Counter()
    layers, shape = [], input_shape
    for index, entry in enumerate(entries):
        try:
            layer = build_layer(entry, shape, strict, 0, counts)
            _name_modules(layer, counts)
            shape = layer.output_shape(shape)
            layers.append(layer)
        except (ShapeError, ValueError, TypeError, RecursionError) as error:
            raise SpecError(_message(error), index) from None
    model = Sequential(*layers, strict=strict)
    model.input_shape = input_shape  # checked layer by layer above
    return model


def _message(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return f"the spec nests too deeply (at most {MAX_NESTING} levels)"
    return str(error)


def _build_graph(spec: dict, inputs, entries: list, strict: bool) -> Model:
    tensors = {name: Input(shape, name=name) for name, shape in inputs}
    given = list(tensors.values())
    layers: dict[str, Layer] = {}
    previous = given[0]
    for index, entry in enumerate(entries):
        try:
            if not isinstance(entry, dict) or "type" not in entry:
                raise SpecError(f"each layer needs a 'type', received {entry!r}")
            sources = _sources(entry, tensors, previous)
            if str(entry["type"]).lower() == "reuse":
                layer = layers.get(entry.get("layer"))
                if layer is None:
                    raise SpecError(f"reuse: no earlier layer named {entry.get('layer')!r}; "
                                    f"known: {', '.join(layers) or 'none'}")
            else:
                layer = build_layer(entry, sources[0].shape, strict)
                if "name" in entry:
                    layer.named(str(entry["name"]))
            out = layer(sources if layer.multi_input else _one(sources, entry))
            outs = out if isinstance(out, tuple) else (out,)
            layers.setdefault(layer.name, layer)
            for tensor in outs:
                tensors[tensor.name] = tensor
            if "name" in entry and str(entry["type"]).lower() == "reuse":
                tensors[str(entry["name"])] = outs[0]
            previous = outs[0]
        except (ShapeError, ValueError, TypeError, RecursionError) as error:
            raise SpecError(_message(error), index) from None
    names = spec.get("outputs") or [previous.name]
    if isinstance(names, str):
        names = [names]
    missing = [name for name in names if name not in tensors]
    if missing:
        raise SpecError(f"outputs names {', '.join(map(repr, missing))}, which no layer makes; "
                        f"known: {', '.join(tensors)}")
    try:
        return Model(inputs=given, outputs=[tensors[name] for name in names], strict=strict)
    except (ValueError, TypeError) as error:
        raise SpecError(str(error)) from None


def _sources(entry: dict, tensors: dict, previous) -> list:
    names = entry.get("inputs")
    if names is None:
        return [previous]
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        raise SpecError(f"inputs must be a list of tensor names such as [\"conv1\", "
                        f"\"conv2\"], received {names!r}")
    unknown = [name for name in names if name not in tensors]
    if unknown:
        raise SpecError(f"inputs names {', '.join(map(repr, unknown))}, which no earlier layer "
                        f"or model input makes (names must refer to earlier entries); known: "
                        f"{', '.join(tensors)}")
    return [tensors[name] for name in names]


def _one(sources: list, entry: dict):
    if len(sources) != 1:
        raise SpecError(f"{entry['type']} takes one input, received {len(sources)}; merge them "
                        f"with a concat, add or mul layer first")
    return sources[0]


def layer_spec(layer: Layer) -> dict:
    """The spec entry that rebuilds `layer` (all arguments explicit)."""
    kind = TYPE_OF_CLASS.get(type(layer))
    if kind is None:
        raise SpecError(f"{type(layer).__name__} has no spec type")
    entry: dict = {"type": kind}
    if isinstance(layer, Conv2d):
        entry.update(in_channels=layer.in_channels, out_channels=layer.out_channels,
                     kernel_size=list(layer.kernel_size), stride=list(layer.stride),
                     padding=_padding(layer.padding), dilation=list(layer.dilation),
                     groups=layer.groups, bias=layer.bias is not None)
    elif isinstance(layer, ConvTranspose2d):
        entry.update(in_channels=layer.in_channels, out_channels=layer.out_channels,
                     kernel_size=list(layer.kernel_size), stride=list(layer.stride),
                     padding=list(layer.padding), output_padding=list(layer.output_padding),
                     groups=layer.groups, bias=layer.bias is not None,
                     dilation=list(layer.dilation))
    elif isinstance(layer, (MaxPool2d, AvgPool2d)):
        entry.update(kernel_size=list(layer.kernel_size), stride=list(layer.stride),
                     padding=_padding(layer.padding))
        if isinstance(layer, AvgPool2d):
            entry["count_include_pad"] = layer.count_include_pad
    elif isinstance(layer, LeakyReLU):
        entry["negative_slope"] = layer.negative_slope
    elif isinstance(layer, Linear):
        entry.update(in_features=layer.in_features, out_features=layer.out_features,
                     bias=layer.bias is not None)
    elif isinstance(layer, Dropout):
        entry["p"] = layer.p
    elif isinstance(layer, BatchNorm2d):
        entry.update(num_features=layer.num_features, eps=layer.eps, momentum=layer.momentum)
    elif isinstance(layer, Residual):
        entry["body"] = [layer_spec(child) for child in layer.body.layers]
        entry["projection"] = layer_spec(layer.projection) if layer.projection else None
    elif isinstance(layer, Sequential):
        entry["layers"] = [layer_spec(child) for child in layer.layers]
    elif isinstance(layer, Concat):
        entry["axis"] = layer.axis
    elif isinstance(layer, Reshape):
        entry.update(shape=list(layer.shape), start_dim=layer.start_dim, end_dim=layer.end_dim)
    elif isinstance(layer, Permute):
        entry["dims"] = list(layer.dims)
    elif isinstance(layer, Split):
        entry.update(split_sizes=list(layer.split_sizes), dim=layer.dim)
    elif isinstance(layer, Slice):
        entry.update(dims=list(layer.dims), starts=list(layer.starts), ends=list(layer.ends),
                     steps=list(layer.steps))
    elif isinstance(layer, (ReduceMean, ReduceSum, ReduceMax)):
        entry.update(dim=list(layer.dim), keepdim=layer.keepdim)
    elif isinstance(layer, Constant):
        entry.update(shape=list(layer.data.shape), trainable=layer.trainable)
    elif isinstance(layer, LayerNorm):
        entry.update(normalized_shape=list(layer.normalized_shape), eps=layer.eps,
                     elementwise_affine=layer.elementwise_affine, bias=layer.bias is not None)
    elif isinstance(layer, LocalResponseNorm):
        entry.update(size=layer.size, alpha=layer.alpha, beta=layer.beta, k=layer.k)
    elif isinstance(layer, Pow):
        entry["exponent"] = layer.exponent
    elif isinstance(layer, (Softmax, LogSoftmax)):
        if layer.dim != 1 or isinstance(layer, LogSoftmax):  # specs written before dim existed
            entry["dim"] = layer.dim
    # None stands for the default: left out, so that the entry also fits a TOML model file
    entry.update((k, v) for k, v in _new_layer_arguments(layer).items() if v is not None)
    if layer.user_named:
        entry["name"] = layer.name
    return entry


def _new_layer_arguments(layer: Layer) -> dict:
    """Spec arguments of the resizing, pixel, padding and further activation layers."""
    if isinstance(layer, Upsample):
        return {"size": _pair_or_value(layer.size), "scale_factor": _pair_or_value(layer.scales),
                "mode": layer.upsample_mode, "align_corners": layer.align_corners,
                "recompute_scale_factor": layer.recompute_scale_factor}
    if isinstance(layer, Resize):
        return {"size": _pair_or_value(layer.size), "scales": _pair_or_value(layer.scales),
                "mode": layer.mode,
                "coordinate_transformation_mode": layer.coordinate_transformation_mode,
                "nearest_mode": layer.nearest_mode}
    if isinstance(layer, PixelShuffle):
        return {"upscale_factor": layer.upscale_factor}
    if isinstance(layer, PixelUnshuffle):
        return {"downscale_factor": layer.downscale_factor}
    if isinstance(layer, DepthToSpace):
        return {"blocksize": layer.blocksize, "mode": layer.mode}
    if isinstance(layer, SpaceToDepth):
        return {"blocksize": layer.blocksize}
    if isinstance(layer, Hardsigmoid):
        return {"alpha": layer.alpha, "beta": layer.beta}
    if isinstance(layer, ELU):
        return {"alpha": layer.alpha}
    if isinstance(layer, GELU):
        return {"approximate": layer.approximate}
    if isinstance(layer, Hardtanh) and not isinstance(layer, ReLU6):
        return {"min_val": layer.min_val, "max_val": layer.max_val}
    if isinstance(layer, PReLU):
        return {"num_parameters": layer.num_parameters, "init": layer.init}
    if isinstance(layer, ZeroPad2d):
        return {"padding": list(layer.padding)}
    if isinstance(layer, Pad):
        return {"padding": list(layer.padding), "mode": layer.mode, "value": layer.value}
    return {}


def _pair_or_value(pair):
    """None, a single value for equal (h, w), else [h, w]: what the layer was given."""
    if pair is None:
        return None
    return pair[0] if pair[0] == pair[1] else list(pair)


def _padding(padding):
    return padding if isinstance(padding, str) else list(padding)


def to_spec(model: Layer, input_shape=None) -> dict:
    """The spec that rebuilds `model`: a chain's layers, or a graph's calls with their names,
    inputs and outputs."""
    if isinstance(model, Model):
        return _graph_spec(model)
    return {"input_shape": [int(v) for v in input_shape], "strict": model.strict,
            "layers": [layer_spec(layer) for layer in model.layers]}


def _graph_spec(model: Model) -> dict:
    spec: dict = {}
    names = [model.slot_names[s] for s in model.input_slots]
    if len(names) == 1 and names[0] == "input":
        spec["input_shape"] = list(model.input_shapes[0])
    else:
        spec["inputs"] = [{"name": name, "shape": list(shape)}
                          for name, shape in zip(names, model.input_shapes, strict=True)]
    spec["strict"] = model.strict
    entries, written = [], set()
    for step in model.steps:
        sources = [model.slot_names[s] for s in step.inputs]
        if id(step.layer) in written:
            entries.append({"type": "reuse", "layer": step.layer.name,
                            "name": model.slot_names[step.outputs[0]], "inputs": sources})
            continue
        written.add(id(step.layer))
        entry = layer_spec(step.layer)
        entry["name"] = step.layer.name
        entry["inputs"] = sources
        entries.append(entry)
    spec["layers"] = entries
    spec["outputs"] = [model.slot_names[s] for s in model.output_slots]
    return spec
