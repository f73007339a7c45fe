"""Per-channel normalization: statistics of the training images, saved with the model as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy

from convnet.data.errors import DataError

CHUNK_IMAGES = 4096  # images per pass when summing squares, to bound memory on CIFAR-size data


@dataclass
class Normalization:
    """x -> (x / 255 - mean) / std per channel; mean and std are in [0, 1] pixel units."""

    mean: list[float]
    std: list[float]

    def __post_init__(self):
        self.mean = [float(m) for m in self.mean]
        self.std = [float(s) for s in self.std]
        if len(self.mean) != len(self.std) or not self.mean:
            raise DataError(f"Normalization: mean and std need one value per channel, received "
                            f"{len(self.mean)} means and {len(self.std)} stds")
        if not all(math.isfinite(s) and s > 0 for s in self.std) \
                or not all(math.isfinite(m) for m in self.mean):
            raise DataError(f"Normalization: std must be finite and > 0 and mean finite, "
                            f"received mean={self.mean}, std={self.std}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, images_uint8: numpy.ndarray) -> Normalization:
        """Mean and (population) std of each channel over all images and pixels.

        Sums are taken exactly in integers, so the result does not depend on the order of the
        images or on float accumulation. A constant channel gets std 1 (it is only shifted).
        """
        images = _check_images(images_uint8, "Normalization.fit")
        n, c, h, w = images.shape
        if n == 0:
            raise DataError("Normalization.fit: received 0 images; statistics need at least one")
        count = n * h * w
        total = numpy.zeros(c, dtype=numpy.uint64)
        squares = numpy.zeros(c, dtype=numpy.uint64)
        for start in range(0, n, CHUNK_IMAGES):
            chunk = images[start:start + CHUNK_IMAGES].astype(numpy.uint64)  # B, C, H, W
            total += chunk.sum(axis=(0, 2, 3))
            squares += (chunk * chunk).sum(axis=(0, 2, 3))
        mean, std = [], []
        for s, q in zip(total.tolist(), squares.tolist(), strict=True):
            variance = (q * count - s * s) / (count * count)  # exact integers until here
            mean.append(s / count / 255.0)
            sd = math.sqrt(max(variance, 0.0)) / 255.0
            std.append(sd if sd > 0 else 1.0)
        return cls(mean=mean, std=std)

    def apply(self, images_uint8: numpy.ndarray) -> numpy.ndarray:
        """(N, C, H, W) or (C, H, W) uint8 -> float32 of the same shape."""
        images = numpy.asarray(images_uint8)
        single = images.ndim == 3
        batch = _check_images(images[None] if single else images, "Normalization.apply")
        if batch.shape[1] != self.channels:
            raise DataError(
                f"Normalization.apply: the statistics are for {self.channels} channel(s), the "
                f"images have {batch.shape[1]} (shape {batch.shape}); convert the images to "
                f"{self.channels} channel(s) first")
        std = numpy.asarray(self.std, dtype=numpy.float64)
        scale = (1.0 / (255.0 * std)).astype(numpy.float32)[:, None, None]  # C, 1, 1
        shift = (-numpy.asarray(self.mean) / std).astype(numpy.float32)[:, None, None]
        out = batch.astype(numpy.float32)
        out *= scale
        out += shift
        return out[0] if single else out

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "scale": "x / 255"}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        if not isinstance(d, dict) or "mean" not in d or "std" not in d:
            keys = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise DataError(f"Normalization.from_dict: expected a dict with 'mean' and 'std' "
                            f"lists, received {keys}")
        try:
            return cls(mean=list(d["mean"]), std=list(d["std"]))
        except (TypeError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"Normalization.from_dict: mean and std must be lists of numbers, "
                            f"received mean={d['mean']!r}, std={d['std']!r}") from e


def _check_images(images, what: str) -> numpy.ndarray:
    images = numpy.asarray(images)
    if images.dtype != numpy.uint8 or images.ndim != 4:
        raise DataError(f"{what}: expected uint8 images of shape (N, C, H, W), received "
                        f"{images.dtype} array of shape {images.shape}")
    return images
