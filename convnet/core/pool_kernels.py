"""Max pooling in training, compiled (Numba): one pass over each window for the maximum and
the number of its winning tap, one scatter of the output gradient to those taps.

`convnet.nn.pooling.MaxPool2d`'s NumPy path walks the taps as strided slices in two separable
stages, each keeping a uint8 index array, and its backward routes through both stages: about
ten passes over the activation where these kernels make one (forward) and two (backward: the
zeroed input gradient, then the scatter). The tap number is u * KW + v of the window's first
maximum in row-major order, a later tap winning only when strictly greater (PyTorch's tie
rule); a window holding a NaN gives NaN (as NumPy's maximum and PyTorch do; its gradient
goes to the largest other tap). A padded input is read through a copy of each plane framed
with -inf, which never wins (as on the NumPy path). One module per window
size, with KH and KW constants the compiler unrolls (a loop over a window size given at run
time measured 2-9x slower), compiled once per machine; a uint8 tap number keeps windows to
256 taps.

Images are split over the worker threads. The NumPy layer stays the reference these are
tested against (tests/test_fast_paths.py), and takes every other case (CuPy arrays, other
dtypes, CONVNET_COMPILED_KERNELS=0, small inputs before Numba is loaded).
"""

from __future__ import annotations

import threading

import numpy

from convnet.core import kernels
from convnet.core.backend import sample_chunks
from convnet.core.blocked import LANES, blocks  # (the kernel's c >> 3 and c & 7)
from convnet.core.team import run_task

SOURCE = '''
"""convnet's compiled max-pool passes for KHxKW windows (written by convnet.core.pool_kernels)."""
import numba
import numpy

OPTIONS = dict(nogil=True, cache=True)
KH, KW = {kh}, {kw}  # constants: the compiler unrolls the window
INDEX = numba.uint64  # unsigned indices: no checks for negative ones


@numba.njit(**OPTIONS)
def max_forward(x, out, taps, b0, b1, sh, sw, top, left):
    """out (N, C, Ho, Wo) = each window's maximum of x (N, C, H, W) (NaN where it holds a
    NaN), taps = the number u * KW + v of its first maximum, for images b0 <= b < b1; the
    window of output (i, j) starts at row i * sh - top, column j * sw - left."""
    _, channels, h, w = x.shape
    _, _, out_h, out_w = out.shape
    nan_value = x.dtype.type(numpy.nan)
    rows, cols = (out_h - 1) * sh + KH, (out_w - 1) * sw + KW  # what the windows reach
    padded = top > 0 or left > 0 or rows > h or cols > w
    # a padded plane: -inf around x (never wins), so every window is read the same way
    frame = numpy.full((rows, cols), -numpy.inf, dtype=x.dtype)
    inside_h, inside_w = min(h, rows - top), min(w, cols - left)
    for b in range(b0, b1):
        for c in range(channels):
            if padded:
                frame[top : top + inside_h, left : left + inside_w] = x[b, c, :inside_h,
                                                                        :inside_w]
                plane = frame
            else:
                plane = x[b, c]
            for i in range(out_h):
                r0 = i * sh
                out_row, tap_row = out[b, c, i], taps[b, c, i]
                for j in range(out_w):  # unrolled, with selects where branches would
                    c0 = j * sw  # follow the random winners
                    best = plane[INDEX(r0), INDEX(c0)]
                    tap = 0
                    nan = False
                    for u in range(KH):
                        for v in range(KW):
                            value = plane[INDEX(r0 + u), INDEX(c0 + v)]
                            wins = value > best
                            best = value if wins else best
                            tap = u * KW + v if wins else tap
                            nan |= value != value
                    out_row[INDEX(j)] = nan_value if nan else best
                    tap_row[INDEX(j)] = tap


@numba.njit(inline="always")
def winner(i, j, tap, sh, sw, top, left):
    """(row, column) of the input pixel that tap number `tap` of output (i, j)'s window reads."""
    return i * sh - top + tap // KW, j * sw - left + tap % KW


@numba.njit(**OPTIONS)
def max_backward(dy, taps, dx, b0, b1, sh, sw, top, left):
    """dx (N, C, H, W) = the sum of the output gradients dy (N, C, Ho, Wo) sent to each
    window's winning tap, for images b0 <= b < b1 (dx zeroed first)."""
    _, channels, h, w = dx.shape
    _, _, out_h, out_w = dy.shape
    for b in range(b0, b1):
        for c in range(channels):
            plane = dx[b, c]
            plane[:] = 0
            for i in range(out_h):
                gradients, tap_row = dy[b, c, i], taps[b, c, i]
                for j in range(out_w):
                    r, q = winner(i, j, tap_row[INDEX(j)], sh, sw, top, left)
                    if r >= 0 and r < h and q >= 0 and q < w:
                        plane[INDEX(r), INDEX(q)] += gradients[INDEX(j)]


@numba.njit(**OPTIONS)
def max_backward_blocked(dy, taps, out, sums, b0, b1, sh, sw, top, left, h, w, at_top,
                         at_left):
    """max_backward's input gradient (of an h x w input) written straight into a blocked
    buffer out (N, ceil(C/8), Hp, Wp, 8) whose interior starts at (at_top, at_left), zeros
    around it and in the lanes past C, for images b0 <= b < b1; sums (C,) += each channel's
    gradients (float64): the copy a convolution's training backward makes of its output
    gradient (`blocked_training.backward`), with no plain input gradient between."""
    _, channels, out_h, out_w = dy.shape
    for b in range(b0, b1):
        out[b] = 0  # an image's blocks while they are in cache
        for c in range(channels):
            plane, lane = out[b, c >> 3], INDEX(c & 7)
            total = 0.0
            for i in range(out_h):
                gradients, tap_row = dy[b, c, i], taps[b, c, i]
                for j in range(out_w):
                    r, q = winner(i, j, tap_row[INDEX(j)], sh, sw, top, left)
                    if r >= 0 and r < h and q >= 0 and q < w:
                        value = gradients[INDEX(j)]
                        plane[INDEX(r + at_top), INDEX(q + at_left), lane] += value
                        total += value
            sums[c] += total
'''

# Loading Numba and this module costs a fraction of a second once per process: an activation
# smaller than this many values stays on NumPy until something has loaded it.
MIN_LOAD_VALUES = 1 << 18
MAX_TAPS = 256  # the tap number is a uint8

_lock = threading.Lock()
_modules: dict[tuple[int, int, str], object] = {}


def _compiled(kernel_size, dtype):
    """The module for KHxKW windows of `dtype`, with each kernel's C-callable twin for the team
    (`convnet.core.team.run_task`): compiled once per machine, loaded once per process."""
    kh, kw = kernel_size
    name = numpy.dtype(dtype).name
    with _lock:
        if (kh, kw, name) not in _modules:
            tasks = (("max_forward", "f4f4u4nnnnnn"), ("max_backward", "f4u4f4nnnnnn"),
                     ("max_backward_blocked", "f4u4f5dnnnnnnnnnn"))
            _modules[kh, kw, name] = kernels.import_source(
                f"convnet_pool_{kh}x{kw}_{name}",
                kernels.with_tasks(SOURCE.format(kh=kh, kw=kw), tasks, name))
        return _modules[kh, kw, name]


def usable(x, kernel_size) -> bool:
    """Whether these passes take x: float32 or float64 NumPy (N, C, H, W), a window of at
    most 256 taps, the kernels on, and x large enough to be worth loading them for."""
    return (type(x) is numpy.ndarray and x.ndim == 4 and x.dtype in (numpy.float32, numpy.float64)
            and kernel_size[0] * kernel_size[1] <= MAX_TAPS
            and (bool(_modules) or x.size >= MIN_LOAD_VALUES) and kernels.available())


def max_forward(x, kernel_size, stride, padding, out_hw):
    """x (N, C, H, W) -> (out (N, C, Ho, Wo), taps (N, C, Ho, Wo) uint8): each window's
    maximum and the number of its winning tap; padding is a `Padding` (its top and left
    place the windows)."""
    module = _compiled(kernel_size, x.dtype)
    x = numpy.ascontiguousarray(x)
    n, c = x.shape[:2]
    out = numpy.empty((n, c, *out_hw), dtype=x.dtype)
    taps = numpy.empty(out.shape, dtype=numpy.uint8)
    run_task(module.max_forward, module.max_forward_task,
             [(x, out, taps, part.start, part.stop, *stride, padding.top, padding.left)
              for part in sample_chunks(x)])
    return out, taps


def max_backward_blocked(dy, taps, x_shape, kernel_size, stride, padding, around):
    """(dxb, sums): max_backward's dx (x_shape (N, C, H, W)) as a zero-padded blocked buffer
    (N, ceil(C/8), H + around, W + around, 8), `around` a Padding, and its float64 sums
    channel by channel, in one pass (`blocked_training.backward`'s copy of a convolution's
    output gradient, for a convolution whose output this pool read)."""
    module = _compiled(kernel_size, dy.dtype)
    dy = numpy.ascontiguousarray(dy)
    n, c, h, w = x_shape
    out = numpy.empty((n, blocks(c), h + around.top + around.bottom,
                       w + around.left + around.right, LANES), dtype=dy.dtype)
    chunks = sample_chunks(out)
    sums = numpy.zeros((len(chunks), c), numpy.float64)
    run_task(module.max_backward_blocked, module.max_backward_blocked_task,
             [(dy, taps, out, sums[t], part.start, part.stop, *stride, padding.top,
               padding.left, h, w, around.top, around.left) for t, part in enumerate(chunks)])
    return out, sums.sum(axis=0)  # chunks in order


def max_backward(dy, taps, x_shape, kernel_size, stride, padding):
    """dx (x_shape) from the output gradient dy and forward's tap numbers."""
    module = _compiled(kernel_size, dy.dtype)
    dy = numpy.ascontiguousarray(dy)
    dx = numpy.empty(x_shape, dtype=dy.dtype)
    run_task(module.max_backward, module.max_backward_task,
             [(dy, taps, dx, part.start, part.stop, *stride, padding.top, padding.left)
              for part in sample_chunks(dx)])
    return dx
