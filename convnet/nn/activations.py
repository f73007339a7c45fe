"""Elementwise nonlinearities, PReLU, and softmax and log-softmax over an axis. Shapes pass
through unchanged.

Derivatives at the kinks are PyTorch's (tests/test_activations.py checks each kink against it):
ReLU6 and Hardtanh pass no gradient at either end, Hardsigmoid none at -3 or 3, Hardswish 0 at
-3 and 1 at 3, ELU alpha at 0, PReLU the slope at 0.
"""

from __future__ import annotations

import math

import numpy

from convnet.core import activation_kernels
from convnet.core.backend import array_module, sample_chunks
from convnet.core.errors import ShapeError
from convnet.core.special import erfc
from convnet.core.team import run_chunks
from convnet.nn.layer import Layer, Shape, check_input, grad_enabled, positive_int
from convnet.nn.parameter import Parameter


class _Elementwise(Layer):
    kind = "act"

    def forward(self, x):
        check_input(self, x, x.ndim if hasattr(x, "ndim") else 0, what="(N, ...)")
        out = self._apply(array_module(x), x)
        if grad_enabled():
            self.cache = self._keep(x, out)
        return out

    def backward(self, dy):
        return self._gradient(array_module(dy), dy, self._take_cache())


class ReLU(_Elementwise):
    """max(0, x); the gradient passes where x > 0. Batch chunks go to the worker threads."""

    kind = "relu"

    def forward(self, x):
        check_input(self, x, x.ndim if hasattr(x, "ndim") else 0, what="(N, ...)")
        if activation_kernels.usable(x):  # one compiled pass for the output and the mask
            out, positive = activation_kernels.relu_forward(x, grad_enabled())
            if positive is not None:
                self.cache = positive
            return out
        xp = array_module(x)
        out = xp.empty_like(x)
        # A boolean mask for backward: a quarter of the memory of x.
        positive = xp.empty(x.shape, dtype=bool) if grad_enabled() else None

        def work(part):
            xp.maximum(x[part], 0, out=out[part])
            if positive is not None:
                xp.greater(out[part], 0, out=positive[part])

        run_chunks(work, sample_chunks(x))
        if positive is not None:
            self.cache = positive
        return out

    def backward(self, dy):
        positive = self._take_cache()
        if activation_kernels.usable(dy) and activation_kernels.usable_mask(positive, dy.shape):
            return activation_kernels.relu_backward(dy, positive)
        xp = array_module(dy)
        dx = xp.empty_like(dy)
        run_chunks(lambda part: xp.multiply(dy[part], positive[part], out=dx[part]),
                   sample_chunks(dy))
        return dx


class LeakyReLU(_Elementwise):
    """x where x > 0, negative_slope * x elsewhere."""

    kind = "lrelu"

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        if not isinstance(negative_slope, (int, float)) or isinstance(negative_slope, bool):
            raise TypeError(f"LeakyReLU: negative_slope must be a number, received "
                            f"{negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def _apply(self, xp, x):
        return xp.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def _keep(self, x, out):
        return x > 0

    def _gradient(self, xp, dy, positive):
        return xp.where(positive, dy, dy * dy.dtype.type(self.negative_slope))

    def extra_repr(self) -> str:
        return "" if self.negative_slope == 0.01 else f"negative_slope={self.negative_slope}"


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""

    kind = "sigmoid"

    def _apply(self, xp, x):
        # exp of a non-positive number never overflows: use exp(-|x|) on both branches.
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)

    def _keep(self, x, out):
        return out

    def _gradient(self, xp, dy, out):
        return dy * out * (1 - out)


class Tanh(_Elementwise):
    kind = "tanh"

    def _apply(self, xp, x):
        return xp.tanh(x)

    def _keep(self, x, out):
        return out

    def _gradient(self, xp, dy, out):
        return dy * (1 - out * out)


def _number(value, name: str, layer: str) -> float:
    """A finite or infinite real hyperparameter (not a bool), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, numpy.floating,
                                                          numpy.integer)):
        raise TypeError(f"{layer}: {name} must be a number, received {value!r}")
    if math.isnan(value):
        raise ValueError(f"{layer}: {name} must not be nan")
    return float(value)


def _stable_sigmoid(xp, x):
    """1 / (1 + exp(-x)) from exp(-|x|), which never overflows; in x's dtype."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class _Pointwise(_Elementwise):
    """y = f(x) elementwise, a chunk of the batch at a time on the worker threads (as ReLU).

    Forward keeps x itself (no copy: the caller holds it anyway); backward recomputes the
    slope f'(x) chunk by chunk, so no full-size temporary outlives a chunk. Subclasses give
    `_value(xp, x)` and `_slope(xp, x)` in x's dtype, written from their definitions. A
    subclass whose slope reads the same from its output sets `keeps_output`: forward then
    keeps y instead, which the next layer usually keeps as its own input, so that x (a batch
    norm's output, say) is freed as soon as y is made.
    """

    keeps_output = False

    def forward(self, x):
        check_input(self, x, x.ndim if hasattr(x, "ndim") else 0, what="(N, ...)")
        xp = array_module(x)
        out = xp.empty_like(x)

        def work(part):
            out[part] = self._value(xp, x[part])

        run_chunks(work, sample_chunks(x))
        if grad_enabled():
            self.cache = out if self.keeps_output else x
        return out

    def backward(self, dy):
        kept = self._take_cache()  # x, or y where keeps_output
        xp = array_module(dy)
        dx = xp.empty_like(dy)

        def work(part):
            # an infinite dy on a flat stretch gives NaN, as PyTorch's, without a warning
            # (errstate is per thread: the worker threads' own)
            with numpy.errstate(invalid="ignore"):
                xp.multiply(dy[part], self._slope(xp, kept[part]), out=dx[part])

        run_chunks(work, sample_chunks(dy))
        return dx


class Hardtanh(_Pointwise):
    """min(max(x, min_val), max_val); the gradient passes strictly between the two (PyTorch:
    none at either end). ONNX Clip(min, max) is this layer; an absent bound is an infinite one.
    """

    kind = "hardtanh"
    keeps_output = True  # y is strictly between the bounds exactly where x is (NaN: neither)

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0):
        super().__init__()
        label = type(self).__name__
        self.min_val = _number(min_val, "min_val", label)
        self.max_val = _number(max_val, "max_val", label)
        if not self.min_val < self.max_val:
            raise ValueError(f"{label}: min_val must be less than max_val, received "
                             f"min_val={self.min_val}, max_val={self.max_val}")

    def forward(self, x):
        if not activation_kernels.usable(x):
            return super().forward(x)
        check_input(self, x, x.ndim, what="(N, ...)")
        out = activation_kernels.hardtanh_forward(x, self.min_val, self.max_val)
        if grad_enabled():
            self.cache = out
        return out

    def backward(self, dy):
        kept = self.cache
        if not (activation_kernels.usable(dy) and activation_kernels.usable(kept)
                and kept.shape == dy.shape and kept.dtype == dy.dtype):
            return super().backward(dy)
        self._take_cache()
        return activation_kernels.hardtanh_backward(dy, kept, self.min_val, self.max_val)

    def _value(self, xp, x):
        return xp.clip(x, x.dtype.type(self.min_val), x.dtype.type(self.max_val))

    def _slope(self, xp, x):
        return (x > self.min_val) & (x < self.max_val)

    def extra_repr(self) -> str:
        parts = []
        if self.min_val != -1.0:
            parts.append(f"min_val={self.min_val}")
        if self.max_val != 1.0:
            parts.append(f"max_val={self.max_val}")
        return ", ".join(parts)


class ReLU6(Hardtanh):
    """min(max(x, 0), 6), MobileNet's activation: Hardtanh(0, 6), as in PyTorch (no gradient at
    0 or at 6)."""

    kind = "relu6"

    def __init__(self):
        super().__init__(0.0, 6.0)

    def extra_repr(self) -> str:
        return ""


class Hardsigmoid(_Pointwise):
    """PyTorch's relu6(x + 3) / 6, or with keyword alpha and beta ONNX's HardSigmoid,
    max(0, min(1, alpha * x + beta)) (ONNX's defaults are alpha=0.2, beta=0.5). The slope is
    alpha strictly inside the ramp and 0 at its ends (PyTorch: none at -3 or 3)."""

    kind = "hardsigmoid"

    def __init__(self, *, alpha: float = 1 / 6, beta: float = 0.5):
        super().__init__()
        self.alpha = _number(alpha, "alpha", "Hardsigmoid")
        self.beta = _number(beta, "beta", "Hardsigmoid")
        # PyTorch's own arithmetic for its parameters, so values and kinks agree to the bit.
        self._pytorch = self.alpha == 1 / 6 and self.beta == 0.5

    def _ramp(self, x):
        """alpha * x + beta, the value before clipping to [0, 1]."""
        if self._pytorch:
            return (x + x.dtype.type(3)) / x.dtype.type(6)
        return x * x.dtype.type(self.alpha) + x.dtype.type(self.beta)

    def _value(self, xp, x):
        if self._pytorch:
            return xp.clip(x + x.dtype.type(3), 0, 6) / x.dtype.type(6)
        return xp.clip(self._ramp(x), 0, 1)

    def _slope(self, xp, x):
        if self._pytorch:
            inside = (x > -3) & (x < 3)
        else:
            ramp = self._ramp(x)
            inside = (ramp > 0) & (ramp < 1)
        return inside * x.dtype.type(self.alpha)

    def extra_repr(self) -> str:
        return "" if self._pytorch else f"alpha={self.alpha}, beta={self.beta}"


class Hardswish(_Pointwise):
    """x * relu6(x + 3) / 6 (MobileNetV3). Slope 0 up to -3, x/3 + 1/2 between, 1 from 3 on
    (PyTorch's values at -3 and 3)."""

    kind = "hardswish"

    def _value(self, xp, x):
        return x * xp.clip(x + x.dtype.type(3), 0, 6) / x.dtype.type(6)

    def _slope(self, xp, x):
        middle = x / x.dtype.type(3) + x.dtype.type(0.5)
        return xp.where(x <= -3, x.dtype.type(0), xp.where(x >= 3, x.dtype.type(1), middle))


class SiLU(_Pointwise):
    """x * sigmoid(x) (also called swish); slope s (1 + x (1 - s)) with s = sigmoid(x)."""

    kind = "silu"

    def _value(self, xp, x):
        return x * _stable_sigmoid(xp, x)

    def _slope(self, xp, x):
        s = _stable_sigmoid(xp, x)
        return s * (1 + x * (1 - s))


class ELU(_Pointwise):
    """x where x > 0, alpha (exp(x) - 1) elsewhere; slope alpha exp(x) for x <= 0 (alpha at 0,
    as PyTorch)."""

    kind = "elu"

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = _number(alpha, "alpha", "ELU")

    def _value(self, xp, x):
        # expm1 of min(x, 0): exact near 0, and no overflow for large positive x
        negative = xp.expm1(xp.minimum(x, 0)) * x.dtype.type(self.alpha)
        return xp.where(x > 0, x, negative)

    def _slope(self, xp, x):
        negative = xp.exp(xp.minimum(x, 0)) * x.dtype.type(self.alpha)
        return xp.where(x > 0, x.dtype.type(1), negative)

    def extra_repr(self) -> str:
        return "" if self.alpha == 1.0 else f"alpha={self.alpha}"


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_TANH_K = math.sqrt(2 / math.pi)  # GELU's tanh approximation, Hendrycks & Gimpel (2016)
_TANH_C = 0.044715


class GELU(_Pointwise):
    """x * Phi(x), Phi the standard normal CDF; approximate="tanh" uses
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as PyTorch.

    Phi(x) = erfc(-x / sqrt(2)) / 2 with `convnet.core.special.erfc` (fdlibm's rational
    approximations, float64 inside; NumPy has no erf): accurate where Phi is tiny too, where
    PyTorch's 0.5 (1 + erf(x / sqrt(2))) rounds to 0. Slope Phi(x) + x phi(x).
    """

    kind = "gelu"

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', received "
                             f"{approximate!r}")
        self.approximate = approximate

    def _cdf(self, x):
        z = x.astype(numpy.float64, copy=False) * -_SQRT_HALF  # float64 input: no extra copy
        return (0.5 * erfc(z)).astype(x.dtype, copy=False)

    def _tanh_inner(self, xp, x):
        return xp.tanh(x.dtype.type(_TANH_K) * (x + x.dtype.type(_TANH_C) * x * x * x))

    def _value(self, xp, x):
        if self.approximate == "tanh":
            return x.dtype.type(0.5) * x * (1 + self._tanh_inner(xp, x))
        return x * self._cdf(x)

    def _slope(self, xp, x):
        if self.approximate == "tanh":
            t = self._tanh_inner(xp, x)
            inner = x.dtype.type(_TANH_K) * (1 + x.dtype.type(3 * _TANH_C) * x * x)
            return x.dtype.type(0.5) * ((1 + t) + x * (1 - t * t) * inner)
        density = xp.exp(x * x * x.dtype.type(-0.5)) * x.dtype.type(_INV_SQRT_2PI)
        return self._cdf(x) + x * density

    def extra_repr(self) -> str:
        return "" if self.approximate == "none" else "approximate='tanh'"


class PReLU(Layer):
    """x where x > 0, a * x elsewhere, with a learned slope a: one for all channels
    (num_parameters=1) or one per channel on axis 1 of (N, C, ...). weight (num_parameters,),
    PyTorch's name and shape, starts at `init`.

    ONNX PRelu's slope broadcasts like any tensor: a slope of shape (C, 1, 1) is weight (C,).
    """

    kind = "prelu"

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *, dtype=numpy.float32):
        super().__init__()
        self.num_parameters = positive_int(num_parameters, "num_parameters", "PReLU")
        self.init = _number(init, "init", "PReLU")
        self.weight = Parameter(numpy.empty(self.num_parameters, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.weight.data[...] = self.init

    def own_parameters(self):
        return {"weight": self.weight}

    def output_shape(self, input_shape: Shape) -> Shape:
        if self.num_parameters > 1 and (not input_shape or input_shape[0] != self.num_parameters):
            fix = f"num_parameters={input_shape[0]} or 1" if input_shape else "num_parameters=1"
            raise ShapeError(
                f"{self.name} (PReLU): num_parameters={self.num_parameters} slopes, one per "
                f"channel, but the input reaching it has {input_shape[0] if input_shape else 'no'}"
                f" channels (per-sample shape {tuple(input_shape)}); set {fix}"
            )
        return tuple(input_shape)

    def _slope(self, x):
        """The weight shaped to broadcast over x: (1, C, 1, ...) per channel, else (1,)."""
        if self.num_parameters == 1:
            return self.weight.data
        return self.weight.data.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, x):
        ndim = x.ndim if hasattr(x, "ndim") else 0
        channels = self.num_parameters if self.num_parameters > 1 else None
        check_input(self, x, max(ndim, 2 if channels else 1), channels, what="(N, C, ...)",
                    dtype=self.weight.data.dtype)
        xp = array_module(x)
        out = xp.where(x > 0, x, x * self._slope(x))
        if grad_enabled():
            self.cache = x
        return out

    def backward(self, dy):
        x = self._take_cache()
        xp = array_module(dy)
        positive = x > 0
        # d out / d a = x where x <= 0: summed over every axis but the channel one
        contribution = xp.where(positive, 0, x * dy)
        axes = tuple(a for a in range(x.ndim) if a != 1 or self.num_parameters == 1)
        self.weight.grad += contribution.sum(axis=axes).reshape(self.weight.shape)
        return xp.where(positive, dy, dy * self._slope(x))

    def param_formula(self, input_shape: Shape) -> str:
        return f"{self.num_parameters}" if self.num_parameters == 1 else (
            f"{self.num_parameters} (one per channel)")

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        return math.prod(input_shape)

    def extra_repr(self) -> str:
        parts = []
        if self.num_parameters != 1:
            parts.append(f"num_parameters={self.num_parameters}")
        if self.init != 0.25:
            parts.append(f"init={self.init}")
        return ", ".join(parts)


class _OverAxis(Layer):
    """Softmax and LogSoftmax: normalised over one axis `dim` of (N, K, ...) (PyTorch's dim,
    negative counting from the end; 1, the class axis, by default)."""

    def __init__(self, dim: int = 1):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, numpy.integer)):
            raise TypeError(f"{type(self).__name__}: dim must be an int, received {dim!r}")
        self.dim = int(dim)

    def _axis(self, ndim: int, shape) -> int:
        if not -ndim <= self.dim < ndim:
            raise ShapeError(
                f"{self.name} ({type(self).__name__}): dim={self.dim} is out of range for a "
                f"{ndim}-D input of shape {tuple(shape)}; use a dim from {-ndim} to {ndim - 1} "
                f"(1 is the class axis)"
            )
        return self.dim % ndim

    def output_shape(self, input_shape: Shape) -> Shape:
        self._axis(len(input_shape) + 1, ("N", *input_shape))
        return tuple(input_shape)

    def _shifted(self, x):
        """(x - max over the axis, the axis): exp of it never overflows."""
        check_input(self, x, max(getattr(x, "ndim", 0), 2), what="(N, K, ...)")
        axis = self._axis(x.ndim, x.shape)
        return x - x.max(axis=axis, keepdims=True), axis

    def extra_repr(self) -> str:
        return "" if self.dim == 1 else f"dim={self.dim}"


class Softmax(_OverAxis):
    """Probabilities over axis `dim` (the class axis 1 by default): (N, K, ...) -> (N, K, ...),
    summing to 1 along it.

    Train with CrossEntropyLoss on the raw scores instead: it fuses log-softmax and is stable.
    """

    kind = "softmax"

    def forward(self, x):
        xp = array_module(x)
        e, axis = self._shifted(x)
        xp.exp(e, out=e)
        e /= e.sum(axis=axis, keepdims=True)
        if grad_enabled():
            self.cache = (e, axis)
        return e

    def backward(self, dy):
        out, axis = self._take_cache()
        return out * (dy - (dy * out).sum(axis=axis, keepdims=True))


class LogSoftmax(_OverAxis):
    """log softmax over axis `dim`: x - max - log(sum(exp(x - max))), stable for huge x."""

    kind = "logsoftmax"

    def forward(self, x):
        xp = array_module(x)
        out, axis = self._shifted(x)
        out -= xp.log(xp.exp(out).sum(axis=axis, keepdims=True))
        if grad_enabled():
            self.cache = (out, axis)
        return out

    def backward(self, dy):
        out, axis = self._take_cache()
        xp = array_module(dy)
        return dy - xp.exp(out) * dy.sum(axis=axis, keepdims=True)
