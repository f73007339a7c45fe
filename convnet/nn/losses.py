"""Losses over class scores: cross-entropy (softmax) and the multiclass SVM (hinge).

forward(scores (N, K), labels (N,)) -> float (mean over the batch); backward() -> dscores (N, K).
"""

from __future__ import annotations

import numpy

from convnet.core.backend import array_module


def _check(name: str, scores, labels):
    if not hasattr(scores, "ndim") or scores.ndim != 2:
        shape = getattr(scores, "shape", type(scores).__name__)
        raise ValueError(f"{name}: expected scores of shape (N, classes), received {shape}")
    if numpy.dtype(scores.dtype).kind != "f":
        raise TypeError(f"{name}: expected floating-point scores, received dtype {scores.dtype}")
    if 0 in scores.shape:
        raise ValueError(f"{name}: expected at least one sample and one class, received scores "
                         f"of shape {tuple(scores.shape)}")
    labels = array_module(scores).asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"{name}: expected labels of shape ({scores.shape[0]},) to match "
                         f"scores {tuple(scores.shape)}, received {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, received dtype {labels.dtype}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= scores.shape[1]):
        raise ValueError(f"{name}: labels must lie in [0, {scores.shape[1] - 1}], received "
                         f"values from {int(labels.min())} to {int(labels.max())}")
    return labels


def log_softmax(scores):
    """log p = s - max(s) - log(sum(exp(s - max(s)))): no overflow for huge scores."""
    xp = array_module(scores)
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


class CrossEntropyLoss:
    """Mean of -log softmax(scores)[label]; log-softmax fused with the negative log-likelihood."""

    def __init__(self):
        self.cache = None

    def forward(self, scores, labels) -> float:
        labels = _check("CrossEntropyLoss", scores, labels)
        xp = array_module(scores)
        logp = log_softmax(scores)
        rows = xp.arange(scores.shape[0])
        loss = -logp[rows, labels].mean()
        self.cache = (logp, labels)
        return float(loss)

    __call__ = forward

    def backward(self):
        """d loss / d scores = (softmax - onehot) / N."""
        if self.cache is None:
            raise RuntimeError("CrossEntropyLoss: call forward before backward")
        logp, labels = self.cache
        xp = array_module(logp)
        grad = xp.exp(logp)
        grad[xp.arange(grad.shape[0]), labels] -= 1
        grad /= grad.shape[0]
        return grad


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
