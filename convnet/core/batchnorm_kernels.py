"""Compiled passes of batch norm in training (Numba): statistics, normalisation and the
gradients, each channel's values read in as few passes as the arithmetic allows.

The NumPy expressions of `convnet.nn.batchnorm` make a temporary array per operation (8 passes
over the activation in forward, 10 in backward); here forward reads x twice (the mean, then
the variance about it, summed in float64 as NumPy's two-pass variance) and writes the output
in a third, and backward reads dy and x once for the two sums and once more for dx:

    dx = k * (dy - mean(dy) - xhat * mean(dy * xhat)),  k = weight / sqrt(var + eps)

xhat = (x - mean) / sqrt(var + eps) is recomputed where it is needed rather than kept: the
layer keeps x (which the layer before it made anyway), not a new array of its size.

Channels are split over the worker threads. The NumPy layer stays the reference they are tested
against (tests/test_normalization.py), and takes every other case (evaluation, synchronized
statistics, CuPy arrays, CONVNET_COMPILED_KERNELS=0).
"""

from __future__ import annotations

import numpy

from convnet.core import kernels
from convnet.core.backend import thread_slices
from convnet.core.team import run_task

SOURCE = '''
"""convnet's compiled batch-norm passes (written by convnet.core.batchnorm_kernels)."""
import numba
import numpy

OPTIONS = dict(nogil=True, cache=True, fastmath={"reassoc", "contract"})


@numba.njit(**OPTIONS)
def statistics(x, c0, c1, mean, var):
    """Per channel c0 <= c < c1 of x (N, C, P): mean and biased variance (float64 sums)."""
    n, _, p = x.shape
    count = n * p
    for c in range(c0, c1):
        total = 0.0
        for b in range(n):
            for q in range(p):
                total += x[b, c, q]
        m = total / count
        squares = 0.0
        for b in range(n):
            for q in range(p):
                d = x[b, c, q] - m
                squares += d * d
        mean[c] = m
        var[c] = squares / count


@numba.njit(**OPTIONS)
def normalise(x, c0, c1, mean, inv_std, weight, bias, out):
    """out = (x - mean) * inv_std * weight + bias, per channel."""
    n, _, p = x.shape
    for c in range(c0, c1):
        m, s, w, t = mean[c], inv_std[c], weight[c], bias[c]
        for b in range(n):
            for q in range(p):
                out[b, c, q] = (x[b, c, q] - m) * s * w + t


@numba.njit(**OPTIONS)
def gradient_sums(dy, x, c0, c1, mean, inv_std, sum_dy, sum_dy_xhat):
    """Per channel: sum(dy) and sum(dy * xhat), xhat = (x - mean) * inv_std (float64 sums)."""
    n, _, p = dy.shape
    for c in range(c0, c1):
        m = mean[c]
        a = 0.0
        d = 0.0
        for b in range(n):
            for q in range(p):
                g = dy[b, c, q]
                a += g
                d += g * (x[b, c, q] - m)
        sum_dy[c] = a
        sum_dy_xhat[c] = d * inv_std[c]


@numba.njit(**OPTIONS)
def input_gradient(dy, x, c0, c1, mean, scale, slope, shift, dx):
    """dx = scale * dy + slope * (x - mean) + shift, per channel."""
    n, _, p = dy.shape
    for c in range(c0, c1):
        k, u, v, m = scale[c], slope[c], shift[c], mean[c]
        for b in range(n):
            for q in range(p):
                dx[b, c, q] = k * dy[b, c, q] + u * (x[b, c, q] - m) + v
'''

# Each pass's C-callable twin for the team (`convnet.core.team.run_task`), in a module per
# dtype: the passes themselves are compiled for the dtype their first call brings.
_TASKS = [("statistics", "f3nndd"), ("normalise", "f3nnddddf3"), ("gradient_sums", "f3f3nndddd"),
          ("input_gradient", "f3f3nnddddf3")]
_compiled = kernels.loader_per_dtype("convnet_batchnorm", SOURCE, _TASKS)


def usable(x) -> bool:
    """Whether these passes take x: float32 or float64 NumPy (N, C, H, W), kernels on."""
    return (type(x) is numpy.ndarray and x.ndim == 4 and x.dtype in (numpy.float32, numpy.float64)
            and kernels.available())


def _channel_chunks(channels: int, values: int) -> list[slice]:
    """Channel ranges for the worker threads (one range for small activations)."""
    return thread_slices(channels, None if values >= 1 << 16 else 1)


def forward(x, weight, bias, eps: float):
    """x (N, C, H, W) -> (out, mean, var, inv_std): batch statistics (biased variance, all
    float64) and out in x's dtype. Backward takes x again (not xhat: one array fewer to
    write and keep)."""
    module = _compiled(x.dtype)
    x3 = numpy.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
    c = x.shape[1]
    mean, var = numpy.empty(c), numpy.empty(c)
    chunks = _channel_chunks(c, x.size)
    run_task(module.statistics, module.statistics_task,
             [(x3, r.start, r.stop, mean, var) for r in chunks])
    inv_std = 1.0 / numpy.sqrt(var + eps)
    out = numpy.empty_like(x3)
    w = numpy.ones(c) if weight is None else weight.astype(numpy.float64)
    b = numpy.zeros(c) if bias is None else bias.astype(numpy.float64)
    run_task(module.normalise, module.normalise_task,
             [(x3, r.start, r.stop, mean, inv_std, w, b, out) for r in chunks])
    return out.reshape(x.shape), mean, var, inv_std


def backward(dy, x, weight, mean, inv_std):
    """(dx, sum(dy), sum(dy * xhat)) per channel, for batch statistics mean, inv_std
    (float64) of x."""
    module = _compiled(x.dtype)
    x3 = numpy.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
    dy3 = numpy.ascontiguousarray(dy, dtype=x.dtype).reshape(x3.shape)
    n, c, p = dy3.shape
    chunks = _channel_chunks(c, dy3.size)
    sum_dy, sum_dy_xhat = numpy.empty(c), numpy.empty(c)
    run_task(module.gradient_sums, module.gradient_sums_task,
             [(dy3, x3, r.start, r.stop, mean, inv_std, sum_dy, sum_dy_xhat) for r in chunks])
    count = n * p
    k = inv_std * (1.0 if weight is None else weight.astype(numpy.float64))
    slope = -k * inv_std * sum_dy_xhat / count  # times (x - mean): xhat's factor inv_std
    shift = -k * sum_dy / count
    dx = numpy.empty_like(dy3)
    run_task(module.input_gradient, module.input_gradient_task,
             [(dy3, x3, r.start, r.stop, mean, k, slope, shift, dx) for r in chunks])
    return dx.reshape(dy.shape), sum_dy, sum_dy_xhat
