"""ONNX emitters of the resizing, padding, transposed-convolution and further activation
layers (registered in emitters.EMITTERS; export imports this module)."""

from __future__ import annotations

import math

import numpy

from convnet.io.onnx.emitters import Partial, emits
from convnet.nn.activations import (
    ELU,
    GELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LogSoftmax,
    PReLU,
    SiLU,
)
from convnet.nn.conv_transpose import ConvTranspose2d
from convnet.nn.padding import Pad
from convnet.nn.pixel_shuffle import DepthToSpace, PixelShuffle, PixelUnshuffle, SpaceToDepth
from convnet.nn.resize import Resize, Upsample


def _part(layer, suffix: str):
    return Partial(f"{layer.name}_{suffix}", layer)


@emits(ConvTranspose2d)
def _conv_transpose(graph, layer, xs, shapes, prefix):
    """ONNX ConvTranspose: the weight layout (C, K/groups, KH, KW) is ONNX's; the padding is
    symmetric, and output_padding adds rows and columns at the end, as in PyTorch."""
    layer.geometry(shapes[0][1:])  # the layer's own arithmetic refuses a size that misfits
    inputs = [xs[0], graph.weight(prefix + "weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(graph.weight(prefix + "bias", layer.bias.data))
    pad_h, pad_w = layer.padding
    return graph.node("ConvTranspose", inputs, layer, kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=[pad_h, pad_w, pad_h, pad_w],
                      output_padding=list(layer.output_padding),
                      dilations=list(layer.dilation), group=layer.groups)


def _float32_scales_fit(hw, scales, out_hw) -> bool:
    """Whether ONNX's output size, floor(input * float32 scale), is the layer's."""
    return all(math.floor(n * float(numpy.float32(s))) == o
               for n, s, o in zip(hw, scales, out_hw, strict=True))


@emits(Resize)
def _resize(graph, layer, xs, shapes, prefix):
    """ONNX Resize (opset 13+) with the layer's mode and coordinate rule (Upsample's are
    PyTorch's: nearest is asymmetric + floor, bilinear half_pixel or align_corners). A layer
    with a scale writes it, for the coordinate rule uses the scale given; one with a size (or
    recompute_scale_factor) writes the output size, the batch and channels read from the input
    so that the batch stays dynamic."""
    hw = shapes[0][1:]
    out_hw = layer.output_hw(hw)
    attributes = {"mode": layer.mode,
                  "coordinate_transformation_mode": layer.coordinate_transformation_mode}
    if layer.mode == "nearest":
        attributes["nearest_mode"] = layer.nearest_mode
    scales = layer.scales
    if isinstance(layer, Upsample) and layer.recompute_scale_factor:
        scales = None
    if scales is not None and _float32_scales_fit(hw, scales, out_hw):
        factors = graph.constant(f"{layer.name}.scales", [1.0, 1.0, *scales])
        return graph.node("Resize", [xs[0], "", factors], layer, **attributes)
    shape = graph.node("Shape", [xs[0]], _part(layer, "shape"))
    batch_channels = graph.node(
        "Slice", [shape, graph.constant(f"{layer.name}.start", [0], numpy.int64),
                  graph.constant(f"{layer.name}.end", [2], numpy.int64)],
        _part(layer, "nc"))
    sizes = graph.node("Concat", [batch_channels,
                                  graph.constant(f"{layer.name}.hw", list(out_hw), numpy.int64)],
                       _part(layer, "sizes"), axis=0)
    return graph.node("Resize", [xs[0], "", "", sizes], layer, **attributes)


@emits(PixelShuffle)
def _pixel_shuffle(graph, layer, xs, shapes, prefix):
    return graph.node("DepthToSpace", xs, layer, blocksize=layer.upscale_factor, mode="CRD")


@emits(DepthToSpace)
def _depth_to_space(graph, layer, xs, shapes, prefix):
    return graph.node("DepthToSpace", xs, layer, blocksize=layer.blocksize, mode=layer.mode)


@emits(SpaceToDepth)
def _space_to_depth(graph, layer, xs, shapes, prefix):
    return graph.node("SpaceToDepth", xs, layer, blocksize=layer.blocksize)


@emits(PixelUnshuffle)
def _pixel_unshuffle(graph, layer, xs, shapes, prefix):
    """PixelShuffle's inverse (CRD order), which ONNX's SpaceToDepth (DCR) is not: a reshape,
    a transpose and a reshape."""
    c, h, w = shapes[0]
    r = layer.block
    split = graph.ints(f"{layer.name}.split", [0, c, h // r, r, w // r, r])
    merged = graph.ints(f"{layer.name}.merged", [0, c * r * r, h // r, w // r])
    blocks = graph.node("Reshape", [xs[0], split], _part(layer, "blocks"))
    moved = graph.node("Transpose", [blocks], _part(layer, "moved"), perm=[0, 1, 3, 5, 2, 4])
    return graph.node("Reshape", [moved, merged], layer)


PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
             "circular": "wrap"}


@emits(Pad)
def _pad(graph, layer, xs, shapes, prefix):
    if layer.mode == "circular" and graph.opset < 19:
        raise ValueError(f"{layer.name} (Pad): circular padding is ONNX's 'wrap', from opset "
                         f"19 on; export with opset=19 or newer")
    side = layer.sides
    pads = graph.ints(f"{layer.name}.pads",
                      [0, 0, side.top, side.left, 0, 0, side.bottom, side.right])
    inputs = [xs[0], pads]
    if layer.mode == "constant":
        inputs.append(graph.constant(f"{layer.name}.value", numpy.array(layer.value)))
    return graph.node("Pad", inputs, layer, mode=PAD_MODES[layer.mode])


@emits(Hardtanh)
def _hardtanh(graph, layer, xs, shapes, prefix):  # ReLU6 is a Hardtanh(0, 6)
    low = graph.constant(f"{layer.name}.min", numpy.array(layer.min_val))
    high = graph.constant(f"{layer.name}.max", numpy.array(layer.max_val))
    return graph.node("Clip", [xs[0], low, high], layer)


@emits(Hardsigmoid)
def _hardsigmoid(graph, layer, xs, shapes, prefix):
    return graph.node("HardSigmoid", xs, layer, alpha=layer.alpha, beta=layer.beta)


@emits(Hardswish)
def _hardswish(graph, layer, xs, shapes, prefix):
    if graph.opset >= 14:
        return graph.node("HardSwish", xs, layer)
    gate = graph.node("HardSigmoid", xs, _part(layer, "gate"), alpha=1 / 6, beta=0.5)
    return graph.node("Mul", [xs[0], gate], layer)


@emits(SiLU)
def _silu(graph, layer, xs, shapes, prefix):
    gate = graph.node("Sigmoid", xs, _part(layer, "gate"))
    return graph.node("Mul", [xs[0], gate], layer)


@emits(ELU)
def _elu(graph, layer, xs, shapes, prefix):
    return graph.node("Elu", xs, layer, alpha=layer.alpha)


@emits(GELU)
def _gelu(graph, layer, xs, shapes, prefix):
    if graph.opset >= 20:
        return graph.node("Gelu", xs, layer, approximate=layer.approximate)
    x = xs[0]

    def scalar(name, value):
        return graph.constant(f"{layer.name}.{name}", numpy.array(value))

    if layer.approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = graph.node("Pow", [x, scalar("three", 3.0)], _part(layer, "cube"))
        inner = graph.node("Add", [x, graph.node("Mul", [cube, scalar("c", 0.044715)],
                                                 _part(layer, "scaled"))], _part(layer, "inner"))
        core = graph.node("Tanh", [graph.node("Mul", [inner, scalar("k", math.sqrt(2 / math.pi))],
                                              _part(layer, "arg"))], _part(layer, "tanh"))
    else:  # 0.5 x (1 + erf(x / sqrt 2))
        core = graph.node("Erf", [graph.node("Div", [x, scalar("root2", math.sqrt(2.0))],
                                             _part(layer, "arg"))], _part(layer, "erf"))
    one_plus = graph.node("Add", [core, scalar("one", 1.0)], _part(layer, "one_plus"))
    half = graph.node("Mul", [x, scalar("half", 0.5)], _part(layer, "half"))
    return graph.node("Mul", [half, one_plus], layer)


@emits(PReLU)
def _prelu(graph, layer, xs, shapes, prefix):
    rank = len(shapes[0]) + 1
    weight = layer.weight.data
    if layer.num_parameters > 1:
        weight = weight.reshape((-1,) + (1,) * (rank - 2))
    slope = graph.constant(prefix + "weight", weight)
    return graph.node("PRelu", [xs[0], slope], layer)


@emits(LogSoftmax)
def _log_softmax(graph, layer, xs, shapes, prefix):
    return graph.node("LogSoftmax", xs, layer, axis=layer.dim)
