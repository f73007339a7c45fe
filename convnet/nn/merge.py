"""Merges: layers that take several tensors and give one, where a graph's branches meet.

    y = cn.Concat(axis=1)([a, b])   # Inception, SqueezeNet's Fire, U-Net skips: channels stacked
    y = cn.Add()([x, f])            # a residual join
    y = cn.Mul()([x, gate])         # squeeze-and-excitation: (N, C, H, W) * (N, C, 1, 1)

Add, Sub, Mul and Div broadcast their inputs as NumPy does (per sample, the batch axis is
never broadcast); backward sums each gradient back over the axes its input was broadcast
along. Concat's axis counts the batch axis, as torch.cat's dim does (axis=1: channels).
"""

from __future__ import annotations

import math

import numpy

from convnet.core import gate_kernels
from convnet.core.errors import ShapeError
from convnet.nn.layer import Layer, Shape, grad_enabled


def _check_arrays(layer: Layer, xs) -> list:
    label = f"{layer.name} ({type(layer).__name__})"
    if not isinstance(xs, (list, tuple)) or len(xs) < 2:
        raise TypeError(f"{label}: expected a list of at least two arrays, received "
                        f"{type(xs).__name__}" + (f" of {len(xs)}" if isinstance(
                            xs, (list, tuple)) else ""))
    for index, x in enumerate(xs):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"{label}: input {index} is {type(x).__name__}, not an array")
        if numpy.dtype(x.dtype).kind != "f":
            raise TypeError(f"{label}: expected floating-point arrays, input {index} has dtype "
                            f"{x.dtype}")
    batch = {x.shape[0] if x.ndim else None for x in xs}
    if len(batch) != 1:
        raise ValueError(f"{label}: the inputs have different batch sizes "
                         f"{[tuple(x.shape) for x in xs]}")
    return list(xs)


def _describe(shape: Shape) -> str:
    return f"{shape[1]}x{shape[2]}" if len(shape) == 3 else str(tuple(shape))


class _Merge(Layer):
    multi_input = True

    def check_merge(self, tensors) -> None:
        """Shape checks with the producers' names, for a graph being built (symbolic)."""
        self._check_shapes([t.shape for t in tensors], [t.name for t in tensors], tensors)

    def output_shape(self, input_shapes) -> Shape:
        shapes = [tuple(s) for s in input_shapes]
        if len(shapes) < 2:
            raise ShapeError(f"{self.name} ({type(self).__name__}): needs at least two inputs, "
                             f"received {len(shapes)}")
        return self._check_shapes(shapes, [f"input {i}" for i in range(len(shapes))], None)

    def receptive_field(self, field, input_shape):
        return field

    def _fix_hint(self, shapes, names, tensors) -> str:
        """How to make spatial sizes meet: a producer's own fix (ConvTranspose2d's
        output_padding), or an input size every downsampling divides."""
        if len(shapes[0]) != 3 or any(len(s) != 3 for s in shapes):
            return ""
        target = max(((s[1], s[2]) for s in shapes), key=lambda hw: hw[0] * hw[1])
        hints = []
        if tensors is not None:
            for tensor in tensors:
                if (tensor.shape[1], tensor.shape[2]) == target or tensor.node.layer is None:
                    continue
                producer = tensor.node.layer
                source = tensor.node.inputs[0].shape if tensor.node.inputs else None
                fix = producer.size_fix(source, target) if source is not None else None
                if fix:
                    hints.append(fix)
            jump = tuple(max(t.max_jump[i] for t in tensors) for i in range(2))
            roots = _graph_inputs(tensors)
            if roots and max(jump) > 1:
                shape = roots[0].shape
                if len(shape) == 3:
                    h = math.ceil(shape[1] / jump[0]) * jump[0]
                    w = math.ceil(shape[2] / jump[1]) * jump[1]
                    if (h, w) != (shape[1], shape[2]):
                        hints.append(f"pad the input to {h}x{w} (the network downsamples by "
                                     f"{_describe((0, *jump))})")
        return "; " + ", or ".join(hints) if hints else ""


def _graph_inputs(tensors) -> list:
    """The model inputs the given symbolic tensors come from (first found first)."""
    seen, found, stack = set(), [], list(tensors)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if tensor.node.layer is None:
            found.append(tensor)
        else:
            stack.extend(tensor.node.inputs)
    return found


class Concat(_Merge):
    """Stack tensors along `axis` (1: channels), as torch.cat(dim=axis); the other sizes must
    agree. (N, C1, H, W) + (N, C2, H, W) -> (N, C1 + C2, H, W)."""

    kind = "concat"

    def __init__(self, axis: int = 1):
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, (int, numpy.integer)) or axis == 0:
            raise ValueError(f"Concat: axis must be a non-zero int (1 for channels; the batch "
                             f"axis 0 cannot be concatenated in a model), received {axis!r}")
        self.axis = int(axis)

    def _sample_axis(self, rank: int) -> int:
        """The axis within one sample's shape (rank = per-sample rank)."""
        axis = self.axis if self.axis > 0 else self.axis + rank + 1
        if not 1 <= axis <= rank:
            raise ShapeError(f"{self.name} (Concat): axis {self.axis} is outside inputs of "
                             f"{rank + 1} dimensions (N and {rank} per sample)")
        return axis - 1

    def _check_shapes(self, shapes, names, tensors) -> Shape:
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ShapeError(f"{self.name} (Concat): the inputs have different ranks: "
                             + ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True)))
        axis = self._sample_axis(len(shapes[0]))
        rest = [s[:axis] + s[axis + 1:] for s in shapes]
        if len(set(rest)) != 1:
            if len(shapes[0]) == 3 and axis == 0:
                sizes = ", ".join(f"{n} {_describe(s)}"
                                  for n, s in zip(names, shapes, strict=True))
                raise ShapeError(f"{self.name} (Concat): spatial sizes differ: {sizes}"
                                 + self._fix_hint(shapes, names, tensors))
            listed = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
            raise ShapeError(f"{self.name} (Concat): along axis {self.axis} the other sizes must "
                             f"agree, received {listed}")
        total = sum(s[axis] for s in shapes)
        return shapes[0][:axis] + (total,) + shapes[0][axis + 1:]

    def forward(self, xs):
        xs = _check_arrays(self, xs)
        self._check_shapes([tuple(x.shape[1:]) for x in xs],
                           [f"input {i}" for i in range(len(xs))], None)
        axis = self._sample_axis(xs[0].ndim - 1) + 1
        out = numpy.concatenate(xs, axis=axis)
        if grad_enabled():
            self.cache = (axis, [x.shape[axis] for x in xs])
        return out

    def backward(self, dy):
        axis, sizes = self._take_cache()
        bounds = numpy.cumsum(sizes)[:-1]
        return [part.copy() for part in numpy.split(dy, bounds, axis=axis)]

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class _Broadcasting(_Merge):
    """An elementwise op of several tensors, broadcast per sample as NumPy does."""

    symbol = "?"

    def _check_shapes(self, shapes, names, tensors) -> Shape:
        try:
            return tuple(numpy.broadcast_shapes(*shapes))
        except ValueError:
            pass
        listed = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
        hint = ""
        if all(len(s) == 3 for s in shapes):
            hint = self._fix_hint(shapes, names, tensors)
            if len({s[0] for s in shapes}) > 1:
                hint += ("; the channel counts differ: project one side with a 1x1 "
                         "cn.Conv2d(in, out, 1)")
        raise ShapeError(f"{self.name} ({type(self).__name__}): shapes that do not broadcast: "
                         f"{listed}; each size must be equal or 1 (e.g. (C, H, W) "
                         f"{self.symbol} (C, 1, 1)){hint}")

    def forward(self, xs):
        xs = _check_arrays(self, xs)
        self._check_shapes([tuple(x.shape[1:]) for x in xs],
                           [f"input {i}" for i in range(len(xs))], None)
        out = self._combine(xs)
        if grad_enabled():
            self.cache = self._keep(xs, out)
        return out

    def backward(self, dy):
        kept = self._take_cache()
        return [_unbroadcast(grad, shape) for grad, shape in self._gradients(dy, kept)]


def _unbroadcast(grad, shape):
    """Sum `grad` back to `shape` over the axes that were broadcast."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, size in enumerate(shape) if size == 1 and grad.shape[extra + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


class Add(_Broadcasting):
    """x1 + x2 + ...: a residual join, or a bias broadcast over (C, 1, 1)."""

    kind = "add"
    symbol = "+"

    def _combine(self, xs):
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out += x
        return out

    def _keep(self, xs, out):
        return [x.shape for x in xs]

    def _gradients(self, dy, shapes):
        return [(dy, shape) for shape in shapes]


class _Binary(_Broadcasting):
    """An operation of exactly two tensors (x1 - x2, x1 / x2)."""

    def output_shape(self, input_shapes):
        self._two(len(input_shapes))
        return super().output_shape(input_shapes)

    def _two(self, count: int) -> None:
        if count != 2:
            raise ShapeError(f"{self.name} ({type(self).__name__}): takes exactly two inputs, "
                             f"received {count}")


class Sub(_Binary):
    """x1 - x2."""

    kind = "sub"
    symbol = "-"

    def _combine(self, xs):
        self._two(len(xs))
        return xs[0] - xs[1]

    def _keep(self, xs, out):
        return [x.shape for x in xs]

    def _gradients(self, dy, shapes):
        return [(dy, shapes[0]), (-dy, shapes[1])]


class Mul(_Broadcasting):
    """x1 * x2 * ...: a gate, e.g. squeeze-and-excitation's (N, C, H, W) * (N, C, 1, 1)."""

    kind = "mul"
    symbol = "*"

    def _combine(self, xs):
        gate = gate_kernels.gate_of(xs)
        if gate is not None:  # a channel gate: compiled, over the threads
            return gate_kernels.forward(xs[1 - gate], xs[gate])
        out = xs[0] * xs[1]
        for x in xs[2:]:
            out = out * x
        return out

    def _keep(self, xs, out):
        return list(xs)

    def _gradients(self, dy, xs):
        gate = gate_kernels.gate_of(xs)
        if gate is not None:
            dx, dgate = gate_kernels.backward(dy, xs[1 - gate], xs[gate])
            grads = [(dx, xs[1 - gate].shape), (dgate, xs[gate].shape)]
            return grads if gate == 1 else grads[::-1]
        grads = []
        for index, x in enumerate(xs):
            others = [other for position, other in enumerate(xs) if position != index]
            grad = dy * others[0]
            for other in others[1:]:
                grad = grad * other
            grads.append((grad, x.shape))
        return grads


class Div(_Binary):
    """x1 / x2 (the divisor is the caller's to keep away from zero)."""

    kind = "div"
    symbol = "/"

    def _combine(self, xs):
        self._two(len(xs))
        return xs[0] / xs[1]

    def _keep(self, xs, out):
        return (xs[0].shape, xs[1], out)

    def _gradients(self, dy, kept):
        shape, divisor, out = kept
        # d(a/b)/da = 1/b; d(a/b)/db = -a/b^2 = -out/b
        return [(dy / divisor, shape), (-dy * out / divisor, divisor.shape)]
