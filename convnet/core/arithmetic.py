"""Spatial arithmetic of sliding windows: the one place `(N - F + 2P)/S + 1` lives.

Conv and pool layers, the summary, the CLI calculator and the web page all ask these
functions; nobody recomputes output sizes by hand.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from convnet.core.errors import ShapeError

Pair = tuple[int, int]


def _is_int(value) -> bool:
    """A Python or NumPy integer, but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def pair(value, name: str, layer: str) -> Pair:
    """Normalise an int or an (h, w) pair of positive-or-zero ints."""
    if _is_int(value):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{layer}: {name} must be an int or an (h, w) pair, received {value!r}")


def effective_size(filter_size: int, dilation: int = 1) -> int:
    """Extent of a dilated filter: d*(F - 1) + 1."""
    return dilation * (filter_size - 1) + 1


@dataclass(frozen=True)
class AxisFit:
    """How one window fits along one axis."""

    output: int  # number of window positions
    dropped: int  # border pixels the last window never reaches (0 when it fits exactly)


def same_padding(n: int, filter_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow-style 'same' padding (before, after): output ceil(N/S), extra pixel after."""
    out = -(-n // stride)
    total = max((out - 1) * stride + effective_size(filter_size, dilation) - n, 0)
    return (total // 2, total - total // 2)


def _formula(n: int, f: int, s: int, p_before: int, p_after: int) -> str:
    pad = f"2*{p_before}" if p_before == p_after else f"{p_before}+{p_after}"
    return f"({n} - {f} + {pad})/{s} + 1"


def suggest_fits(n: int, f: int, s: int, p: int) -> str:
    """Nearby strides (with padding p) and paddings (with stride s) for which the window fits."""
    strides = [t for t in range(1, max(n + 2 * p - f, 0) + 2) if (n - f + 2 * p) % t == 0]
    # Smaller strides first (the usual fix), the nearest larger one only when none is smaller.
    smaller = [t for t in strides if t < s][-2:]
    strides = smaller or [t for t in strides if t > s][:1]
    pads = [q for q in range(0, f + s) if (n - f + 2 * q) % s == 0 and n + 2 * q >= f]
    pads = sorted((q for q in pads if q != p), key=lambda q: (abs(q - p), q))[:1]
    parts = []
    if strides:
        words = " or ".join(str(t) for t in strides)
        parts.append(f"stride {words} fits" + (f" with pad {p}" if p else ""))
    if pads:
        parts.append(f"pad {pads[0]} with stride {s}")
    if s > 1:
        parts.append(f"padding='same' (output ceil({n}/{s}) = {-(-n // s)})")
    if not parts:
        return "no nearby stride or padding fits; change the filter size"
    return ", or ".join(parts)


def window_fit(
    n: int,
    filter_size: int,
    stride: int,
    padding: Pair,
    dilation: int = 1,
    *,
    strict: bool = True,
    layer: str = "layer",
    axis: str = "width",
    input_hw: Pair | None = None,
) -> AxisFit:
    """Output size of a window sliding along one axis, or a ShapeError that explains why not.

    output = (N - F_eff + P_before + P_after) / S + 1, with F_eff = d*(F - 1) + 1.
    """
    p_before, p_after = padding
    f = effective_size(filter_size, dilation)
    padded = n + p_before + p_after
    where = f"input {input_hw[0]}x{input_hw[1]}" if input_hw else f"input {axis} {n}"
    if f > padded:
        dil = f" (dilation {dilation} stretches {filter_size} to {f})" if dilation > 1 else ""
        raise ShapeError(
            f"{layer}: filter {f}{dil} is larger than the padded {axis} {padded} "
            f"({n} + {p_before + p_after} padding); use a smaller kernel_size or more padding"
        )
    span = padded - f
    dropped = span % stride
    if dropped and strict:
        value = span / stride + 1
        p_sym = p_before if p_before == p_after else None
        hint = suggest_fits(n, f, stride, p_sym) if p_sym is not None else (
            "choose padding so that the window fits"
        )
        raise ShapeError(
            f"{layer}: {where}, filter {f}, stride {stride}, pad "
            f"{p_before if p_before == p_after else padding} gives "
            f"{_formula(n, f, stride, p_before, p_after)} = {value:.2f} along the {axis}, "
            f"not an integer; {hint}. "
            f"Pass strict=False to floor like PyTorch (drops {dropped} border pixel"
            f"{'s' if dropped > 1 else ''})."
        )
    return AxisFit(output=span // stride + 1, dropped=dropped)


def conv_output_size(n: int, f: int, s: int = 1, p: int = 0, d: int = 1, strict: bool = True):
    """(N - F + 2P)/S + 1 for a square setting; raises ShapeError when it does not fit."""
    return window_fit(n, f, s, (p, p), d, strict=strict).output


@dataclass(frozen=True)
class Padding:
    """Resolved zero padding of a 2-D window: (top, bottom, left, right)."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def height(self) -> Pair:
        return (self.top, self.bottom)

    @property
    def width(self) -> Pair:
        return (self.left, self.right)

    @property
    def is_zero(self) -> bool:
        return not (self.top or self.bottom or self.left or self.right)

    @property
    def is_symmetric(self) -> bool:
        return self.top == self.bottom and self.left == self.right


def resolve_padding(padding, hw: Pair, kernel: Pair, stride: Pair, dilation: Pair) -> Padding:
    """Explicit per-side padding for input hw from an (h, w) pair, a (top, bottom, left, right)
    tuple, 'valid' or 'same'."""
    if padding == "valid":
        return Padding(0, 0, 0, 0)
    if padding == "same":
        top, bottom = same_padding(hw[0], kernel[0], stride[0], dilation[0])
        left, right = same_padding(hw[1], kernel[1], stride[1], dilation[1])
        return Padding(top, bottom, left, right)
    if len(padding) == 4:
        return Padding(*padding)
    ph, pw = padding
    return Padding(ph, ph, pw, pw)


@dataclass(frozen=True)
class WindowShape:
    """Where a window layer's output comes from: sizes, padding and dropped border pixels."""

    out_hw: Pair
    padding: Padding
    dropped: Pair  # border pixels never covered, (rows, cols); nonzero only when strict=False


def window_output(
    hw: Pair,
    kernel: Pair,
    stride: Pair,
    padding,
    dilation: Pair = (1, 1),
    *,
    strict: bool = True,
    layer: str = "layer",
) -> WindowShape:
    """Output (H_out, W_out) of a 2-D sliding window, validated along both axes."""
    pad = resolve_padding(padding, hw, kernel, stride, dilation)
    # 'same' asks for ceil(N/S) outputs by definition: a stride may then skip the last pixel.
    strict = strict and padding != "same"
    fits = [
        window_fit(hw[axis], kernel[axis], stride[axis], side, dilation[axis], strict=strict,
                   layer=layer, axis=name, input_hw=hw)
        for axis, (name, side) in enumerate((("height", pad.height), ("width", pad.width)))
    ]
    return WindowShape((fits[0].output, fits[1].output), pad, (fits[0].dropped, fits[1].dropped))


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one output unit on the network input: size (h, w) and jump (h, w).

    The jump is the distance on the input between neighbouring output units.
    """

    size: Pair = (1, 1)
    jump: Pair = (1, 1)
    start: tuple[float, float] = (0.5, 0.5)  # centre of the first unit's field, input pixels

    def through(self, kernel: Pair, stride: Pair, dilation: Pair, padding: Padding):
        """The field after a window layer: r' = r + (F_eff - 1) * j, j' = j * S."""
        eff = (effective_size(kernel[0], dilation[0]), effective_size(kernel[1], dilation[1]))
        pads = (padding.top, padding.left)
        return ReceptiveField(
            size=tuple(self.size[i] + (eff[i] - 1) * self.jump[i] for i in range(2)),
            jump=tuple(self.jump[i] * stride[i] for i in range(2)),
            start=tuple(
                self.start[i] + ((eff[i] - 1) / 2 - pads[i]) * self.jump[i] for i in range(2)
            ),
        )

    def window_on_input(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Input rectangle (top, left, height, width) seen by output unit (row, col)."""
        top = self.start[0] + row * self.jump[0] - self.size[0] / 2
        left = self.start[1] + col * self.jump[1] - self.size[1] / 2
        return (int(math.floor(top)), int(math.floor(left)), self.size[0], self.size[1])
