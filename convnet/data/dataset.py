"""Dataset: raw uint8 images in (N, C, H, W) with int64 labels, or with masks (N, H, W) of class
indices (semantic segmentation), and DatasetInfo for the registry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy

from convnet.data.errors import DataError


@dataclass(eq=False, repr=False)
class Dataset:
    """Images as stored on disk (uint8, NCHW) and their labels: one class per image, or one
    per pixel (a mask, for segmentation).

    Normalization and augmentation happen later, per batch (see `BatchLoader`), so a Dataset
    always holds the exact pixels that were read.
    """

    images: numpy.ndarray  # (N, C, H, W) uint8
    # (N,) int64, each in [0, len(class_names)); or masks (N, H, W) uint8/int16/int32/int64,
    # each pixel a class index or `ignore_label`
    labels: numpy.ndarray
    class_names: list[str]
    name: str  # "mnist-5k", "mnist", "fashion-mnist", "cifar10", "folder:/path"
    split: str = ""  # "train", "test", "val", or "" when it does not apply
    notes: list[str] = field(default_factory=list)  # conversions applied while loading
    ignore_label: int | None = None  # masks only: pixels with no class (PASCAL VOC's 255)

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, numpy.ndarray) or images.ndim != 4 or images.dtype != numpy.uint8:
            got = (f"{type(images).__name__}" if not isinstance(images, numpy.ndarray)
                   else f"{images.dtype} array of shape {images.shape}")
            raise DataError(f"Dataset {self.name!r}: images must be a uint8 array (N, C, H, W), "
                            f"received {got}")
        labels = numpy.asarray(labels)
        n, _, h, w = images.shape
        if labels.shape not in ((n,), (n, h, w)):
            raise DataError(f"Dataset {self.name!r}: labels must have shape ({n},) (a class per "
                            f"image) or ({n}, {h}, {w}) (a mask per image) to match the images "
                            f"{images.shape}, received shape {labels.shape}")
        if labels.size and not numpy.issubdtype(labels.dtype, numpy.integer):
            raise DataError(f"Dataset {self.name!r}: labels must be integers, "
                            f"received dtype {labels.dtype}")
        # Masks keep their small integer type: 4,000 masks of 64x64 are 16 MB as uint8.
        self.labels = labels if labels.ndim == 3 else labels.astype(numpy.int64, copy=False)
        self.class_names = [str(c) for c in self.class_names]
        if self.ignore_label is not None and labels.ndim != 3:
            raise DataError(f"Dataset {self.name!r}: ignore_label is for masks (N, H, W), the "
                            f"labels are one class per image")
        counted = self.labels
        if self.ignore_label is not None:
            self.ignore_label = int(self.ignore_label)
            counted = counted[counted != self.ignore_label]
        if counted.size and (counted.min() < 0 or counted.max() >= len(self.class_names)):
            what = "mask values" if self.has_masks else "labels"
            also = (f" or {self.ignore_label} (ignored)" if self.ignore_label is not None
                    else "")
            raise DataError(
                f"Dataset {self.name!r}: {what} must lie in [0, {len(self.class_names) - 1}]"
                f"{also} for {len(self.class_names)} classes, received values from "
                f"{counted.min()} to {counted.max()}")

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

    @property
    def has_masks(self) -> bool:
        """True when every pixel has a label (labels (N, H, W)): a segmentation dataset."""
        return self.labels.ndim == 3

    def class_counts(self) -> numpy.ndarray:
        """(num_classes,) int64: how many images each class has (pixels, for masks; ignored
        pixels are not counted)."""
        labels = self.labels.ravel()
        if self.ignore_label is not None:
            labels = labels[labels != self.ignore_label]
        return numpy.bincount(labels.astype(numpy.int64),
                              minlength=self.num_classes).astype(numpy.int64)

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
                       split=self.split if split is None else split, notes=list(self.notes),
                       ignore_label=self.ignore_label)

    def __repr__(self) -> str:
        c, h, w = self.input_shape
        split = f", split={self.split!r}" if self.split else ""
        masks = ", with masks" if self.has_masks else ""
        return (f"Dataset({self.name!r}{split}, {len(self)} images {c}x{h}x{w}, "
                f"{self.num_classes} classes{masks})")


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
    task: str = "classify"  # "classify" (a class per image) or "segment" (a class per pixel)
