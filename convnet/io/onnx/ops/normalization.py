"""BatchNormalization (inference), LayerNormalization and LRN."""

from __future__ import annotations

from convnet.io.onnx.registry import translates
from convnet.nn.batchnorm import BatchNorm2d
from convnet.nn.normalization import LayerNorm, LocalResponseNorm


@translates("BatchNormalization", attrs={"epsilon", "momentum", "spatial", "training_mode",
                                         "is_test", "consumed_inputs"},
            doc="4-D input, inference (training_mode=0, one output); epsilon, momentum; "
                "constant scale, B, mean and var")
def batch_normalization(ctx):
    x = ctx.tensor(0)
    if ctx.attrs.get("training_mode", 0):
        ctx.refuse("training_mode=1")
    if not ctx.attrs.get("spatial", 1):
        ctx.refuse("spatial=0")
    if len(x.shape) != 3:
        ctx.refuse(f"input of per-sample shape {x.shape}; convnet has BatchNorm2d for "
                   f"(N, C, H, W)")
    channels = x.shape[0]
    arrays = [ctx.const(index, what) for index, what in
              ((1, "scale"), (2, "B"), (3, "mean"), (4, "var"))]
    for array, what in zip(arrays, ("scale", "B", "mean", "var"), strict=True):
        if array.shape != (channels,):
            ctx.refuse(f"{what} of shape {array.shape}; expected ({channels},)")
    momentum = 1.0 - float(ctx.attrs.get("momentum", 0.9))
    layer = BatchNorm2d(channels, eps=float(ctx.attrs.get("epsilon", 1e-5)),
                        momentum=min(max(momentum, 0.0), 1.0))
    scale, shift, mean, var = arrays
    layer.weight.data[...] = scale
    layer.bias.data[...] = shift
    layer.running_mean[...] = mean
    layer.running_var[...] = var
    return [ctx.call(layer, x)]


@translates("LayerNormalization", attrs={"axis", "epsilon", "stash_type"},
            doc="over the axes from `axis` on (not the batch's); constant scale and bias; "
                "Mean and InvStdDev outputs unused")
def layer_normalization(ctx):
    x = ctx.tensor(0)
    rank = len(x.shape) + 1
    axis = ctx.axis(int(ctx.attrs.get("axis", -1)), rank)
    if axis == 0:
        ctx.refuse("axis 0 (normalizing across the batch)")
    normalized = tuple(x.shape[axis - 1:])
    scale = ctx.const(1, "scale")
    bias = ctx.optional_const(2, "bias")
    layer = LayerNorm(normalized, eps=float(ctx.attrs.get("epsilon", 1e-5)),
                      bias=bias is not None)
    for array, param, what in ((scale, layer.weight, "scale"), (bias, layer.bias, "bias")):
        if array is None:
            continue
        try:
            param.data[...] = array.reshape(array.shape[-len(normalized):] if array.ndim
                                            else ()) * 1
        except ValueError:
            ctx.refuse(f"{what} of shape {array.shape} for normalized axes {normalized}")
    return [ctx.call(layer, x), None, None]


@translates("LRN", attrs={"alpha", "beta", "bias", "size"},
            doc="odd size (an even window is placed differently by ONNX and PyTorch); alpha, "
                "beta, bias")
def lrn(ctx):
    x = ctx.tensor(0)
    size = int(ctx.attrs["size"])
    if size % 2 == 0:
        ctx.refuse(f"size {size} is even: ONNX puts the extra channel of the window after the "
                   f"centre, convnet's (PyTorch's) LocalResponseNorm before it")
    layer = LocalResponseNorm(size, alpha=float(ctx.attrs.get("alpha", 1e-4)),
                              beta=float(ctx.attrs.get("beta", 0.75)),
                              k=float(ctx.attrs.get("bias", 1.0)))
    return [ctx.call(layer, x)]
