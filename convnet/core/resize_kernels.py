"""Linear resizing in training's forward, compiled (Numba) and split over the team: a Resize
/ Upsample whose every output pixel mixes at most two input pixels per axis (bilinear
upsampling), on plain (N, C, H, W) arrays.

NumPy does it as two matrix products per plane with the interpolation matrices (mostly
zeros): fcn-mini's last Upsample (128 x 11 planes, 32x32 -> 64x64) took 14-16 ms on one
thread. Here each output row mixes its two input rows (a vector loop over the row), then each
output pixel its two columns of that mix: 6.5 ms, on two threads 3.4-3.7 against 10-12
(2026-12-03, alternated in one process, best of 5). Planes (n, c) split over the threads. The
backward stays on the matrices' transposes: a kernel adding each output row into its two
input rows and gathering each input column's outputs was level to slower (10.6 against 10.8
ms on that layer, 4.1 against 3.0 on 16 planes of 16x16). The NumPy layer
(`convnet.nn.resize`) stays the reference it is tested against (tests/test_fast_paths.py) and
takes every other case.
"""

from __future__ import annotations

import numpy

from convnet.core import kernels
from convnet.core.backend import thread_slices
from convnet.core.team import run_task

SOURCE = '''
"""convnet's compiled linear resize (written by convnet.core.resize_kernels)."""
import numpy
import numba

OPTIONS = dict(nogil=True, cache=True, fastmath={"contract"})
INDEX = numba.uint64  # unsigned indices: no checks for negative ones


@numba.njit(**OPTIONS)
def resize_forward(x, out, rows, row_weights, cols, col_weights):
    """out[m, i, j] = sum over a, b in 0, 1 of row_weights[2i + a] col_weights[2j + b]
    x[m, rows[2i + a], cols[2j + b]]; x (planes, H, W), out (planes, H_out, W_out)."""
    width = x.shape[2]
    mixed = numpy.empty(width, x.dtype)  # (W,): an output row's mix of its two input rows
    for m in range(x.shape[0]):
        for i in range(out.shape[1]):
            r0, r1 = INDEX(rows[2 * i]), INDEX(rows[2 * i + 1])
            u0, u1 = row_weights[2 * i], row_weights[2 * i + 1]
            for t in range(width):
                mixed[t] = u0 * x[m, r0, t] + u1 * x[m, r1, t]
            for j in range(out.shape[2]):
                out[m, i, j] = (col_weights[2 * j] * mixed[INDEX(cols[2 * j])]
                                + col_weights[2 * j + 1] * mixed[INDEX(cols[2 * j + 1])])
'''

# Values below which the matrix products stay (the handoff costs more than a thread saves).
MIN_VALUES = 1 << 16

_compiled = kernels.loader_per_dtype("convnet_resize", SOURCE,
                                     [("resize_forward", "f3f3ifif")])


def serves(x) -> bool:
    """Whether the kernels take x: a C-contiguous NumPy float32 or float64 (N, C, H, W)
    array, large enough, with the compiled kernels on."""
    return (type(x) is numpy.ndarray and x.ndim == 4 and x.dtype in (numpy.float32,
                                                                    numpy.float64)
            and x.flags.c_contiguous and x.size >= MIN_VALUES and kernels.available())


def _planes(x):
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])  # (N * C, H, W)


def forward(x, out_hw, rows, cols):
    """x (N, C, H, W) resized to out_hw; rows and cols: (indices, weights) of the two input
    pixels each output pixel reads along H and W (`_AxisPlan.two_taps`)."""
    module = _compiled(x.dtype)
    out = numpy.empty((*x.shape[:2], *out_hw), x.dtype)
    planes, out_planes = _planes(x), _planes(out)
    run_task(module.resize_forward, module.resize_forward_task,
             [(planes[p], out_planes[p], *rows, *cols) for p in thread_slices(len(planes))])
    return out
