"""Dataset: raw uint8 images in (N, C, H, W) with int64 labels, and DatasetInfo for the registry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy

from convnet.data.errors import DataError


@dataclass(eq=False, repr=False)
class Dataset:
    """Images as stored on disk (uint8, NCHW) and their labels.

    Normalization and augmentation happen later, per batch (see `BatchLoader`), so a Dataset
    always holds the exact pixels that were read.
    """

    images: numpy.ndarray  # (N, C, H, W) uint8
    labels: numpy.ndarray  # (N,) int64, each in [0, len(class_names))
    class_names: list[str]
    name: str  # "mnist-5k", "mnist", "fashion-mnist", "cifar10", "folder:/path"
    split: str = ""  # "train", "test", "val", or "" when it does not apply
    notes: list[str] = field(default_factory=list)  # conversions applied while loading

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, numpy.ndarray) or images.ndim != 4 or images.dtype != numpy.uint8:
            got = (f"{type(images).__name__}" if not isinstance(images, numpy.ndarray)
                   else f"{images.dtype} array of shape {images.shape}")
            raise DataError(f"Dataset {self.name!r}: images must be a uint8 array (N, C, H, W), "
                            f"received {got}")
        labels = numpy.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"Dataset {self.name!r}: labels must have shape ({images.shape[0]},) "
                            f"to match the images, received shape {labels.shape}")
        if labels.size and not numpy.issubdtype(labels.dtype, numpy.integer):
            raise DataError(f"Dataset {self.name!r}: labels must be integers, "
                            f"received dtype {labels.dtype}")
        self.labels = labels.astype(numpy.int64, copy=False)
        self.class_names = [str(c) for c in self.class_names]
        if self.labels.size and (self.labels.min() < 0
                                 or self.labels.max() >= len(self.class_names)):
            raise DataError(
                f"Dataset {self.name!r}: labels must lie in [0, {len(self.class_names) - 1}] "
                f"for {len(self.class_names)} classes, received labels from "
                f"{self.labels.min()} to {self.labels.max()}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        n, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> numpy.ndarray:
        """(num_classes,) int64: how many images each class has."""
        return numpy.bincount(self.labels, minlength=self.num_classes).astype(numpy.int64)

    def subset(self, indices, split: str | None = None) -> Dataset:
        """The images at `indices` (an index array or a boolean mask), in that order."""
        indices = numpy.asarray(indices)
        if indices.dtype == bool:
            if indices.shape != (len(self),):
                raise DataError(f"Dataset.subset: a boolean mask must have shape ({len(self)},), "
                                f"received {indices.shape}")
            indices = numpy.flatnonzero(indices)
        elif indices.size == 0:
            indices = indices.astype(numpy.int64)
        elif indices.ndim != 1 or not numpy.issubdtype(indices.dtype, numpy.integer):
            raise DataError("Dataset.subset: indices must be a 1-D integer array or a boolean "
                            f"mask, received {indices.dtype} array of shape {indices.shape}")
        elif indices.min() < 0 or indices.max() >= len(self):
            raise DataError(f"Dataset.subset: indices must lie in [0, {len(self) - 1}], "
                            f"received {indices.min()}..{indices.max()}")
        return Dataset(images=self.images[indices], labels=self.labels[indices],
                       class_names=list(self.class_names), name=self.name,
                       split=self.split if split is None else split, notes=list(self.notes))

    def __repr__(self) -> str:
        c, h, w = self.input_shape
        split = f", split={self.split!r}" if self.split else ""
        return (f"Dataset({self.name!r}{split}, {len(self)} images {c}x{h}x{w}, "
                f"{self.num_classes} classes)")


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a named dataset before loading it."""

    name: str
    description: str  # one line
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    splits: tuple[str, ...]
    class_names: tuple[str, ...]
    sizes: dict[str, int]  # split -> number of images
    source: str  # where the files come from
    # Augmentation that suits the data: flips turn a 2 into a mirror-2, so digits get none.
    augmentation: dict = field(default_factory=dict)
