"""Compiled passes of ReLU in training (Numba): the output and the mask backward needs in one
pass over x, and the input gradient in one pass over dy and the mask; and Hardtanh's (ReLU6's),
its output (NumPy's clip) and its gradient from the output (dy times the boolean slope, as the
NumPy layer multiplies it: the same bits; 128 x 96 x 16 x 16 on two threads, forward 1.70 ->
0.86 ms, backward 2.44 -> 1.41). All of them split over the team's threads.

NumPy's forward takes two passes (`maximum`, then `greater` on its output) and its backward
multiplies a float array by a boolean one through a casting buffer; one thread, 4 million
float32 values (a 128 x 32 x 32 x 32 activation): forward 2.6-2.8 ms against 1.5 here,
backward 2.6-3.0 against 1.2-2.2.

The gradient is PyTorch's `threshold_backward` on the output: dy where the output is not
<= 0, else 0. So a NaN or infinite dy where the unit is off gives 0, and a NaN unit passes
dy (NaN in x passes to the output, as PyTorch's relu and NumPy's maximum pass it); the NumPy
layer's dy * (out > 0) differs from both only there (NaN, and 0 for a NaN unit).

The NumPy layer (`convnet.nn.activations.ReLU`) stays the reference they are tested against
(tests/test_activations.py), and takes every other case (CuPy arrays, other dtypes,
CONVNET_COMPILED_KERNELS=0).
"""

from __future__ import annotations

import numpy

from convnet.core import kernels
from convnet.core.backend import thread_slices
from convnet.core.team import run_task

SOURCE = '''
"""convnet's compiled ReLU passes (written by convnet.core.activation_kernels)."""
import numba

OPTIONS = dict(nogil=True, cache=True)
# Each loop runs over a whole 1-d view from 0 (the caller slices each thread's range): with
# start and stop as arguments LLVM kept the index's checks and did not vectorize (4x slower).


@numba.njit(**OPTIONS)
def relu_forward(x, out, positive):
    """out = x where not x <= 0 (NaN passes), else 0; positive = not x <= 0 (a NaN unit
    passes its gradient, as PyTorch's threshold_backward on the output)."""
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        off = v <= zero
        out[i] = zero if off else v
        positive[i] = not off


@numba.njit(**OPTIONS)
def relu_output(x, out):
    """relu_forward without the mask (no gradient is recorded)."""
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        out[i] = zero if v <= zero else v


@numba.njit(**OPTIONS)
def relu_backward(dy, positive, dx):
    """dx = dy where positive, else 0."""
    zero = dy.dtype.type(0)
    for i in range(dy.size):
        dx[i] = dy[i] if positive[i] else zero


@numba.njit(**OPTIONS)
def hardtanh_forward(x, out, low, high):
    """out = x clipped to [low, high] as NumPy's clip does it: NaN passes, and a value equal
    to a bound stays itself (-0 against a bound of 0 stays -0)."""
    for i in range(x.size):
        v = x[i]
        if v != v:
            out[i] = v
        else:
            v = v if v >= low else low
            out[i] = v if v <= high else high


@numba.njit(**OPTIONS)
def hardtanh_backward(dy, y, dx, low, high):
    """dx = dy * (low < y < high), the product taken as NumPy's by a boolean (an infinite or
    NaN dy outside gives NaN, a negative one -0)."""
    one, zero = dy.dtype.type(1), dy.dtype.type(0)
    for i in range(dy.size):
        v = y[i]
        dx[i] = dy[i] * (one if (v > low and v < high) else zero)
'''

# Values per thread below which one thread does it all (making a program for the team costs
# about 25 us, a pass over 64 K values about as much).
MIN_SPLIT = 1 << 16

# Each pass's C-callable twin for the team (`convnet.core.team.run_task`), in a module per
# dtype: the passes themselves are compiled for the dtype their first call brings.
_TASKS = [("relu_forward", "ffb"), ("relu_output", "ff"), ("relu_backward", "fbf"),
          ("hardtanh_forward", "ffss"), ("hardtanh_backward", "fffss")]
_compiled = kernels.loader_per_dtype("convnet_activations", SOURCE, _TASKS)


def usable(x) -> bool:
    """Whether these passes take x: a C-contiguous float32 or float64 NumPy array, kernels on."""
    return (type(x) is numpy.ndarray and x.dtype in (numpy.float32, numpy.float64)
            and x.flags.c_contiguous and x.size > 0 and kernels.available())


def usable_mask(positive, shape) -> bool:
    """Whether a mask kept by forward serves relu_backward on a gradient of `shape`."""
    return (type(positive) is numpy.ndarray and positive.dtype == bool
            and positive.flags.c_contiguous and positive.shape == tuple(shape))


def _ranges(size: int) -> list[slice]:
    return thread_slices(size, None if size >= 2 * MIN_SPLIT else 1)


def relu_forward(x, with_mask: bool):
    """(max(x, 0) shaped as x, NaN passing; the boolean mask `not x <= 0`, or None)."""
    module = _compiled(x.dtype)
    flat = x.reshape(-1)
    out = numpy.empty_like(flat)
    if not with_mask:
        run_task(module.relu_output, module.relu_output_task,
                 [(flat[r], out[r]) for r in _ranges(flat.size)])
        return out.reshape(x.shape), None
    positive = numpy.empty(flat.shape, dtype=bool)
    run_task(module.relu_forward, module.relu_forward_task,
             [(flat[r], out[r], positive[r]) for r in _ranges(flat.size)])
    return out.reshape(x.shape), positive.reshape(x.shape)


def relu_backward(dy, positive):
    """dy where positive, else 0 (dy and the mask of one shape)."""
    module = _compiled(dy.dtype)
    flat, mask = dy.reshape(-1), positive.reshape(-1)
    dx = numpy.empty_like(flat)
    run_task(module.relu_backward, module.relu_backward_task,
             [(flat[r], mask[r], dx[r]) for r in _ranges(flat.size)])
    return dx.reshape(dy.shape)


def hardtanh_forward(x, low: float, high: float):
    """x clipped to [low, high] (bounds cast to x's dtype), shaped as x."""
    module = _compiled(x.dtype)
    flat = x.reshape(-1)
    out = numpy.empty_like(flat)
    low, high = x.dtype.type(low), x.dtype.type(high)
    run_task(module.hardtanh_forward, module.hardtanh_forward_task,
             [(flat[r], out[r], low, high) for r in _ranges(flat.size)])
    return out.reshape(x.shape)


def hardtanh_backward(dy, y, low: float, high: float):
    """dy where low < y < high, else 0 (times 0: NumPy's product by the boolean slope)."""
    module = _compiled(dy.dtype)
    flat, kept = dy.reshape(-1), y.reshape(-1)
    dx = numpy.empty_like(flat)
    low, high = dy.dtype.type(low), dy.dtype.type(high)
    run_task(module.hardtanh_backward, module.hardtanh_backward_task,
             [(flat[r], kept[r], dx[r], low, high) for r in _ranges(flat.size)])
    return dx.reshape(dy.shape)
