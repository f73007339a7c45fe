"""Reshape and Permute: a tensor's values rearranged, none changed.

    cn.Reshape((2, -1), start_dim=1, end_dim=1)   # (N, C, H, W) -> (N, 2, C/2, H, W)
    cn.Permute((0, 2, 1, 3, 4))                   # swap two axes (ShuffleNet's channel shuffle)

Reshape replaces the axes start_dim..end_dim (counting the batch axis, as torch.flatten does)
by `shape`, one entry of which may be -1; the axes outside that range pass through whatever
their size, so a fully convolutional model that reshapes only its channels runs at any H x W.
The batch axis always stays first: start_dim >= 1, and Permute keeps axis 0 in place.
"""

from __future__ import annotations

import math

import numpy

from convnet.core.errors import ShapeError
from convnet.nn.layer import Layer, Shape, check_input, grad_enabled


def _int(value, what: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)):
        raise TypeError(f"{owner}: {what} must be an int, received {value!r}")
    return int(value)


class Reshape(Layer):
    """(N, d1, ..., dk) -> the axes start_dim..end_dim replaced by `shape` (x.view's rule:
    the number of values is unchanged; -1 takes what is left)."""

    kind = "reshape"

    def __init__(self, shape, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        if isinstance(shape, (int, numpy.integer)):
            shape = (shape,)
        self.shape = tuple(_int(v, "each size in shape", "Reshape") for v in shape)
        if any(v < -1 or v == 0 for v in self.shape) or list(self.shape).count(-1) > 1:
            raise ValueError(f"Reshape: shape must hold positive sizes and at most one -1, "
                             f"received {self.shape}")
        self.start_dim = _int(start_dim, "start_dim", "Reshape")
        self.end_dim = _int(end_dim, "end_dim", "Reshape")
        if self.start_dim < 1:
            raise ValueError(f"Reshape: start_dim must be >= 1 (the batch axis 0 stays as it "
                             f"is), received {start_dim}")

    def _range(self, rank: int) -> tuple[int, int]:
        """Per-sample axes [a, b) that are replaced, for a per-sample rank."""
        end = self.end_dim if self.end_dim >= 0 else self.end_dim + rank + 1
        a, b = self.start_dim - 1, end
        if not 0 <= a < b <= rank:
            raise ShapeError(f"{self.name} (Reshape): axes {self.start_dim}..{self.end_dim} do "
                             f"not fit an input of {rank + 1} dimensions (N and {rank} per "
                             f"sample)")
        return a, b

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        a, b = self._range(len(shape))
        count = math.prod(shape[a:b])
        known = math.prod(v for v in self.shape if v != -1)
        if -1 in self.shape:
            if count % known:
                raise ShapeError(f"{self.name} (Reshape): {count} values (axes "
                                 f"{self.start_dim}..{self.end_dim} of per-sample shape "
                                 f"{shape}) do not divide into {self.shape}")
            middle = tuple(count // known if v == -1 else v for v in self.shape)
        else:
            if known != count:
                raise ShapeError(f"{self.name} (Reshape): cannot view {count} values (axes "
                                 f"{self.start_dim}..{self.end_dim} of per-sample shape "
                                 f"{shape}) as {self.shape} ({known} values)")
            middle = self.shape
        return shape[:a] + middle + shape[b:]

    def forward(self, x):
        check_input(self, x, max(getattr(x, "ndim", 0), 2), what="(N, ...)")
        out_shape = self.output_shape(tuple(x.shape[1:]))
        if grad_enabled():
            self.cache = x.shape
        return x.reshape(x.shape[0], *out_shape)

    def backward(self, dy):
        return dy.reshape(self._take_cache())

    def extra_repr(self) -> str:
        dims = "" if (self.start_dim, self.end_dim) == (1, -1) else (
            f", start_dim={self.start_dim}, end_dim={self.end_dim}")
        return f"{self.shape}{dims}"


class Permute(Layer):
    """x.permute(*dims) with the batch axis kept first (torchvision's Permute): (N, C, H, W)
    with dims (0, 2, 3, 1) gives (N, H, W, C)."""

    kind = "permute"

    def __init__(self, dims):
        super().__init__()
        if not isinstance(dims, (list, tuple)):
            raise TypeError(f"Permute: dims must be a list of axes such as [0, 2, 3, 1], "
                            f"received {dims!r}")
        self.dims = tuple(_int(d, "each axis in dims", "Permute") for d in dims)
        if sorted(self.dims) != list(range(len(self.dims))) or len(self.dims) < 2:
            raise ValueError(f"Permute: dims must be a permutation of 0..k-1 such as "
                             f"(0, 2, 3, 1), received {self.dims}")
        if self.dims[0] != 0:
            raise ValueError(f"Permute: the batch axis must stay first (dims[0] == 0), "
                             f"received {self.dims}")
        self.inverse = tuple(int(i) for i in numpy.argsort(self.dims))

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        if len(shape) + 1 != len(self.dims):
            raise ShapeError(f"{self.name} (Permute): dims {self.dims} need an input of "
                             f"{len(self.dims)} dimensions, received per-sample shape {shape} "
                             f"({len(shape) + 1} with the batch axis)")
        full = (0, *shape)
        return tuple(full[d] for d in self.dims[1:])

    def forward(self, x):
        check_input(self, x, len(self.dims))
        if grad_enabled():
            self.cache = True
        return x.transpose(self.dims)

    def backward(self, dy):
        self._take_cache()
        return dy.transpose(self.inverse)

    def extra_repr(self) -> str:
        return f"{list(self.dims)}"
