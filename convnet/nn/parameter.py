"""A trainable array and its gradient."""

from __future__ import annotations

from convnet.core.backend import array_module


class Parameter:
    """`data` holds the values, `grad` the gradient that backward accumulates into it."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = array_module(data).zeros_like(data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def size(self) -> int:
        return int(self.data.size)

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def assign(self, values, name: str = "parameter") -> None:
        """Copy `values` in place, refusing a different shape (so optimizers keep their state)."""
        if tuple(values.shape) != tuple(self.data.shape):
            raise ValueError(
                f"{name}: expected shape {tuple(self.data.shape)}, received {tuple(values.shape)}"
            )
        self.data[...] = values

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"
