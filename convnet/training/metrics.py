"""Classification metrics: accuracy, per-class accuracy and the confusion matrix.

An evaluation split over processes must give one process's figures to the last digit: each
process evaluates whole batches (the same batches as one process, so the same scores to the
bit), keeps the loss of every image in float64 (`sample_losses`), and `evaluation` sums the
gathered losses exactly (`math.fsum`, whose result does not depend on the order) and counts the
confusion matrix in integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convnet.nn.losses import log_softmax


@dataclass
class Evaluation:
    loss: float
    confusion: np.ndarray  # (K, K): rows are true classes, columns predictions
    class_names: list[str]

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.count, 1))

    @property
    def per_class_accuracy(self) -> np.ndarray:
        totals = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), totals, out=np.full(len(totals), np.nan),
                         where=totals > 0)

    def to_dict(self) -> dict:
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "count": self.count,
            "per_class_accuracy": {name: (None if np.isnan(acc) else float(acc))
                                   for name, acc in zip(self.class_names,
                                                        self.per_class_accuracy, strict=True)},
            "confusion": self.confusion.tolist(),
            "class_names": self.class_names,
        }

    def format(self) -> str:
        width = max(len(name) for name in self.class_names)
        lines = [f"accuracy {self.accuracy:.2%} on {self.count:,} images (loss {self.loss:.4f})",
                 "", "per-class accuracy:"]
        for name, acc, total in zip(self.class_names, self.per_class_accuracy,
                                    self.confusion.sum(axis=1), strict=True):
            shown = "   n/a" if np.isnan(acc) else f"{acc:6.1%}"
            lines.append(f"  {name.rjust(width)}  {shown}  ({int(total)} images)")
        lines += ["", "confusion matrix (rows: true class, columns: predicted):"]
        cell = max(len(str(int(self.confusion.max()))), 3)
        lines.append(" " * (width + 2) + " ".join(str(i).rjust(cell)
                                                  for i in range(len(self.class_names))))
        for i, name in enumerate(self.class_names):
            row = " ".join(str(int(v)).rjust(cell) for v in self.confusion[i])
            lines.append(f"{name.rjust(width)}  {row}")
        return "\n".join(lines)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def sample_losses(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, K) scores, (N,) labels -> (N,) float64 cross-entropy of each image."""
    logp = log_softmax(np.asarray(scores, np.float64))  # N, K
    return -logp[np.arange(len(labels)), labels]


def joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    """The 1-D concatenation of `parts`, empty (of `dtype`) when there are none."""
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)


def evaluation(losses: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
               class_names: list[str]) -> Evaluation:
    """The Evaluation of images with these per-image losses, labels and predictions, in any
    order: the mean loss is an exactly rounded sum over the count."""
    confusion = confusion_matrix(labels, predictions, len(class_names))
    return Evaluation(math.fsum(losses) / max(len(labels), 1), confusion, list(class_names))
