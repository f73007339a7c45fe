"""Resizing over H and W: `Resize`, ONNX's operator (nearest and linear, its coordinate
transformation and rounding modes), and `Upsample`, torch.nn.Upsample on top of it.

Each output pixel x_resized reads the input at x_original, by the rule ONNX calls the
coordinate_transformation_mode, with scale = output / input length (the scale given, when
one is):

    half_pixel            (x_resized + 0.5) / scale - 0.5
    pytorch_half_pixel    the same, but 0 where the output length is 1
    align_corners         x_resized * (length_in - 1) / (length_out - 1)   (0 for length 1)
    asymmetric            x_resized / scale
    tf_half_pixel_for_nn  (x_resized + 0.5) / scale
    half_pixel_symmetric  half_pixel, moved so that the output stays centred on the input

Nearest rounds x_original by `nearest_mode` and clamps it to the input: a gather along each
axis, whose adjoint sums the output gradient over the pixels that read each input pixel
(`numpy.add.reduceat`: the indices never decrease, so the pixels reading one input pixel are a
run). Linear clamps x_original to [0, length_in - 1] and mixes its two neighbours: one small
matrix A (out, in) per axis, out = A_h x A_w^T for each channel, and backward the transposes,
dx = A_h^T dy A_w. `convnet.core.reference.resize2d` is the loop oracle of both.
"""

from __future__ import annotations

import functools
import math
import numbers
from fractions import Fraction

import numpy

from convnet.core import resize_kernels
from convnet.core.arithmetic import Padding, ReceptiveField
from convnet.core.backend import array_module, sample_chunks
from convnet.core.errors import ShapeError
from convnet.core.team import run_chunks
from convnet.nn.layer import Layer, Shape, check_input, grad_enabled
from convnet.nn.window import chw

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_half_pixel_for_nn", "half_pixel_symmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MODES = ("nearest", "linear")


def source_positions(out_len: int, in_len: int, scale: float, transform: str,
                     exact_scale: Fraction | None = None):
    """x_original (float64, out_len) of every output index, by ONNX's coordinate rule.
    exact_scale: the scale as an exact number where the float only rounds it (the ratio
    out / in of the sizes given); else the float is taken as exact."""
    x = numpy.arange(out_len, dtype=numpy.float64)
    if transform == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if transform == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else numpy.zeros(out_len)
    if transform == "align_corners":
        # x (in - 1) is exact: one rounding, so integer and half-way positions stay exact
        return x * (in_len - 1) / (out_len - 1) if out_len > 1 else numpy.zeros(out_len)
    if transform == "asymmetric":
        return x / scale
    if transform == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if transform == "half_pixel_symmetric":
        # ONNX's in_len / 2 * (1 - out_len / (scale * in_len)) + (x + 0.5) / scale - 0.5,
        # rearranged to round once in the division and once in the sum: a source position
        # that is a whole number (1 for columns 7 -> 3 at scale 0.5) stays one, where the
        # literal form gave 1.0000000000000002 and ceil took the next pixel
        positions = (in_len - 1) / 2 + (x + 0.5 - out_len / 2) / scale
        # On or next to a whole or half-way number, where nearest rounding decides, the two
        # roundings may still land on the wrong side (0.6 is 0.59999999999999998, so 7 -> 4
        # columns put column 0 at 0.49999999999999997, computed as 0.5): computed exactly
        near = numpy.flatnonzero(numpy.abs(2 * positions - numpy.round(2 * positions)) < 1e-9)
        ratio = Fraction(scale) if exact_scale is None else exact_scale
        for i in near:
            positions[i] = float(Fraction(in_len, 2) * (1 - out_len / (ratio * in_len))
                                 + (int(i) + Fraction(1, 2)) / ratio - Fraction(1, 2))
        return positions
    raise ValueError(f"coordinate_transformation_mode must be one of {COORDINATE_MODES}, "
                     f"received {transform!r}")


def nearest_indices(positions, in_len: int, nearest_mode: str):
    """Input index (int64) of each position: rounded by ONNX's nearest_mode, then clamped."""
    if nearest_mode == "round_prefer_floor":  # halves go down
        index = numpy.ceil(positions - 0.5)
    elif nearest_mode == "round_prefer_ceil":  # halves go up
        index = numpy.floor(positions + 0.5)
    elif nearest_mode == "floor":
        index = numpy.floor(positions)
    elif nearest_mode == "ceil":
        index = numpy.ceil(positions)
    else:
        raise ValueError(f"nearest_mode must be one of {NEAREST_MODES}, received "
                         f"{nearest_mode!r}")
    return numpy.clip(index, 0, in_len - 1).astype(numpy.int64)


def linear_matrix(positions, in_len: int, dtype):
    """(out, in) matrix of linear interpolation at `positions`, clamped to the input: each row
    weighs the two neighbours floor(p) and floor(p) + 1 by 1 - (p - floor(p)) and p - floor(p)."""
    p = numpy.clip(positions, 0, in_len - 1)
    low = numpy.floor(p).astype(numpy.int64)
    high = numpy.minimum(low + 1, in_len - 1)
    frac = p - low
    rows = numpy.arange(len(p))
    matrix = numpy.zeros((len(p), in_len))
    numpy.add.at(matrix, (rows, low), 1 - frac)  # add: low == high at the last input pixel
    numpy.add.at(matrix, (rows, high), frac)
    return matrix.astype(dtype)


def _hw_pair(value, name: str, layer: str, kind):
    """An int/float or an (h, w) pair of them, as a pair."""
    def is_kind(v) -> bool:
        return isinstance(v, kind) and not isinstance(v, bool)

    if is_kind(value):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(is_kind(v) for v in value):
        return (value[0], value[1])
    what = "an int" if kind is numbers.Integral else "a number"
    raise TypeError(f"{layer}: {name} must be {what} or an (h, w) pair of them, received "
                    f"{value!r}")


class _AxisPlan:
    """How one axis is resized: `index` for nearest, or the interpolation `matrix`."""

    def __init__(self, index=None, matrix=None):
        self.index = index
        self.matrix = matrix
        if index is not None:
            # Runs of equal indices: input pixel `values[k]` is read by output pixels
            # starts[k] .. starts[k + 1] - 1 (the index never decreases).
            self.values, self.starts = numpy.unique(index, return_index=True)
        self._taps: dict = {}  # dtype -> two_taps(dtype)

    @functools.cached_property
    def by_two(self) -> bool:
        """Whether each output pixel reads at most two input pixels (nearest: one; linear:
        true of every plan the layers make)."""
        return self.index is not None or int((self.matrix != 0).sum(axis=1).max()) <= 2

    def two_taps(self, dtype) -> tuple[numpy.ndarray, numpy.ndarray]:
        """(indices int64, weights of dtype), each (2 * output length,): the two input pixels
        each output pixel reads and their weights (nearest: its index twice, weights 1 and 0;
        linear: the nonzero columns of its row of the matrix, where `by_two`), made once per
        dtype."""
        dtype = numpy.dtype(dtype)
        if dtype not in self._taps:
            self._taps[dtype] = self._two_taps(dtype)
        return self._taps[dtype]

    def _two_taps(self, dtype) -> tuple[numpy.ndarray, numpy.ndarray]:
        if self.index is not None:
            index = numpy.repeat(self.index.astype(numpy.int64), 2)
            return index, numpy.tile(numpy.array([1, 0], dtype), len(self.index))
        matrix = self.matrix  # out, in
        low = numpy.argmax(matrix != 0, axis=1)
        high = matrix.shape[1] - 1 - numpy.argmax(matrix[:, ::-1] != 0, axis=1)
        rows = numpy.arange(matrix.shape[0])
        weights = numpy.stack([matrix[rows, low], numpy.where(high > low, matrix[rows, high],
                                                              0)], axis=1).astype(dtype)
        return numpy.stack([low, high], axis=1).astype(numpy.int64).reshape(-1), \
            weights.reshape(-1)


class Resize(Layer):
    """(N, C, H, W) -> (N, C, H_out, W_out): ONNX Resize over the last two axes.

    Give the output `size` (int or (h, w)) or `scales` (output / input, a number or (h, w);
    the output is floor(input * scale), and the coordinate rule uses the scale given). `mode`
    is "nearest" or "linear" (bilinear over H and W); `coordinate_transformation_mode` and
    `nearest_mode` take ONNX's values and defaults (see the module docstring). Not supported:
    cubic, antialias, tf_crop_and_resize (roi), exclude_outside, resizing N or C.
    """

    kind = "resize"

    def __init__(self, size=None, scales=None, mode: str = "nearest",
                 coordinate_transformation_mode: str = "half_pixel",
                 nearest_mode: str = "round_prefer_floor"):
        super().__init__()
        label = type(self).__name__
        if (size is None) == (scales is None):
            raise ValueError(f"{label}: give exactly one of size and scales, received "
                             f"size={size!r}, scales={scales!r}")
        self.size = None if size is None else _hw_pair(size, "size", label, numbers.Integral)
        if self.size is not None and min(self.size) < 1:
            raise ValueError(f"{label}: size must be >= 1, received {size!r}")
        self.scales = None if scales is None else tuple(
            float(s) for s in _hw_pair(scales, "scales", label, numbers.Real))
        if self.scales is not None and not min(self.scales) > 0:
            raise ValueError(f"{label}: scales must be > 0, received {scales!r}")
        if mode not in MODES:
            raise ValueError(f"{label}: mode must be one of {MODES}, received {mode!r}")
        if coordinate_transformation_mode not in COORDINATE_MODES:
            raise ValueError(f"{label}: coordinate_transformation_mode must be one of "
                             f"{COORDINATE_MODES}, received {coordinate_transformation_mode!r}")
        if nearest_mode not in NEAREST_MODES:
            raise ValueError(f"{label}: nearest_mode must be one of {NEAREST_MODES}, received "
                             f"{nearest_mode!r}")
        self.mode = mode
        self.coordinate_transformation_mode = coordinate_transformation_mode
        self.nearest_mode = nearest_mode

    # -- geometry ------------------------------------------------------------------------
    def output_hw(self, hw) -> tuple[int, int]:
        """(H_out, W_out) for input (H, W): the size, or floor(input * scale) per axis."""
        if self.size is not None:
            return tuple(int(v) for v in self.size)
        out = tuple(math.floor(float(n) * s) for n, s in zip(hw, self.scales, strict=True))
        for n, s, o, axis in zip(hw, self.scales, out, ("height", "width"), strict=True):
            if o < 1:
                raise ShapeError(
                    f"{self.name} ({type(self).__name__}): scale {s:g} turns the input {axis} "
                    f"{n} into floor({n} * {s:g}) = {o} pixels; use a scale of at least "
                    f"{1 / n:g} or give the output size instead"
                )
        return out

    def output_shape(self, input_shape: Shape) -> Shape:
        channels, height, width = chw(self, input_shape)
        return (channels, *self.output_hw((height, width)))

    def _scale(self, axis: int, in_len: int, out_len: int) -> float:
        """The scale the coordinate rule divides by: the one given, else out / in."""
        return self.scales[axis] if self.scales is not None else out_len / in_len

    def _positions(self, axis: int, in_len: int, out_len: int):
        scale = self._scale(axis, in_len, out_len)
        exact = Fraction(out_len, in_len) if scale == out_len / in_len else None
        if self.scales is not None and scale == self.scales[axis]:
            exact = None  # the scale given, taken as exact
        return source_positions(out_len, in_len, scale, self.coordinate_transformation_mode,
                                exact)

    def _nearest_index(self, axis: int, in_len: int, out_len: int):
        return nearest_indices(self._positions(axis, in_len, out_len), in_len,
                               self.nearest_mode)

    def _linear_matrix(self, axis: int, in_len: int, out_len: int, dtype):
        return linear_matrix(self._positions(axis, in_len, out_len), in_len, dtype)

    def _plans(self, hw, dtype) -> tuple[_AxisPlan, _AxisPlan]:
        """The (height, width) plans for input hw, kept for the last input size and dtype."""
        key = (tuple(int(v) for v in hw), numpy.dtype(dtype))
        cached = getattr(self, "_plan_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        out_hw = self.output_hw(key[0])
        plans = []
        for axis in range(2):
            if self.mode == "nearest":
                plans.append(_AxisPlan(index=self._nearest_index(axis, key[0][axis],
                                                                 out_hw[axis])))
            else:
                plans.append(_AxisPlan(matrix=self._linear_matrix(axis, key[0][axis],
                                                                  out_hw[axis], dtype)))
        self._plan_cache = (key, tuple(plans))
        return self._plan_cache[1]

    # -- computation -----------------------------------------------------------------------
    def forward(self, x):
        check_input(self, x, 4)
        xp = array_module(x)
        rows, cols = self._plans(x.shape[2:], x.dtype)
        n, c, h, w = x.shape
        if self._compiled(x, rows, cols):
            out = resize_kernels.forward(x, self.output_hw((h, w)), rows.two_taps(x.dtype),
                                         cols.two_taps(x.dtype))
            if grad_enabled():
                self.cache = x.shape
            return out
        out = xp.empty((n, c, *self.output_hw((h, w))), dtype=x.dtype)  # N, C, H_out, W_out

        def work(part):
            if self.mode == "nearest":
                xp.take(xp.take(x[part], rows.index, axis=2), cols.index, axis=3,
                        out=out[part], mode="clip")  # the indices are in range: no checks
                return
            m = x[part].shape[0]
            # The products ignore the "invalid" floating-point flag: OpenBLAS's small-matrix
            # kernels can raise it with finite operands and a correct product (seen once in CI
            # on a (6, 5) @ (5, 1) of the backward; the same draw passed when run again; numpy
            # issues 13173 and 24067 describe it with earlier OpenBLAS). A NaN or inf in the
            # input still reaches the output.
            with numpy.errstate(invalid="ignore"):
                across = x[part].reshape(-1, w) @ cols.matrix.T  # m*C*H, W_out
                both = rows.matrix @ across.reshape(m * c, h, -1)  # m*C, H_out, W_out
            out[part] = both.reshape(out[part].shape)

        run_chunks(work, sample_chunks(x))
        if grad_enabled():
            self.cache = x.shape
        return out

    def backward(self, dy):
        x_shape = self._take_cache()
        xp = array_module(dy)
        n, c, h, w = x_shape
        rows, cols = self._plans((h, w), dy.dtype)
        dx = xp.empty(x_shape, dtype=dy.dtype)

        def work(part):
            if self.mode == "nearest":
                dx[part] = _fold(xp, _fold(xp, dy[part], cols, w, axis=3), rows, h, axis=2)
                return
            m = dy[part].shape[0]
            with numpy.errstate(invalid="ignore"):  # (BLAS's spurious flag: see forward)
                up = rows.matrix.T @ dy[part].reshape(m * c, *dy.shape[2:])  # m*C, H, W_out
                dx[part] = (up.reshape(-1, dy.shape[3]) @ cols.matrix).reshape(m, c, h, w)

        run_chunks(work, sample_chunks(dy))
        return dx

    def _compiled(self, x, rows, cols) -> bool:
        """Whether linear resizing of x runs on the compiled kernel
        (`convnet.core.resize_kernels`): two input pixels a pixel on each axis."""
        return (self.mode != "nearest" and resize_kernels.serves(x) and rows.by_two
                and cols.by_two)

    # -- description -----------------------------------------------------------------------
    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        """Linear: two taps per output along W, then two along H; nearest only copies."""
        if self.mode == "nearest":
            return 0
        c, h, _ = input_shape
        _, out_h, out_w = output_shape
        return 2 * c * h * out_w + 2 * c * out_h * out_w

    def receptive_field(self, field: ReceptiveField, input_shape: Shape) -> ReceptiveField:
        """Exact when both axes change by a whole factor s: enlarging, output o reads the
        inputs a transposed convolution of stride s would add into it (nearest: kernel s;
        bilinear half-pixel: kernel 2s - s % 2 with padding ceil((s - 1) / 2), as FCN's
        bilinear deconvolution), read off the layer's own interpolation plan; shrinking, a
        window of stride s. Otherwise approximate: the field model has one whole-pixel jump
        per layer, so the jump is kept and linear modes widen the field by one jump."""
        hw = tuple(input_shape[1:])
        out_hw = self.output_hw(hw)
        taps = [self._axis_taps(axis, hw[axis], out_hw[axis]) for axis in range(2)]
        if all(t is not None for t in taps) and taps[0][0] != taps[1][0]:
            # One axis enlarged, the other kept (factor 1 reads as either): both one way.
            kept = [i for i in range(2) if taps[i][2] == 1]
            if kept:
                other = taps[1 - kept[0]][0]
                taps[kept[0]] = (other, *taps[kept[0]][1:])
        if all(t is not None and t[0] == "up" for t in taps):
            return field.through_transposed(
                (taps[0][1], taps[1][1]), (taps[0][2], taps[1][2]), (1, 1),
                Padding(taps[0][3], taps[0][3], taps[1][3], taps[1][3]))
        if all(t is not None and t[0] == "down" for t in taps):
            return field.through(
                (taps[0][1], taps[1][1]), (taps[0][2], taps[1][2]), (1, 1),
                Padding(taps[0][3], taps[0][3], taps[1][3], taps[1][3]))
        if self.mode == "nearest":
            return field
        return field.through((2, 2), (1, 1), (1, 1), Padding(0, 0, 0, 0))

    def _axis_taps(self, axis: int, in_len: int, out_len: int):
        """("up", kernel, s, padding) when input unit i is read by outputs i*s - padding ..
        i*s - padding + kernel - 1 (a whole enlarging factor s, borders aside); ("down", kernel,
        s, padding) when output o reads inputs o*s - padding .. + kernel - 1; else None. Read
        off the layer's own plan (nonzero weights) on an axis of 8 units at the same factor
        (the scale given, else output / input),
        so that a tiny map's clamped borders do not hide the pattern. align_corners spaces
        the outputs by (in - 1) / (out - 1), which repeats with no whole period: None."""
        if self.coordinate_transformation_mode == "align_corners":
            return None
        ratio = self.scales[axis] if self.scales is not None else out_len / in_len
        if ratio >= 1 and ratio == round(ratio):
            s, direction = round(ratio), "up"
            in_len, out_len = 8, 8 * s
        elif ratio < 1 and abs(1 / ratio - round(1 / ratio)) < 1e-9:
            s, direction = round(1 / ratio), "down"
            in_len, out_len = 8 * s, 8
        else:
            return None
        if self.mode == "nearest":
            reads = numpy.zeros((out_len, in_len), dtype=bool)  # output, input
            reads[numpy.arange(out_len), self._nearest_index(axis, in_len, out_len)] = True
        else:
            reads = self._linear_matrix(axis, in_len, out_len, numpy.float64) != 0
        lines = reads.T if direction == "up" else reads  # by input unit, or by output unit
        spans = [numpy.flatnonzero(lines[i]) for i in range(1, 7)]  # interior: no clamping
        if any(len(span) == 0 for span in spans):
            return None
        first = {int(span[0]) - i * s for i, span in enumerate(spans, 1)}
        last = {int(span[-1]) - i * s for i, span in enumerate(spans, 1)}
        if len(first) != 1 or len(last) != 1:
            return None  # not one pattern repeated every s units: a scale that is no factor
        low, high = first.pop(), last.pop()
        return (direction, high - low + 1, s, -low)

    def extra_repr(self) -> str:
        parts = [f"size={_compact(self.size)}" if self.size is not None
                 else f"scales={_compact(self.scales)}"]
        if self.mode != "nearest":
            parts.append(f"mode={self.mode!r}")
        if self.coordinate_transformation_mode != "half_pixel":
            parts.append(f"coordinate_transformation_mode={self.coordinate_transformation_mode!r}")
        if self.nearest_mode != "round_prefer_floor":
            parts.append(f"nearest_mode={self.nearest_mode!r}")
        return ", ".join(parts)


def _fold(xp, dy, plan: _AxisPlan, length: int, axis: int):
    """Adjoint of take(x, plan.index, axis): for each input position, the sum of dy over the
    output positions that read it (zero where none does)."""
    summed = xp.add.reduceat(dy, plan.starts, axis=axis)
    if len(plan.values) == length:  # every input position is read (upsampling)
        return summed
    shape = list(dy.shape)
    shape[axis] = length
    out = xp.zeros(shape, dtype=dy.dtype)
    where = [slice(None)] * dy.ndim
    where[axis] = plan.values
    out[tuple(where)] = summed
    return out


def _compact(pair):
    return pair[0] if pair[0] == pair[1] else pair


class Upsample(Resize):
    """torch.nn.Upsample: (N, C, H, W) -> (N, C, H_out, W_out), "nearest" or "bilinear".

    Give `size` (int or (h, w)) or `scale_factor` (a number or (h, w)): the output is then
    floor(input * scale_factor), and the source positions use 1 / scale_factor, as PyTorch
    does, unless recompute_scale_factor=True (then input / output). bilinear is
    align_corners=False by default: ONNX's half_pixel (PyTorch clamps negative positions to
    0, which linear's clamping does anyway); align_corners=True is ONNX's align_corners.
    nearest is ONNX's asymmetric + floor, with PyTorch's own arithmetic for the index
    (`torch_nearest_index`), so that indices agree where floor sits on a rounding edge. Like
    PyTorch, an axis whose output length equals its input length is copied, even where the
    scale factor is not 1 (scale_factor=1.2 on 3 pixels gives 3).
    """

    kind = "up"

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest",
                 align_corners: bool | None = None, recompute_scale_factor: bool | None = None):
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"Upsample: mode must be 'nearest' or 'bilinear', received "
                             f"{mode!r}")
        if align_corners is not None and mode == "nearest":
            raise ValueError("Upsample: align_corners can only be set with mode='bilinear' "
                             "(nearest has no corners to align); leave it None")
        if size is None and scale_factor is None:
            raise ValueError("Upsample: give size or scale_factor (e.g. scale_factor=2)")
        if size is not None and scale_factor is not None:
            raise ValueError(f"Upsample: give only one of size and scale_factor, received "
                             f"size={size!r}, scale_factor={scale_factor!r}")
        if recompute_scale_factor and scale_factor is None:
            raise ValueError("Upsample: recompute_scale_factor=True needs a scale_factor")
        transform = "align_corners" if align_corners else "half_pixel"
        super().__init__(size=size, scales=scale_factor,
                         mode="nearest" if mode == "nearest" else "linear",
                         coordinate_transformation_mode="asymmetric" if mode == "nearest"
                         else transform, nearest_mode="floor")
        self.upsample_mode = mode
        self.align_corners = None if align_corners is None else bool(align_corners)
        self.recompute_scale_factor = (None if recompute_scale_factor is None
                                       else bool(recompute_scale_factor))

    @property
    def scale_factor(self):
        return None if self.scales is None else _compact(self.scales)

    def _scale(self, axis: int, in_len: int, out_len: int) -> float:
        if self.recompute_scale_factor:
            return out_len / in_len
        return super()._scale(axis, in_len, out_len)

    def _nearest_index(self, axis: int, in_len: int, out_len: int):
        given = None if self.scales is None or self.recompute_scale_factor else self.scales[axis]
        return torch_nearest_index(in_len, out_len, given)

    def _linear_matrix(self, axis: int, in_len: int, out_len: int, dtype):
        if out_len == in_len:  # PyTorch copies such an axis, whatever the scale factor says
            return numpy.eye(in_len, dtype=dtype)
        return super()._linear_matrix(axis, in_len, out_len, dtype)

    def extra_repr(self) -> str:
        parts = [f"size={_compact(self.size)}" if self.size is not None
                 else f"scale_factor={self.scale_factor}"]
        if self.upsample_mode != "nearest":
            parts.append(f"mode={self.upsample_mode!r}")
        if self.align_corners is not None:
            parts.append(f"align_corners={self.align_corners}")
        if self.recompute_scale_factor is not None:
            parts.append(f"recompute_scale_factor={self.recompute_scale_factor}")
        return ", ".join(parts)


def torch_nearest_index(in_len: int, out_len: int, scale_factor: float | None):
    """PyTorch's 2-D nearest source index (aten's nearest_idx): the output index itself when
    the lengths are equal, half of it when the output is twice the input, and otherwise
    min(floor(x * s), in - 1) in float32 with s = float32(1 / scale_factor) when a scale factor
    is given, else float32(in) / float32(out). The float32 product decides the index where
    x / scale_factor is within a rounding of an integer."""
    if out_len == in_len:
        return numpy.arange(out_len, dtype=numpy.int64)
    if out_len == 2 * in_len:
        return numpy.arange(out_len, dtype=numpy.int64) // 2
    if scale_factor is not None and scale_factor > 0:
        step = numpy.float32(1.0 / scale_factor)
    else:
        step = numpy.float32(in_len) / numpy.float32(out_len)
    index = numpy.floor(numpy.arange(out_len, dtype=numpy.float32) * step)
    return numpy.minimum(index, in_len - 1).astype(numpy.int64)
