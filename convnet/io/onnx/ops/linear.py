"""Gemm and MatMul: fully connected layers, and the product of two activations."""

from __future__ import annotations

import numpy

from convnet.io.onnx.registry import translates
from convnet.nn.linear import Linear
from convnet.nn.matmul import MatMul


def _linear(ctx, x, weight, bias):
    out_features, in_features = weight.shape
    if len(x.shape) != 1:
        ctx.refuse(f"input of per-sample shape {x.shape}; a fully connected layer needs (N, in) "
                   f"data (add a Flatten before it)")
    if in_features != x.shape[0]:
        ctx.refuse(f"a weight for {in_features} inputs, but {x.shape[0]} features reach it")
    layer = Linear(in_features, out_features, bias=bias is not None, init="zeros")
    layer.init = "kaiming"  # what a reset draws; the file's weights are copied in now
    layer.weight.data[...] = weight
    if bias is not None:
        layer.bias.data[...] = bias
    return ctx.call(layer, x)


def bias_vector(values, count: int, spatial: bool = False):
    """A (count,) bias from a constant that adds one value per output, else None."""
    values = numpy.asarray(values)
    shapes = [(), (1,), (count,), (1, count)]
    if spatial:
        shapes = [(), (1,), (count, 1, 1), (1, count, 1, 1)]
    if values.shape not in shapes:
        return None
    return numpy.broadcast_to(values.reshape(-1), (count,)).astype(numpy.float32)


@translates("Gemm", attrs={"alpha", "beta", "broadcast", "transA", "transB"},
            doc="data as A (N, in) with transA=0; constant B with transB 0 or 1; alpha; "
                "constant C of shape (), (1,), (out,) or (1, out); beta")
def gemm(ctx):
    if ctx.attrs.get("transA", 0):
        ctx.refuse("transA=1 (the data would be transposed (in, N))")
    if not ctx.is_tensor(0):
        ctx.refuse("the data must be the first input (A), received a constant there")
    x = ctx.tensor(0)
    b = ctx.const(1, "matrix B")
    if b.ndim != 2:
        ctx.refuse(f"B of shape {b.shape}; expected a matrix")
    weight = b if ctx.attrs.get("transB", 0) else b.T  # (out, in)
    alpha, beta = float(ctx.attrs.get("alpha", 1.0)), float(ctx.attrs.get("beta", 1.0))
    c = ctx.optional_const(2, "bias C")
    bias = None
    if c is not None and beta != 0:
        bias = bias_vector(c, weight.shape[0])
        if bias is None:
            ctx.refuse(f"C of shape {c.shape} with {weight.shape[0]} outputs")
        bias = beta * bias
    return [_linear(ctx, x, weight * alpha, bias)]


@translates("MatMul", doc="(N, in) data times a constant (in, out) matrix (a Linear layer); "
                          "two activations of equal rank (batched, broadcasting); an "
                          "activation times a constant of any rank")
def matmul(ctx):
    if ctx.is_tensor(0) and ctx.is_tensor(1):
        a, b = ctx.tensor(0), ctx.tensor(1)
        if len(a.shape) != len(b.shape):
            ctx.refuse(f"activations of per-sample shapes {a.shape} and {b.shape}: different "
                       f"ranks")
        return [ctx.call(MatMul(), [a, b])]
    if ctx.is_tensor(0):
        x = ctx.tensor(0)
        b = ctx.const(1, "matrix B")
        if len(x.shape) == 1 and b.ndim == 2:
            return [_linear(ctx, x, b.T, None)]
        if b.ndim > len(x.shape) + 1 or b.ndim < 2 or len(x.shape) < 2:
            ctx.refuse(f"per-sample input {x.shape} times B of shape {b.shape}")
        return [ctx.call(MatMul(), [x, ctx.constant_tensor(b, x, 1)])]
    x = ctx.tensor(1)
    a = ctx.const(0, "matrix A")
    if a.ndim < 2 or a.ndim > len(x.shape) + 1 or len(x.shape) < 2:
        ctx.refuse(f"A of shape {a.shape} times per-sample input {x.shape}")
    return [ctx.call(MatMul(), [ctx.constant_tensor(a, x, 0), x])]
