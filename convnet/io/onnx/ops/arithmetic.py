"""Add, Sub, Mul, Div (and Sum): merges of two activations with ONNX's broadcasting, or of an
activation and a constant (a Constant layer holds it). A constant Add right after a Conv, Gemm
or MatMul whose output nothing else reads becomes that layer's bias, as the exporter split it."""

from __future__ import annotations

import numpy

from convnet.io.onnx.ops.linear import bias_vector
from convnet.io.onnx.registry import translates
from convnet.nn.conv import Conv2d
from convnet.nn.linear import Linear
from convnet.nn.merge import Add, Div, Mul, Sub
from convnet.nn.parameter import Parameter
from convnet.nn.reshape import Reshape

MERGES = {"Add": Add, "Sub": Sub, "Mul": Mul, "Div": Div, "Sum": Add}
DOC = ("two activations of equal rank, broadcasting per sample; or an activation and a "
       "constant (held by a Constant layer, or folded into the bias of the Conv, Gemm or "
       "MatMul before an Add)")


def _fold_bias(ctx, x, values) -> bool:
    """Add `values` to the bias of the layer that wrote x, if nothing else reads x."""
    layer = x.node.layer
    if not isinstance(layer, (Linear, Conv2d)) or len(x.node.outputs) != 1:
        return False
    readers = sum(ctx.importer.consumers.get(name, 0)
                  for name, tensor in ctx.importer.tensors.items() if tensor is x)
    if readers != 1:
        return False
    count = layer.out_features if isinstance(layer, Linear) else layer.out_channels
    bias = bias_vector(values, count, spatial=isinstance(layer, Conv2d))
    if bias is None:
        return False
    if layer.bias is None:
        layer.bias = Parameter(numpy.zeros(count, dtype=layer.weight.data.dtype))
    layer.bias.data[...] += bias
    return True


def _same_rank(ctx, a, b):
    """Two activations of different ranks would broadcast the batch axis of the smaller one
    against another axis: refused."""
    if len(a.shape) != len(b.shape):
        ctx.refuse(f"activations of per-sample shapes {a.shape} and {b.shape}: different "
                   f"ranks broadcast the batch axis of one against an axis of the other")


@translates("Add", "Sub", "Mul", "Div", attrs={"axis", "broadcast"}, doc=DOC)
def binary(ctx):
    op = ctx.node.op_type
    if ctx.attrs.get("broadcast", 1) == 1 and "axis" in ctx.attrs and ctx.version < 7:
        ctx.refuse("the legacy axis attribute")
    if ctx.is_tensor(0) and ctx.is_tensor(1):
        a, b = ctx.tensor(0), ctx.tensor(1)
        _same_rank(ctx, a, b)
        return [ctx.call(MERGES[op](), [a, b])]
    data = 0 if ctx.is_tensor(0) else 1
    x = ctx.tensor(data)
    values = ctx.const(1 - data, "the other operand")
    if op == "Add" and _fold_bias(ctx, x, values):
        return [x]
    if op == "Sub" and data == 0 and _fold_bias(ctx, x, -numpy.asarray(values)):
        return [x]
    constant = ctx.constant_tensor(values, x, 1 - data)
    pair = [x, constant] if data == 0 else [constant, x]
    return [ctx.call(MERGES[op](), pair)]


@translates("Sum", doc="activations of equal rank (an Add of all)")
def total(ctx):
    names = [i for i in range(len(ctx.node.input)) if ctx.has(i)]
    if len(names) == 1:
        return [ctx.tensor(names[0])]
    tensors = [ctx.tensor(i) for i in names]
    for other in tensors[1:]:
        _same_rank(ctx, tensors[0], other)
    return [ctx.call(Add(), tensors)]


def lift(ctx, tensor, rank: int):
    """`tensor` with leading axes of size 1 up to per-sample rank `rank`."""
    missing = rank - len(tensor.shape)
    if missing <= 0:
        return tensor
    return ctx.call(Reshape((1,) * missing + (tensor.shape[0],), start_dim=1, end_dim=1),
                    tensor)
