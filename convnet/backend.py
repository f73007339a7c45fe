"""The array module behind every layer.

Layers never name NumPy directly: they ask `array_module(x)` for the module that owns
their input (NumPy today) and write each operation once against it, so that a CuPy
backend is a matter of testing rather than rewriting.
"""

from __future__ import annotations

import types

import numpy

# The module new parameters are created with. A GPU backend would swap this for cupy.
default_module: types.ModuleType = numpy


def array_module(*arrays) -> types.ModuleType:
    """The array module (numpy, or cupy when given CuPy arrays) that owns `arrays`."""
    for array in arrays:
        module_name = type(array).__module__.split(".")[0]
        if module_name == "cupy":
            import cupy  # noqa: PLC0415 - only when CuPy arrays are actually present

            return cupy
    return default_module


def sliding_windows(xp: types.ModuleType, x, window: tuple[int, int], axes=(2, 3)):
    """Read-only view of every `window`-sized patch of `x` over `axes` (no copy)."""
    return xp.lib.stride_tricks.sliding_window_view(x, window, axis=axes)


def to_numpy(array) -> numpy.ndarray:
    """A NumPy copy of `array` (for saving, plotting and printing)."""
    if hasattr(array, "get"):
        return array.get()
    return numpy.asarray(array)
