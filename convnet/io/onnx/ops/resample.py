"""Changing H and W: ConvTranspose, Resize and Upsample, DepthToSpace and SpaceToDepth, Pad."""

from __future__ import annotations

import numpy

from convnet.io.onnx.registry import translates
from convnet.io.onnx.shapes import Dim
from convnet.nn.conv_transpose import ConvTranspose2d
from convnet.nn.padding import Pad
from convnet.nn.pixel_shuffle import DepthToSpace, SpaceToDepth
from convnet.nn.resize import Resize
from convnet.nn.slice import Slice


@translates("ConvTranspose", attrs={"auto_pad", "dilations", "group", "kernel_shape",
                                    "output_padding", "output_shape", "pads", "strides"},
            doc="2-D; strides, dilations, group, pads (asymmetric: cropped by a Slice), "
                "output_padding, output_shape, auto_pad; constant weight and bias")
def conv_transpose(ctx):
    x = ctx.tensor(0)
    weight = ctx.const(1, "weight W")
    bias = ctx.optional_const(2, "bias B")
    if len(x.shape) != 3 or weight.ndim != 4:
        ctx.refuse(f"input {x.shape} and weight {weight.shape}; only 2-D (C, H, W)")
    groups = int(ctx.attrs.get("group", 1))
    channels = x.shape[0]
    if weight.shape[0] != channels or channels % groups:
        ctx.refuse(f"a weight of shape {weight.shape} for {channels} input channels, "
                   f"group={groups}")
    out_channels = weight.shape[1] * groups
    kernel = tuple(ctx.attrs.get("kernel_shape", weight.shape[2:]))
    if kernel != tuple(weight.shape[2:]):
        ctx.refuse(f"kernel_shape {list(kernel)} differs from the weight's {weight.shape[2:]}")
    strides = tuple(ctx.attrs.get("strides", (1, 1)))
    dilations = tuple(ctx.attrs.get("dilations", (1, 1)))
    extra = tuple(ctx.attrs.get("output_padding", (0, 0)))
    auto_pad = ctx.attrs.get("auto_pad", "NOTSET")
    hw = x.shape[1:]
    full = [strides[i] * (hw[i] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1
            for i in range(2)]
    wanted = ctx.attrs.get("output_shape")
    same = wanted is None and auto_pad in ("SAME_UPPER", "SAME_LOWER")
    if wanted is not None:
        wanted = list(wanted)[-2:]
    elif same:
        wanted = [hw[i] * strides[i] for i in range(2)]
    if wanted is not None:
        begin, end = [], []
        for i in range(2):
            total = full[i] - wanted[i]  # negative: the output grows at the end
            if same:
                total = max(total, 0)  # onnxruntime never pads a SAME output
            half = int(total / 2)  # C's division, as onnxruntime computes it
            head = half if auto_pad == "SAME_UPPER" else total - half
            begin.append(head)
            end.append(total - head)
    elif auto_pad == "VALID":
        begin, end = [0, 0], [0, 0]
    else:
        pads = list(ctx.attrs.get("pads", (0, 0, 0, 0)))
        begin, end = pads[:2], pads[2:]
    # Each side of the full output (extra rows at the end included) loses begin/end rows.
    # convnet crops `padding` from both sides of the output without extra, then adds
    # output_padding rows at the end: padding = begin, output_padding = begin - (end - extra).
    crop, padding, out_pad = [0, 0], list(begin), [0, 0]
    for i in range(2):
        tail = end[i] - extra[i]
        if tail <= begin[i]:
            out_pad[i] = begin[i] - tail
        else:
            crop[i] = tail - begin[i]
        if out_pad[i] >= max(strides[i], dilations[i]):
            ctx.refuse(f"pads {begin + end} with output_padding {list(extra)} along axis "
                       f"{i + 2}: the bottom/right would grow by {out_pad[i]} rows, more than "
                       f"convnet's output_padding allows (below the stride or dilation)")
    layer = ConvTranspose2d(channels, out_channels, kernel, stride=strides,
                            padding=tuple(padding), output_padding=tuple(out_pad),
                            groups=groups, bias=bias is not None, dilation=dilations,
                            init="zeros")
    layer.init = "kaiming"
    layer.weight.data[...] = weight
    if bias is not None:
        if bias.shape != (out_channels,):
            ctx.refuse(f"bias of shape {bias.shape}; expected ({out_channels},)")
        layer.bias.data[...] = bias
    y = ctx.call(layer, x)
    if any(crop):
        dims = [i + 2 for i in range(2) if crop[i]]
        y = ctx.call(Slice(dims, [0] * len(dims), [-crop[d - 2] for d in dims]), y)
    return [y]


def _spatial(ctx, values, x, what):
    """(h, w) of a 4-entry scales/sizes value that keeps N and C."""
    values = list(numpy.asarray(values, dtype=object).reshape(-1))
    if len(values) != 4:
        ctx.refuse(f"{what} {values} for a 4-D input; one entry per axis")
    return values


def _fixed(ctx, x, scales, sizes):
    """The Resize layer's size or scales for ONNX scales/sizes (keeping N and C)."""
    if sizes is not None:
        sizes = _spatial(ctx, sizes, x, "sizes")
        if not (isinstance(sizes[0], Dim) and sizes[0].is_batch or isinstance(sizes[0], int)):
            ctx.refuse(f"sizes {sizes} change the batch axis")
        if int(sizes[1]) != x.shape[0]:
            ctx.refuse(f"sizes {sizes} change the channels")
        factors = []
        for i in (2, 3):
            entry = sizes[i]
            same = isinstance(entry, Dim) and ctx.importer.tensors.get(entry.tensor) is x
            if same and entry.axis == i and entry.offset == 0 and entry.scale > 0:
                factors.append(float(entry.scale))
            else:
                factors = None
                break
        if factors:  # a multiple of the input's own size: a scale, right at any size
            return {"scales": tuple(factors)}
        return {"size": (int(sizes[2]), int(sizes[3]))}
    scales = [float(v) for v in _spatial(ctx, scales, x, "scales")]
    if scales[0] != 1 or scales[1] != 1:
        ctx.refuse(f"scales {scales} resize the batch or channel axis")
    return {"scales": (scales[2], scales[3])}


@translates("Resize", since=11, attrs={"coordinate_transformation_mode", "cubic_coeff_a",
                                       "exclude_outside", "extrapolation_value", "mode",
                                       "nearest_mode", "antialias", "axes",
                                       "keep_aspect_ratio_policy"},
            doc="over H and W of (N, C, H, W): nearest (every nearest_mode) and linear, "
                "coordinate modes half_pixel, pytorch_half_pixel, align_corners, asymmetric, "
                "tf_half_pixel_for_nn, half_pixel_symmetric; constant scales or sizes (sizes "
                "a multiple of the input's own become scales, so they follow the input size)")
def resize(ctx):
    x = ctx.tensor(0)
    if len(x.shape) != 3:
        ctx.refuse(f"input of per-sample shape {x.shape}; expected (C, H, W)")
    mode = ctx.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        ctx.refuse(f"mode '{mode}'")
    transform = ctx.attrs.get("coordinate_transformation_mode", "half_pixel")
    if transform == "tf_crop_and_resize":
        ctx.refuse("coordinate_transformation_mode 'tf_crop_and_resize'")
    if ctx.attrs.get("antialias", 0) or ctx.attrs.get("exclude_outside", 0):
        ctx.refuse("antialias or exclude_outside")
    if ctx.attrs.get("axes") is not None or ctx.attrs.get("keep_aspect_ratio_policy",
                                                         "stretch") != "stretch":
        ctx.refuse("axes or keep_aspect_ratio_policy")
    sizes = ctx.value(3) if ctx.has(3) else None
    scales = ctx.value(2) if ctx.has(2) else None
    if scales is not None and numpy.asarray(scales).size == 0:
        scales = None
    if (sizes is None) == (scales is None):
        ctx.refuse("give exactly one of scales and sizes, as constants or from tensor shapes")
    layer = Resize(**_fixed(ctx, x, scales, sizes), mode=mode,
                   coordinate_transformation_mode=transform,
                   nearest_mode=ctx.attrs.get("nearest_mode", "round_prefer_floor"))
    return [ctx.call(layer, x)]


@translates("Resize", until=10, attrs={"mode"},
            doc="(opset 10: scales input, asymmetric coordinates)")
@translates("Upsample", attrs={"mode", "scales", "height_scale", "width_scale"},
            doc="nearest or linear (bilinear) over H and W, constant scales (attribute before "
                "opset 9, input from it); asymmetric coordinates, floor for nearest")
def upsample(ctx):
    x = ctx.tensor(0)
    if len(x.shape) != 3:
        ctx.refuse(f"input of per-sample shape {x.shape}; expected (C, H, W)")
    mode = ctx.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        ctx.refuse(f"mode '{mode}'")
    scales = ctx.attrs.get("scales") if not ctx.has(1) else ctx.const(1, "scales")
    if scales is None:
        ctx.refuse("no scales")
    fixed = _fixed(ctx, x, scales, None)
    nearest = mode == "nearest"
    layer = Resize(**fixed, mode="nearest" if nearest else "linear",
                   coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return [ctx.call(layer, x)]


@translates("DepthToSpace", attrs={"blocksize", "mode"}, doc="DCR and CRD")
def depth_to_space(ctx):
    layer = DepthToSpace(int(ctx.attrs["blocksize"]), mode=ctx.attrs.get("mode", "DCR"))
    return [ctx.call(layer, ctx.tensor(0))]


@translates("SpaceToDepth", attrs={"blocksize", "mode"}, doc="blocksize, mode DCR")
def space_to_depth(ctx):
    if ctx.attrs.get("mode", "DCR") != "DCR":
        ctx.refuse(f"mode '{ctx.attrs['mode']}'; convnet's SpaceToDepth is DCR (the inverse of "
                   f"DepthToSpace's default)")
    return [ctx.call(SpaceToDepth(int(ctx.attrs["blocksize"])), ctx.tensor(0))]


MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


@translates("Pad", attrs={"mode", "pads", "value"},
            doc="H and W of (N, C, H, W): constant (negative pads crop), reflect, edge, wrap; "
                "constant pads and value")
def pad(ctx):
    x = ctx.tensor(0)
    if len(x.shape) != 3:
        ctx.refuse(f"input of per-sample shape {x.shape}; convnet pads (C, H, W)")
    mode = ctx.attrs.get("mode", "constant")
    if mode not in MODES:
        ctx.refuse(f"mode '{mode}'")
    if ctx.version < 11:
        pads = [int(v) for v in ctx.attrs.get("pads", ())]
        value = float(ctx.attrs.get("value", 0.0))
    else:
        pads = [int(v) for v in ctx.const(1, "pads").reshape(-1)]
        value = float(ctx.const(2, "constant_value").reshape(-1)[0]) if ctx.has(2) else 0.0
        if ctx.has(3):
            axes = [ctx.axis(int(a), 4) for a in ctx.const(3, "axes").reshape(-1)]
            full = [0] * 8
            for position, axis in enumerate(axes):
                full[axis], full[axis + 4] = pads[position], pads[position + len(axes)]
            pads = full
    if len(pads) != 8:
        ctx.refuse(f"pads {pads} for a 4-D input")
    if any(pads[i] for i in (0, 1, 4, 5)):
        ctx.refuse(f"pads {pads} pad the batch or channel axis")
    top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
    layer = Pad((left, right, top, bottom), mode=MODES[mode],
                value=value if mode == "constant" else 0.0)
    return [ctx.call(layer, x)]
