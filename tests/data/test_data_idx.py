"""MNIST-format IDX files from --data-dir: gzipped or raw, and every way they can be wrong."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from data_fixtures import idx_bytes

from convnet.data import DataError, load_dataset
from convnet.data.idx import read_idx


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    data = idx_bytes(array)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.shape == (2, 3, 5) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([1, -2, 70000], dtype=">i4")
    path = tmp_path / "ints.idx"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3) + values.tobytes())
    np.testing.assert_array_equal(read_idx(path), [1, -2, 70000])


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_data_dir(tmp_path, idx_fixture, gz):
    idx_fixture.write(tmp_path, gz=gz)
    train = load_dataset("mnist", "train", data_dir=tmp_path)
    test = load_dataset("mnist", "test", data_dir=tmp_path)
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and test.input_shape == (1, 28, 28)
    np.testing.assert_array_equal(train.images[:, 0], idx_fixture.train_images)
    np.testing.assert_array_equal(test.labels, idx_fixture.test_labels)
    assert train.name == "mnist" and train.split == "train" and test.split == "test"
    assert train.class_names == [str(d) for d in range(10)]


def test_fashion_mnist_from_torchvision_layout(tmp_path, idx_fixture):
    idx_fixture.write(tmp_path / "FashionMNIST" / "raw", gz=False)
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert len(ds) == 20 and ds.class_names[9] == "Ankle boot"


def test_dotted_file_names_are_found(tmp_path, idx_fixture):
    for stem, data in idx_fixture.raw.items():
        (tmp_path / stem.replace("-idx", ".idx")).write_bytes(data)
    assert len(load_dataset("mnist", "test", data_dir=tmp_path)) == 20


def test_missing_file_names_it_and_the_fix(tmp_path, idx_fixture):
    idx_fixture.write(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", data_dir=tmp_path)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte(.gz) is not in" in message
    assert "leave out --data-dir to download" in message
    assert len(load_dataset("mnist", "train", data_dir=tmp_path)) == 30  # train is complete


def test_data_dir_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset("mnist", data_dir=tmp_path / "nope")


def test_truncated_raw_file(tmp_path, idx_fixture):
    idx_fixture.write(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"needs 23520 bytes .* has 23420; it is truncated"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_truncated_gzip_file(tmp_path, idx_fixture):
    idx_fixture.write(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*truncated or corrupt"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_not_an_idx_file(tmp_path, idx_fixture):
    idx_fixture.write(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"<html>oops</html>"))
    with pytest.raises(DataError, match=r"not an IDX file: the header starts with 3c 68 74 6d"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_images_and_labels_swapped(tmp_path, idx_fixture):
    idx_fixture.write(tmp_path, gz=False)
    images = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    labels = (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(labels)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(images)
    with pytest.raises(DataError, match="expected uint8 images .N, H, W., received uint8 data "
                                        r"of shape \(20,\)"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_counts_that_do_not_match(tmp_path, idx_fixture):
    idx_fixture.write(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(DataError, match="has 20 images but t10k-labels-idx1-ubyte has 19 labels"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_label_out_of_range(tmp_path, idx_fixture):
    idx_fixture.write(tmp_path, gz=False)
    labels = np.full(20, 3, np.uint8)
    labels[7] = 12
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(DataError, match="labels go up to 12, expected 0..9"):
        load_dataset("mnist", "test", data_dir=tmp_path)
