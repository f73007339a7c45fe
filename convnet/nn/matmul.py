"""MatMul: the matrix product of two tensors, batched as torch.matmul and numpy.matmul are.

    scores = cn.MatMul()([q, k_t])   # (N, h, L, d) @ (N, h, d, L) -> (N, h, L, L)

Both inputs carry the batch axis and have the same rank; leading axes of size 1 broadcast.
Backward sums each gradient back over the axes its input was broadcast along.
"""

from __future__ import annotations

from convnet.core.errors import ShapeError
from convnet.nn.layer import Layer, Shape, grad_enabled
from convnet.nn.merge import _check_arrays, _unbroadcast


class MatMul(Layer):
    """a @ b over the last two axes of each sample: (..., M, K) @ (..., K, P) -> (..., M, P)."""

    kind = "matmul"
    multi_input = True

    def check_merge(self, tensors) -> None:
        self._check([t.shape for t in tensors], [t.name for t in tensors])

    def output_shape(self, input_shapes) -> Shape:
        shapes = [tuple(s) for s in input_shapes]
        return self._check(shapes, ["input 0", "input 1"][:len(shapes)])

    def _check(self, shapes, names) -> Shape:
        import numpy

        label = f"{self.name} (MatMul)"
        if len(shapes) != 2:
            raise ShapeError(f"{label}: takes exactly two inputs, received {len(shapes)}")
        a, b = shapes
        if len(a) < 2 or len(b) < 2:
            raise ShapeError(f"{label}: each input needs at least two axes per sample (a "
                             f"matrix), received {names[0]} {a} and {names[1]} {b}")
        if len(a) != len(b):
            raise ShapeError(f"{label}: {names[0]} {a} and {names[1]} {b} have different ranks; "
                             f"give the smaller one leading axes of size 1 with cn.Reshape")
        if a[-1] != b[-2]:
            raise ShapeError(f"{label}: {names[0]} {a} @ {names[1]} {b}: the inner sizes "
                             f"{a[-1]} and {b[-2]} differ")
        try:
            lead = numpy.broadcast_shapes(a[:-2], b[:-2])
        except ValueError:
            raise ShapeError(f"{label}: the leading axes of {names[0]} {a} and {names[1]} {b} "
                             f"do not broadcast") from None
        return tuple(lead) + (a[-2], b[-1])

    def forward(self, xs):
        xs = _check_arrays(self, xs)
        self.output_shape([tuple(x.shape[1:]) for x in xs])
        a, b = xs
        if grad_enabled():
            self.cache = (a, b)
        return a @ b

    def backward(self, dy):
        a, b = self._take_cache()
        da = dy @ b.swapaxes(-1, -2)
        db = a.swapaxes(-1, -2) @ dy
        return [_unbroadcast(da, a.shape), _unbroadcast(db, b.shape)]
