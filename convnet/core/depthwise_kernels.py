"""A depthwise convolution's training passes, compiled (Numba), on plain (N, C, H, W) arrays.

Depthwise layers (groups = in_channels, each filter reading one channel: MobileNet's) have
only KH*KW multiply-adds per output, too few for im2col + a matrix product per group to pay
for the columns it copies (three quarters of mobilenet-mini's training step went there). Here
each pass walks an image's planes row by row over a zero-padded copy of the input, the inner
loop along the output row (contiguous at stride 1, so LLVM vectorizes it):

    out[b, k, i, j] = bias[k] + sum_(u, v) x[b, k // m, i*SH + u*DH, j*SW + v*DW] w[k, u, v]

with m = out_channels / in_channels filters per channel. The weight gradient sums dy times the
same windows (each thread its own images and its own sum); the input gradient adds dy times
the filter back onto a padded zero buffer, whose interior is dx. The batch is split over the
worker threads. Tested against PyTorch and the NumPy im2col path (tests/test_depthwise_training.py).
"""

from __future__ import annotations

import threading

import numpy

from convnet.core import kernels
from convnet.core.backend import run_chunks, thread_slices

SOURCE = '''
"""convnet's compiled depthwise training passes (written by convnet.core.depthwise_kernels).
Arrays are flat and indices unsigned (INDEX): Numba then adds no wraparound test for
negative ones, which kept the row loops from vectorizing. Padded inputs are stored in column
phases (each row's columns p, p + SW, p + 2 SW, ... together), so that every inner loop reads
and writes consecutive values at any stride."""
import numba

OPTIONS = dict(nogil=True, cache=True, fastmath={"reassoc", "contract"})
INDEX = numba.uint64


@numba.njit(**OPTIONS)
def forward(xp, w, bias, out, shape, taps, b0, b1, sh, sw, dh, dw, mult):
    """out (N, K, Ho, Wo) for images b0 <= b < b1 from the padded input xp in column phases
    (N, C, Hp, SW, Wp / SW), w (K, KH, KW); shape = (C, Hp, Wp, K, Ho, Wo, KH, KW)."""
    # taps[v]: where column tap v of a window starts in its row of phases (no division here:
    # a 64-bit division per tap cost more than the tap's multiply-adds)
    channels, hp, wp, k_count, out_h, out_w, kh, kw = shape
    for b in range(b0, b1):
        for k in range(k_count):
            c = k // mult
            shift = bias[k]
            for i in range(out_h):
                o = INDEX(((b * k_count + k) * out_h + i) * out_w)
                for j in range(out_w):
                    out[o + INDEX(j)] = shift
                for u in range(kh):
                    row = ((b * channels + c) * hp + i * sh + u * dh) * wp
                    for v in range(kw):
                        weight = w[INDEX((k * kh + u) * kw + v)]
                        at = INDEX(row + taps[v])
                        for j in range(out_w):
                            out[o + INDEX(j)] += xp[at + INDEX(j)] * weight


@numba.njit(**OPTIONS)
def weight_grad(xp, dy, grad, shape, taps, b0, b1, sh, sw, dh, dw, mult):
    """grad (K, KH, KW) += the images b0 <= b < b1's sum of dy times their windows."""
    # taps[v]: where column tap v of a window starts in its row of phases (no division here:
    # a 64-bit division per tap cost more than the tap's multiply-adds)
    channels, hp, wp, k_count, out_h, out_w, kh, kw = shape
    for b in range(b0, b1):
        for k in range(k_count):
            c = k // mult
            for u in range(kh):
                for v in range(kw):
                    total = grad[0] * 0
                    for i in range(out_h):
                        d = INDEX(((b * k_count + k) * out_h + i) * out_w)
                        at = INDEX(((b * channels + c) * hp + i * sh + u * dh) * wp + taps[v])
                        for j in range(out_w):
                            total += dy[d + INDEX(j)] * xp[at + INDEX(j)]
                    grad[INDEX((k * kh + u) * kw + v)] += total


@numba.njit(**OPTIONS)
def input_grad(dy, w, dxp, shape, taps, b0, b1, sh, sw, dh, dw, mult):
    """dxp (N, C, Hp, SW, Wp / SW), column phases as xp, zero before: += dy times the
    filters over each window."""
    # taps[v]: where column tap v of a window starts in its row of phases (no division here:
    # a 64-bit division per tap cost more than the tap's multiply-adds)
    channels, hp, wp, k_count, out_h, out_w, kh, kw = shape
    for b in range(b0, b1):
        for k in range(k_count):
            c = k // mult
            for i in range(out_h):
                d = INDEX(((b * k_count + k) * out_h + i) * out_w)
                for u in range(kh):
                    row = ((b * channels + c) * hp + i * sh + u * dh) * wp
                    for v in range(kw):
                        weight = w[INDEX((k * kh + u) * kw + v)]
                        at = INDEX(row + taps[v])
                        for j in range(out_w):
                            dxp[at + INDEX(j)] += dy[d + INDEX(j)] * weight
'''

_lock = threading.Lock()
_module = []


class Kept:
    """What forward keeps for backward: the zero-padded input in column phases
    (N, C, Hp, SW, Wq / SW)."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


def _compiled():
    with _lock:
        if not _module:
            _module.append(kernels.import_source("convnet_depthwise", SOURCE))
        return _module[0]


def usable(layer, x) -> bool:
    """Whether a Conv2d's training passes on x run here: depthwise (groups = in_channels, a
    whole number of filters per channel), float32 NumPy input and weights, the kernels on and
    loaded or worth loading (`convnet.core.kernels.MIN_LOAD_MACS`)."""
    if not (layer.groups == layer.in_channels > 1
            and layer.out_channels % layer.in_channels == 0
            and type(x) is numpy.ndarray and x.dtype == numpy.float32 and x.ndim == 4
            and layer.weight.data.dtype == numpy.float32):
        return False
    macs = x.size * layer.kernel_size[0] * layer.kernel_size[1] * (
        layer.out_channels // layer.in_channels)
    return (bool(_module) or macs >= kernels.MIN_LOAD_MACS) and kernels.available()


def _window(layer) -> tuple[int, int, int, int, int]:
    return (*layer.stride, *layer.dilation, layer.out_channels // layer.in_channels)


def _shape(layer, xp, out_hw) -> numpy.ndarray:
    """(C, Hp, Wq, K, Ho, Wo, KH, KW), as the kernels take it (xp in column phases)."""
    n, c, hp, sw, pw = xp.shape
    return numpy.array([c, hp, sw * pw, layer.out_channels, *out_hw, *layer.kernel_size],
                       dtype=numpy.int64)


def _taps(layer, xp) -> numpy.ndarray:
    """Where column tap v starts in a row of column phases: phase (v*DW) % SW, then
    (v*DW) // SW along it."""
    sw, pw = xp.shape[3], xp.shape[4]
    t = numpy.arange(layer.kernel_size[1]) * layer.dilation[1]
    return (t % sw * pw + t // sw).astype(numpy.int64)


def _phase_columns(padding, width: int, stride_w: int):
    """For each phase p: (q0, x0, count): phase columns q0 .. q0+count-1 hold input columns
    x0, x0 + SW, ... (padded column q*SW + p is input column q*SW + p - left)."""
    spans = []
    for p in range(stride_w):
        first = p - padding.left  # the input column at q = 0
        q0 = max(0, -(first // stride_w))
        x0 = first + q0 * stride_w
        spans.append((q0, x0, len(range(x0, width, stride_w)) if 0 <= x0 < width else 0))
    return spans


def _phases(x, padding, stride_w: int):
    """(N, C, H, W) -> zero-padded, in column phases: (N, C, Hp, SW, Wq / SW), [.., p, q] =
    padded column q*SW + p (Wq: Wp rounded up to a multiple of SW, zeros past Wp); one
    strided copy per phase."""
    n, c, h, w = x.shape
    hp = h + padding.top + padding.bottom
    pw = -(-(w + padding.left + padding.right) // stride_w)
    data = numpy.zeros((n, c, hp, stride_w, pw), x.dtype)
    rows = slice(padding.top, padding.top + h)
    for p, (q0, x0, count) in enumerate(_phase_columns(padding, w, stride_w)):
        if count:
            data[:, :, rows, p, q0 : q0 + count] = x[:, :, :, x0 :: stride_w]
    return data


def _from_phases(data, padding, out) -> None:
    """out (N, C, H, W) = the interior of a padded array in column phases."""
    h, w = out.shape[2:]
    stride_w = data.shape[3]
    rows = slice(padding.top, padding.top + h)
    for p, (q0, x0, count) in enumerate(_phase_columns(padding, w, stride_w)):
        if count:
            out[:, :, :, x0 :: stride_w] = data[:, :, rows, p, q0 : q0 + count]


def forward(layer, x, out, geometry) -> Kept:
    """out (n, K, Ho, Wo) = the layer's convolution of x (n, C, H, W); returns the padded
    copy of x that backward reads."""
    module = _compiled()
    xp = _phases(x, geometry.padding, layer.stride[1])
    w = numpy.ascontiguousarray(layer.weight.data).reshape(-1)
    bias = (numpy.zeros(layer.out_channels, x.dtype) if layer.bias is None
            else layer.bias.data)
    window, shape = _window(layer), _shape(layer, xp, out.shape[2:])
    flat, out_flat = xp.reshape(-1), out.reshape(-1)
    taps = _taps(layer, xp)
    run_chunks(lambda part: module.forward(flat, w, bias, out_flat, shape, taps, part.start,
                                           part.stop, *window), thread_slices(x.shape[0]))
    return Kept(xp)


def backward(layer, kept: Kept, dy, geometry, dx):
    """(dweight (K, 1, KH, KW), dbias (K,) or None); dx (n, C, H, W) written in place unless
    None."""
    module = _compiled()
    xp = kept.data
    dy = numpy.ascontiguousarray(dy)
    k, kh, kw = layer.out_channels, *layer.kernel_size
    window = _window(layer)
    parts = thread_slices(dy.shape[0])

    shape, taps = _shape(layer, xp, dy.shape[2:]), _taps(layer, xp)
    flat, dy_flat = xp.reshape(-1), dy.reshape(-1)

    def weight_part(part):
        grad = numpy.zeros(k * kh * kw, dy.dtype)
        module.weight_grad(flat, dy_flat, grad, shape, taps, part.start, part.stop, *window)
        return grad

    dweight = sum(run_chunks(weight_part, parts)).reshape(k, 1, kh, kw)
    dbias = None if layer.bias is None else dy.sum(axis=(0, 2, 3))
    if dx is not None:
        w = numpy.ascontiguousarray(layer.weight.data).reshape(-1)
        dxp = numpy.zeros(xp.shape, dy.dtype)
        dxp_flat = dxp.reshape(-1)
        run_chunks(lambda part: module.input_grad(dy_flat, w, dxp_flat, shape, taps,
                                                  part.start, part.stop, *window), parts)
        _from_phases(dxp, geometry.padding, dx)
    return dweight, dbias
