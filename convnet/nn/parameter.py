"""A trainable array and its gradient, and the counters that tell packed copies they are stale.

Inference keeps copies of the weights packed for its compiled kernels (`convnet.nn.inference`).
They must never outlive a change of the weights, so every change goes through a counter:
`Parameter.version` counts the changes of one parameter, and `generation()` the changes of any
parameter or buffer and any train()/eval() switch in the process. Assigning `param.data` (the
optimizers' `param.data -= lr * grad` does), `param.assign(values)` (load_state_dict does) and
`param.mark_changed()` count as changes. Code that writes into `param.data[...]` in place must
call `param.mark_changed()` afterwards (the layers' own initialisation does).
"""

from __future__ import annotations

import itertools

from convnet.core.backend import array_module

# next() of a count is atomic under the GIL: each change gets its own number.
_changes = itertools.count(1)
_generation = 0
_switches = 0


def generation() -> int:
    """A number that changes whenever any parameter or buffer changes, or a layer is switched
    between train() and eval(): packed copies made at another generation must be checked."""
    return _generation


def changed() -> int:
    """Record a change (of weights, buffers or modes) somewhere in the process; returns the
    new generation."""
    global _generation
    _generation = next(_changes)
    return _generation


def switched() -> int:
    """Record a train()/eval() switch: packed copies are then rebuilt whatever their
    parameters' versions say (training may have written weights and buffers in place)."""
    global _switches
    _switches = changed()
    return _switches


def switches() -> int:
    """The generation of the last train()/eval() switch in the process."""
    return _switches


class Parameter:
    """`data` holds the values, `grad` the gradient that backward accumulates into it, and
    `version` the generation of its last change."""

    __slots__ = ("_data", "grad", "version")

    def __init__(self, data):
        self._data = data
        self.grad = array_module(data).zeros_like(data)
        self.version = changed()

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, values) -> None:
        self._data = values
        self.version = changed()

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def size(self) -> int:
        return int(self._data.size)

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def assign(self, values, name: str = "parameter") -> None:
        """Copy `values` in place, refusing a different shape (so optimizers keep their state)."""
        if tuple(values.shape) != tuple(self._data.shape):
            raise ValueError(
                f"{name}: expected shape {tuple(self._data.shape)}, received {tuple(values.shape)}"
            )
        self._data[...] = values
        self.version = changed()

    def mark_changed(self) -> None:
        """Say that `data` was written in place: packed copies of it are stale."""
        self.version = changed()

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self._data.shape)}, dtype={self._data.dtype})"
