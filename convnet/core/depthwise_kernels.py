"""A depthwise convolution's training passes, compiled (Numba), on plain (N, C, H, W) arrays.

Depthwise layers (groups = in_channels, each filter reading one channel: MobileNet's) have
only KH*KW multiply-adds per output, too few for im2col + a matrix product per group to pay
for the columns it copies (three quarters of mobilenet-mini's training step went there). Here
each pass takes one input plane at a time into a small zero-padded buffer (a few KB: it stays
in the L1 cache), stored in row and column phases so that every tap of the window, at any
stride and dilation, is one constant offset into it:

    q[(ry * SW + rx) * P + a * Wq + b] = padded[a * SH + ry, b * SW + rx]     (P = Hq * Wq)
    out[b, k, i, j] = bias[k] + sum_t q[offset_t + i * Wq + j] w[k, t]

with tap t = (u, v) at phase (u*DH % SH, v*DW % SW) and offset
((u*DH % SH) * SW + v*DW % SW) * P + (u*DH // SH) * Wq + v*DW // SW; m = out_channels /
in_channels filters read each channel. Each pass then runs one long loop over the plane's
outputs i * Wq + j (the columns j >= Wo are computed and dropped: they keep the loop long
enough to vectorize at 16 lanes), with the taps unrolled, their offsets and weights in
registers: one store an output where a loop a tap loaded and stored each output KH*KW times.
Backward is one pass for all three gradients, reading x and dy once: the weight gradient sums
dy times the same shifted planes (one sum a tap), the bias gradient dy itself, and the input
gradient, at stride 1, gathers dy times the taps' weights into each padded position (at other
strides a position takes only some taps: it adds dy times each tap's weight, a loop a tap);
the valid positions of that padded buffer are dx's plane.

Forward keeps x itself (the caller's array, no copy): nothing the size of the activation is
allocated beyond out and dx. The batch is split over the worker threads. One module per tap
count (the taps unrolled, up to MAX_UNROLLED_TAPS; larger windows loop over their taps).
Tested against PyTorch and the NumPy im2col path (tests/test_depthwise_training.py).
"""

from __future__ import annotations

import threading

import numpy

from convnet.core import kernels
from convnet.core.backend import thread_slices
from convnet.core.team import run_task

# Windows with more taps loop over them at run time (one module for all of them) instead of
# unrolling: 7x7 is MobileNet's and ConvNeXt's largest.
MAX_UNROLLED_TAPS = 49

_HEADER = '''
"""convnet's compiled depthwise training passes, {what} (written by
convnet.core.depthwise_kernels). Arrays are flat and indices unsigned (INDEX): Numba then adds
no wraparound test for negative ones. dims = (C, H, W, K, Ho, Wo, SH, SW, Wq, P, Q, m)."""
import numba
import numpy

OPTIONS = dict(nogil=True, cache=True, fastmath={{"reassoc", "contract"}})
INDEX = numba.uint64


@numba.njit(**OPTIONS)
def transfer(q, x, base, row_spans, col_spans, dims, into_q):
    """Between the plane of x starting at base and q's valid positions (row and column
    phases): into q when into_q (its padding positions are left as they are: zero), else
    back into x."""
    w_in, sh, sw, wq, plane = dims[2], dims[6], dims[7], dims[8], dims[9]
    for ry in range(sh):
        a0, y0, rows = row_spans[ry]
        for rx in range(sw):
            b0, x0, cols = col_spans[rx]
            to = (ry * sw + rx) * plane + a0 * wq + b0
            for a in range(rows):
                at = INDEX(to + a * wq)
                src = INDEX(base + (y0 + a * sh) * w_in + x0)
                if sw == 1 and into_q:  # contiguous on both sides: vectorized
                    for b in range(cols):
                        q[at + INDEX(b)] = x[src + INDEX(b)]
                elif sw == 1:
                    for b in range(cols):
                        x[src + INDEX(b)] = q[at + INDEX(b)]
                elif into_q:
                    for b in range(cols):
                        q[at + INDEX(b)] = x[src + INDEX(b * sw)]
                else:
                    for b in range(cols):
                        x[src + INDEX(b * sw)] = q[at + INDEX(b)]


@numba.njit(**OPTIONS)
def put_rows(o, out, base, out_h, out_w, wq):
    """out's plane starting at base = o (Ho, Wq) in its first Wo columns."""
    for i in range(out_h):
        at, to = INDEX(i * wq), INDEX(base + i * out_w)
        for j in range(out_w):
            out[to + INDEX(j)] = o[at + INDEX(j)]


@numba.njit(**OPTIONS)
def take_rows(dy, base, d, start, out_h, out_w, wq):
    """d[start:] (Ho, Wq) = dy's plane starting at base in its first Wo columns (the rest
    stay 0)."""
    for i in range(out_h):
        at, src = INDEX(start + i * wq), INDEX(base + i * out_w)
        for j in range(out_w):
            d[at + INDEX(j)] = dy[src + INDEX(j)]
'''

_UNROLLED = '''
TAPS = {taps}


@numba.njit(**OPTIONS)
def forward(x, w, bias, out, offsets, row_spans, col_spans, dims, b0, b1):
    """out (N, K, Ho, Wo) for images b0 <= b < b1 of x (N, C, H, W), w (K, TAPS)."""
    channels, h, w_in, k_count, out_h, out_w, sh, sw, wq, plane, size, mult = dims
    q = numpy.zeros(size, x.dtype)
    o = numpy.empty(out_h * wq, x.dtype)
{offsets}
    for b in range(b0, b1):
        for c in range(channels):
            transfer(q, x, (b * channels + c) * h * w_in, row_spans, col_spans, dims, True)
            for k in range(c * mult, (c + 1) * mult):
{weights}
                shift = bias[k]
                for p in range(out_h * wq):
                    at = INDEX(p)
                    o[at] = shift + {products}
                put_rows(o, out, (b * k_count + k) * out_h * out_w, out_h, out_w, wq)


@numba.njit(**OPTIONS)
def backward(x, dy, w, grad, bias_grad, dx, offsets, row_spans, col_spans, dims, b0, b1):
    """For images b0 <= b < b1: grad (K, TAPS) += the sum of dy times their windows,
    bias_grad (K,) += the sum of dy, and, unless dx is empty, dx (N, C, H, W) = dy times
    the filters over each window (x and dy are read once for both)."""
    channels, h, w_in, k_count, out_h, out_w, sh, sw, wq, plane, size, mult = dims
    q = numpy.zeros(size, x.dtype)
    back = numpy.empty(size, dy.dtype)
    with_dx = dx.size > 0
    # At stride 1 the input gradient gathers: back[p] = sum_t dy_plane[p - offset_t] w_t,
    # one store a position (dy's plane starts `lead` zeros into d). Other strides scatter
    # dy times each tap's weight (a loop a tap): positions of one phase take only some taps.
    gather = sh == 1 and sw == 1
    lead = INDEX(offsets.max())
    d = numpy.zeros(lead + max(plane, out_h * wq), dy.dtype)
{offsets}
{reach}
    for b in range(b0, b1):
        for c in range(channels):
            transfer(q, x, (b * channels + c) * h * w_in, row_spans, col_spans, dims, True)
            back[:] = 0
            for k in range(c * mult, (c + 1) * mult):
                take_rows(dy, (b * k_count + k) * out_h * out_w, d, lead, out_h, out_w, wq)
{zeros}
                total = d.dtype.type(0)  # not d[0] * 0: an integer 0 makes it float64
                for p in range(out_h * wq):
                    at = INDEX(p)
                    e = d[lead + at]
                    total += e
{sums}
{grads}
                bias_grad[k] += total
                if with_dx:
{weights_dx}
                    if gather:
                        for p in range(plane):
                            at = INDEX(p)
                            back[at] += {gathered}
                    else:
{scatters}
            if with_dx:
                transfer(back, dx, (b * channels + c) * h * w_in, row_spans, col_spans, dims, False)
'''

_LOOPED = '''

@numba.njit(**OPTIONS)
def forward(x, w, bias, out, offsets, row_spans, col_spans, dims, b0, b1):
    """out (N, K, Ho, Wo) for images b0 <= b < b1 of x (N, C, H, W), w (K, taps)."""
    channels, h, w_in, k_count, out_h, out_w, sh, sw, wq, plane, size, mult = dims
    taps = offsets.size
    q = numpy.zeros(size, x.dtype)
    o = numpy.empty(out_h * wq, x.dtype)
    for b in range(b0, b1):
        for c in range(channels):
            transfer(q, x, (b * channels + c) * h * w_in, row_spans, col_spans, dims, True)
            for k in range(c * mult, (c + 1) * mult):
                o[:] = bias[k]
                for t in range(taps):
                    weight, shift = w[INDEX(k * taps + t)], INDEX(offsets[t])
                    for p in range(out_h * wq):
                        o[INDEX(p)] += q[shift + INDEX(p)] * weight
                put_rows(o, out, (b * k_count + k) * out_h * out_w, out_h, out_w, wq)


@numba.njit(**OPTIONS)
def backward(x, dy, w, grad, bias_grad, dx, offsets, row_spans, col_spans, dims, b0, b1):
    """For images b0 <= b < b1: grad (K, taps) += the sum of dy times their windows,
    bias_grad (K,) += the sum of dy, and, unless dx is empty, dx (N, C, H, W) = dy times
    the filters over each window."""
    channels, h, w_in, k_count, out_h, out_w, sh, sw, wq, plane, size, mult = dims
    taps = offsets.size
    q = numpy.zeros(size, x.dtype)
    back = numpy.empty(size, dy.dtype)
    d = numpy.zeros(out_h * wq, dy.dtype)
    with_dx = dx.size > 0
    for b in range(b0, b1):
        for c in range(channels):
            transfer(q, x, (b * channels + c) * h * w_in, row_spans, col_spans, dims, True)
            back[:] = 0
            for k in range(c * mult, (c + 1) * mult):
                take_rows(dy, (b * k_count + k) * out_h * out_w, d, 0, out_h, out_w, wq)
                total = d.dtype.type(0)
                for p in range(out_h * wq):
                    total += d[INDEX(p)]
                bias_grad[k] += total
                for t in range(taps):
                    weight, shift = w[INDEX(k * taps + t)], INDEX(offsets[t])
                    total = d.dtype.type(0)  # not d[0] * 0: an integer 0 makes it float64
                    for p in range(out_h * wq):
                        total += d[INDEX(p)] * q[shift + INDEX(p)]
                    grad[INDEX(k * taps + t)] += total
                    if with_dx:
                        for p in range(out_h * wq):
                            back[shift + INDEX(p)] += d[INDEX(p)] * weight
            if with_dx:
                transfer(back, dx, (b * channels + c) * h * w_in, row_spans, col_spans, dims, False)
'''


def _indent(lines, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in lines)


def source(taps: int | None) -> str:
    """The module's source: the taps unrolled for a window of `taps` taps, or (None) looped."""
    if taps is None:
        return _HEADER.format(what="any window, the taps looped") + _LOOPED
    t = range(taps)
    weights = [f"w{i} = w[INDEX(k * TAPS + {i})]" for i in t]
    return _HEADER.format(what=f"{taps} taps unrolled") + _UNROLLED.format(
        taps=taps,
        offsets=_indent([f"s{i} = INDEX(offsets[{i}])" for i in t], 4),
        weights=_indent(weights, 16),
        weights_dx=_indent(weights, 20),
        products=" + ".join(f"q[s{i} + at] * w{i}" for i in t),
        zeros=_indent([f"g{i} = d.dtype.type(0)" for i in t], 16),
        sums=_indent([f"g{i} += e * q[s{i} + at]" for i in t], 20),
        grads=_indent([f"grad[INDEX(k * TAPS + {i})] += g{i}" for i in t], 16),
        reach=_indent([f"r{i} = lead - s{i}" for i in t], 4),
        gathered=" + ".join(f"d[r{i} + at] * w{i}" for i in t),
        scatters=_indent([f"for p in range(out_h * wq):\n{' ' * 28}"
                          f"back[s{i} + INDEX(p)] += d[lead + INDEX(p)] * w{i}" for i in t], 24))


_lock = threading.Lock()
_modules: dict = {}


class Kept:
    """What forward keeps for backward: the input x itself (N, C, H, W), contiguous."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


def _compiled(taps: int):
    """The module for windows of `taps` taps, with each pass's C-callable twin for the team
    (`convnet.core.team.run_task`)."""
    key = taps if taps <= MAX_UNROLLED_TAPS else None
    with _lock:
        if key not in _modules:
            name = "convnet_depthwise" + ("" if key is None else f"_{key}")
            tasks = (("forward", "ffffiIIinn"), ("backward", "ffffffiIIinn"))
            _modules[key] = kernels.import_source(name, kernels.with_tasks(source(key), tasks,
                                                                           "float32"))
        return _modules[key]


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
    return (bool(_modules) or macs >= kernels.MIN_LOAD_MACS) and kernels.available()


def _spans(before: int, extent: int, stride: int) -> numpy.ndarray:
    """For each phase p of an axis: (a0, x0, count): phase positions a0 .. a0+count-1 hold
    input positions x0, x0 + stride, ... (padded position a*stride + p is input position
    a*stride + p - before)."""
    spans = []
    for p in range(stride):
        first = p - before  # the input position at a = 0
        a0 = max(0, -(first // stride))
        x0 = first + a0 * stride
        spans.append((a0, x0, len(range(x0, extent, stride)) if 0 <= x0 < extent else 0))
    return numpy.array(spans, dtype=numpy.int64).reshape(stride, 3)


def _plan(layer, x_shape, out_hw, geometry):
    """(offsets, row_spans, col_spans, dims) for the kernels (see the module docstring)."""
    _, c, h, w = x_shape
    pad = geometry.padding
    (sh, sw), (dh, dw), (kh, kw) = layer.stride, layer.dilation, layer.kernel_size
    hq = -(-(h + pad.top + pad.bottom) // sh)
    wq = -(-(w + pad.left + pad.right) // sw)
    plane = hq * wq
    offsets = numpy.array([((u * dh % sh) * sw + v * dw % sw) * plane
                           + (u * dh // sh) * wq + v * dw // sw
                           for u in range(kh) for v in range(kw)], dtype=numpy.int64)
    # the last output position i * Wq + j read through the largest offset must stay inside
    size = max(sh * sw * plane, int(offsets.max()) + out_hw[0] * wq)
    dims = numpy.array([c, h, w, layer.out_channels, *out_hw, sh, sw, wq, plane, size,
                        layer.out_channels // c], dtype=numpy.int64)
    return offsets, _spans(pad.top, h, sh), _spans(pad.left, w, sw), dims


def forward(layer, x, out, geometry) -> Kept:
    """out (n, K, Ho, Wo) = the layer's convolution of x (n, C, H, W); returns what backward
    reads (x itself)."""
    x = numpy.ascontiguousarray(x)
    module = _compiled(layer.kernel_size[0] * layer.kernel_size[1])
    plan = _plan(layer, x.shape, out.shape[2:], geometry)
    w = numpy.ascontiguousarray(layer.weight.data).reshape(-1)
    bias = (numpy.zeros(layer.out_channels, x.dtype) if layer.bias is None
            else layer.bias.data)
    flat, out_flat = x.reshape(-1), out.reshape(-1)
    run_task(module.forward, module.forward_task,
             [(flat, w, bias, out_flat, *plan, part.start, part.stop)
              for part in thread_slices(x.shape[0])])
    return Kept(x)


def backward(layer, kept: Kept, dy, geometry, dx):
    """(dweight (K, 1, KH, KW), dbias (K,) or None); dx (n, C, H, W) written in place unless
    None."""
    x = kept.data
    taps = layer.kernel_size[0] * layer.kernel_size[1]
    module = _compiled(taps)
    dy = numpy.ascontiguousarray(dy)
    plan = _plan(layer, x.shape, dy.shape[2:], geometry)
    flat, dy_flat = x.reshape(-1), dy.reshape(-1)
    w = numpy.ascontiguousarray(layer.weight.data).reshape(-1)
    dx_flat = numpy.empty(0, dy.dtype) if dx is None else dx.reshape(-1)

    parts = thread_slices(dy.shape[0])
    grads = numpy.zeros((len(parts), layer.out_channels * taps), dy.dtype)  # one per part
    bias_grads = numpy.zeros((len(parts), layer.out_channels), dy.dtype)
    run_task(module.backward, module.backward_task,
             [(flat, dy_flat, w, grads[t], bias_grads[t], dx_flat, *plan, part.start, part.stop)
              for t, part in enumerate(parts)])
    # the parts' sums added row after row (NumPy sums down a column in order)
    dweight = grads.sum(axis=0).reshape(layer.weight.shape)
    dbias = None if layer.bias is None else bias_grads.sum(axis=0)
    return dweight, dbias
