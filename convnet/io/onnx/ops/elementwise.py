"""Activations and elementwise math of one tensor, and softmax over an axis."""

from __future__ import annotations

import math

from convnet.io.onnx.registry import translates
from convnet.nn import activations, pointwise
from convnet.nn.reshape import Permute, Reshape


def _simple(op, make, doc="any input", attrs=()):
    @translates(op, attrs=attrs, doc=doc)
    def translate(ctx):
        return [ctx.call(make(ctx), ctx.tensor(0))]
    translate.__name__ = op.lower()
    return translate


_simple("Relu", lambda ctx: activations.ReLU())
_simple("Sigmoid", lambda ctx: activations.Sigmoid())
_simple("Tanh", lambda ctx: activations.Tanh())
_simple("LeakyRelu", lambda ctx: activations.LeakyReLU(float(ctx.attrs.get("alpha", 0.01))),
        doc="alpha", attrs={"alpha"})
_simple("Erf", lambda ctx: pointwise.Erf())
_simple("Sqrt", lambda ctx: pointwise.Sqrt())
_simple("Exp", lambda ctx: pointwise.Exp())
_simple("Log", lambda ctx: pointwise.Log())
_simple("Abs", lambda ctx: pointwise.Abs())
_simple("Neg", lambda ctx: pointwise.Neg())
_simple("Reciprocal", lambda ctx: pointwise.Reciprocal())


@translates("Identity", doc="any input")
def identity(ctx):
    return [ctx.tensor(0)]


@translates("Pow", doc="an activation to a constant scalar power")
def power(ctx):
    x = ctx.tensor(0)
    exponent = ctx.const(1, "exponent")
    if exponent.size != 1:
        ctx.refuse(f"an exponent of shape {exponent.shape}; only one number")
    return [ctx.call(pointwise.Pow(float(exponent.reshape(-1)[0])), x)]


def _softmax_layer(kind: str, dim: int):
    cls = getattr(activations, kind, None)
    if cls is None:
        return None
    try:
        return cls(dim=dim)
    except ValueError:  # a Softmax for the class axis only
        return None


def _over_axis(ctx, kind: str, x, axis: int):
    """kind over full-array axis `axis`; through Permute when the layer has only dim=1."""
    layer = _softmax_layer(kind, axis)
    if layer is not None:
        return ctx.call(layer, x)
    layer = _softmax_layer(kind, 1)
    if layer is None:
        ctx.refuse(f"{kind} is not a convnet layer yet")
    rank = len(x.shape) + 1
    if axis == 1:
        return ctx.call(layer, x)
    order = [0, axis] + [a for a in range(1, rank) if a != axis]
    back = [order.index(a) for a in range(rank)]
    moved = ctx.call(Permute(order), x)
    return ctx.call(Permute(back), ctx.call(layer, moved))


@translates("Softmax", "LogSoftmax", since=13, attrs={"axis"},
            doc="any axis but the batch's (from opset 13); before opset 13 over the axes from "
                "`axis` on, flattened together as ONNX defines it")
def softmax(ctx):
    x = ctx.tensor(0)
    rank = len(x.shape) + 1
    axis = ctx.axis(int(ctx.attrs.get("axis", -1)), rank)
    if axis == 0:
        ctx.refuse("axis 0 (the batch axis)")
    return [_over_axis(ctx, ctx.node.op_type, x, axis)]


@translates("Softmax", "LogSoftmax", until=12, attrs={"axis"})
def softmax_coerced(ctx):
    """Before opset 13 the input is seen as 2-D (d0*...*d(axis-1), d(axis)*...): the softmax
    runs over all axes from `axis` on together."""
    x = ctx.tensor(0)
    rank = len(x.shape) + 1
    axis = ctx.axis(int(ctx.attrs.get("axis", 1)), rank)
    if axis == 0:
        ctx.refuse("axis 0 (the batch axis flattened in)")
    trailing = x.shape[axis - 1:]
    if len(trailing) == 1 or math.prod(trailing[1:]) == 1:
        return [_over_axis(ctx, ctx.node.op_type, x, axis)]
    flat = ctx.call(Reshape((-1,), start_dim=axis, end_dim=-1), x)
    out = _over_axis(ctx, ctx.node.op_type, flat, axis)
    return [ctx.call(Reshape(trailing, start_dim=axis, end_dim=axis), out)]


@translates("Cast", attrs={"to", "saturate", "round_mode"},
            doc="of an activation to float32 (the identity: convnet computes in float32)")
def cast(ctx):
    from onnx import TensorProto

    if int(ctx.attrs.get("to", 0)) != TensorProto.FLOAT:
        ctx.refuse(f"a cast to {TensorProto.DataType.Name(int(ctx.attrs.get('to', 0)))}; "
                   f"convnet computes in float32")
    return [ctx.tensor(0)]


@translates("CastLike", attrs={"saturate", "round_mode"},
            doc="of an activation like a float32 tensor (the identity)")
def cast_like(ctx):
    like = ctx.value(1)
    if like is not None and getattr(like, "dtype", None) != "float32":
        ctx.refuse(f"a cast to {like.dtype}; convnet computes in float32")
    return [ctx.tensor(0)]


@translates("PRelu", doc="a constant slope: one value, or one per channel (axis 1)")
def prelu(ctx):
    x = ctx.tensor(0)
    slope = ctx.const(1, "slope")
    rank = len(x.shape) + 1
    channels = x.shape[0]
    full = slope.reshape((1,) * (rank - slope.ndim) + slope.shape) if slope.ndim <= rank else None
    if slope.size == 1:
        layer = activations.PReLU(1)
    elif (full is not None and full.shape[1] == channels and full.size == channels):
        layer = activations.PReLU(channels)
    else:
        ctx.refuse(f"a slope of shape {slope.shape} for per-sample input {x.shape}; convnet's "
                   f"PReLU has one slope or one per channel")
    layer.weight.data[...] = slope.reshape(-1)
    return [ctx.call(layer, x)]


def _limit(ctx, index, attr, default):
    if ctx.version >= 11:
        if not ctx.has(index):
            return default
        value = ctx.const(index, attr)
        if value.size != 1:
            ctx.refuse(f"{attr} of shape {value.shape}; one number")
        return float(value.reshape(-1)[0])
    return float(ctx.attrs.get(attr, default))


@translates("Clip", attrs={"min", "max"},
            doc="constant min and max (attributes before opset 11, inputs from it): ReLU6, "
                "Hardtanh, or a ReLU for [0, inf)")
def clip(ctx):
    x = ctx.tensor(0)
    low = _limit(ctx, 1, "min", -math.inf)
    high = _limit(ctx, 2, "max", math.inf)
    if low == 0 and high == 6:
        return [ctx.call(activations.ReLU6(), x)]
    if low == 0 and high == math.inf:
        return [ctx.call(activations.ReLU(), x)]
    if low == -math.inf and high == math.inf:
        return [x]
    if low > high:
        ctx.refuse(f"min {low} above max {high}")
    return [ctx.call(activations.Hardtanh(low, high), x)]


@translates("HardSigmoid", attrs={"alpha", "beta"}, doc="alpha, beta")
def hard_sigmoid(ctx):
    alpha = float(ctx.attrs.get("alpha", 0.2))
    beta = float(ctx.attrs.get("beta", 0.5))
    return [ctx.call(activations.Hardsigmoid(alpha=alpha, beta=beta), ctx.tensor(0))]


_simple("HardSwish", lambda ctx: activations.Hardswish())
_simple("Elu", lambda ctx: activations.ELU(float(ctx.attrs.get("alpha", 1.0))), doc="alpha",
        attrs={"alpha"})
_simple("Gelu", lambda ctx: activations.GELU(ctx.attrs.get("approximate", "none")),
        doc="approximate none or tanh", attrs={"approximate"})
