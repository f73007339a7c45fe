"""Metrics: accuracy, per-class accuracy and the confusion matrix of a classifier; pixel
accuracy, per-class IoU and mean IoU of a segmenter, from the same confusion matrix counted
over pixels.

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


@dataclass
class SegmentationEvaluation(Evaluation):
    """A segmenter's figures from the confusion matrix of its pixels (ignored ones left out).

    IoU of class c = TP / (TP + FP + FN) = C[c, c] / (row c + column c - C[c, c]): the pixels
    both labelled and predicted c over those labelled or predicted c. A class neither present
    nor predicted has no IoU (nan) and is left out of the mean, as in torchmetrics' and
    mmsegmentation's mean IoU.
    """

    images: int = 0

    @property
    def per_class_iou(self) -> np.ndarray:
        c = self.confusion
        tp = np.diag(c).astype(np.float64)
        union = c.sum(axis=0) + c.sum(axis=1) - tp  # K
        return np.divide(tp, union, out=np.full(len(tp), np.nan), where=union > 0)

    @property
    def mean_iou(self) -> float:
        iou = self.per_class_iou
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def to_dict(self) -> dict:
        def plain(v):
            return None if np.isnan(v) else float(v)

        return {
            "loss": self.loss,
            "pixel_accuracy": self.accuracy,
            "mean_iou": plain(self.mean_iou),
            "pixels": self.count,
            "images": self.images,
            "per_class_iou": {name: plain(v) for name, v in
                              zip(self.class_names, self.per_class_iou, strict=True)},
            "per_class_accuracy": {name: plain(v) for name, v in
                                   zip(self.class_names, self.per_class_accuracy, strict=True)},
            "confusion": self.confusion.tolist(),
            "class_names": self.class_names,
        }

    def format(self) -> str:
        width = max(max(len(name) for name in self.class_names), len("class"))
        pixels = self.confusion.sum(axis=1)
        predicted = self.confusion.sum(axis=0)
        count = max(len(f"{int(max(pixels.max(), predicted.max())):,}"), len("predicted"))
        lines = [f"mean IoU {self.mean_iou:.4f}, pixel accuracy {self.accuracy:.2%} on "
                 f"{self.count:,} pixels of {self.images:,} images (loss {self.loss:.4f})",
                 "", f"  {'class'.rjust(width)}     IoU  accuracy  {'pixels'.rjust(count)}  "
                 f"{'predicted'.rjust(count)}"]
        for name, iou, acc, n, m in zip(self.class_names, self.per_class_iou,
                                        self.per_class_accuracy, pixels, predicted, strict=True):
            iou_text = "   n/a" if np.isnan(iou) else f"{iou:6.4f}"
            acc_text = "     n/a" if np.isnan(acc) else f"{acc:8.2%}"
            lines.append(f"  {name.rjust(width)}  {iou_text}  {acc_text}  "
                         f"{f'{int(n):,}'.rjust(count)}  {f'{int(m):,}'.rjust(count)}")
        lines.append("")
        lines.append("IoU = pixels labelled and predicted as the class / pixels labelled or "
                     "predicted as it; accuracy = the share of its pixels predicted right")
        return "\n".join(lines)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                     ignore_index: int | None = None) -> np.ndarray:
    """(K, K) int64 counts, rows true classes, columns predictions, of labels and predictions
    of any (matching) shape: images, or pixels of masks. Labels equal to ignore_index are not
    counted."""
    labels = np.asarray(labels).ravel()
    predictions = np.asarray(predictions).ravel()
    if ignore_index is not None:
        kept = labels != ignore_index
        labels, predictions = labels[kept], predictions[kept]
    pairs = labels.astype(np.int64) * num_classes + predictions  # one bin per (true, predicted)
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64, copy=False)


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
