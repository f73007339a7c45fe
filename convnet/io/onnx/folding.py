"""The constant-folding pass: nodes whose inputs are all known become known values.

Known values are weights (initializers, Constant nodes) and the shape values of the shape
pass (`shapes.Dim` entries in object arrays). `FOLDERS` holds one small NumPy function per
operator, registered by op type; each works on object arrays too, so shape arithmetic such as
x.view(x.size(0), -1) (Shape -> Gather -> Unsqueeze -> Concat) stays symbolic in the batch
size. Operators that can make large tensors from small inputs (ConstantOfShape, Expand,
Tile, Range) check the size first: no folded tensor holds more than loader.MAX_ELEMENTS values.
Other operators on numeric constants fall back to onnx's reference evaluator when their
inputs are small.
"""

from __future__ import annotations

import math

import numpy
from onnx import helper

from convnet.io.onnx.errors import OnnxImportError, label
from convnet.io.onnx.loader import MAX_ELEMENTS, to_array
from convnet.io.onnx.shapes import Dim, concrete, is_symbolic

FOLDERS: dict[str, object] = {}
# Never folded: random, or able to build huge tensors from small inputs, or with subgraphs.
NOT_FOLDED = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
              "Multinomial", "Bernoulli", "Loop", "Scan", "If", "Resize", "Upsample", "Pad",
              "OneHot", "ConvTranspose", "Col2Im", "EyeLike", "CenterCropPad"}
# The reference evaluator is asked only when the inputs are this small.
FALLBACK_ELEMENTS = 1 << 20


def folds(*ops):
    def register(function):
        for op in ops:
            FOLDERS[op] = function
        return function
    return register


class _Cannot(Exception):
    """This node cannot be folded (a shape value the operation cannot carry)."""


def _check_size(node, shape) -> tuple[int, ...]:
    shape = tuple(int(v) for v in shape)
    if any(v < 0 for v in shape):
        raise OnnxImportError(f"{label(node)} ({node.op_type}): negative size in {list(shape)}",
                              node.name, node.op_type)
    if math.prod(shape) > MAX_ELEMENTS:
        raise OnnxImportError(f"{label(node)} ({node.op_type}): would make a constant of shape "
                              f"{list(shape)} ({math.prod(shape):,} values), more than the "
                              f"{MAX_ELEMENTS:,} convnet holds in one tensor",
                              node.name, node.op_type)
    return shape


def _ints(value, what="value") -> list[int]:
    array = concrete(value)
    if array is None:
        raise _Cannot(f"{what} depends on the batch size")
    return [int(v) for v in numpy.asarray(array).reshape(-1)]


def _axes(attrs, inputs, index=1, name="axes"):
    if len(inputs) > index and inputs[index] is not None:
        return _ints(inputs[index], name)
    value = attrs.get(name)
    return None if value is None else [int(v) for v in value]


@folds("Identity", "Dropout")
def _identity(node, x, attrs, opset):
    return [x[0]]


@folds("Cast", "CastLike")
def _cast(node, x, attrs, opset):
    if x[0].dtype == object:
        return [x[0]]
    if node.op_type == "CastLike":
        return [x[0].astype(x[1].dtype)]
    dtype = helper.tensor_dtype_to_np_dtype(int(attrs["to"]))
    return [x[0].astype(dtype)]


@folds("Shape")
def _shape(node, x, attrs, opset):
    full = numpy.array(x[0].shape, dtype=numpy.int64)
    start, end = attrs.get("start", 0), attrs.get("end", len(full))
    return [full[start:end]]


@folds("Size")
def _size(node, x, attrs, opset):
    return [numpy.array(x[0].size, dtype=numpy.int64)]


@folds("Reshape")
def _reshape(node, x, attrs, opset):
    target = _ints(x[1] if len(x) > 1 and x[1] is not None else attrs.get("shape"), "shape")
    if not attrs.get("allowzero", 0):
        target = [x[0].shape[i] if v == 0 else v for i, v in enumerate(target)]
    return [x[0].reshape(target)]


@folds("Flatten")
def _flatten(node, x, attrs, opset):
    axis = attrs.get("axis", 1) % max(x[0].ndim, 1) if x[0].ndim else 0
    return [x[0].reshape(math.prod(x[0].shape[:axis]), -1)]


@folds("Transpose")
def _transpose(node, x, attrs, opset):
    return [numpy.transpose(x[0], attrs.get("perm"))]


@folds("Unsqueeze")
def _unsqueeze(node, x, attrs, opset):
    axes = _axes(attrs, x)
    rank = x[0].ndim + len(axes)
    out = x[0]
    for axis in sorted(a % rank for a in axes):
        out = numpy.expand_dims(out, axis)
    return [out]


@folds("Squeeze")
def _squeeze(node, x, attrs, opset):
    axes = _axes(attrs, x)
    if axes is None:
        return [numpy.squeeze(x[0])]
    return [numpy.squeeze(x[0], axis=tuple(a % x[0].ndim for a in axes))]


@folds("Concat")
def _concat(node, x, attrs, opset):
    parts = [numpy.asarray(v) for v in x if v is not None and numpy.asarray(v).size]
    if not parts:
        return [numpy.asarray(x[0])]
    if any(p.dtype == object for p in parts):
        parts = [p.astype(object) for p in parts]
    return [numpy.concatenate(parts, axis=attrs.get("axis", 0))]


@folds("Gather")
def _gather(node, x, attrs, opset):
    indices = numpy.asarray(_ints(x[1], "indices")).reshape(numpy.shape(x[1]))
    return [numpy.take(x[0], indices, axis=attrs.get("axis", 0))]


@folds("Slice")
def _slice(node, x, attrs, opset):
    data = x[0]
    if opset >= 10:
        starts, ends = _ints(x[1], "starts"), _ints(x[2], "ends")
        axes = _ints(x[3], "axes") if len(x) > 3 and x[3] is not None else None
        steps = _ints(x[4], "steps") if len(x) > 4 and x[4] is not None else None
    else:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes, steps = attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        index[axis % data.ndim] = slice(start, end, step)
    return [data[tuple(index)]]


def _binary(op):
    def fold(node, x, attrs, opset):
        a, b = numpy.asarray(x[0]), numpy.asarray(x[1])
        if a.dtype == object or b.dtype == object:
            try:
                return [numpy.asarray(op(a.astype(object), b.astype(object)), dtype=object)]
            except TypeError:
                raise _Cannot("arithmetic on sizes that depend on the batch size") from None
        with numpy.errstate(all="ignore"):
            result = op(a, b)
        return [numpy.asarray(result).astype(numpy.result_type(a, b), copy=False)]
    return fold


def _divide(a, b):
    if a.dtype == object or b.dtype == object or (a.dtype.kind in "iu" and b.dtype.kind in "iu"):
        return a // b  # ONNX integer division truncates; sizes are never negative
    return a / b


FOLDERS["Add"] = _binary(numpy.add)
FOLDERS["Sub"] = _binary(numpy.subtract)
FOLDERS["Mul"] = _binary(numpy.multiply)
FOLDERS["Div"] = _binary(_divide)
FOLDERS["Equal"] = _binary(numpy.equal)
FOLDERS["Less"] = _binary(numpy.less)
FOLDERS["Greater"] = _binary(numpy.greater)
FOLDERS["Max"] = _binary(numpy.maximum)
FOLDERS["Min"] = _binary(numpy.minimum)


@folds("Where")
def _where(node, x, attrs, opset):
    return [numpy.where(numpy.asarray(x[0], dtype=bool), x[1], x[2])]


@folds("ConstantOfShape")
def _constant_of_shape(node, x, attrs, opset):
    shape = _check_size(node, _ints(x[0], "shape"))
    value = attrs.get("value")
    fill = to_array(value).reshape(-1) if value is not None else numpy.zeros(1, numpy.float32)
    return [numpy.full(shape, fill[0], dtype=fill.dtype)]


@folds("Expand")
def _expand(node, x, attrs, opset):
    target = _ints(x[1], "shape")
    shape = numpy.broadcast_shapes(x[0].shape, tuple(target))
    _check_size(node, shape)
    return [numpy.broadcast_to(x[0], shape).copy()]


@folds("Tile")
def _tile(node, x, attrs, opset):
    repeats = _ints(x[1], "repeats")
    _check_size(node, [n * r for n, r in zip(x[0].shape, repeats, strict=True)])
    return [numpy.tile(x[0], repeats)]


@folds("Range")
def _range(node, x, attrs, opset):
    start, limit, delta = (numpy.asarray(concrete(v)).reshape(()) for v in x[:3])
    if delta == 0:
        raise OnnxImportError(f"{label(node)} (Range): delta 0", node.name, "Range")
    count = max(int(math.ceil((limit - start) / delta)), 0)
    _check_size(node, [count])
    return [numpy.arange(count, dtype=numpy.result_type(start, limit, delta)) * delta + start]


def fold(node, inputs: list, attrs: dict, opset: int) -> list | None:
    """The node's outputs as arrays, or None when this node is not folded."""
    if node.op_type in NOT_FOLDED:
        return None
    function = FOLDERS.get(node.op_type)
    try:
        if function is not None:
            return function(node, inputs, attrs, opset)
        if any(v is None or is_symbolic(v) for v in inputs):
            return None
        return _reference(node, inputs, opset)
    except _Cannot:
        return None
    except OnnxImportError:
        raise
    except Exception as error:  # bad constants: shapes that do not fit, unknown types
        raise OnnxImportError(f"{label(node)} ({node.op_type}): computes from constants only, "
                              f"but could not be evaluated at import ({error})", node.name,
                              node.op_type) from None


def _reference(node, inputs, opset):
    if sum(numpy.asarray(v).size for v in inputs) > FALLBACK_ELEMENTS:
        return None
    from onnx.reference import ReferenceEvaluator

    names = [name for name in node.input if name]
    evaluator = ReferenceEvaluator(node, opsets={"": opset})
    values = evaluator.run(None, dict(zip(names, [v for v in inputs if v is not None],
                                          strict=True)))
    results = [numpy.asarray(v) for v in values]
    for value in results:
        _check_size(node, value.shape)
    return results


def symbolic_dim_entries(value) -> list:
    """The Dim entries of a shape value (for messages)."""
    return [v for v in numpy.asarray(value, dtype=object).reshape(-1) if isinstance(v, Dim)]
