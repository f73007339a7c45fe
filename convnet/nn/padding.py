"""Padding layers: Pad (constant, reflect, replicate, circular; torch.nn.functional.pad and
ONNX Pad over H and W) and ZeroPad2d.

`padding` is an int (every side) or PyTorch's (left, right, top, bottom), the last axis first.
In constant mode a negative amount crops that side, as in PyTorch and ONNX. The other modes
read each output pixel from an input pixel along each axis (an index map: reflected about the
edge pixel, repeated, or wrapped around); backward folds the border gradients back onto the
pixels they were read from. `convnet.core.reference.pad2d` is the loop oracle.
"""

from __future__ import annotations

import numbers

import numpy

from convnet.core.arithmetic import Padding, ReceptiveField
from convnet.core.backend import array_module
from convnet.core.errors import ShapeError
from convnet.nn.layer import Layer, Shape, check_input, grad_enabled
from convnet.nn.window import chw

MODES = ("constant", "reflect", "replicate", "circular")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parse_padding(padding, layer: str) -> tuple[int, int, int, int]:
    """An int or PyTorch's (left, right, top, bottom) as that 4-tuple."""
    if _is_int(padding):
        return (int(padding),) * 4
    if isinstance(padding, (tuple, list)) and len(padding) == 4 and all(map(_is_int, padding)):
        return tuple(int(v) for v in padding)
    hint = ""
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        hint = (" (F.pad reads a pair as (left, right) of the width only: write "
                f"({padding[0]}, {padding[1]}, 0, 0) for that, or "
                f"({padding[1]}, {padding[1]}, {padding[0]}, {padding[0]}) for (h, w))")
    raise TypeError(f"{layer}: padding must be an int or (left, right, top, bottom), received "
                    f"{padding!r}{hint}")


def source_index(length: int, before: int, after: int, mode: str):
    """Input index (int64) read by each of the before + length + after output positions."""
    j = numpy.arange(-before, length + after)
    if mode == "reflect":  # about the edge pixel, which is not repeated: 2 1 | 0 1 2 3 | 2 1
        j = numpy.abs(j)
        return numpy.where(j > length - 1, 2 * (length - 1) - j, j)
    if mode == "replicate":  # 0 0 | 0 1 2 3 | 3 3
        return numpy.clip(j, 0, length - 1)
    return j % length  # circular: 2 3 | 0 1 2 3 | 0 1


class Pad(Layer):
    """(N, C, H, W) -> (N, C, H + top + bottom, W + left + right).

    mode "constant" fills with `value` (negative padding crops); "reflect" mirrors about the
    edge pixel (each amount below that side's length); "replicate" repeats the edge pixel;
    "circular" wraps around (each amount at most the length).
    """

    kind = "pad"

    def __init__(self, padding, mode: str = "constant", value: float = 0.0):
        super().__init__()
        label = type(self).__name__
        self.padding = parse_padding(padding, label)
        if mode not in MODES:
            raise ValueError(f"{label}: mode must be one of {', '.join(MODES)}, received "
                             f"{mode!r}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{label}: value must be a number, received {value!r}")
        if mode != "constant" and value != 0:
            raise ValueError(f"{label}: mode {mode!r} takes no fill value (received "
                             f"value={value!r}); only mode 'constant' fills")
        if mode != "constant" and min(self.padding) < 0:
            raise ValueError(f"{label}: negative padding {self.padding} crops, which only mode "
                             f"'constant' does; crop with a constant Pad first")
        self.mode = mode
        self.value = float(value)

    @property
    def sides(self) -> Padding:
        """(top, bottom, left, right), the order of `convnet.core.arithmetic.Padding`."""
        left, right, top, bottom = self.padding
        return Padding(top, bottom, left, right)

    def output_shape(self, input_shape: Shape) -> Shape:
        channels, height, width = chw(self, input_shape)
        pad = self.sides
        label = f"{self.name} ({type(self).__name__})"
        for axis, n, before, after in (("height", height, pad.top, pad.bottom),
                                       ("width", width, pad.left, pad.right)):
            if n + before + after < 1:
                raise ShapeError(f"{label}: padding ({before}, {after}) crops the input {axis} "
                                 f"{n} to {n + before + after}; crop less than {n} in all")
            if self.mode == "reflect" and max(before, after) >= n:
                raise ShapeError(
                    f"{label}: reflect padding ({before}, {after}) along the {axis} needs each "
                    f"amount below the input {axis} {n} (a reflection repeats no pixel); use at "
                    f"most {n - 1}, or mode 'replicate'"
                )
            if self.mode == "circular" and max(before, after) > n:
                raise ShapeError(
                    f"{label}: circular padding ({before}, {after}) along the {axis} would wrap "
                    f"around the input {axis} {n} more than once; use at most {n}"
                )
        return (channels, height + pad.top + pad.bottom, width + pad.left + pad.right)

    def forward(self, x):
        check_input(self, x, 4)
        xp = array_module(x)
        n, c, h, w = x.shape
        out_c, out_h, out_w = self.output_shape(x.shape[1:])
        pad = self.sides
        if self.mode == "constant":
            out = xp.full((n, c, out_h, out_w), self.value, dtype=x.dtype)
            (src_h, dst_h), (src_w, dst_w) = _kept(h, pad.top, pad.bottom), _kept(
                w, pad.left, pad.right)
            out[:, :, dst_h, dst_w] = x[:, :, src_h, src_w]
        else:
            rows = source_index(h, pad.top, pad.bottom, self.mode)
            cols = source_index(w, pad.left, pad.right, self.mode)
            out = xp.take(xp.take(x, rows, axis=2), cols, axis=3)
        if grad_enabled():
            self.cache = x.shape
        return out

    def backward(self, dy):
        x_shape = self._take_cache()
        xp = array_module(dy)
        n, c, h, w = x_shape
        pad = self.sides
        if self.mode == "constant":
            dx = xp.zeros(x_shape, dtype=dy.dtype)
            (src_h, dst_h), (src_w, dst_w) = _kept(h, pad.top, pad.bottom), _kept(
                w, pad.left, pad.right)
            dx[:, :, src_h, src_w] = dy[:, :, dst_h, dst_w]
            return dx
        across = _fold(dy, source_index(w, pad.left, pad.right, self.mode), pad.left, w, axis=3)
        return _fold(across, source_index(h, pad.top, pad.bottom, self.mode), pad.top, h, axis=2)

    def receptive_field(self, field: ReceptiveField, input_shape: Shape) -> ReceptiveField:
        """A 1x1 window with this padding: the field keeps its size; its start moves back by
        the top and left padding (forward where they crop)."""
        return field.through((1, 1), (1, 1), (1, 1), self.sides)

    def extra_repr(self) -> str:
        padding = self.padding
        parts = [str(padding[0]) if len(set(padding)) == 1 else str(padding)]
        if self.mode != "constant":
            parts.append(f"mode={self.mode!r}")
        if self.value != 0:
            parts.append(f"value={self.value}")
        return ", ".join(parts)


def _kept(length: int, before: int, after: int) -> tuple[slice, slice]:
    """(input slice, output slice) of the pixels a constant pad keeps along one axis."""
    start = max(0, -before)
    stop = max(start, length - max(0, -after))
    first = max(0, before)
    return slice(start, stop), slice(first, first + stop - start)


def _fold(dy, index, before: int, length: int, axis: int):
    """Adjoint of take(x, index, axis) where positions before .. before + length - 1 read the
    input in order: that interior, plus each border position added onto the pixel it read."""
    where = [slice(None)] * dy.ndim
    where[axis] = slice(before, before + length)
    out = dy[tuple(where)].copy()
    source = [slice(None)] * dy.ndim
    for j in [*range(before), *range(before + length, len(index))]:  # the border positions
        where[axis], source[axis] = int(index[j]), j
        out[tuple(where)] += dy[tuple(source)]
    return out


class ZeroPad2d(Pad):
    """torch.nn.ZeroPad2d: zeros around H and W; padding an int or (left, right, top, bottom),
    negative amounts crop."""

    def __init__(self, padding):
        super().__init__(padding, "constant", 0.0)

    def extra_repr(self) -> str:
        padding = self.padding
        return str(padding[0]) if len(set(padding)) == 1 else str(padding)
