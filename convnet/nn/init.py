"""Weight initialisation, drawn from the one shared generator (`convnet.core.rng`).

He/Kaiming (He et al. 2015, https://arxiv.org/abs/1502.01852) keeps activation variance
steady through ReLU layers: std = sqrt(2 / fan_in). Xavier/Glorot (Glorot & Bengio 2010)
suits tanh/sigmoid nets: uniform in +-sqrt(6 / (fan_in + fan_out)).
"""

from __future__ import annotations

import math

import numpy

from convnet.core import rng
from convnet.core.backend import default_module

SCHEMES = ("kaiming", "kaiming_uniform", "xavier", "xavier_normal", "zeros")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel) or (out, in)."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def initial_weight(shape: tuple[int, ...], scheme: str = "kaiming", dtype=numpy.float32,
                   fan: tuple[float, float] | None = None):
    """A freshly drawn weight array of `shape` by `scheme` (see SCHEMES); `fan` (fan_in,
    fan_out) for a layer whose fans are not `fans(shape)` (a transposed convolution)."""
    if scheme == "zeros":  # for weights copied in right after (an importer): no draw
        return default_module.zeros(shape, dtype=dtype)
    fan_in, fan_out = fan or fans(shape)
    generator = rng.generator()
    if scheme == "kaiming":
        values = generator.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    elif scheme == "kaiming_uniform":
        bound = math.sqrt(6.0 / fan_in)
        values = generator.uniform(-bound, bound, size=shape)
    elif scheme == "xavier":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        values = generator.uniform(-bound, bound, size=shape)
    elif scheme == "xavier_normal":
        values = generator.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
    else:
        raise ValueError(f"init: unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return default_module.asarray(values, dtype=dtype)


def apply(model, scheme: str) -> None:
    """Re-draw every conv and linear weight of `model` by `scheme`; biases to zero."""
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.init = scheme
            module.reset_parameters()
