"""Compiled passes of batch norm in training (Numba): statistics, normalisation and the
gradients, each channel's values read in as few passes as the arithmetic allows, with the
ReLU, ReLU6 or Hardtanh that follows applied in the normalising pass.

The NumPy expressions of `convnet.nn.batchnorm` make a temporary array per operation (8 passes
over the activation in forward, 10 in backward); here forward reads x twice (the mean and
variance in one pass, float64 sums about one of the channel's values; then the normalisation)
and writes the output once, and backward reads dy and x once for the two sums and once more
for dx:

    dx = k * (dy - mean(dy) - xhat * mean(dy * xhat)),  k = weight / sqrt(var + eps)

xhat = (x - mean) / sqrt(var + eps) is recomputed where it is needed rather than kept: the
layer keeps x (which the layer before it made anyway), not a new array of its size. An
activation taken in costs no pass of its own (its layer would read and write the activation
once more): the normalising pass writes its output, and ReLU's mask, which the activation
keeps for its own backward as its forward would have.

Channels are split over the worker threads. The NumPy layers stay the reference they are
tested against (tests/test_normalization.py), and take every other case (evaluation,
synchronized statistics, CuPy arrays, CONVNET_COMPILED_KERNELS=0).
"""

from __future__ import annotations

import numpy

from convnet.core import kernels
from convnet.core.backend import thread_slices
from convnet.core.team import run_task

SOURCE = '''
"""convnet's compiled batch-norm passes (written by convnet.core.batchnorm_kernels)."""
import numba

OPTIONS = dict(nogil=True, cache=True, fastmath={"reassoc", "contract"})
NONE, RELU, CLIP = 0, 1, 2  # the activation taken in after the normalisation


@numba.njit(**OPTIONS)
def statistics(x, c0, c1, mean, var):
    """Per channel c0 <= c < c1 of x (N, C, P): mean and biased variance in one pass, from
    float64 sums of d = x - x[0, c, 0] and of d * d (shifted by one of the channel's values,
    the one-pass formula keeps all that float32 data holds)."""
    n, _, p = x.shape
    count = n * p
    for c in range(c0, c1):
        shift = 1.0 * x[0, c, 0]
        total = 0.0
        squares = 0.0
        for b in range(n):
            for q in range(p):
                d = x[b, c, q] - shift
                total += d
                squares += d * d
        m = total / count
        v = squares / count - m * m
        mean[c] = shift + m
        var[c] = 0.0 if v < 0.0 else v  # a rounding below 0 is 0; NaN stays NaN


@numba.njit(**OPTIONS)
def normalise(x, c0, c1, mean, scale, bias, kind, low, high, out, positive):
    """out = activation((x - mean) * scale + bias) per channel, in x's dtype: none (kind NONE),
    ReLU's (RELU: 0 where the value is <= 0, NaN passing; positive = not value <= 0, the mask
    ReLU's backward reads) or Hardtanh's (CLIP: NumPy's clip to [low, high], NaN passing)."""
    n, _, p = x.shape
    zero, low, high = x.dtype.type(0), x.dtype.type(low), x.dtype.type(high)
    for c in range(c0, c1):
        m, a, t = x.dtype.type(mean[c]), x.dtype.type(scale[c]), x.dtype.type(bias[c])
        if kind == RELU:
            for b in range(n):
                for q in range(p):
                    v = (x[b, c, q] - m) * a + t
                    off = v <= zero
                    out[b, c, q] = zero if off else v
                    positive[b, c, q] = not off
        elif kind == CLIP:
            for b in range(n):
                for q in range(p):
                    v = (x[b, c, q] - m) * a + t
                    w = v if v >= low else low
                    w = w if w <= high else high
                    out[b, c, q] = v if v != v else w
        else:
            for b in range(n):
                for q in range(p):
                    out[b, c, q] = (x[b, c, q] - m) * a + t


@numba.njit(**OPTIONS)
def gradient_sums(dy, x, c0, c1, mean, inv_std, sum_dy, sum_dy_xhat, masked, positive):
    """Per channel: sum(dy) and sum(dy * xhat), xhat = (x - mean) * inv_std (float64 sums).
    masked: dy is the gradient of a ReLU after the normalisation, its backward taken in: dy
    where positive (its mask), else 0 (its own backward's select)."""
    n, _, p = dy.shape
    zero = dy.dtype.type(0)
    for c in range(c0, c1):
        m = mean[c]
        a = 0.0
        d = 0.0
        for b in range(n):
            for q in range(p):
                g = dy[b, c, q]
                if masked:  # (the same all the call long: LLVM takes it out of the loop)
                    g = g if positive[b, c, q] else zero
                a += g
                d += g * (x[b, c, q] - m)
        sum_dy[c] = a
        sum_dy_xhat[c] = d * inv_std[c]


@numba.njit(**OPTIONS)
def input_gradient(dy, x, c0, c1, mean, scale, slope, shift, dx, masked, positive):
    """dx = scale * dy + slope * (x - mean) + shift, per channel (dy masked as in
    gradient_sums)."""
    n, _, p = dy.shape
    zero = dy.dtype.type(0)
    for c in range(c0, c1):
        k, u, v, m = scale[c], slope[c], shift[c], mean[c]
        for b in range(n):
            for q in range(p):
                g = dy[b, c, q]
                if masked:
                    g = g if positive[b, c, q] else zero
                dx[b, c, q] = k * g + u * (x[b, c, q] - m) + v
'''

# Each pass's C-callable twin for the team (`convnet.core.team.run_task`), in a module per
# dtype: the passes themselves are compiled for the dtype their first call brings.
_TASKS = [("statistics", "f3nndd"), ("normalise", "f3nndddnssf3b3"),
          ("gradient_sums", "f3f3nnddddnb3"), ("input_gradient", "f3f3nnddddf3nb3")]
_compiled = kernels.loader_per_dtype("convnet_batchnorm", SOURCE, _TASKS)

# The activations the passes take in after the normalisation, as (kind, low, high); the kinds
# are `SOURCE`'s NONE, RELU, CLIP.
NONE, RELU, CLIP = 0, 1, 2
NO_ACTIVATION = (NONE, 0.0, 0.0)


def relu() -> tuple[int, float, float]:
    return (RELU, 0.0, 0.0)


def clip(low: float, high: float) -> tuple[int, float, float]:
    """Hardtanh's (ReLU6's): NumPy's clip to [low, high]."""
    return (CLIP, float(low), float(high))


def usable(x) -> bool:
    """Whether these passes take x: float32 or float64 NumPy (N, C, H, W), kernels on."""
    return (type(x) is numpy.ndarray and x.ndim == 4 and x.dtype in (numpy.float32, numpy.float64)
            and kernels.available())


def _channel_chunks(channels: int, values: int) -> list[slice]:
    """Channel ranges for the worker threads (one range for small activations)."""
    return thread_slices(channels, None if values >= 1 << 16 else 1)


def forward(x, weight, bias, eps: float, activation=NO_ACTIVATION):
    """x (N, C, H, W) -> (out, positive, mean, var, inv_std): batch statistics (biased variance,
    all float64); out = activation(xhat * weight + bias) in x's dtype (`activation`: relu(),
    clip(low, high) or NO_ACTIVATION), and for relu() the mask its backward reads (else None).
    Backward takes x again (not xhat: one array fewer to write and keep)."""
    module = _compiled(x.dtype)
    x3 = numpy.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
    c = x.shape[1]
    mean, var = numpy.empty(c), numpy.empty(c)
    chunks = _channel_chunks(c, x.size)
    run_task(module.statistics, module.statistics_task,
             [(x3, r.start, r.stop, mean, var) for r in chunks])
    inv_std = 1.0 / numpy.sqrt(var + eps)
    scale = inv_std if weight is None else inv_std * weight.astype(numpy.float64)
    shift = numpy.zeros(c) if bias is None else bias.astype(numpy.float64)
    out = numpy.empty_like(x3)
    with_mask = activation[0] == RELU
    positive = numpy.empty(x3.shape if with_mask else (1, 1, 1), dtype=bool)
    run_task(module.normalise, module.normalise_task,
             [(x3, r.start, r.stop, mean, scale, shift, *activation, out, positive)
              for r in chunks])
    return (out.reshape(x.shape), positive.reshape(x.shape) if with_mask else None, mean, var,
            inv_std)


def backward(dy, x, weight, mean, inv_std, positive=None):
    """(dx, sum(dy), sum(dy * xhat)) per channel, for batch statistics mean, inv_std
    (float64) of x. positive: the mask of a ReLU after the normalisation whose backward is
    taken in (dy is then the ReLU's output gradient; dy where positive, else 0, is used)."""
    module = _compiled(x.dtype)
    x3 = numpy.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
    dy3 = numpy.ascontiguousarray(dy, dtype=x.dtype).reshape(x3.shape)
    n, c, p = dy3.shape
    masked = positive is not None
    mask = positive.reshape(x3.shape) if masked else numpy.zeros((1, 1, 1), bool)
    chunks = _channel_chunks(c, dy3.size)
    sum_dy, sum_dy_xhat = numpy.empty(c), numpy.empty(c)
    run_task(module.gradient_sums, module.gradient_sums_task,
             [(dy3, x3, r.start, r.stop, mean, inv_std, sum_dy, sum_dy_xhat, int(masked), mask)
              for r in chunks])
    count = n * p
    k = inv_std * (1.0 if weight is None else weight.astype(numpy.float64))
    slope = -k * inv_std * sum_dy_xhat / count  # times (x - mean): xhat's factor inv_std
    shift = -k * sum_dy / count
    dx = numpy.empty_like(dy3)
    run_task(module.input_gradient, module.input_gradient_task,
             [(dy3, x3, r.start, r.stop, mean, k, slope, shift, dx, int(masked), mask)
              for r in chunks])
    return dx.reshape(dy.shape), sum_dy, sum_dy_xhat
