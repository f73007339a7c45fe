"""Spatial arithmetic of sliding windows: the one place `(N - F + 2P)/S + 1` lives.

Conv and pool layers, the summary, the CLI calculator and the web page all ask these
functions; nobody recomputes output sizes by hand.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

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


def window_formula(hw: Pair, kernel: Pair, stride: Pair, dilation: Pair,
                   shape: WindowShape) -> str:
    """The output size of a window with its numbers, per axis, e.g. '(32 - 5 + 2*2)/1 + 1 = 32';
    said once when both axes read the same, else 'height: ...; width: ...'. A floored size
    (strict=False) shows its fraction."""
    sides = (shape.padding.height, shape.padding.width)
    texts = []
    for axis in range(2):
        f = effective_size(kernel[axis], dilation[axis])
        text = _formula(hw[axis], f, stride[axis], *sides[axis])
        if shape.dropped[axis]:
            exact = (hw[axis] + sum(sides[axis]) - f) / stride[axis] + 1
            text += f" = {exact:.2f}, floored to {shape.out_hw[axis]}"
        else:
            text += f" = {shape.out_hw[axis]}"
        texts.append(text)
    return _per_axis(texts)


def _per_axis(texts: list[str]) -> str:
    return texts[0] if texts[0] == texts[1] else f"height: {texts[0]}; width: {texts[1]}"


# -- transposed convolution ----------------------------------------------------------------
# Input unit i of a transposed convolution adds its kernel tap k to output o = i*S - P + k*D,
# so the output spans (N - 1)*S + D*(F - 1) + 1 positions, less the padding P cropped from each
# end, plus output_padding added at the end (bottom/right):
#     N_out = (N - 1)*S - 2P + D*(F - 1) + output_padding + 1.
# A Conv2d with the same kernel, stride, padding and dilation maps it back to N (flooring):
# it maps S sizes to the same N, and output_padding (< S) picks among them.


def transposed_formula(n: int, f: int, s: int, p: int, d: int, output_padding: int) -> str:
    """'(N - 1)*S - 2*P + D*(F - 1) + output_padding + 1' with the numbers (no result)."""
    return f"({n} - 1)*{s} - 2*{p} + {d}*({f} - 1) + {output_padding} + 1"


def check_output_padding(output_padding: Pair, stride: Pair, dilation: Pair,
                         layer: str = "layer") -> None:
    """PyTorch's rule, per axis: output_padding smaller than the stride (it then picks among
    the S sizes a stride-S Conv2d maps back to the input size) or than the dilation."""
    for axis, name in enumerate(("height", "width")):
        op, s, d = output_padding[axis], stride[axis], dilation[axis]
        if op < 0:
            raise ShapeError(f"{layer}: output_padding must be >= 0, received {op} along the "
                             f"{name}")
        if op >= s and op >= d:
            top = max(s, d) - 1
            allowed = "0" if top == 0 else ("0 or 1" if top == 1 else f"0 to {top}")
            raise ShapeError(
                f"{layer}: output_padding {op} along the {name} must be smaller than the "
                f"stride ({s}) or the dilation ({d}), as in PyTorch; use output_padding "
                f"{allowed}")


def upsampling_padding(kernel: int, stride: int, dilation: int = 1) -> tuple[int, int] | None:
    """(padding, output_padding) for which a transposed conv gives N_out = N*S exactly,
    2P - output_padding = D*(F - 1) + 1 - S, or None when none is allowed (an even kernel at
    stride 1 and dilation 1 would need output_padding 1, which is not below either)."""
    excess = effective_size(kernel, dilation) - stride
    if excess < 0:
        return 0, -excess  # a kernel shorter than the stride: pad the end instead
    if excess % 2 and max(stride, dilation) < 2:
        return None
    return (excess + 1) // 2, excess % 2


def transposed_padding(padding, kernel: Pair, stride: Pair, dilation: Pair,
                       layer: str = "layer") -> Pair:
    """An int or (h, w) pair of paddings >= 0. Strings are refused, as PyTorch does: 'same' has
    no one meaning for a layer that multiplies the size, so the message gives the padding and
    output_padding that make the output N*S."""
    if isinstance(padding, str):
        fits = [upsampling_padding(kernel[a], stride[a], dilation[a]) for a in range(2)]
        if None in fits:
            hint = ("No padding gives output = input x stride for an even kernel at stride 1 "
                    "(it would need half a pixel); use an odd kernel_size with padding=(F - 1)/2")
        else:
            pad = _compact_pair(fits[0][0], fits[1][0])
            extra = _compact_pair(fits[0][1], fits[1][1])
            hint = f"For output = input x stride use padding={pad}, output_padding={extra}"
        raise ShapeError(
            f"{layer}: padding must be an int or an (h, w) pair, received {padding!r}; a "
            f"transposed convolution has no 'same' or 'valid' padding (PyTorch refuses strings "
            f"here too). {hint}; padding=0 keeps the full output")
    value = pair(padding, "padding", layer)
    if min(value) < 0:
        raise ShapeError(f"{layer}: padding must be >= 0, received {padding!r}")
    return value


def _compact_pair(first: int, second: int):
    return first if first == second else (first, second)


def transposed_fit(n: int, filter_size: int, stride: int, padding: int, dilation: int = 1,
                   output_padding: int = 0, *, layer: str = "layer", axis: str = "width",
                   input_hw: Pair | None = None) -> int:
    """Output size of a transposed convolution along one axis, or a ShapeError saying why not:
    N_out = (N - 1)*S - 2P + D*(F - 1) + output_padding + 1."""
    full = (n - 1) * stride + effective_size(filter_size, dilation) + output_padding
    out = full - 2 * padding
    if out < 1:
        where = f"input {input_hw[0]}x{input_hw[1]}" if input_hw else f"input {axis} {n}"
        units = "rows" if axis == "height" else "columns"
        most = (full - 1) // 2  # the largest padding that leaves one row
        raise ShapeError(
            f"{layer}: {where}, filter {filter_size}, stride {stride}, pad {padding} gives "
            f"{transposed_formula(n, filter_size, stride, padding, dilation, output_padding)} "
            f"= {out} along the {axis}, not a positive size: padding {padding} crops "
            f"{2 * padding} of the full output's {full} {units}; use padding {most}"
            + (" or less" if most else ""))
    return out


@dataclass(frozen=True)
class TransposedShape(WindowShape):
    """A transposed convolution's output size and what made it: `padding` is cropped from each
    side of the full output, `output_padding` rows/cols are added at the bottom/right."""

    output_padding: Pair = (0, 0)


def transposed_output(
    hw: Pair,
    kernel: Pair,
    stride: Pair,
    padding,
    dilation: Pair = (1, 1),
    output_padding: Pair = (0, 0),
    *,
    layer: str = "layer",
) -> TransposedShape:
    """Output (H_out, W_out) of a 2-D transposed convolution, validated along both axes."""
    pads = transposed_padding(padding, kernel, stride, dilation, layer)
    check_output_padding(output_padding, stride, dilation, layer)
    out = tuple(
        transposed_fit(hw[a], kernel[a], stride[a], pads[a], dilation[a], output_padding[a],
                       layer=layer, axis=name, input_hw=hw)
        for a, name in enumerate(("height", "width")))
    return TransposedShape(out, Padding(pads[0], pads[0], pads[1], pads[1]), (0, 0),
                           tuple(output_padding))


def transposed_size_formula(hw: Pair, kernel: Pair, stride: Pair, dilation: Pair,
                            shape: TransposedShape) -> str:
    """The output size of a transposed convolution with its numbers, per axis, e.g.
    '(14 - 1)*2 - 2*1 + 1*(3 - 1) + 1 + 1 = 28' (once when both axes read the same)."""
    pads = (shape.padding.top, shape.padding.left)
    texts = []
    for a in range(2):
        text = transposed_formula(hw[a], kernel[a], stride[a], pads[a], dilation[a],
                                  shape.output_padding[a])
        texts.append(f"{text} = {shape.out_hw[a]}")
    return _per_axis(texts)


class Units(float):
    """A fractional jump in input pixels (after a transposed conv: 1/2, 1/3...). It is a float
    in arithmetic and JSON, but prints with 4 significant digits (0.3333, not
    0.3333333333333333) in tables and messages."""

    def __repr__(self) -> str:
        return format(float(self), ".4g")

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self) if not spec else format(float(self), spec)


def _units(value):
    """An int when value is whole (within float round-off), else Units: strides multiply
    fractional jumps back to whole ones (1/2 * 2 = 1), and those print as before."""
    nearest = round(value)
    if abs(value - nearest) <= 1e-9 * max(1.0, abs(value)):
        return int(nearest)
    return Units(value)


@dataclass(frozen=True)
class Phases:
    """Exact fields of the units along one axis, once a transposed window is on the way: unit
    u = q*period + r sees input pixels first[r] + q*shift .. last[r] + q*shift (None where no
    input reaches it). A transposed window's outputs are reached by different input units by
    their phase, so fields no longer sit on an affine grid; they repeat, shifted, every
    `period` units, the product of the transposed strides so far (less what strides divide)."""

    period: int
    first: tuple[int | None, ...]
    last: tuple[int | None, ...]
    shift: int  # input pixels between unit u and unit u + period

    @classmethod
    def affine(cls, size: int, jump: int, start: float) -> Phases:
        first = int(math.floor(start - size / 2))
        return cls(1, (first,), (first + size - 1,), jump)

    def span(self, unit: int) -> tuple[int, int] | None:
        """(first, last) input pixel seen by `unit`, or None."""
        q, r = divmod(unit, self.period)
        if self.first[r] is None:
            return None
        return self.first[r] + q * self.shift, self.last[r] + q * self.shift

    @property
    def widest(self) -> int:
        return max((b - a + 1 for a, b in zip(self.first, self.last, strict=True)
                    if a is not None), default=0)

    def window(self, kernel: int, stride: int, dilation: int, pad: int) -> Phases:
        """Output o of a window reads units o*S - P + k*D, 0 <= k < F."""
        period = self.period // math.gcd(self.period, stride)
        return self._then(period, period * stride // self.period * self.shift,
                          lambda o: [o * stride - pad + k * dilation for k in range(kernel)])

    def transposed(self, kernel: int, stride: int, dilation: int, pad: int) -> Phases:
        """Output o of a transposed window is written by units i = (o + P - k*D)/S, 0 <= k < F,
        where that is an integer."""
        return self._then(self.period * stride, self.shift,
                          lambda o: [(o + pad - k * dilation) // stride for k in range(kernel)
                                     if (o + pad - k * dilation) % stride == 0])

    def _then(self, period: int, shift: int, units_of) -> Phases:
        first, last = [], []
        for o in range(period):
            spans = [span for span in map(self.span, units_of(o)) if span is not None]
            first.append(min(a for a, _ in spans) if spans else None)
            last.append(max(b for _, b in spans) if spans else None)
        return Phases(period, tuple(first), tuple(last), shift)


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one output unit on the network input: size (h, w) and jump (h, w).

    The jump is the distance on the input between neighbouring output units. Through
    convolution and pooling both are whole numbers of input pixels, and the field of unit
    (row, col) is `size` centred at start + (row, col) * jump. A transposed convolution divides
    the jump by its stride (a fractional `Units`, on average); its outputs are reached by
    different input units by phase, which no such affine grid follows, so from there on each
    unit's field is kept exactly by phase (`phases`, see `through_transposed`) and `size` is
    the widest of them.
    """

    size: tuple[int, int] = (1, 1)
    jump: tuple[float, float] = (1, 1)
    start: tuple[float, float] = (0.5, 0.5)  # centre of the first unit's field, input pixels
    # (height, width) fields by phase, from the first transposed window on; None before.
    phases: tuple[Phases, Phases] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "jump", tuple(_units(v) for v in self.jump))

    def through(self, kernel: Pair, stride: Pair, dilation: Pair, padding: Padding):
        """The field after a window layer: r' = r + (F_eff - 1) * j, j' = j * S."""
        eff = (effective_size(kernel[0], dilation[0]), effective_size(kernel[1], dilation[1]))
        pads = (padding.top, padding.left)
        jump = tuple(self.jump[i] * stride[i] for i in range(2))
        start = tuple(self.start[i] + ((eff[i] - 1) / 2 - pads[i]) * self.jump[i]
                      for i in range(2))
        if self.phases is None:
            size = tuple(self.size[i] + (eff[i] - 1) * self.jump[i] for i in range(2))
            return ReceptiveField(size, jump, start)
        phases = tuple(self.phases[i].window(kernel[i], stride[i], dilation[i], pads[i])
                       for i in range(2))
        return ReceptiveField((phases[0].widest, phases[1].widest), jump, start, phases)

    def through_transposed(self, kernel: Pair, stride: Pair, dilation: Pair, padding: Padding):
        """The field after a transposed convolution: j' = j / S, and each unit's field exact.

        Input unit i adds tap k (0 <= k < F) to output o = i*S - P + k*D, so the units that
        reach output o are i = (o + P - k*D)/S for the k where that is an integer: with D = 1
        all the integers in [(o + P - (F - 1))/S, (o + P)/S], which are ceil(F/S) or
        floor(F/S) of them by the phase (o + P) mod S (2 or 1 for F=3, S=2; one for U-Net's
        2x2 stride 2); with D > 1 only some of the integers in that interval, whose length is
        (F_eff - 1)/S, so at most ceil(F_eff/S). The field of o is the union of those units'
        fields, kept for each phase (`Phases`). The centre of o's interval,
        (o + P - (F_eff - 1)/2)/S units, moves by 1/S per output: `start` and `jump` keep that
        average grid.
        """
        eff = (effective_size(kernel[0], dilation[0]), effective_size(kernel[1], dilation[1]))
        pads = (padding.top, padding.left)
        jump = tuple(self.jump[i] / stride[i] for i in range(2))
        start = tuple(self.start[i] + (pads[i] - (eff[i] - 1) / 2) / stride[i] * self.jump[i]
                      for i in range(2))
        before = self.phases or tuple(Phases.affine(self.size[i], self.jump[i], self.start[i])
                                      for i in range(2))
        phases = tuple(before[i].transposed(kernel[i], stride[i], dilation[i], pads[i])
                       for i in range(2))
        return ReceptiveField((phases[0].widest, phases[1].widest), jump, start, phases)

    def window_on_input(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Input rectangle (top, left, height, width) seen by output unit (row, col); height
        and width 0 for a unit no input reaches (a transposed conv's gaps)."""
        if self.phases is None:
            top = self.start[0] + row * self.jump[0] - self.size[0] / 2
            left = self.start[1] + col * self.jump[1] - self.size[1] / 2
            return (int(math.floor(top)), int(math.floor(left)), self.size[0], self.size[1])
        rows, cols = self.phases[0].span(row), self.phases[1].span(col)
        if rows is None or cols is None:
            centre = (self.start[0] + row * self.jump[0], self.start[1] + col * self.jump[1])
            return (int(math.floor(centre[0])), int(math.floor(centre[1])), 0, 0)
        return (rows[0], cols[0], rows[1] - rows[0] + 1, cols[1] - cols[0] + 1)
