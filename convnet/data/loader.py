"""BatchLoader: (x, y) batches whose order and augmentation depend only on (seed, epoch, batch).

x is float32 (B, C, H, W), normalized; y is int64 (B,), or the masks (B, H, W) of a segmentation
dataset. Because every random draw is a pure
function of (seed, epoch, batch index), a run resumed in the middle of an epoch sees exactly the
batches an uninterrupted run would have seen (`iter_from`).

Data parallelism: `BatchLoader(..., part=(rank, ranks))` yields only rank's contiguous slice of
every global batch (`shard_bounds`), reading, augmenting and normalizing only those images, with
the augmentation draws of the whole batch: the slices of all ranks, put together, are the
one-process batch to the bit, and each rank's work is 1/ranks of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy

from convnet.data.augment import apply_augmentation, augmentation_draws, check_augmentation, select
from convnet.data.dataset import Dataset
from convnet.data.errors import DataError
from convnet.data.normalization import Normalization

# Tags that give shuffling and augmentation separate random streams from the same seed.
SHUFFLE_STREAM = 0x5F1
AUGMENT_STREAM = 0xA06


def shard_bounds(count: int, size: int, rank: int) -> tuple[int, int]:
    """[start, stop) of `rank`'s contiguous slice of `count` items split over `size` ranks.

    The first count % size ranks get one item more, so rank 0's slice is empty only when the
    batch is (13 over 3: 5, 4, 4; 1 over 2: 1, 0).
    """
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class BatchLoader:
    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int,
                 normalization: Normalization | None, augmentation: dict | None = None,
                 drop_last: bool = False, part: tuple[int, int] = (0, 1)):
        if not isinstance(dataset, Dataset):
            raise DataError(f"BatchLoader: expected a Dataset, received {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | numpy.integer) \
                or batch_size < 1:
            raise DataError(f"BatchLoader: batch_size must be a positive integer, "
                            f"received {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | numpy.integer) or seed < 0:
            raise DataError(f"BatchLoader: seed must be a non-negative integer, received {seed!r}")
        if len(dataset) == 0:
            raise DataError(f"BatchLoader: dataset {dataset.name!r} has no images")
        if drop_last and len(dataset) < batch_size:
            raise DataError(f"BatchLoader: {len(dataset)} images with batch_size {batch_size} and "
                            "drop_last=True give no batch; use a smaller batch_size")
        if normalization is not None and normalization.channels != dataset.input_shape[0]:
            raise DataError(f"BatchLoader: the normalization is for {normalization.channels} "
                            f"channel(s), dataset {dataset.name!r} has {dataset.input_shape[0]}")
        rank, ranks = _check_part(part)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.normalization = normalization
        self.augmentation = check_augmentation(augmentation)
        if dataset.has_masks and self.augmentation != check_augmentation(None):
            raise DataError(f"BatchLoader: dataset {dataset.name!r} has masks, and crops and "
                            f"flips are applied to images only; pass augmentation=None")
        self.drop_last = bool(drop_last)
        self.part = (rank, ranks)  # this loader yields slice `rank` of `ranks` of each batch
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next `iter(loader)` yields; it fixes the shuffle order."""
        if isinstance(epoch, bool) or not isinstance(epoch, int | numpy.integer) or epoch < 0:
            raise DataError(f"BatchLoader.set_epoch: epoch must be a non-negative integer, "
                            f"received {epoch!r}")
        self.epoch = int(epoch)

    def order(self, epoch: int) -> numpy.ndarray:
        """(N,) the positions of the dataset in the order epoch `epoch` visits them."""
        n = len(self.dataset)
        if not self.shuffle:
            return numpy.arange(n)
        return numpy.random.default_rng([self.seed, SHUFFLE_STREAM, int(epoch)]).permutation(n)

    def __iter__(self) -> Iterator[tuple[numpy.ndarray, numpy.ndarray]]:
        return self.iter_from(self.epoch, 0)

    def iter_from(self, epoch: int, batch_index: int = 0, stop: int | None = None
                  ) -> Iterator[tuple[numpy.ndarray, numpy.ndarray]]:
        """Batches `batch_index` to `stop` (default: the last) of `epoch`, identical to those
        of a full pass; with `part`, this loader's slice of each."""
        self.set_epoch(epoch)
        stop = len(self) if stop is None else stop
        _check_index("stop", stop, len(self))
        _check_index("batch_index", batch_index, stop)
        return self._batches(int(epoch), int(batch_index), int(stop))

    def _batches(self, epoch: int, first: int, stop: int
                 ) -> Iterator[tuple[numpy.ndarray, numpy.ndarray]]:
        order = self.order(epoch)
        images, labels = self.dataset.images, self.dataset.labels
        padding, hflip = self.augmentation["crop_padding"], self.augmentation["hflip"]
        rank, ranks = self.part
        for b in range(first, stop):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]  # B
            start, end = shard_bounds(len(batch), ranks, rank)
            idx = batch[start:end]  # b: this part of the batch, maybe empty
            x = images[idx]  # b, C, H, W uint8
            if padding or hflip:
                # Drawn for the whole batch, so that each image gets its one-process draws.
                rng = numpy.random.default_rng([self.seed, AUGMENT_STREAM, epoch, b])
                draws = augmentation_draws(rng, len(batch), crop_padding=padding, hflip=hflip)
                x = apply_augmentation(x, select(draws, start, end))
            if self.normalization is not None:
                xf = self.normalization.apply(x)  # b, C, H, W float32
            else:
                xf = x.astype(numpy.float32) * numpy.float32(1 / 255)
            yield xf, labels[idx]

    def __repr__(self) -> str:
        extras = [f"shuffle={self.shuffle}", f"seed={self.seed}"]
        if self.augmentation != {"crop_padding": 0, "hflip": False}:
            extras.append(f"augmentation={self.augmentation}")
        if self.drop_last:
            extras.append("drop_last=True")
        if self.part != (0, 1):
            extras.append(f"part={self.part}")
        return (f"BatchLoader({self.dataset!r}, batch_size={self.batch_size}, "
                f"{', '.join(extras)}, {len(self)} batches)")


def _check_index(name: str, value, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | numpy.integer) \
            or not 0 <= value <= most:
        raise DataError(f"BatchLoader.iter_from: {name} must be in [0, {most}], "
                        f"received {value!r}")


def _check_part(part) -> tuple[int, int]:
    """(rank, ranks) with 0 <= rank < ranks."""
    try:
        rank, ranks = (int(v) if not isinstance(v, bool) and isinstance(v, int | numpy.integer)
                       else None for v in part)
    except (TypeError, ValueError):
        rank = ranks = None
    if rank is None or ranks is None or not 0 <= rank < ranks:
        raise DataError(f"BatchLoader: part must be (rank, ranks) with 0 <= rank < ranks, "
                        f"e.g. (1, 4) for the second of 4 processes; received {part!r}")
    return rank, ranks
