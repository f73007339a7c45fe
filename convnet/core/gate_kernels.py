"""A channel gate in training, compiled (Numba) and split over the team: Mul of an activation
(N, C, H, W) by a gate (N, C, 1, 1), squeeze-and-excitation's, forward and backward.

NumPy broadcasts the product on one thread, and its backward makes dy * gate, then dy * x in
full and sums it over each plane: in a mobilenet-mini training step (batch 128, two threads)
the gates' Mul took about 34 ms of ~316, all on one thread. Here the forward is one pass, the
backward one pass writing dx and each plane's sum (in float64) for the gate's gradient, rows
(n, c) split over the threads. The NumPy layer (`convnet.nn.merge.Mul`) stays the reference
they are tested against (tests/test_fast_paths.py) and takes every other case.
"""

from __future__ import annotations

import numpy

from convnet.core import kernels
from convnet.core.backend import thread_slices
from convnet.core.team import run_task

SOURCE = '''
"""convnet's compiled channel gate (written by convnet.core.gate_kernels)."""
import numba

OPTIONS = dict(nogil=True, cache=True, fastmath={"reassoc", "contract"})


@numba.njit(**OPTIONS)
def gate_forward(x, gate, out):
    """out[m, p] = x[m, p] * gate[m]; x and out (rows, plane), gate (rows,)."""
    for m in range(x.shape[0]):
        g = gate[m]
        for p in range(x.shape[1]):
            out[m, p] = x[m, p] * g


@numba.njit(**OPTIONS)
def gate_backward(dy, x, gate, dx, dgate):
    """dx[m, p] = dy[m, p] * gate[m]; dgate[m] = the float64 sum over p of dy[m, p] * x[m, p]."""
    for m in range(dy.shape[0]):
        g = gate[m]
        total = 0.0
        for p in range(dy.shape[1]):
            d = dy[m, p]
            dx[m, p] = d * g
            total += d * x[m, p]
        dgate[m] = total
'''

# Values below which NumPy's broadcast stays (the handoff costs more than a thread saves).
MIN_VALUES = 1 << 16

_compiled = kernels.loader_per_dtype("convnet_gate", SOURCE,
                                     [("gate_forward", "FfF"), ("gate_backward", "FFfFf")])


def gate_of(xs) -> int | None:
    """Which of two inputs is the gate: x (N, C, H, W) and gate (N, C, 1, 1), both NumPy
    float32 or float64 of one dtype, C-contiguous, x large enough; None otherwise."""
    if len(xs) != 2 or not kernels.available():
        return None
    for gate_index in (1, 0):
        x, gate = xs[1 - gate_index], xs[gate_index]
        if (type(x) is numpy.ndarray and type(gate) is numpy.ndarray and x.ndim == 4
                and gate.shape == (*x.shape[:2], 1, 1) and x.dtype == gate.dtype
                and x.dtype in (numpy.float32, numpy.float64) and x.flags.c_contiguous
                and gate.flags.c_contiguous and x.size >= MIN_VALUES):
            return gate_index
    return None


def _rows(x):
    return x.reshape(x.shape[0] * x.shape[1], -1)  # (N * C, H * W)


def forward(x, gate):
    """x (N, C, H, W) * gate (N, C, 1, 1)."""
    module = _compiled(x.dtype)
    rows, out = _rows(x), numpy.empty_like(x)
    flat_gate, out_rows = gate.reshape(-1), _rows(out)
    run_task(module.gate_forward, module.gate_forward_task,
             [(rows[r], flat_gate[r], out_rows[r]) for r in thread_slices(len(rows))])
    return out


def backward(dy, x, gate):
    """(dx (N, C, H, W), dgate (N, C, 1, 1)) of out = x * gate."""
    module = _compiled(x.dtype)
    dy = numpy.ascontiguousarray(dy, dtype=x.dtype)
    rows, dy_rows, flat_gate = _rows(x), _rows(dy), gate.reshape(-1)
    dx = numpy.empty_like(x)
    dgate = numpy.empty(gate.shape, x.dtype)
    dx_rows, dgate_flat = _rows(dx), dgate.reshape(-1)
    run_task(module.gate_backward, module.gate_backward_task,
             [(dy_rows[r], rows[r], flat_gate[r], dx_rows[r], dgate_flat[r])
              for r in thread_slices(len(rows))])
    return dx, dgate
