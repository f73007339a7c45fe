"""Classification metrics: accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
