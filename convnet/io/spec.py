"""Models as plain data: a JSON/TOML-friendly spec of layers, and back.

A spec is {"input_shape": [C, H, W], "strict": bool, "layers": [{"type": "conv", ...}, ...]}.
Checkpoints store it, model files (TOML) are written in it, and `build` turns it into a
Sequential. Channel and feature counts may be left out: they are taken from the shape that
reaches the layer, through the same `output_shape` the layers validate with.
"""

from __future__ import annotations

import math

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
from convnet.nn.containers import Residual, Sequential
from convnet.nn.conv import Conv2d
from convnet.nn.layer import Layer
from convnet.nn.linear import Dropout, Flatten, Linear
from convnet.nn.padding import Pad, ZeroPad2d
from convnet.nn.pixel_shuffle import DepthToSpace, PixelShuffle, PixelUnshuffle, SpaceToDepth
from convnet.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from convnet.nn.resize import Resize, Upsample


class SpecError(ValueError):
    """A model spec that cannot be built; `layer_index` says which (0-based, top level)."""

    def __init__(self, message: str, layer_index: int | None = None):
        super().__init__(message)
        self.layer_index = layer_index


# type name in specs -> (class, accepted arguments)
LAYER_TYPES: dict[str, tuple[type[Layer], tuple[str, ...]]] = {
    "conv": (Conv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                      "dilation", "groups", "bias", "init")),
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
}
ALIASES = {"conv2d": "conv", "maxpool2d": "maxpool", "pool": "maxpool", "avgpool2d": "avgpool",
           "globalavgpool2d": "gap", "globalavgpool": "gap", "fc": "linear", "dense": "linear",
           "bn": "batchnorm", "batchnorm2d": "batchnorm", "leaky_relu": "leakyrelu",
           "pixel_shuffle": "pixelshuffle", "pixel_unshuffle": "pixelunshuffle",
           "depth_to_space": "depthtospace", "space_to_depth": "spacetodepth",
           "hard_sigmoid": "hardsigmoid", "hard_swish": "hardswish", "swish": "silu",
           "hard_tanh": "hardtanh", "clip": "hardtanh", "zeropad2d": "zeropad",
           "zero_pad": "zeropad", "zero_pad2d": "zeropad", "log_softmax": "logsoftmax",
           "upsampling": "upsample"}
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


def build_layer(entry: dict, input_shape, strict: bool) -> Layer:
    """One layer from its spec entry, filling in in_channels/in_features from input_shape."""
    if not isinstance(entry, dict) or "type" not in entry:
        raise SpecError(f"each layer needs a 'type', received {entry!r}")
    kind = _canonical(entry["type"])
    cls, accepted = LAYER_TYPES[kind]
    args = {k: v for k, v in entry.items() if k not in ("type", "name")}
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise SpecError(f"{kind}: unknown argument(s) {', '.join(unknown)}; accepted: "
                        f"{', '.join(accepted) or 'none'}")
    if kind == "residual":
        return _build_residual(args, input_shape, strict)
    args = {k: _tuple_or_value(v) for k, v in args.items()}
    if kind == "conv":
        args.setdefault("in_channels", input_shape[0])
        if "out_channels" not in args:
            raise SpecError("conv: out_channels is required (the number of filters K)")
        if "kernel_size" not in args:
            raise SpecError("conv: kernel_size is required (the filter size F)")
    elif kind == "batchnorm":
        args.setdefault("num_features", input_shape[0])
    elif kind == "linear":
        args.setdefault("in_features", math.prod(input_shape))
        if "out_features" not in args:
            raise SpecError("linear: out_features is required")
    elif kind in ("maxpool", "avgpool") and "kernel_size" not in args:
        raise SpecError(f"{kind}: kernel_size is required")
    try:
        layer = cls(**args)
    except TypeError as error:
        raise SpecError(f"{kind}: {error}") from None
    if hasattr(layer, "strict") and layer.strict is None and not strict:
        layer.strict = False
    return layer


def _build_residual(args: dict, input_shape, strict: bool) -> Residual:
    body_spec = args.get("body")
    if not isinstance(body_spec, list) or not body_spec:
        raise SpecError("residual: 'body' must be a non-empty list of layers")
    body, shape = [], tuple(input_shape)
    for entry in body_spec:
        layer = build_layer(entry, shape, strict)
        shape = layer.output_shape(shape)
        body.append(layer)
    projection = None
    if args.get("projection") is not None:
        projection = build_layer(args["projection"], input_shape, strict)
    return Residual(*body, projection=projection)


def build(spec: dict) -> Sequential:
    """A validated Sequential from a spec; errors name the layer index at fault."""
    if "input_shape" not in spec:
        raise SpecError("the model spec needs input_shape = [C, H, W]")
    input_shape = tuple(int(v) for v in spec["input_shape"])
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise SpecError(f"input_shape must be [C, H, W] with positive sizes, received "
                        f"{list(input_shape)}")
    strict = bool(spec.get("strict", True))
    entries = spec.get("layers")
    if not isinstance(entries, list) or not entries:
        raise SpecError("the model spec needs a non-empty list of layers")
    layers, shape = [], input_shape
    for index, entry in enumerate(entries):
        try:
            layer = build_layer(entry, shape, strict)
            layers.append(layer)
            # Validated inside a Sequential so that messages carry its names (conv1, pool2...).
            shape = Sequential(*layers, strict=strict).output_shape(input_shape)
        except (ShapeError, ValueError, TypeError) as error:
            raise SpecError(str(error), index) from None
    model = Sequential(*layers, strict=strict)
    model.build(input_shape)
    return model


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
    elif isinstance(layer, (Softmax, LogSoftmax)):
        if layer.dim != 1 or isinstance(layer, LogSoftmax):  # specs written before dim existed
            entry["dim"] = layer.dim
    # None stands for the default: left out, so that the entry also fits a TOML model file
    entry.update((k, v) for k, v in _new_layer_arguments(layer).items() if v is not None)
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


def to_spec(model: Sequential, input_shape) -> dict:
    return {"input_shape": [int(v) for v in input_shape], "strict": model.strict,
            "layers": [layer_spec(layer) for layer in model.layers]}
