"""Normalizations computed within each sample: LayerNorm and local response normalization.

    cn.LayerNorm(64)                       # over the last axis (a transformer's tokens)
    cn.LayerNorm((C, H, W))                # over the whole sample
    cn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)   # AlexNet's, across channels

Unlike BatchNorm2d they use no batch statistics: training and evaluation compute the same.
"""

from __future__ import annotations

import math

import numpy

from convnet.core.backend import array_module
from convnet.core.errors import ShapeError
from convnet.nn.layer import Layer, Shape, check_input, grad_enabled
from convnet.nn.parameter import Parameter


class LayerNorm(Layer):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, with mean and (biased) var over the
    last len(normalized_shape) axes of each sample, as torch.nn.LayerNorm."""

    kind = "ln"

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, *, dtype=numpy.float32):
        super().__init__()
        if isinstance(normalized_shape, (int, numpy.integer)):
            normalized_shape = (normalized_shape,)
        shape = tuple(normalized_shape)
        if not shape or any(isinstance(v, bool) or not isinstance(v, (int, numpy.integer))
                            or v < 1 for v in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be positive sizes such as 64 "
                             f"or (C, H, W), received {normalized_shape!r}")
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0:
            raise ValueError(f"LayerNorm: eps must be a positive number, received {eps!r}")
        self.normalized_shape = tuple(int(v) for v in shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = self.bias = None
        if self.elementwise_affine:
            self.weight = Parameter(numpy.ones(self.normalized_shape, dtype=dtype))
            if bias:
                self.bias = Parameter(numpy.zeros(self.normalized_shape, dtype=dtype))

    def own_parameters(self):
        params = {}
        if self.weight is not None:
            params["weight"] = self.weight
        if self.bias is not None:
            params["bias"] = self.bias
        return params

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        k = len(self.normalized_shape)
        if shape[len(shape) - k:] != self.normalized_shape or len(shape) < k:
            raise ShapeError(f"{self.name} (LayerNorm): normalizes the last axes "
                             f"{self.normalized_shape}, but the per-sample input is {shape}")
        return shape

    def forward(self, x):
        check_input(self, x, max(getattr(x, "ndim", 0), 2), what="(N, ...)")
        self.output_shape(tuple(x.shape[1:]))
        axes = tuple(range(x.ndim - len(self.normalized_shape), x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(axis=axes, keepdims=True)
        inv_std = 1 / array_module(x).sqrt(var + x.dtype.type(self.eps))
        xhat = centred * inv_std
        out = xhat
        if self.weight is not None:
            out = xhat * self.weight.data
        if self.bias is not None:
            out = out + self.bias.data
        if grad_enabled():
            self.cache = (xhat, inv_std, axes)
        return out

    def backward(self, dy):
        xhat, inv_std, axes = self._take_cache()
        batch_axes = tuple(range(dy.ndim - len(self.normalized_shape)))
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=batch_axes)
        if self.weight is not None:
            self.weight.grad += (dy * xhat).sum(axis=batch_axes)
            dy = dy * self.weight.data
        # dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        return inv_std * (dy - dy.mean(axis=axes, keepdims=True)
                          - xhat * (dy * xhat).mean(axis=axes, keepdims=True))

    def param_formula(self, input_shape: Shape) -> str:
        size = math.prod(self.normalized_shape)
        count = 1 + (self.bias is not None)
        return f"{count} x {size} = {self.num_parameters():,}"

    def extra_repr(self) -> str:
        shape = (self.normalized_shape[0] if len(self.normalized_shape) == 1
                 else self.normalized_shape)
        text = f"{shape}"
        if self.eps != 1e-5:
            text += f", eps={self.eps:g}"
        if not self.elementwise_affine:
            text += ", elementwise_affine=False"
        elif self.bias is None:
            text += ", bias=False"
        return text


def _channel_window_sum(a, front: int, back: int):
    """out[:, c] = sum of a[:, c - front .. c + back] (zeros outside), along axis 1."""
    xp = array_module(a)
    pad = [(0, 0)] * a.ndim
    pad[1] = (front + 1, back)
    total = xp.cumsum(xp.pad(a, pad), axis=1)
    channels = a.shape[1]
    width = front + back + 1
    upper = [slice(None)] * a.ndim
    lower = [slice(None)] * a.ndim
    upper[1] = slice(width, width + channels)
    lower[1] = slice(0, channels)
    return total[tuple(upper)] - total[tuple(lower)]


class LocalResponseNorm(Layer):
    """AlexNet's normalization across channels, as torch.nn.LocalResponseNorm:
    y_c = x_c / (k + alpha/size * sum of x_j^2 over the `size` channels around c)^beta
    (size//2 channels before c, (size-1)//2 after)."""

    kind = "lrn"

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, (int, numpy.integer)) or size < 1:
            raise ValueError(f"LocalResponseNorm: size must be a positive int, received "
                             f"{size!r}")
        for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"LocalResponseNorm: {name} must be a number, received "
                                f"{value!r}")
        self.size = int(size)
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 2:
            raise ShapeError(f"{self.name} (LocalResponseNorm): needs (N, C, ...) input with "
                             f"at least one axis after the channels, received per-sample "
                             f"shape {tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, x):
        check_input(self, x, max(getattr(x, "ndim", 0), 3), what="(N, C, ...)")
        xp = array_module(x)
        front, back = self.size // 2, (self.size - 1) // 2
        scale = x.dtype.type(self.alpha / self.size)
        s = x.dtype.type(self.k) + scale * _channel_window_sum(x * x, front, back)
        power = xp.power(s, x.dtype.type(-self.beta))
        out = x * power
        if grad_enabled():
            self.cache = (x, s, power)
        return out

    def backward(self, dy):
        x, s, power = self._take_cache()
        front, back = self.size // 2, (self.size - 1) // 2
        scale = x.dtype.type(self.alpha / self.size)
        # y_c = x_c s_c^-b; s_c holds x_i^2 for i in [c - front, c + back], so x_i reaches the
        # s_c of c in [i - back, i + front].
        t = dy * x * power / s
        spread = _channel_window_sum(t, back, front)
        return dy * power - x.dtype.type(2 * self.beta) * scale * x * spread

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha:g}, beta={self.beta:g}, k={self.k:g}"
