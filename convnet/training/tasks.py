"""What a model is trained to do, as the trainer, `convnet evaluate` and the pictures ask it:
the loss, what a model's output must look like, how a batch's figures count, how an evaluation
adds up and which figure picks the best checkpoint.

    task = make_task("segment", class_weight=None, ignore_index=255)
    loss = task.loss()                            # per-pixel cross-entropy
    tally = task.tally(class_names)
    for x, y in loader:
        tally.add(model.forward(x), y)
    tally.result()                                # a SegmentationEvaluation: mean IoU, ...

An evaluation split over processes gives one process's figures to the last digit: a tally keeps
per-image figures (each image's loss in float64) and integer counts, `result(gather)` joins
every process's (`MPIGroup.allgather`) and sums the losses exactly (`math.fsum`).

"classify": one class per image, scores (N, K), labels (N,); accuracy picks the best weights.
"segment": one class per pixel, scores (N, K, H, W), masks (N, H, W), per-pixel cross-entropy
(class weights and an ignored label optional); mean IoU picks the best weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convnet.nn.losses import CrossEntropyLoss
from convnet.training.metrics import (
    Evaluation,
    SegmentationEvaluation,
    confusion_matrix,
    evaluation,
    joined,
    sample_losses,
)

TASKS = ("classify", "segment")
NO_IGNORE = -100  # PyTorch's default ignore_index: no label has it


@dataclass(frozen=True)
class StepFigures:
    """One training step's figures over the global batch: its mean loss, the predictions it
    got right, what they are out of (images, or counted pixels) and its number of images."""

    loss: float
    correct: int
    targets: int
    images: int


class Task:
    name = ""
    metric = ""  # the per-epoch record's key that picks the best checkpoint
    metric_label = ""

    def loss(self) -> CrossEntropyLoss:
        return CrossEntropyLoss()

    def output_problem(self, output_shape, input_shape, num_classes: int,
                       dataset: str = "the dataset") -> str | None:
        """Why a model whose first output has `output_shape` (per sample) cannot do this task
        on `input_shape` images of `dataset`'s `num_classes` classes; None when it can."""
        raise NotImplementedError

    def step_figures(self, group, loss: float, scores, y) -> StepFigures:
        raise NotImplementedError

    def tally(self, class_names) -> ClassTally | PixelTally:
        raise NotImplementedError

    def record(self, result: Evaluation) -> dict:
        """The per-epoch record's validation fields."""
        return {"val_loss": result.loss, "val_accuracy": result.accuracy}

    def score(self, result: Evaluation) -> float:
        """The figure whose best value picks the best checkpoint."""
        return result.accuracy

    def describe(self) -> dict:
        """What config.json records of the task."""
        return {"name": self.name}


class Classify(Task):
    name = "classify"
    metric = "val_accuracy"
    metric_label = "accuracy"

    def output_problem(self, output_shape, input_shape, num_classes, dataset="the dataset"):
        if tuple(output_shape) == (num_classes,):
            return None
        if len(output_shape) == 3:
            return (f"outputs {'x'.join(map(str, output_shape))} maps, a score per pixel; that "
                    f"is segmentation: pass --task segment with a dataset of masks (e.g. "
                    f"digits-seg), or end the model in {num_classes} scores per image")
        return (f"outputs {output_shape[0] if len(output_shape) == 1 else output_shape} scores "
                f"but {dataset} has {num_classes} classes; set out_features = {num_classes} "
                f"in the last linear layer")

    def step_figures(self, group, loss, scores, y):
        correct = int((scores.argmax(axis=1) == y).sum())
        loss, correct, count = group.global_statistics(loss, correct, len(y))
        return StepFigures(loss, correct, count, count)

    def tally(self, class_names):
        return ClassTally(list(class_names))


class Segment(Task):
    name = "segment"
    metric = "val_mean_iou"
    metric_label = "mean IoU"

    def __init__(self, class_weight=None, ignore_index: int = NO_IGNORE):
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]
        self.ignore_index = int(ignore_index)

    def loss(self):
        return CrossEntropyLoss(weight=self.class_weight, ignore_index=self.ignore_index)

    def output_problem(self, output_shape, input_shape, num_classes, dataset="the dataset"):
        _, height, width = input_shape
        wanted = (num_classes, height, width)
        if tuple(output_shape) == wanted:
            return None
        shown = "x".join(map(str, output_shape))
        if len(output_shape) != 3:
            return (f"outputs {shown}, not a score per class and pixel; a segmenter ends in "
                    f"{num_classes} maps of {height}x{width} ({num_classes} x {height} x "
                    f"{width}), e.g. a 1x1 conv with out_channels = {num_classes} (see the zoo's "
                    f"fcn-mini and unet-mini)")
        if output_shape[0] != num_classes:
            return (f"outputs {output_shape[0]} maps but {dataset} has {num_classes} classes; "
                    f"set out_channels = {num_classes} in the last (1x1) conv")
        return (f"outputs {output_shape[1]}x{output_shape[2]} maps for {height}x{width} images; "
                f"a segmenter gives a score per input pixel, so its decoder must return to "
                f"{height}x{width} (an Upsample or ConvTranspose2d more, or other strides)")

    def step_figures(self, group, loss, scores, y):
        counted = y != self.ignore_index  # N, H, W
        correct = int(((scores.argmax(axis=1) == y) & counted).sum())
        loss, correct, images = group.global_statistics(loss, correct, len(y))
        # The same exchange again for the pixels counted (the groups sum what they are given).
        _, targets, _ = group.global_statistics(0.0, int(counted.sum()), len(y))
        return StepFigures(loss, correct, targets, images)

    def tally(self, class_names):
        return PixelTally(list(class_names), self.loss_for_tally())

    def loss_for_tally(self) -> CrossEntropyLoss:
        return CrossEntropyLoss(weight=self.class_weight, ignore_index=self.ignore_index,
                                reduction="none")

    def record(self, result):
        iou = result.per_class_iou
        return {"val_loss": result.loss, "val_accuracy": result.accuracy,
                "val_mean_iou": result.mean_iou,
                "val_iou": {name: (None if math.isnan(v) else float(v))
                            for name, v in zip(result.class_names, iou, strict=True)}}

    def score(self, result):
        value = result.mean_iou
        return -1.0 if math.isnan(value) else value

    def describe(self):
        return {"name": self.name, "class_weight": self.class_weight,
                "ignore_index": self.ignore_index}


def _alone(array):
    return array


class ClassTally:
    """A classifier's evaluation, batch by batch: each image's cross-entropy (float64), label
    and prediction."""

    def __init__(self, class_names: list[str]):
        self.class_names = class_names
        self.losses: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.predictions: list[np.ndarray] = []

    def add(self, scores, y) -> None:
        self.losses.append(sample_losses(scores, y))
        self.labels.append(np.asarray(y))
        self.predictions.append(scores.argmax(axis=1))

    def result(self, gather=_alone) -> Evaluation:
        """The Evaluation of the images added here (and, with `gather`, on every process)."""
        return evaluation(gather(joined(self.losses, np.float64)),
                          gather(joined(self.labels, np.int64)),
                          gather(joined(self.predictions, np.int64)), self.class_names)


class PixelTally:
    """A segmenter's evaluation, batch by batch: the training loss over every counted pixel
    (each image's weighted sum kept in float64) and the confusion matrix of the pixels."""

    def __init__(self, class_names: list[str], loss: CrossEntropyLoss):
        self.class_names = class_names
        self.loss_fn = loss
        self.image_losses: list[np.ndarray] = []  # per image: sum of its pixels' weighted losses
        self.image_weights: list[np.ndarray] = []  # per image: sum of its pixels' weights
        self.confusion = np.zeros((len(class_names), len(class_names)), np.int64)

    def add(self, scores, y) -> None:
        y = np.asarray(y)
        losses = self.loss_fn.forward(scores, y)  # N, H, W: w[y] * -log p[y], 0 where ignored
        self.loss_fn.cache = None  # no backward: free the probabilities now
        counted = y != self.loss_fn.ignore_index
        weights = counted.astype(np.float64)
        if self.loss_fn.weight is not None:
            weights *= self.loss_fn.weight[np.where(counted, y, 0)]
        self.image_losses.append(losses.reshape(len(y), -1).sum(axis=1, dtype=np.float64))
        self.image_weights.append(weights.reshape(len(y), -1).sum(axis=1))
        self.confusion += confusion_matrix(y, scores.argmax(axis=1), len(self.class_names),
                                           self.loss_fn.ignore_index)

    def result(self, gather=_alone) -> SegmentationEvaluation:
        """The evaluation of the images added here (and, with `gather`, on every process): the
        weighted mean loss over all counted pixels, and the summed confusion matrices."""
        losses = gather(joined(self.image_losses, np.float64))
        weights = gather(joined(self.image_weights, np.float64))
        k = len(self.class_names)
        confusion = gather(self.confusion.ravel()).reshape(-1, k, k).sum(axis=0)
        total = math.fsum(weights)
        loss = math.fsum(losses) / total if total else math.nan
        return SegmentationEvaluation(loss, confusion, self.class_names, images=len(losses))


def for_output(output_shape) -> str:
    """The task a model's first output implies: maps (K, H, W) segment, a vector classifies."""
    return "segment" if len(tuple(output_shape)) == 3 else "classify"


def balanced_weights(class_counts) -> list[float]:
    """Median frequency balancing (Eigen & Fergus 2015): w_c = median(f) / f_c with f_c the
    share of class c's pixels; a class with no pixels gets weight 0 (it cannot be learned)."""
    counts = np.asarray(class_counts, np.float64)
    share = counts / max(counts.sum(), 1.0)
    present = share[share > 0]
    median = float(np.median(present)) if present.size else 1.0
    return [float(median / f) if f > 0 else 0.0 for f in share]


def make_task(name: str, *, class_weight=None, ignore_index: int | None = None,
              class_counts=None) -> Task:
    """A Task by name. For "segment": class_weight is one weight per class, or "balanced"
    (median frequency balancing over class_counts, the training masks' pixels per class);
    ignore_index is the mask value that counts for nothing (None: no such value)."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, received {name!r}")
    if name == "classify":
        if class_weight is not None:
            raise ValueError("class weights are for --task segment (a classifier's classes "
                             "are balanced by its dataset); leave --class-weight out")
        return Classify()
    if class_weight == "balanced":
        if class_counts is None:
            raise ValueError("class_weight='balanced' needs the training masks' class counts")
        class_weight = balanced_weights(class_counts)
    elif isinstance(class_weight, str):
        raise ValueError(f"class weights must be a list of numbers, one per class, or "
                         f"'balanced', received {class_weight!r}")
    if class_weight is not None:
        weights = np.asarray(class_weight, np.float64)
        if weights.ndim != 1 or not np.isfinite(weights).all() or (weights < 0).any() \
                or not (weights > 0).any():
            raise ValueError(f"class weights must be finite numbers >= 0, at least one > 0, "
                             f"one per class, received {class_weight!r}")
    return Segment(class_weight, NO_IGNORE if ignore_index is None else ignore_index)
