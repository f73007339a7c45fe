"""The fully connected layer, and Flatten that stretches a volume into a vector for it."""

from __future__ import annotations

import math

import numpy

from convnet.core import rng
from convnet.core.arithmetic import Padding
from convnet.core.backend import array_module
from convnet.core.errors import ShapeError
from convnet.nn.layer import Layer, Shape, WeightedLayer, check_input, grad_enabled, positive_int


class Linear(WeightedLayer):
    """(N, in_features) -> (N, out_features): y = x W^T + b, weight (out, in) as in PyTorch.

    On a 32x32x3 image stretched to 3072 values, Linear(3072, 10) holds a 10x3072 weight:
    one row of scores per class.
    """

    kind = "fc"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 init: str = "kaiming", dtype=numpy.float32):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features", "Linear")
        self.out_features = positive_int(out_features, "out_features", "Linear")
        self._create_parameters((out_features, in_features), bias, init, dtype)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 1:
            raise ShapeError(
                f"{self.name} (Linear): expects a flat input of {self.in_features} features, "
                f"received a volume of shape {tuple(input_shape)}; add cn.Flatten() before it "
                f"(it would give {math.prod(input_shape)} features)"
            )
        if input_shape[0] != self.in_features:
            raise ShapeError(
                f"{self.name} (Linear): in_features={self.in_features} but {input_shape[0]} "
                f"features reach it; set in_features={input_shape[0]}"
            )
        return (self.out_features,)

    def forward(self, x):
        check_input(self, x, 2, dtype=self.weight.data.dtype)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"{self.name} (Linear): expected {self.in_features} input features, received "
                f"{x.shape[1]} (input shape {tuple(x.shape)})"
            )
        out = x @ self.weight.data.T  # (N, in) @ (in, out) -> (N, out)
        if self.bias is not None:
            out += self.bias.data
        if grad_enabled():
            self.cache = x
        return out

    def backward(self, dy, input_grad: bool = True):
        """Parameter gradients, and the input gradient unless input_grad=False (then None)."""
        x = self._take_cache()
        self.weight.grad += dy.T @ x  # (out, N) @ (N, in)
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=0)
        return dy @ self.weight.data if input_grad else None  # (N, out) @ (out, in)

    def backward_parameters(self, dy) -> None:
        self.backward(dy, input_grad=False)

    def param_formula(self, input_shape: Shape) -> str:
        bias = " + " + str(self.out_features) if self.bias is not None else ""
        return f"{self.in_features}*{self.out_features}{bias} = {self.num_parameters():,}"

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        return self.in_features * self.out_features

    def extra_repr(self) -> str:
        bias = "" if self.bias is not None else ", bias=False"
        return f"{self.in_features}, {self.out_features}{bias}"


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), in PyTorch's (C, H, W) order so Linear weights copy across."""

    kind = "flatten"

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def forward(self, x):
        check_input(self, x, max(getattr(x, "ndim", 0), 2), what="(N, ...)")
        if grad_enabled():
            self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._take_cache())

    def receptive_field(self, field, input_shape):
        """Every unit after a Flatten feeds fully connected layers that see the whole map."""
        if len(input_shape) != 3:
            return field
        hw = (int(input_shape[1]), int(input_shape[2]))
        return field.through(hw, hw, (1, 1), Padding(0, 0, 0, 0))


class Dropout(Layer):
    """Inverted dropout: in training zero each value with probability p and scale the rest by
    1/(1-p), so evaluation is the identity. The mask comes from the shared seeded generator."""

    kind = "dropout"

    def __init__(self, p: float = 0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be a probability in [0, 1), received {p!r}")
        self.p = float(p)

    def forward(self, x):
        check_input(self, x, max(getattr(x, "ndim", 0), 1), what="(N, ...)")
        if not self.training or self.p == 0:
            if grad_enabled():
                self.cache = (None,)  # identity: nothing to keep but that forward ran
            return x
        xp = array_module(x)
        keep = rng.generator().random(x.shape) >= self.p
        mask = xp.asarray(keep, dtype=x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        if grad_enabled():
            self.cache = (mask,)
        return x * mask

    def backward(self, dy):
        mask = self._take_cache()[0]
        return dy if mask is None else dy * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
