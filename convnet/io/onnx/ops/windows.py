"""Conv, pooling: the window operators, with ONNX's pads, auto_pad and ceil_mode."""

from __future__ import annotations

from convnet.core.arithmetic import same_padding
from convnet.io.onnx.registry import translates
from convnet.nn.conv import Conv2d
from convnet.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from convnet.nn.reduce import ReduceMax


def padding_argument(pads):
    """(top, bottom, left, right) -> the simplest convnet padding argument."""
    top, bottom, left, right = (int(v) for v in pads)
    if top == bottom and left == right:
        return top if top == left else (top, left)
    return (top, bottom, left, right)


def window(ctx, shape, kernel, dilation):
    """Strides and explicit (top, bottom, left, right) padding; auto_pad as given."""
    if len(shape) != 3:
        ctx.refuse(f"input of per-sample shape {shape}; expected (C, H, W)")
    if len(kernel) != 2:
        ctx.refuse(f"a {len(kernel)}-D kernel {list(kernel)}; only 2-D windows")
    strides = tuple(ctx.attrs.get("strides", (1, 1)))
    if len(strides) != 2 or min(strides) < 1:
        ctx.refuse(f"strides {list(strides)}")
    auto_pad = ctx.attrs.get("auto_pad", "NOTSET")
    hw = shape[1:]
    if auto_pad == "NOTSET":
        pads = tuple(ctx.attrs.get("pads", (0, 0, 0, 0)))
        if len(pads) != 4 or min(pads) < 0:
            ctx.refuse(f"pads {list(pads)}; expected 4 non-negative values")
        top, left, bottom, right = pads
    elif auto_pad == "VALID":
        top = left = bottom = right = 0
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        (top, bottom), (left, right) = (
            same_padding(hw[axis], kernel[axis], strides[axis], dilation[axis])
            for axis in range(2))
        if auto_pad == "SAME_LOWER":  # the extra pixel goes before
            top, bottom, left, right = bottom, top, right, left
    else:
        ctx.refuse(f"auto_pad '{auto_pad}'")
    return strides, (top, bottom, left, right), auto_pad


def floors_anywhere(layer) -> bool:
    """Whether some input size leaves border pixels uncovered (stride > 1, fixed padding):
    such a layer floors as ONNX does (strict=False)."""
    return max(layer.stride) > 1 and layer.padding != "same"


def windowed(layer):
    if floors_anywhere(layer):
        layer.strict = False
    return layer


@translates("Conv", attrs={"auto_pad", "dilations", "group", "kernel_shape", "pads",
                           "strides"},
            doc="2-D; kernel_shape, strides, dilations, group, pads (asymmetric too), auto_pad "
                "NOTSET/SAME_UPPER/SAME_LOWER/VALID; constant weight and bias")
def conv(ctx):
    x = ctx.tensor(0)
    weight = ctx.const(1, "weight W")
    bias = ctx.optional_const(2, "bias B")
    if weight.ndim != 4:
        ctx.refuse(f"a weight of shape {weight.shape}; only 2-D convolution (K, C/group, KH, KW)")
    kernel = tuple(ctx.attrs.get("kernel_shape", weight.shape[2:]))
    if kernel != tuple(weight.shape[2:]):
        ctx.refuse(f"kernel_shape {list(kernel)} differs from the weight's "
                   f"{list(weight.shape[2:])}")
    dilation = tuple(ctx.attrs.get("dilations", (1, 1)))
    if len(dilation) != 2 or min(dilation) < 1:
        ctx.refuse(f"dilations {list(dilation)}")
    strides, pads, auto_pad = window(ctx, x.shape, kernel, dilation)
    groups = int(ctx.attrs.get("group", 1))
    channels, out_channels = x.shape[0], weight.shape[0]
    if groups < 1 or channels % groups or out_channels % groups or (
            weight.shape[1] * groups != channels):
        ctx.refuse(f"group={groups} with {channels} input channels and a weight of shape "
                   f"{weight.shape}")
    if bias is not None and bias.shape != (out_channels,):
        ctx.refuse(f"bias of shape {bias.shape}; expected ({out_channels},)")
    padding = "same" if auto_pad == "SAME_UPPER" else padding_argument(pads)
    layer = Conv2d(channels, out_channels, kernel, stride=strides, padding=padding,
                   dilation=dilation, groups=groups, bias=bias is not None, init="zeros")
    layer.init = "kaiming"  # what a reset draws; the file's weights are copied in now
    layer.weight.data[...] = weight
    if bias is not None:
        layer.bias.data[...] = bias
    return [ctx.call(windowed(layer), x)]


def _ceil_extra(n: int, kernel: int, stride: int, before: int, after: int) -> int:
    """Bottom/right padding that makes floor division give ONNX's (and PyTorch's) ceil_mode
    output: one more window, unless it would start in the right padding."""
    span = n + before + after - kernel
    if span < 0:
        return 0  # the window does not fit at all: let the shape check explain
    floor_out = span // stride + 1
    ceil_out = -(-span // stride) + 1
    if ceil_out > floor_out and (ceil_out - 1) * stride >= n + before:
        ceil_out -= 1
    return max((ceil_out - 1) * stride + kernel - (n + before + after), 0)


def _pool(ctx):
    """kernel, strides, the file's pads and the pads convnet uses (ceil_mode included)."""
    x = ctx.tensor(0)
    if "kernel_shape" not in ctx.attrs:
        ctx.refuse("kernel_shape is missing")
    kernel = tuple(ctx.attrs["kernel_shape"])
    dilation = tuple(ctx.attrs.get("dilations", (1, 1)))
    if any(d != 1 for d in dilation):
        ctx.refuse(f"dilations {list(dilation)}: convnet pools have no dilation")
    strides, pads, _ = window(ctx, x.shape, kernel, (1, 1))
    top, bottom, left, right = pads
    extra = [0, 0]
    if ctx.attrs.get("ceil_mode", 0):
        for axis, (before, after) in enumerate(((top, bottom), (left, right))):
            extra[axis] = _ceil_extra(x.shape[1 + axis], kernel[axis], strides[axis], before,
                                      after)
    bottom, right = bottom + extra[0], right + extra[1]
    if ctx.attrs.get("auto_pad") == "SAME_UPPER" and not any(extra):
        return x, kernel, strides, pads, "same"  # TensorFlow's rule, at any input size
    limits = (kernel[0] // 2, kernel[1] // 2)
    if max(top, bottom) > limits[0] or max(left, right) > limits[1]:
        with_extra = " (with ceil_mode's extra bottom/right padding)" if any(extra) else ""
        ctx.refuse(f"padding top {top}, bottom {bottom}, left {left}, right {right}"
                   f"{with_extra} exceeds half the kernel {list(kernel)}: convnet pools pad at "
                   f"most {limits[0]} rows and {limits[1]} columns per side")
    return x, kernel, strides, pads, (top, bottom, left, right)


def _pool_padding(padded):
    return padded if padded == "same" else padding_argument(padded)


@translates("MaxPool", attrs={"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads",
                              "storage_order", "strides"},
            doc="2-D; kernel_shape, strides, pads, auto_pad (any), ceil_mode (as extra "
                "bottom/right padding); padding at most half the kernel per side; dilations 1; "
                "no Indices output")
def max_pool(ctx):
    x, kernel, strides, _, padded = _pool(ctx)
    layer = MaxPool2d(kernel, stride=strides, padding=_pool_padding(padded))
    return [ctx.call(windowed(layer), x), None]


@translates("AveragePool", attrs={"auto_pad", "ceil_mode", "count_include_pad", "dilations",
                                  "kernel_shape", "pads", "strides"},
            doc="2-D; kernel_shape, strides, pads, auto_pad (any), count_include_pad 0/1, "
                "ceil_mode (as extra bottom/right padding when exact); padding at most half "
                "the kernel per side; dilations 1")
def average_pool(ctx):
    x, kernel, strides, pads, padded = _pool(ctx)
    include_pad = bool(ctx.attrs.get("count_include_pad", 0))
    if include_pad and padded not in (pads, "same"):  # ceil_mode added windows over the edge
        if any(pads):
            ctx.refuse(f"ceil_mode=1 with count_include_pad=1 and pads (top, bottom, left, "
                       f"right) {list(pads)}: windows hanging over the bottom/right edge divide "
                       f"by a count convnet cannot express")
        include_pad = False  # without real padding ONNX divides by the pixels covered
    layer = AvgPool2d(kernel, stride=strides, padding=_pool_padding(padded),
                      count_include_pad=include_pad)
    return [ctx.call(windowed(layer), x)]


@translates("GlobalAveragePool", doc="4-D input")
def global_average_pool(ctx):
    x = ctx.tensor(0)
    if len(x.shape) != 3:
        ctx.refuse(f"input of per-sample shape {x.shape}; expected (C, H, W)")
    return [ctx.call(GlobalAvgPool2d(), x)]


@translates("GlobalMaxPool", doc="4-D input (a max over H and W, keeping them as 1 x 1)")
def global_max_pool(ctx):
    x = ctx.tensor(0)
    if len(x.shape) != 3:
        ctx.refuse(f"input of per-sample shape {x.shape}; expected (C, H, W)")
    return [ctx.call(ReduceMax((2, 3), keepdim=True), x)]
