"""The shape pass: values computed from tensor shapes, kept symbolic where the size may vary.

`Shape(x)` of an activation gives a 1-D array whose entries are `Dim`s: the batch size (never
known at import) and each other axis with its size at the import input size, remembering
which tensor axis it came from and any scale and offset applied since (2 * H, H // 2 + 1).
Gather, Slice, Concat, Unsqueeze, Cast and integer arithmetic carry them through (NumPy
object arrays), so a translator can tell a Reshape that copies the batch from one that fixes
it, or a Resize to twice the input's size from one to a fixed size, and build layers that run
at any input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy


@dataclass(frozen=True)
class Dim:
    """scale * size(tensor, axis) + offset; `value` is that at the import size (None for a
    quantity that depends on the batch size)."""

    tensor: str
    axis: int
    value: int | None
    scale: Fraction = Fraction(1)
    offset: Fraction = Fraction(0)

    @property
    def is_batch(self) -> bool:
        return self.axis == 0 and self.scale == 1 and self.offset == 0

    def is_axis(self, tensor: str, axis: int) -> bool:
        return (self.tensor, self.axis) == (tensor, axis) and self.scale == 1 and not self.offset

    def _affine(self, scale, offset) -> Dim | int:
        new_scale, new_offset = self.scale * scale, self.offset * scale + offset
        value = None if self.value is None else self.value * scale + offset
        if value is not None and Fraction(value).denominator != 1:
            value = None  # not an integer size: only a later operation may make it one
        return Dim(self.tensor, self.axis, None if value is None else int(value), new_scale,
                   new_offset)

    def __add__(self, other):
        if isinstance(other, (int, numpy.integer)):
            return self._affine(1, int(other))
        if isinstance(other, Dim) and other.value is not None and self.value is not None:
            return self.value + other.value
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, (int, numpy.integer)):
            return self._affine(1, -int(other))
        return NotImplemented

    def __rsub__(self, other):
        if isinstance(other, (int, numpy.integer)):
            return self._affine(-1, int(other))
        return NotImplemented

    def __mul__(self, other):
        if isinstance(other, (int, numpy.integer)):
            return self._affine(int(other), 0)
        if isinstance(other, (float, numpy.floating)) and float(other).is_integer():
            return self._affine(int(other), 0)
        if isinstance(other, Dim) and other.value is not None and self.value is not None:
            return self.value * other.value
        return NotImplemented

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if isinstance(other, (int, numpy.integer)) and other > 0:
            if self.value is not None and self.value % int(other) == 0 and not self.offset:
                return self._affine(Fraction(1, int(other)), 0)
            if self.value is not None:
                return self.value // int(other)
        return NotImplemented

    def __int__(self) -> int:
        if self.value is None:
            raise ValueError(f"the size {self} depends on the batch size")
        return int(self.value)

    def __index__(self) -> int:
        return self.__int__()

    def __eq__(self, other):
        if isinstance(other, Dim):
            return (self.tensor, self.axis, self.scale, self.offset, self.value) == (
                other.tensor, other.axis, other.scale, other.offset, other.value)
        return False

    def __hash__(self):
        return hash((self.tensor, self.axis, self.scale, self.offset))

    def __str__(self) -> str:
        base = "batch" if self.axis == 0 else f"size({self.tensor}, {self.axis})"
        if self.scale != 1:
            base = f"{self.scale}*{base}"
        if self.offset:
            base = f"{base}{self.offset:+}"
        return base

    __repr__ = __str__


def shape_of(tensor: str, per_sample) -> numpy.ndarray:
    """Shape(tensor) for an activation with that per-sample shape: a 1-D object array."""
    dims = [Dim(tensor, 0, None)]
    dims += [Dim(tensor, axis + 1, int(size)) for axis, size in enumerate(per_sample)]
    return numpy.array(dims, dtype=object)


def is_symbolic(value) -> bool:
    """An object array (or a Dim) holding at least one Dim."""
    if isinstance(value, Dim):
        return True
    array = numpy.asarray(value)
    return array.dtype == object and any(isinstance(v, Dim) for v in array.reshape(-1))


def concrete(value) -> numpy.ndarray | None:
    """The int64 array of a shape value whose entries are all known, else None."""
    array = numpy.asarray(value)
    if array.dtype != object:
        return array
    out = []
    for item in array.reshape(-1):
        if isinstance(item, Dim):
            if item.value is None:
                return None
            out.append(item.value)
        else:
            out.append(int(item))
    return numpy.array(out, dtype=numpy.int64).reshape(array.shape)


def show(values) -> str:
    return "[" + ", ".join(str(v) for v in numpy.asarray(values, dtype=object).reshape(-1)) + "]"
