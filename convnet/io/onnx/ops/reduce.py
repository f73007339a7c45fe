"""ReduceMean, ReduceMax, ReduceSum over the axes of each sample (axes as an attribute, or
an input from opset 18 on; ReduceSum's from 13)."""

from __future__ import annotations

from convnet.io.onnx.registry import translates
from convnet.nn.pooling import GlobalAvgPool2d
from convnet.nn.reduce import ReduceMax, ReduceMean, ReduceSum

LAYERS = {"ReduceMean": ReduceMean, "ReduceMax": ReduceMax, "ReduceSum": ReduceSum}


@translates("ReduceMean", "ReduceMax", "ReduceSum", attrs={"axes", "keepdims",
                                                           "noop_with_empty_axes"},
            doc="over any axes but the batch's, keepdims 0/1 (over H and W of (N, C, H, W) "
                "with keepdims: global average pooling)")
def reduce(ctx):
    x = ctx.tensor(0)
    rank = len(x.shape) + 1
    axes = ctx.attr_ints("axes")
    if ctx.has(1):
        axes = [int(v) for v in ctx.const(1, "axes").reshape(-1)]
    if not axes:
        if ctx.attrs.get("noop_with_empty_axes", 0):
            return [x]
        ctx.refuse("no axes (a reduction over the batch axis too)")
    axes = sorted({ctx.axis(a, rank) for a in axes})
    if 0 in axes:
        ctx.refuse(f"axes {axes} include the batch axis 0")
    keep = bool(ctx.attrs.get("keepdims", 1))
    if ctx.node.op_type == "ReduceMean" and axes == [2, 3] and rank == 4 and keep:
        return [ctx.call(GlobalAvgPool2d(), x)]
    return [ctx.call(LAYERS[ctx.node.op_type](tuple(axes), keepdim=keep), x)]
