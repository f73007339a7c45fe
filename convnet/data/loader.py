"""BatchLoader: (x, y) batches whose order and augmentation depend only on (seed, epoch, batch).

x is float32 (B, C, H, W), normalized; y is int64 (B,). Because every random draw is a pure
function of (seed, epoch, batch index), a run resumed in the middle of an epoch sees exactly the
batches an uninterrupted run would have seen (`iter_from`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy

from convnet.data.augment import augment, check_augmentation
from convnet.data.dataset import Dataset
from convnet.data.errors import DataError
from convnet.data.normalization import Normalization

# Tags that give shuffling and augmentation separate random streams from the same seed.
SHUFFLE_STREAM = 0x5F1
AUGMENT_STREAM = 0xA06


class BatchLoader:
    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int,
                 normalization: Normalization | None, augmentation: dict | None = None,
                 drop_last: bool = False):
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
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.normalization = normalization
        self.augmentation = check_augmentation(augmentation)
        self.drop_last = bool(drop_last)
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

    def iter_from(self, epoch: int, batch_index: int = 0
                  ) -> Iterator[tuple[numpy.ndarray, numpy.ndarray]]:
        """Batches of `epoch` from `batch_index` on, identical to those of a full pass."""
        self.set_epoch(epoch)
        if isinstance(batch_index, bool) or not isinstance(batch_index, int | numpy.integer) \
                or not 0 <= batch_index <= len(self):
            raise DataError(f"BatchLoader.iter_from: batch_index must be in [0, {len(self)}], "
                            f"received {batch_index!r}")
        return self._batches(int(epoch), int(batch_index))

    def _batches(self, epoch: int, first: int) -> Iterator[tuple[numpy.ndarray, numpy.ndarray]]:
        order = self.order(epoch)
        images, labels = self.dataset.images, self.dataset.labels
        padding, hflip = self.augmentation["crop_padding"], self.augmentation["hflip"]
        for b in range(first, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]  # B
            x = images[idx]  # B, C, H, W uint8
            if padding or hflip:
                rng = numpy.random.default_rng([self.seed, AUGMENT_STREAM, epoch, b])
                x = augment(x, rng, crop_padding=padding, hflip=hflip)
            if self.normalization is not None:
                xf = self.normalization.apply(x)  # B, C, H, W float32
            else:
                xf = x.astype(numpy.float32) * numpy.float32(1 / 255)
            yield xf, labels[idx]

    def __repr__(self) -> str:
        extras = [f"shuffle={self.shuffle}", f"seed={self.seed}"]
        if self.augmentation != {"crop_padding": 0, "hflip": False}:
            extras.append(f"augmentation={self.augmentation}")
        if self.drop_last:
            extras.append("drop_last=True")
        return (f"BatchLoader({self.dataset!r}, batch_size={self.batch_size}, "
                f"{', '.join(extras)}, {len(self)} batches)")
