"""Elementwise math of one tensor: the pieces exported graphs are made of (GELU as
x * 0.5 * (1 + erf(x / sqrt 2)), a LayerNorm as ... / sqrt(var + eps)).

    cn.Erf(), cn.Sqrt(), cn.Exp(), cn.Log(), cn.Abs(), cn.Neg(), cn.Reciprocal(), cn.Pow(2.0)

Shapes pass through unchanged; each keeps what its gradient needs.
"""

from __future__ import annotations

import math

import numpy

from convnet.core.backend import array_module
from convnet.nn.layer import Layer, check_input, grad_enabled


def erf(x):
    """The error function of an array (convnet.core.special's where present)."""
    try:
        from convnet.core.special import erf as special_erf
    except ImportError:
        return numpy.vectorize(math.erf, otypes=[x.dtype])(x)
    return special_erf(x)


class _Unary(Layer):
    def forward(self, x):
        check_input(self, x, max(getattr(x, "ndim", 0), 1), what="(N, ...)")
        xp = array_module(x)
        out = self._apply(xp, x).astype(x.dtype, copy=False)
        if grad_enabled():
            self.cache = (x, out)
        return out

    def backward(self, dy):
        x, out = self._take_cache()
        return self._gradient(array_module(dy), dy, x, out).astype(dy.dtype, copy=False)


class Erf(_Unary):
    """erf(x) = 2/sqrt(pi) * integral of exp(-t^2) from 0 to x."""

    kind = "erf"

    def _apply(self, xp, x):
        return erf(x)

    def _gradient(self, xp, dy, x, out):
        return dy * (2 / math.sqrt(math.pi)) * xp.exp(-x * x)


class Sqrt(_Unary):
    """sqrt(x) (NaN below 0, as NumPy and PyTorch give)."""

    kind = "sqrt"

    def _apply(self, xp, x):
        return xp.sqrt(x)

    def _gradient(self, xp, dy, x, out):
        return dy * 0.5 / out


class Exp(_Unary):
    kind = "exp"

    def _apply(self, xp, x):
        return xp.exp(x)

    def _gradient(self, xp, dy, x, out):
        return dy * out


class Log(_Unary):
    """The natural logarithm."""

    kind = "log"

    def _apply(self, xp, x):
        return xp.log(x)

    def _gradient(self, xp, dy, x, out):
        return dy / x


class Abs(_Unary):
    """|x|; the gradient at 0 is 0, as in PyTorch."""

    kind = "abs"

    def _apply(self, xp, x):
        return xp.abs(x)

    def _gradient(self, xp, dy, x, out):
        return dy * xp.sign(x)


class Neg(_Unary):
    kind = "neg"

    def _apply(self, xp, x):
        return -x

    def _gradient(self, xp, dy, x, out):
        return -dy


class Reciprocal(_Unary):
    """1 / x."""

    kind = "recip"

    def _apply(self, xp, x):
        return 1 / x

    def _gradient(self, xp, dy, x, out):
        return -dy * out * out


class Pow(_Unary):
    """x ** exponent for a fixed exponent (torch.pow(x, 2.0))."""

    kind = "pow"

    def __init__(self, exponent: float):
        super().__init__()
        if isinstance(exponent, bool) or not isinstance(exponent, (int, float, numpy.number)):
            raise TypeError(f"Pow: exponent must be a number, received {exponent!r}")
        self.exponent = float(exponent)

    def _apply(self, xp, x):
        if self.exponent == 2:
            return x * x
        return xp.power(x, x.dtype.type(self.exponent))

    def _gradient(self, xp, dy, x, out):
        if self.exponent == 2:
            return dy * 2 * x
        return dy * self.exponent * xp.power(x, x.dtype.type(self.exponent - 1))

    def extra_repr(self) -> str:
        return f"{self.exponent:g}"
