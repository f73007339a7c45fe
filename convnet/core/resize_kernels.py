"""Resize (Upsample) in training, compiled (Numba): each output pixel mixes two input rows and
two columns with the weights of the layer's interpolation plan (nearest: copies one pixel),
and backward applies that map's transpose.

`convnet.nn.resize.Resize`'s NumPy path multiplies every plane by the plan's (out, in)
matrices, mostly zeros, through BLAS: fcn-mini's x2 upsampling of 11 maps of 32 x 32 at batch
32 took 3.4 ms forward and 2.6 backward on one thread. Here linear mixes the two input rows
of an output row first (one pass along the row), then each output pixel's two columns of that
mix; backward spreads each output row's gradient over its two columns, then adds it into its
two input rows. Images are split over the worker threads. The NumPy layer stays the reference
these are tested against (tests/test_resize.py) and takes every other case (float64, CuPy
arrays, CONVNET_COMPILED_KERNELS=0, small inputs before Numba is loaded).
"""

from __future__ import annotations

import threading

import numpy

from convnet.core import kernels
from convnet.core.backend import run_chunks, sample_chunks

SOURCE = '''
"""convnet's compiled resize passes (written by convnet.core.resize_kernels)."""
import numba
import numpy

OPTIONS = dict(nogil=True, cache=True)
INDEX = numba.uint64  # unsigned indices: no checks for negative ones


@numba.njit(**OPTIONS)
def forward(x, out, rows, row_weights, cols, col_weights, nearest, b0, b1):
    """out (N, C, Ho, Wo), images b0 <= b < b1: pixel (i, j) = the rows rows[2i], rows[2i + 1]
    weighed row_weights[2i], [2i + 1], then the columns cols[2j], cols[2j + 1] likewise, of x
    (N, C, H, W); nearest: x at (rows[2i], cols[2j])."""
    _, channels, h, w = x.shape
    _, _, out_h, out_w = out.shape
    flat, target = x.reshape(-1), out.reshape(-1)
    mixed = numpy.empty(w, dtype=x.dtype)  # one output row's mix of its two input rows
    for b in range(b0, b1):
        for c in range(channels):
            plane = INDEX((b * channels + c) * h * w)
            o = INDEX((b * channels + c) * out_h * out_w)
            for i in range(out_h):
                top = plane + INDEX(rows[2 * i] * w)
                if nearest:
                    for j in range(out_w):
                        target[o + INDEX(j)] = flat[top + INDEX(cols[2 * j])]
                    o += INDEX(out_w)
                    continue
                bottom = plane + INDEX(rows[2 * i + 1] * w)
                u0, u1 = row_weights[2 * i], row_weights[2 * i + 1]
                for t in range(w):
                    mixed[t] = u0 * flat[top + INDEX(t)] + u1 * flat[bottom + INDEX(t)]
                for j in range(out_w):
                    target[o + INDEX(j)] = (col_weights[2 * j] * mixed[INDEX(cols[2 * j])]
                                            + col_weights[2 * j + 1]
                                            * mixed[INDEX(cols[2 * j + 1])])
                o += INDEX(out_w)


@numba.njit(**OPTIONS)
def backward(dy, dx, rows, row_weights, cols, col_weights, b0, b1):
    """dx (N, C, H, W) = forward's map transposed, applied to dy (N, C, Ho, Wo), images
    b0 <= b < b1 (dx zeroed first; nearest's plan has weights 1 and 0)."""
    _, channels, h, w = dx.shape
    _, _, out_h, out_w = dy.shape
    flat, gradient = dx.reshape(-1), dy.reshape(-1)
    spread = numpy.empty(w, dtype=dy.dtype)  # one output row's gradient over the input columns
    for b in range(b0, b1):
        for c in range(channels):
            plane = INDEX((b * channels + c) * h * w)
            o = INDEX((b * channels + c) * out_h * out_w)
            for t in range(h * w):
                flat[plane + INDEX(t)] = 0
            for i in range(out_h):
                spread[:] = 0
                for j in range(out_w):
                    g = gradient[o + INDEX(j)]
                    spread[INDEX(cols[2 * j])] += col_weights[2 * j] * g
                    spread[INDEX(cols[2 * j + 1])] += col_weights[2 * j + 1] * g
                o += INDEX(out_w)
                top = plane + INDEX(rows[2 * i] * w)
                bottom = plane + INDEX(rows[2 * i + 1] * w)
                u0, u1 = row_weights[2 * i], row_weights[2 * i + 1]
                for t in range(w):
                    flat[top + INDEX(t)] += u0 * spread[t]
                for t in range(w):
                    flat[bottom + INDEX(t)] += u1 * spread[t]
'''

# Loading Numba and this module costs a fraction of a second once per process: an activation
# smaller than this many values stays on NumPy until something has loaded it.
MIN_LOAD_VALUES = 1 << 18

_lock = threading.Lock()
_module = None


def _compiled():
    """The module: compiled once per machine, loaded once per process."""
    global _module
    with _lock:
        if _module is None:
            _module = kernels.import_source("convnet_resize", SOURCE)
        return _module


def usable(x) -> bool:
    """Whether these passes take x: float32 NumPy (N, C, H, W), the kernels on, and x large
    enough to be worth loading them for."""
    return (type(x) is numpy.ndarray and x.ndim == 4 and x.dtype == numpy.float32
            and (_module is not None or x.size >= MIN_LOAD_VALUES) and kernels.available())


def forward(x, taps, out_hw, nearest: bool):
    """x (N, C, H, W) float32 -> (N, C, Ho, Wo); taps: (rows, row weights, cols, col weights),
    two of each per output row and column (`two_taps`)."""
    module = _compiled()
    x = numpy.ascontiguousarray(x)
    out = numpy.empty((*x.shape[:2], *out_hw), dtype=x.dtype)
    run_chunks(lambda part: module.forward(x, out, *taps, nearest, part.start, part.stop),
               sample_chunks(x))
    return out


def backward(dy, taps, x_shape):
    """dx (x_shape) from the output gradient dy."""
    module = _compiled()
    dy = numpy.ascontiguousarray(dy)
    dx = numpy.empty(x_shape, dtype=dy.dtype)
    run_chunks(lambda part: module.backward(dy, dx, *taps, part.start, part.stop),
               sample_chunks(dx))
    return dx


def two_taps(index=None, matrix=None) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(indices int64, weights float32), each (out * 2,): the two input pixels each output
    pixel reads along one axis and their weights, from a Resize plan's nearest `index` (out,)
    (the pixel twice, weights 1 and 0) or linear `matrix` (out, in) (its row's nonzero
    columns, of which there are at most two)."""
    if index is not None:
        weights = numpy.tile(numpy.array([1, 0], numpy.float32), len(index))
        return numpy.repeat(numpy.asarray(index, numpy.int64), 2), weights
    out_len = matrix.shape[0]
    low = numpy.argmax(matrix != 0, axis=1)
    high = matrix.shape[1] - 1 - numpy.argmax(matrix[:, ::-1] != 0, axis=1)
    rows = numpy.arange(out_len)
    weights = numpy.stack([matrix[rows, low], numpy.where(high > low, matrix[rows, high], 0)],
                          axis=1).astype(numpy.float32)
    return numpy.stack([low, high], axis=1).astype(numpy.int64).reshape(-1), weights.reshape(-1)
