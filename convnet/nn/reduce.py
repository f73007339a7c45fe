"""Reductions over some axes of each sample: mean, max and sum (x.mean(dim), x.amax(dim)).

    cn.ReduceMean(dim=(2, 3), keepdim=True)    # (N, C, H, W) -> (N, C, 1, 1): global average
    cn.ReduceMax(dim=1)                        # (N, C, H, W) -> (N, H, W): the largest channel

`dim` counts the batch axis, as in PyTorch, and never includes it. ReduceMax's gradient is
shared equally among tied maxima, as torch.amax's is.
"""

from __future__ import annotations

import math

import numpy

from convnet.core.backend import array_module
from convnet.core.errors import ShapeError
from convnet.nn.layer import Layer, Shape, check_input, grad_enabled


class _Reduce(Layer):
    def __init__(self, dim, keepdim: bool = False):
        super().__init__()
        name = type(self).__name__
        dims = tuple(dim) if isinstance(dim, (list, tuple)) else (dim,)
        if not dims or any(isinstance(d, bool) or not isinstance(d, (int, numpy.integer))
                           for d in dims):
            raise TypeError(f"{name}: dim must be an int or a tuple of ints such as (2, 3), "
                            f"received {dim!r}")
        if 0 in dims or len(set(dims)) != len(dims):
            raise ValueError(f"{name}: dim must be distinct axes other than the batch axis 0, "
                             f"received {dims}")
        self.dim = tuple(int(d) for d in dims)
        self.keepdim = bool(keepdim)

    def _axes(self, rank: int) -> tuple[int, ...]:
        """Full-array axes (batch counted) for a per-sample rank."""
        axes = []
        for d in self.dim:
            axis = d if d > 0 else d + rank + 1
            if not 1 <= axis <= rank:
                raise ShapeError(f"{self.name} ({type(self).__name__}): axis {d} is outside "
                                 f"inputs of {rank + 1} dimensions (N and {rank} per sample)")
            axes.append(axis)
        if len(set(axes)) != len(axes):
            raise ShapeError(f"{self.name} ({type(self).__name__}): dim {self.dim} names an "
                             f"axis twice for an input of {rank + 1} dimensions")
        return tuple(sorted(axes))

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        axes = {a - 1 for a in self._axes(len(shape))}
        if self.keepdim:
            return tuple(1 if i in axes else n for i, n in enumerate(shape))
        out = tuple(n for i, n in enumerate(shape) if i not in axes)
        if not out:
            raise ShapeError(f"{self.name} ({type(self).__name__}): reducing every axis of "
                             f"{shape} without keepdim leaves no per-sample axis; pass "
                             f"keepdim=True")
        return out

    def forward(self, x):
        check_input(self, x, max(getattr(x, "ndim", 0), 2), what="(N, ...)")
        self.output_shape(tuple(x.shape[1:]))
        axes = self._axes(x.ndim - 1)
        kept = self._reduce(array_module(x), x, axes)  # keepdims=True
        if grad_enabled():
            self.cache = self._keep(x, kept, axes)
        if self.keepdim:
            return kept
        return kept.reshape([n for i, n in enumerate(kept.shape) if i not in axes])

    def backward(self, dy):
        x_shape, axes, extra = self._take_cache()
        kept_shape = tuple(1 if i in axes else n for i, n in enumerate(x_shape))
        return self._gradient(array_module(dy), dy.reshape(kept_shape), x_shape, axes, extra)

    def extra_repr(self) -> str:
        dims = self.dim[0] if len(self.dim) == 1 else self.dim
        return f"dim={dims}" + (", keepdim=True" if self.keepdim else "")


class ReduceMean(_Reduce):
    """The mean over `dim`: x.mean(dim, keepdim)."""

    kind = "mean"

    def _reduce(self, xp, x, axes):
        return x.mean(axis=axes, keepdims=True, dtype=x.dtype)

    def _keep(self, x, kept, axes):
        return (x.shape, axes, x.dtype)

    def _gradient(self, xp, dy, shape, axes, dtype):
        count = math.prod(shape[a] for a in axes)
        return xp.broadcast_to(dy / dy.dtype.type(count), shape).copy()


class ReduceSum(_Reduce):
    """The sum over `dim`: x.sum(dim, keepdim)."""

    kind = "sum"

    def _reduce(self, xp, x, axes):
        return x.sum(axis=axes, keepdims=True, dtype=x.dtype)

    def _keep(self, x, kept, axes):
        return (x.shape, axes, None)

    def _gradient(self, xp, dy, shape, axes, extra):
        return xp.broadcast_to(dy, shape).copy()


class ReduceMax(_Reduce):
    """The largest value over `dim`: x.amax(dim, keepdim); ties share the gradient."""

    kind = "max"

    def _reduce(self, xp, x, axes):
        return x.max(axis=axes, keepdims=True)

    def _keep(self, x, kept, axes):
        winners = x == kept
        return (x.shape, axes, winners)

    def _gradient(self, xp, dy, shape, axes, winners):
        count = winners.sum(axis=axes, keepdims=True).astype(dy.dtype)
        return winners * (dy / count)
