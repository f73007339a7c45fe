"""Deterministic, stratified splits: every class is divided in the same proportion."""

from __future__ import annotations

import numbers

import numpy

from convnet.data.dataset import Dataset
from convnet.data.errors import DataError


def stratified_indices(labels: numpy.ndarray, fraction: float, rng: numpy.random.Generator
                       ) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Split positions 0..N-1 into (rest, held_out), both sorted.

    Each class gives round(fraction * its count) of its images, chosen by `rng`, to held_out.
    """
    labels = numpy.asarray(labels)
    held = []
    for c in numpy.unique(labels):  # ascending, so the draws happen in a fixed order
        members = numpy.flatnonzero(labels == c)
        k = int(numpy.floor(fraction * members.size + 0.5))
        held.append(rng.permutation(members)[:k])
    held_out = numpy.sort(numpy.concatenate(held)) if held else numpy.zeros(0, numpy.int64)
    mask = numpy.ones(labels.size, dtype=bool)
    mask[held_out] = False
    return numpy.flatnonzero(mask), held_out


def train_val_split(dataset: Dataset, val_fraction: float, seed: int
                    ) -> tuple[Dataset, Dataset]:
    """(train, val): `val_fraction` of each class goes to val, chosen by `seed` alone.

    Both keep the dataset's order. val_fraction = 0 gives an empty val set. Images with masks
    have no one class: `val_fraction` of all of them goes to val.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) \
            or not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be a number in [0, 1), e.g. 0.1, "
                        f"received {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | numpy.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, received {seed!r}")
    rng = numpy.random.default_rng([int(seed), 0x5E1])  # a stream of its own for the split
    strata = numpy.zeros(len(dataset), numpy.int64) if dataset.has_masks else dataset.labels
    train_idx, val_idx = stratified_indices(strata, float(val_fraction), rng)
    if val_fraction > 0 and val_idx.size == 0:
        raise DataError(f"val_fraction {val_fraction} of {len(dataset)} images "
                        f"({dataset.num_classes} classes) leaves no validation images; "
                        "use a larger fraction or more images")
    if train_idx.size == 0:
        raise DataError(f"val_fraction {val_fraction} leaves no training images out of "
                        f"{len(dataset)}; use a smaller fraction")
    return dataset.subset(train_idx, split="train"), dataset.subset(val_idx, split="val")
