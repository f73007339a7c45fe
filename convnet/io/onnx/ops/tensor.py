"""Tensor plumbing: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice,
Expand, Dropout. The batch axis must stay first and whole.

A Reshape keeps the axes its target copies from the input (0 entries, sizes from Shape(x), or
equal sizes at the ends: in row-major order equal leading and trailing axes are untouched) and
reshapes only the axes between, so channel reshapes such as ShuffleNet's shuffle run at any
input size."""

from __future__ import annotations

import math

import numpy

from convnet.io.onnx.registry import translates
from convnet.io.onnx.shapes import Dim, show
from convnet.nn.constant import Constant
from convnet.nn.linear import Dropout, Flatten
from convnet.nn.merge import Concat, Mul
from convnet.nn.reshape import Permute, Reshape
from convnet.nn.slice import Slice
from convnet.nn.split import Split

BIG = 2**62  # "to the end" for a Slice at any size


def _copies(ctx, entry, x, axis: int) -> bool:
    """Whether target `entry` copies full-array axis `axis` of activation x."""
    if isinstance(entry, tuple):
        return entry == ("copy", axis)
    if isinstance(entry, Dim):
        return ctx.importer.tensors.get(entry.tensor) is x and entry.is_axis(entry.tensor, axis)
    return False


def _size(entry, x) -> int:
    """The size an entry stands for at the import size (-1 stays -1)."""
    if isinstance(entry, tuple):
        return (0, *x.shape)[entry[1]]
    return int(entry)


def reshape_to(ctx, x, target: list):
    """x viewed as the full-array `target` (ints, -1, ('copy', i) or Dims)."""
    shape = tuple(x.shape)
    count = math.prod(shape)
    first, rest = target[0], list(target[1:])
    if isinstance(first, Dim) and not first.is_batch:
        ctx.refuse(f"target shape {show(target)} sets the batch axis from another size")
    keeps_batch = isinstance(first, Dim) or first == ("copy", 0) or (
        first == ctx.importer.fixed_batch and first != -1)
    for entry in rest:
        if isinstance(entry, Dim) and entry.value is None:
            ctx.refuse(f"target shape {show(target)} moves the batch size to another axis")
    if not keeps_batch:
        sizes = [_size(e, x) for e in rest]
        if -1 in sizes or math.prod(sizes) != count:
            ctx.refuse(f"target shape {show(target)} for per-sample input {shape} does not "
                       f"keep the batch axis first and whole")
    if rest.count(-1) > 1:
        ctx.refuse(f"target shape {show(target)} has more than one -1")
    n_in, n_out = len(shape), len(rest)
    p = 0
    while p < min(n_in, n_out) and (_copies(ctx, rest[p], x, p + 1)
                                    or _size(rest[p], x) == shape[p]):
        p += 1
    s = 0
    while s < min(n_in, n_out) - p and (
            _copies(ctx, rest[n_out - 1 - s], x, n_in - s)
            or _size(rest[n_out - 1 - s], x) == shape[n_in - 1 - s]):
        s += 1
    if p + s == n_in == n_out:
        return x
    if p + s == n_in or p + s == n_out:  # only size-1 axes inserted or removed: widen
        if p:
            p -= 1
        else:
            s -= 1
    middle = rest[p:n_out - s]
    sizes = [_size(e, x) for e in middle]
    if -1 not in sizes:
        for index, entry in enumerate(middle):  # a copied size may vary: let it be inferred
            if isinstance(entry, (Dim, tuple)):
                sizes[index] = -1
                break
    known = math.prod(v for v in sizes if v != -1)
    inner = math.prod(shape[p:n_in - s])
    if -1 not in sizes and known != inner or -1 in sizes and (known == 0 or inner % known):
        ctx.refuse(f"target shape {show(target)} does not fit per-sample input {shape}")
    if p == 0 and s == 0 and len(sizes) == 1:
        return ctx.call(Flatten(), x)
    end = -1 if s == 0 else n_in - s
    return ctx.call(Reshape(tuple(sizes), start_dim=p + 1, end_dim=end), x)


def _target(ctx, value, allowzero: bool) -> list:
    entries = []
    for index, entry in enumerate(numpy.asarray(value, dtype=object).reshape(-1)):
        if isinstance(entry, Dim):
            entries.append(entry)
            continue
        entry = int(entry)
        if entry == 0:
            if allowzero:
                ctx.refuse("a 0 in the target shape with allowzero=1 (an empty tensor)")
            entry = ("copy", index)
        elif entry < -1:
            ctx.refuse(f"target size {entry}")
        entries.append(entry)
    return entries


@translates("Reshape", attrs={"allowzero", "shape"},
            doc="any target that keeps the batch axis first and whole (0, -1, sizes "
                "computed by Shape, Gather, Slice, Concat, Unsqueeze, Cast and arithmetic); "
                "the axes it copies run at any size")
def reshape(ctx):
    x = ctx.tensor(0)
    if ctx.version < 5:
        value = ctx.attrs.get("shape")
    else:
        value = ctx.value(1)
        if value is None:
            ctx.refuse(f"its target shape '{ctx.name(1)}' is computed from data, not from "
                       f"constants and tensor shapes")
    return [reshape_to(ctx, x, _target(ctx, value, bool(ctx.attrs.get("allowzero", 0))))]


@translates("Flatten", attrs={"axis"}, doc="axis=1 (or an axis after which nothing but "
                                            "size-1 axes come before)")
def flatten(ctx):
    x = ctx.tensor(0)
    rank = len(x.shape) + 1
    axis = int(ctx.attrs.get("axis", 1))
    if not -rank <= axis <= rank:
        ctx.refuse(f"axis={axis} on an input of {rank} dimensions")
    axis %= rank + 1 if axis == rank else rank
    if axis == 0 or math.prod(x.shape[:axis - 1]) != 1:
        ctx.refuse(f"axis={ctx.attrs.get('axis', 1)} (flattening the batch axis in)")
    if axis == 1:
        return [ctx.call(Flatten(), x)]
    return [reshape_to(ctx, x, [("copy", 0), -1])]


def _axes(ctx, rank: int):
    axes = ctx.attr_ints("axes")
    if ctx.has(1):
        axes = [int(v) for v in ctx.const(1, "axes").reshape(-1)]
    return None if axes is None else [ctx.axis(a, rank) for a in axes]


@translates("Squeeze", attrs={"axes"}, doc="axes other than the batch's (attribute, or input "
                                           "from opset 13)")
def squeeze(ctx):
    x = ctx.tensor(0)
    rank = len(x.shape) + 1
    axes = _axes(ctx, rank)
    if axes is None:
        axes = [i + 1 for i, n in enumerate(x.shape) if n == 1]
    if 0 in axes:
        ctx.refuse(f"axes {axes} include the batch axis")
    for axis in axes:
        if x.shape[axis - 1] != 1:
            ctx.refuse(f"axis {axis} of per-sample shape {x.shape} has size "
                       f"{x.shape[axis - 1]}, not 1")
    target = [_dim(ctx, x, i) for i in range(rank) if i not in axes]
    return [reshape_to(ctx, x, target)]


@translates("Unsqueeze", attrs={"axes"}, doc="axes other than the batch's")
def unsqueeze(ctx):
    x = ctx.tensor(0)
    count = len(ctx.attr_ints("axes") or []) if not ctx.has(1) else ctx.const(1, "axes").size
    out_rank = len(x.shape) + 1 + count
    axes = sorted(_axes(ctx, out_rank) or [])
    if 0 in axes:
        ctx.refuse(f"axes {axes} put a new axis before the batch axis")
    target, source = [], 0
    for index in range(out_rank):
        if index in axes:
            target.append(1)
        else:
            target.append(_dim(ctx, x, source))
            source += 1
    return [reshape_to(ctx, x, target)]


def _dim(ctx, x, axis: int) -> Dim:
    """The size of full-array axis `axis` of input 0, as the shape pass would give it."""
    return Dim(ctx.name(0), axis, None if axis == 0 else x.shape[axis - 1])


@translates("Transpose", attrs={"perm"}, doc="any perm that keeps the batch axis first (an "
                                             "NHWC input turned NCHW at the front, a channel "
                                             "shuffle)")
def transpose(ctx):
    x = ctx.tensor(0)
    rank = len(x.shape) + 1
    perm = ctx.attr_ints("perm", list(range(rank))[::-1])
    if sorted(perm) != list(range(rank)):
        ctx.refuse(f"perm {perm} for an input of {rank} dimensions")
    if perm[0] != 0:
        ctx.refuse(f"perm {perm} moves the batch axis")
    if perm == list(range(rank)):
        return [x]
    return [ctx.call(Permute(perm), x)]


@translates("Concat", attrs={"axis"}, doc="activations (and constants) along any axis but "
                                          "the batch's")
def concat(ctx):
    indices = [i for i in range(len(ctx.node.input)) if ctx.has(i)]
    like = next((ctx.tensor(i) for i in indices if ctx.is_tensor(i)), None)
    rank = len(like.shape) + 1
    axis = ctx.axis(int(ctx.attrs["axis"]), rank) if "axis" in ctx.attrs else 1
    if axis == 0:
        ctx.refuse("axis 0 (the batch axis)")
    parts = []
    for i in indices:
        if not ctx.is_tensor(i):
            value = ctx.const(i, f"input {i}")
            if value.size == 0:
                continue
        parts.append(ctx.operand(i, like))
    if len(parts) == 1:
        return [parts[0]]
    return [ctx.call(Concat(axis=axis), parts)]


@translates("Split", attrs={"axis", "split", "num_outputs"},
            doc="along any axis but the batch's; sizes as attribute, input or num_outputs")
def split(ctx):
    x = ctx.tensor(0)
    rank = len(x.shape) + 1
    axis = ctx.axis(int(ctx.attrs.get("axis", 0)), rank)
    if axis == 0:
        ctx.refuse("axis 0 (the batch axis)")
    size = x.shape[axis - 1]
    sizes = ctx.attr_ints("split")
    if ctx.has(1):
        sizes = [int(v) for v in ctx.const(1, "split").reshape(-1)]
    outputs = len(ctx.node.output)
    if sizes is None:
        parts = int(ctx.attrs.get("num_outputs", outputs))
        chunk = -(-size // parts)
        sizes = [chunk] * (size // chunk) + ([size % chunk] if size % chunk else [])
    if sum(sizes) != size or len(sizes) != outputs or min(sizes) < 1:
        ctx.refuse(f"sizes {sizes} for axis {axis} of size {size} into {outputs} outputs")
    if len(sizes) == 1:
        return [x]
    return list(ctx.call(Split(sizes, dim=axis), x))


@translates("Slice", attrs={"starts", "ends", "axes"},
            doc="of an activation along any axes but the batch's (the whole batch axis "
                "passes); constant starts, ends, axes, steps")
def slice_(ctx):
    x = ctx.tensor(0)
    rank = len(x.shape) + 1
    if ctx.version < 10:
        starts, ends = ctx.attr_ints("starts"), ctx.attr_ints("ends")
        axes, steps = ctx.attr_ints("axes"), None
    else:
        starts = _bounds(ctx, 1, x, None)
        ends = _bounds(ctx, 2, x, None)
        axes = [int(v) for v in ctx.const(3, "axes").reshape(-1)] if ctx.has(3) else None
        steps = [int(v) for v in ctx.const(4, "steps").reshape(-1)] if ctx.has(4) else None
    axes = list(range(len(starts))) if axes is None else [ctx.axis(a, rank) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if ctx.version >= 10 and ends and any(isinstance(e, Dim) for e in ends):
        ends = [BIG if isinstance(e, Dim) and _copies(ctx, e, x, a) else int(e)
                for e, a in zip(ends, axes, strict=True)]
    keep = []
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        start, end = int(start), int(end)
        if axis == 0:
            whole = 2**31 - 1 if ctx.importer.fixed_batch is None else ctx.importer.fixed_batch
            if start == 0 and step == 1 and end >= whole:
                continue
            ctx.refuse(f"slices the batch axis [{start}:{end}:{step}]")
        keep.append((axis, start, min(end, BIG) if end > 0 else max(end, -BIG), step))
    if not keep:
        return [x]
    dims, starts, ends, steps = (list(v) for v in zip(*keep, strict=True))
    layer = Slice(dims, starts, ends, steps)
    if layer.output_shape(x.shape) == tuple(x.shape) and all(s == 1 for s in steps):
        return [x]
    return [ctx.call(layer, x)]


def _bounds(ctx, index, x, _):
    value = ctx.value(index)
    if value is None:
        ctx.refuse(f"input {index} ('{ctx.name(index)}') is computed from data")
    return list(numpy.asarray(value, dtype=object).reshape(-1))


@translates("Dropout", attrs={"ratio", "seed", "is_test"},
            doc="inference (no training_mode input, or a constant false one); ratio < 1; "
                "mask output unused")
def dropout(ctx):
    x = ctx.tensor(0)
    ratio = float(ctx.attrs.get("ratio", 0.5))
    if ctx.has(1):
        ratio = float(str(numpy.float32(ctx.const(1, "ratio"))))
    if ctx.has(2) and bool(ctx.const(2, "training_mode")):
        ctx.refuse("training_mode true (dropout would be applied)")
    if not 0 <= ratio < 1:
        ctx.refuse(f"ratio {ratio}")
    return [ctx.call(Dropout(ratio), x), None]


@translates("Expand", doc="an activation broadcast to a constant shape (or a constant to the "
                          "batch)")
def expand(ctx):
    value = ctx.value(1)
    if value is None:
        ctx.refuse("its shape is computed from data")
    target = list(numpy.asarray(value, dtype=object).reshape(-1))
    if not ctx.is_tensor(0):  # a constant repeated for each sample (convnet's own export)
        if not target or not (isinstance(target[0], Dim) and target[0].is_batch):
            ctx.refuse(f"a constant expanded to {show(target)}, which does not start with the "
                       f"batch size")
        like = ctx.importer.tensors.get(target[0].tensor)
        constant = ctx.const(0, "input")
        sizes = tuple(int(v) for v in target[1:])
        full = numpy.broadcast_to(constant, numpy.broadcast_shapes(constant.shape,
                                                                   (1, *sizes)))
        if full.shape[0] != 1:
            ctx.refuse(f"a constant of shape {constant.shape} varies along the batch axis")
        return [ctx.call(Constant(full[0], trainable=full[0].size > 1), like)]
    x = ctx.tensor(0)
    rank = len(x.shape) + 1
    if len(target) != rank:
        ctx.refuse(f"shape {show(target)} of another rank than the input's {rank}")
    sizes = [1 if isinstance(t, Dim) and t.is_batch else int(t) for t in target[1:]]
    out = numpy.broadcast_shapes(tuple(x.shape), tuple(sizes))
    if out == tuple(x.shape):
        return [x]
    ones = ctx.call(Constant(numpy.ones(out, numpy.float32)), x)
    return [ctx.call(Mul(), [x, ones])]


@translates("ConstantOfShape", attrs={"value"},
            doc="of a shape that starts with the batch size (Shape(x) of an activation): a "
                "Constant layer")
def constant_of_shape(ctx):
    from convnet.io.onnx.loader import to_array

    value = ctx.value(0)
    entries = list(numpy.asarray(value, dtype=object).reshape(-1)) if value is not None else []
    if not entries or not (isinstance(entries[0], Dim) and entries[0].is_batch):
        ctx.refuse("a shape that is neither constant nor starts with the batch size")
    like = ctx.importer.tensors.get(entries[0].tensor)
    sizes = [int(v) for v in entries[1:]]
    fill = ctx.attrs.get("value")
    number = float(to_array(fill).reshape(-1)[0]) if fill is not None else 0.0
    if not sizes:
        ctx.refuse("a shape of the batch size alone (no per-sample axis)")
    return [ctx.call(Constant(numpy.full(sizes, number, numpy.float32)), like)]


FOLDED_ONLY = {
    "Shape": "of any tensor (the batch size stays symbolic; other sizes are those of the "
             "import size, remembered by axis)",
    "Constant": "value tensors, floats and ints; any node computing only from constants is "
                "folded at import",
    "Gather": "of constants and shape values (folded)",
    "Size": "of constants (folded)",
    "Range": "of constants (folded, bounded in size)",
    "Tile": "of constants (folded, bounded in size)",
    "Where": "of constants and shape values (folded)",
    "Equal": "of constants and shape values (folded)",
}


def _folded_only(ctx):
    ctx.refuse("it reads an activation; convnet computes it only from constants and tensor "
               "shapes (at import)")


for _op, _doc in FOLDED_ONLY.items():
    translates(_op, doc=_doc)(_folded_only)
