"""The registry, name resolution and the Dataset container."""

from __future__ import annotations

import numpy as np
import pytest

from convnet.data import DATASETS, DataError, Dataset, list_datasets, load_dataset


def test_registry_entries_are_complete():
    assert [i.name for i in list_datasets()] == ["mnist-5k", "mnist", "fashion-mnist", "cifar10",
                                                 "digits-seg"]
    for name, info in DATASETS.items():
        assert info.name == name and "\n" not in info.description and info.description
        # digits-seg: background and the ten digits
        assert len(info.class_names) == info.num_classes == (11 if name == "digits-seg" else 10)
        assert info.splits == ("train", "test") and set(info.sizes) == set(info.splits)
        assert len(info.input_shape) == 3
    assert DATASETS["cifar10"].input_shape == (3, 32, 32)
    assert DATASETS["mnist"].augmentation["hflip"] is False  # a mirrored digit is not a digit


@pytest.mark.parametrize("alias", ["MNIST-5K", "mnist5k", "mnist_5k", " mnist-5k "])
def test_aliases(alias):
    assert load_dataset(alias, "test").name == "mnist-5k"


def test_unknown_name_suggests_the_closest():
    with pytest.raises(DataError, match=r"unknown dataset 'fashon-mnist'\. Did you mean "
                                        r"'fashion-mnist'\? Known datasets: mnist-5k, mnist"):
        load_dataset("fashon-mnist")


def test_unknown_split():
    with pytest.raises(DataError, match=r"has splits \['train', 'test'\], received split 'val'\. "
                                        r"For a validation set, split 'train' with"):
        load_dataset("mnist-5k", "val")


def test_folder_without_a_path():
    with pytest.raises(DataError, match="dataset 'folder' needs the folder: pass data_dir"):
        load_dataset("folder")


def make(n=6, c=1):
    images = np.arange(n * c * 4, dtype=np.uint8).reshape(n, c, 2, 2)
    return Dataset(images=images, labels=np.arange(n) % 3, class_names=["a", "b", "c"], name="t")


def test_dataset_basics():
    ds = make()
    assert len(ds) == 6 and ds.input_shape == (1, 2, 2) and ds.labels.dtype == np.int64
    assert repr(ds) == "Dataset('t', 6 images 1x2x2, 3 classes)"
    sub = ds.subset([4, 1])
    np.testing.assert_array_equal(sub.labels, [1, 1])
    np.testing.assert_array_equal(sub.images, ds.images[[4, 1]])
    mask = ds.labels == 2
    assert len(ds.subset(mask)) == 2 and len(ds.subset([])) == 0


def test_dataset_rejects_bad_arrays():
    good = make()
    with pytest.raises(DataError, match=r"images must be a uint8 array \(N, C, H, W\), received "
                                        r"float64 array of shape \(6, 1, 2, 2\)"):
        Dataset(good.images.astype(float), good.labels, good.class_names, "t")
    with pytest.raises(DataError, match=r"labels must have shape \(6,\)"):
        Dataset(good.images, good.labels[:5], good.class_names, "t")
    with pytest.raises(DataError, match=r"labels must lie in \[0, 1\] for 2 classes"):
        Dataset(good.images, good.labels, ["a", "b"], "t")
    with pytest.raises(DataError, match=r"indices must lie in \[0, 5\]"):
        good.subset([6])
