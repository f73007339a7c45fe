"""Slice: a strided window of a tensor along some axes (x[:, a:b:s] in NumPy's terms).

    cn.Slice(dims=[1], starts=[0], ends=[16])    # the first 16 channels: x[:, 0:16]
    cn.Slice(dims=[2, 3], starts=[1, 1], ends=[-1, -1], steps=[2, 2])

Starts and ends are clamped to each axis's size at run time, as Python slices are, so a slice
"to the end" (ends=[2**62]) fits any input size. The batch axis 0 is never sliced.
"""

from __future__ import annotations

import numpy

from convnet.core.errors import ShapeError
from convnet.nn.layer import Layer, Shape, check_input, grad_enabled


def _ints(values, what: str) -> tuple[int, ...]:
    try:
        items = tuple(values)
    except TypeError:
        items = (values,)
    if any(isinstance(v, bool) or not isinstance(v, (int, numpy.integer)) for v in items):
        raise TypeError(f"Slice: {what} must be ints, received {values!r}")
    return tuple(int(v) for v in items)


class Slice(Layer):
    """x[..., start:end:step, ...] on each of `dims` (counting the batch axis)."""

    kind = "slice"

    def __init__(self, dims, starts, ends, steps=None):
        super().__init__()
        self.dims = _ints(dims, "dims")
        self.starts = _ints(starts, "starts")
        self.ends = _ints(ends, "ends")
        self.steps = _ints(steps, "steps") if steps is not None else (1,) * len(self.dims)
        if not (len(self.dims) == len(self.starts) == len(self.ends) == len(self.steps)):
            raise ValueError(f"Slice: dims, starts, ends and steps must have one entry per axis, "
                             f"received {len(self.dims)}, {len(self.starts)}, {len(self.ends)} "
                             f"and {len(self.steps)}")
        if not self.dims or 0 in self.dims or len(set(self.dims)) != len(self.dims):
            raise ValueError(f"Slice: dims must be distinct non-zero axes (the batch axis 0 is "
                             f"never sliced), received {self.dims}")
        if 0 in self.steps:
            raise ValueError(f"Slice: steps must be non-zero, received {self.steps}")

    def _index(self, rank: int):
        """The tuple of slices for an input of per-sample rank `rank`."""
        index = [slice(None)] * (rank + 1)
        for dim, start, end, step in zip(self.dims, self.starts, self.ends, self.steps,
                                         strict=True):
            axis = dim if dim > 0 else dim + rank + 1
            if not 1 <= axis <= rank:
                raise ShapeError(f"{self.name} (Slice): axis {dim} is outside inputs of "
                                 f"{rank + 1} dimensions")
            index[axis] = slice(start, end, step)
        return tuple(index)

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        index = self._index(len(shape))
        out = tuple(len(range(*index[i + 1].indices(n))) for i, n in enumerate(shape))
        if 0 in out:
            raise ShapeError(f"{self.name} (Slice): {self.describe()} of per-sample shape "
                             f"{shape} is empty (gives {out})")
        return out

    def forward(self, x):
        check_input(self, x, max(getattr(x, "ndim", 0), 2), what="(N, ...)")
        self.output_shape(tuple(x.shape[1:]))
        index = self._index(x.ndim - 1)
        if grad_enabled():
            self.cache = (x.shape, x.dtype, index)
        return x[index]

    def backward(self, dy):
        shape, dtype, index = self._take_cache()
        dx = numpy.zeros(shape, dtype=dy.dtype)
        dx[index] = dy
        return dx

    def describe(self) -> str:
        parts = []
        for dim, start, end, step in zip(self.dims, self.starts, self.ends, self.steps,
                                         strict=True):
            parts.append(f"axis {dim} [{start}:{end}" + (f":{step}]" if step != 1 else "]"))
        return ", ".join(parts)

    def extra_repr(self) -> str:
        steps = "" if set(self.steps) == {1} else f", steps={list(self.steps)}"
        return (f"dims={list(self.dims)}, starts={list(self.starts)}, ends={list(self.ends)}"
                f"{steps}")
