"""Cross-entropy over dense predictions, compiled (Numba): the passes around the exponentials
of `convnet.nn.losses.CrossEntropyLoss` for scores (N, K, P), a class for each of P positions.

NumPy takes the classes' maximum, the shifted scores and each position's label score in
three passes (the last a `take_along_axis` that builds index arrays), and the gradient in
three more (`put_along_axis` again): a segmentation network's 128 x 11 x 64 x 64 scores took
8.6-9.0 ms a training step on two threads. Here the shifted scores and the labels' are one
pass of an image at a time, and the gradient another; NumPy's vectorized exp and the sums
stay between them (Numba's exp is scalar): 6.0-6.1 ms, and whole training steps alternated
in one process (2026-12-05 14:42 UTC) fcn-mini 0.968 of the time, unet-mini 0.983. The same
operations in the same order as the NumPy code: the same bits for finite scores
(tests/test_losses.py; where a score is NaN, see shift_pick), and the NumPy code remains the
path for every other case (other array types, CONVNET_COMPILED_KERNELS=0, small scores).
"""

from __future__ import annotations

import numpy

from convnet.core import kernels

SOURCE = '''
"""convnet's compiled cross-entropy passes (written by convnet.core.loss_kernels)."""
import numba
import numpy

OPTIONS = dict(nogil=True, cache=True)
INDEX = numba.uint64  # unsigned indices: no checks for negative ones


@numba.njit(**OPTIONS)
def shift_pick(scores, picked, e, chosen):
    """e = scores minus their maximum over the classes at each position, chosen = e at each
    position's class; scores and e (n, K, P), picked (n, P) int64 classes, chosen (n, P). A
    NaN score is not the maximum here (NumPy's maximum is NaN; a test for it took the pass
    2.1 ms where it takes 1.5): e is NaN at its class only, where NumPy's is NaN at every
    class, but the position's sum of exponentials, its loss and its gradient are NaN alike."""
    n, k, p = scores.shape
    top = numpy.empty(p, scores.dtype)
    for b in range(n):
        for j in range(p):
            top[j] = scores[b, 0, j]
        for c in range(1, k):
            for j in range(p):
                v, t = scores[b, c, j], top[j]
                top[j] = v if v > t else t
        for c in range(k):
            for j in range(p):
                e[b, c, j] = scores[b, c, j] - top[j]
        for j in range(p):
            chosen[b, j] = e[b, INDEX(picked[b, j]), j]


@numba.njit(**OPTIONS)
def softmax_gradient(e, total, picked, factor):
    """e (n, K, P), the exponentials, in place = (e / total - 1 at each position's class) *
    factor; total and factor (n, P), picked (n, P) int64."""
    n, k, p = e.shape
    one = e.dtype.type(1)
    for b in range(n):
        for c in range(k):
            for j in range(p):
                e[b, c, j] = e[b, c, j] / total[b, j]
        for j in range(p):
            at = INDEX(picked[b, j])
            e[b, at, j] = e[b, at, j] - one
        for c in range(k):
            for j in range(p):
                e[b, c, j] = e[b, c, j] * factor[b, j]
'''

# Scores below this many values stay on NumPy (loading the module costs more than it saves).
MIN_VALUES = 1 << 16

_compiled = kernels.loader_per_dtype("convnet_loss", SOURCE, [])


def usable(scores) -> bool:
    """Whether these passes take scores: a C-contiguous float32 or float64 NumPy array of
    dense predictions (N, K, d1, ...) large enough, kernels on."""
    return (type(scores) is numpy.ndarray and scores.ndim > 2
            and scores.dtype in (numpy.float32, numpy.float64) and scores.flags.c_contiguous
            and scores.size >= MIN_VALUES and kernels.available())


def shift_pick(scores, picked, e, chosen) -> None:
    """e = scores - max over axis 1, chosen = e at picked (N, 1, d1, ...), for a chunk of
    images; every array C-contiguous (picked int64)."""
    n, k = scores.shape[:2]
    _compiled(scores.dtype).shift_pick(scores.reshape(n, k, -1), picked.reshape(n, -1),
                                       e.reshape(n, k, -1), chosen.reshape(n, -1))


def softmax_gradient(e, total, picked, factor) -> None:
    """e = (e / total - onehot(picked)) * factor in place, for a chunk of images: e (N, K,
    d1, ...), total and picked (N, 1, d1, ...), factor (N, d1, ...)."""
    n, k = e.shape[:2]
    _compiled(e.dtype).softmax_gradient(e.reshape(n, k, -1), total.reshape(n, -1),
                                        picked.reshape(n, -1), factor.reshape(n, -1))
