"""Split: one tensor cut into several along an axis (torch.split with a list of sizes).

    a, b = cn.Split([16, 16], dim=1)(x)   # (N, 32, H, W) -> (N, 16, H, W), (N, 16, H, W)

A layer with several outputs: forward returns a tuple, backward takes one gradient per output
(the graph hands zeros for an output no gradient reached) and stacks them back.
"""

from __future__ import annotations

import numpy

from convnet.core.errors import ShapeError
from convnet.nn.layer import Layer, Shape, check_input, grad_enabled


class Split(Layer):
    """(N, ..., sum(sizes), ...) -> one tensor per size along `dim` (counting the batch axis)."""

    kind = "split"
    multi_output = True

    def __init__(self, split_sizes, dim: int = 1):
        super().__init__()
        sizes = tuple(split_sizes) if isinstance(split_sizes, (list, tuple)) else None
        if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, numpy.integer))
                            or s < 1 for s in sizes):
            raise ValueError(f"Split: split_sizes must be a list of positive sizes such as "
                             f"[16, 16], received {split_sizes!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, numpy.integer)) or dim == 0:
            raise ValueError(f"Split: dim must be a non-zero int (the batch axis 0 is never "
                             f"split in a model), received {dim!r}")
        self.split_sizes = tuple(int(s) for s in sizes)
        self.dim = int(dim)

    def _axis(self, rank: int) -> int:
        """The per-sample axis for a per-sample rank."""
        axis = self.dim if self.dim > 0 else self.dim + rank + 1
        if not 1 <= axis <= rank:
            raise ShapeError(f"{self.name} (Split): dim {self.dim} is outside inputs of "
                             f"{rank + 1} dimensions")
        return axis - 1

    def output_shape(self, input_shape: Shape) -> list[Shape]:
        shape = tuple(input_shape)
        axis = self._axis(len(shape))
        if sum(self.split_sizes) != shape[axis]:
            raise ShapeError(f"{self.name} (Split): sizes {list(self.split_sizes)} add up to "
                             f"{sum(self.split_sizes)}, but axis {self.dim} of per-sample shape "
                             f"{shape} has {shape[axis]}")
        return [shape[:axis] + (size,) + shape[axis + 1:] for size in self.split_sizes]

    def forward(self, x):
        check_input(self, x, max(getattr(x, "ndim", 0), 2), what="(N, ...)")
        self.output_shape(tuple(x.shape[1:]))
        axis = self._axis(x.ndim - 1) + 1
        bounds = numpy.cumsum(self.split_sizes)[:-1]
        if grad_enabled():
            self.cache = axis
        return tuple(numpy.split(x, bounds, axis=axis))

    def backward(self, dys):
        axis = self._take_cache()
        return numpy.concatenate(list(dys), axis=axis)

    def extra_repr(self) -> str:
        return f"{list(self.split_sizes)}, dim={self.dim}"
