"""Losses over class scores: cross-entropy (softmax) and the multiclass SVM (hinge).

forward(scores (N, K), labels (N,)) -> float (mean over the batch); backward() -> dscores (N, K).
CrossEntropyLoss also takes dense predictions, scores (N, K, d1, ...) with labels (N, d1, ...),
class weights, an ignored label and PyTorch's three reductions.
"""

from __future__ import annotations

import math

import numpy

from convnet.core import loss_kernels
from convnet.core.backend import array_module, sample_chunks
from convnet.core.team import run_chunks


def _check(name: str, scores, labels):
    if not hasattr(scores, "ndim") or scores.ndim != 2:
        shape = getattr(scores, "shape", type(scores).__name__)
        raise ValueError(f"{name}: expected scores of shape (N, classes), received {shape}")
    return _check_labels(name, scores, labels)


def _check_labels(name: str, scores, labels, ignore_index: int | None = None):
    """Labels as an integer array of shape (N, d1, ...) for scores (N, K, d1, ...), each in
    [0, K - 1] or equal to ignore_index."""
    if numpy.dtype(scores.dtype).kind != "f":
        raise TypeError(f"{name}: expected floating-point scores, received dtype {scores.dtype}")
    if 0 in scores.shape:
        raise ValueError(f"{name}: expected at least one sample and one class, received scores "
                         f"of shape {tuple(scores.shape)}")
    labels = array_module(scores).asarray(labels)
    expected = (scores.shape[0], *scores.shape[2:])
    if labels.shape != expected:
        raise ValueError(f"{name}: expected labels of shape {expected} to match "
                         f"scores {tuple(scores.shape)}, received {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, received dtype {labels.dtype}")
    if labels.size and 0 <= int(labels.min()) and int(labels.max()) < scores.shape[1]:
        return labels  # (every label a class: no copy of the counted ones to look at)
    counted = labels if ignore_index is None else labels[labels != ignore_index]
    if counted.size and (int(counted.min()) < 0 or int(counted.max()) >= scores.shape[1]):
        raise ValueError(f"{name}: labels must lie in [0, {scores.shape[1] - 1}], received "
                         f"values from {int(counted.min())} to {int(counted.max())}")
    return labels


def log_softmax(scores, axis: int = 1):
    """log p = s - max(s) - log(sum(exp(s - max(s)))) over `axis`: no overflow for huge scores."""
    xp = array_module(scores)
    shifted = scores - scores.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


REDUCTIONS = ("mean", "sum", "none")


class CrossEntropyLoss:
    """-log softmax(scores)[label], log-softmax fused with the negative log-likelihood, as
    torch.nn.CrossEntropyLoss(weight, ignore_index, reduction).

    scores (N, K) with labels (N,), or dense predictions scores (N, K, d1, ...) with labels
    (N, d1, ...): one target per position. Target t of class y counts with weight w[y]
    (`weight`, shape (K,); 1 without it); targets labelled `ignore_index` not at all.

        reduction="mean"  sum_t w[y_t] loss_t / sum_t w[y_t]  (a float)
        reduction="sum"   sum_t w[y_t] loss_t                 (a float)
        reduction="none"  w[y_t] loss_t per target, 0 where ignored (an array like labels)

    With every target ignored the mean is 0 / 0: nan, as in PyTorch, and the gradient is 0.
    Training code can test `math.isfinite(value)` (the trainer stops on a non-finite loss) or
    `loss.total_weight == 0` after forward.

    backward() returns dscores, the shape and dtype of scores. For "none" give it the
    gradient of whatever the per-target losses feed, backward(dlosses) with dlosses shaped
    like labels; for "mean" and "sum" an optional scalar factor. It hands over the array
    forward kept (the probabilities, overwritten in place into the gradient): one backward
    per forward.
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"CrossEntropyLoss: reduction must be one of {REDUCTIONS}, "
                             f"received {reduction!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index,
                                                            (int, numpy.integer)):
            raise TypeError(f"CrossEntropyLoss: ignore_index must be an int, received "
                            f"{ignore_index!r}")
        if weight is not None:
            weight = numpy.asarray(weight, dtype=numpy.float64)
            if weight.ndim != 1 or weight.size == 0:
                raise ValueError(f"CrossEntropyLoss: weight must be one number per class, shape "
                                 f"(classes,), received shape {weight.shape}")
        self.weight = weight
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        self.total_weight = None  # sum of the counted targets' weights, after forward
        self.cache = None

    def forward(self, scores, labels):
        """The loss: a float for "mean" and "sum", per-target losses (N, d1, ...) for "none"."""
        name = "CrossEntropyLoss"
        if not hasattr(scores, "ndim") or scores.ndim < 2:
            shape = getattr(scores, "shape", type(scores).__name__)
            raise ValueError(f"{name}: expected scores of shape (N, classes) or (N, classes, "
                             f"d1, ...), received {shape}")
        labels = _check_labels(name, scores, labels, self.ignore_index)
        if self.weight is not None and self.weight.size != scores.shape[1]:
            raise ValueError(f"{name}: weight has {self.weight.size} entries but the scores "
                             f"have {scores.shape[1]} classes; give one weight per class")
        xp = array_module(scores)
        counted = labels != self.ignore_index  # N, d1, ...
        picked = xp.where(counted, labels, 0)[:, None]  # N, 1, d1, ...: a class to read
        compiled = loss_kernels.usable(scores)
        if compiled:
            picked = picked.astype(numpy.int64, copy=False)
        # Log-softmax over axis 1 with one full-size array, e: the shifted scores, then their
        # exponentials in place; forward keeps it for backward to turn into the gradient. By
        # chunks of the batch over the worker threads (a class for each pixel makes it large:
        # 128 x 11 x 64 x 64 took 21 ms on one thread).
        e = xp.empty(scores.shape, dtype=scores.dtype)
        chosen = xp.empty(picked.shape, dtype=scores.dtype)  # N, 1, d1, ...: shifted[label]
        total = xp.empty(picked.shape, dtype=scores.dtype)  # N, 1, d1, ...

        def shifted_exp(part):
            if compiled:  # the same two steps in one pass (convnet.core.loss_kernels)
                loss_kernels.shift_pick(scores[part], picked[part], e[part], chosen[part])
            else:
                xp.subtract(scores[part], scores[part].max(axis=1, keepdims=True), out=e[part])
                chosen[part] = xp.take_along_axis(e[part], picked[part], axis=1)
            xp.exp(e[part], out=e[part])
            e[part].sum(axis=1, keepdims=True, out=total[part])

        _by_chunks(xp, shifted_exp, scores)
        losses = (xp.log(total) - chosen)[:, 0]  # N, d1, ...: -log p[label]
        weights = counted.astype(scores.dtype)  # N, d1, ...: w[label], 0 where ignored
        if self.weight is not None:
            weights *= xp.asarray(self.weight, dtype=scores.dtype)[picked[:, 0]]
        losses *= weights
        self.total_weight = float(weights.sum(dtype=numpy.float64))
        self.cache = (e, total, picked, weights, scores.dtype, compiled)
        if self.reduction == "none":
            return losses
        value = float(losses.sum(dtype=numpy.float64))
        if self.reduction == "mean":
            # 0 / 0 with every target ignored: nan, as in PyTorch (without NumPy's warning)
            value = value / self.total_weight if self.total_weight else math.nan
        return value

    __call__ = forward

    def backward(self, grad=None):
        """d loss / d scores = (softmax - onehot(label)) * w[label] * upstream (/ the total
        weight for "mean"); 0 for ignored targets."""
        if self.cache is None:
            raise RuntimeError("CrossEntropyLoss: call forward before backward")
        e, total, picked, weights, dtype, compiled = self.cache
        self.cache = None
        xp = array_module(e)
        if self.reduction == "none":
            if grad is None:
                raise ValueError("CrossEntropyLoss: with reduction='none' backward needs the "
                                 "gradient of the per-target losses, backward(dlosses) with "
                                 f"dlosses of shape {weights.shape}")
            grad = xp.asarray(grad)
            if grad.shape != weights.shape:
                raise ValueError(f"CrossEntropyLoss: expected dlosses of shape "
                                 f"{weights.shape} (one per target), received {grad.shape}")
            factor = weights * grad.astype(dtype, copy=False)
        else:
            scale = 1.0 if grad is None else float(grad)
            if self.reduction == "mean":
                scale = scale / self.total_weight if self.total_weight else 0.0
            factor = weights * dtype.type(scale)

        if compiled:  # (forward took the compiled passes: picked is int64, e contiguous)
            factor = numpy.ascontiguousarray(factor)

        def gradient(part):
            if compiled:  # the same three steps in one pass (convnet.core.loss_kernels)
                loss_kernels.softmax_gradient(e[part], total[part], picked[part], factor[part])
                return
            e[part] /= total[part]  # softmax
            xp.put_along_axis(e[part], picked[part],
                              xp.take_along_axis(e[part], picked[part], axis=1) - 1, axis=1)
            e[part] *= factor[part][:, None]

        _by_chunks(xp, gradient, e)
        return e


def _by_chunks(xp, work, x) -> None:
    """work(part) for chunks of x's batch over the worker threads (NumPy arrays), or once."""
    if xp is numpy:
        run_chunks(work, sample_chunks(x))
    else:
        work(slice(None))


class SVMLoss:
    """The course's multiclass SVM: mean over samples of sum_{j != y} max(0, s_j - s_y + margin)."""

    def __init__(self, margin: float = 1.0):
        if not margin > 0:
            raise ValueError(f"SVMLoss: margin must be > 0, received {margin!r}")
        self.margin = float(margin)
        self.cache = None

    def forward(self, scores, labels) -> float:
        labels = _check("SVMLoss", scores, labels)
        xp = array_module(scores)
        rows = xp.arange(scores.shape[0])
        correct = scores[rows, labels][:, None]
        margins = xp.maximum(0, scores - correct + scores.dtype.type(self.margin))
        margins[rows, labels] = 0
        self.cache = (margins > 0, labels, scores.dtype)
        return float(margins.sum() / scores.shape[0])

    __call__ = forward

    def backward(self):
        if self.cache is None:
            raise RuntimeError("SVMLoss: call forward before backward")
        positive, labels, dtype = self.cache
        xp = array_module(positive)
        grad = positive.astype(dtype)
        grad[xp.arange(grad.shape[0]), labels] = -positive.sum(axis=1)
        return grad / grad.shape[0]


MultiClassHingeLoss = SVMLoss
