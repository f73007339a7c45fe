"""CIFAR-10 python batches from --data-dir: folder, parent folder or the tar.gz."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from data_fixtures import CIFAR_NAMES, cifar_batch_bytes

from convnet.data import DataError, load_dataset


@pytest.mark.parametrize("where", ["parent", "folder", "archive"])
def test_cifar10_from_data_dir(tmp_path, cifar_fixture, where):
    if where == "archive":
        (tmp_path / "cifar-10-python.tar.gz").write_bytes(cifar_fixture.tar_gz())
        data_dir = tmp_path
    else:
        folder = cifar_fixture.write_folder(tmp_path)
        data_dir = tmp_path if where == "parent" else folder
    train = load_dataset("cifar10", "train", data_dir=data_dir)
    test = load_dataset("cifar10", "test", data_dir=data_dir)
    images, labels = cifar_fixture.train()
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images, images)  # R plane, G plane, B plane
    np.testing.assert_array_equal(train.labels, labels)
    np.testing.assert_array_equal(test.images, cifar_fixture.batches["test_batch"][0])
    assert train.class_names == CIFAR_NAMES and train.name == "cifar10"


def test_channel_planes_are_in_rgb_order(tmp_path):
    image = np.zeros((1, 3, 32, 32), np.uint8)
    image[0, 0] = 200  # red plane
    image[0, 2, 5, 7] = 99  # one blue pixel at row 5, column 7
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(cifar_batch_bytes(image, np.array([1])))
    # written by hand: the flat layout is 1024 red, 1024 green, 1024 blue, row by row
    flat = np.zeros((1, 3072), np.uint8)
    flat[0, :1024] = 200
    flat[0, 2048 + 5 * 32 + 7] = 99
    batch = {b"data": flat, b"labels": [4]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    test = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert test.images[0, 0].min() == 200 and test.images[0, 1].max() == 0
    assert test.images[0, 2, 5, 7] == 99 and test.images[0, 2].sum() == 99
    assert test.class_names[4] == "deer"  # no batches.meta: the standard names


def test_missing_batch(tmp_path, cifar_fixture):
    folder = cifar_fixture.write_folder(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 missing from"):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path)) == 6


def test_nothing_there(tmp_path):
    with pytest.raises(DataError, match="neither cifar-10-batches-py/ nor cifar-10-python.tar.gz"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_corrupt_batch(tmp_path, cifar_fixture):
    folder = cifar_fixture.write_folder(tmp_path)
    data = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR-10 python batch"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_truncated_archive(tmp_path, cifar_fixture):
    archive = cifar_fixture.tar_gz()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(archive[: len(archive) // 2])
    with pytest.raises(DataError, match="archive is corrupt or truncated"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, cifar_fixture):
    folder = cifar_fixture.write_folder(tmp_path)
    marker = tmp_path / "ran"
    (folder / "test_batch").write_bytes(pickle.dumps(
        {b"data": _Exploit(), b"labels": [], b"side": (os.system, f"touch {marker}")}))
    with pytest.raises(DataError, match=r"global (posix|os|nt)\.system is not allowed"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert not marker.exists()


def test_wrong_data_shape(tmp_path, cifar_fixture):
    folder = cifar_fixture.write_folder(tmp_path)
    batch = {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"'data' must be a uint8 array \(N, 3072\), received "
                                        r"uint8 array of shape \(2, 1024\)"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_an_archive_member_declaring_gigabytes_is_refused_before_it_is_read(tmp_path):
    # A .tar.gz whose data_batch_1 expands to 100 MB of zeros from 0.5 MB: refused by the size
    # its header declares, before a byte of it is decompressed (it was read whole).
    import gzip
    import io
    import tarfile

    class Zeros(io.RawIOBase):
        def __init__(self, size):
            self.left = size

        def readable(self):
            return True

        def readinto(self, buffer):
            count = min(len(buffer), self.left)
            buffer[:count] = bytes(count)
            self.left -= count
            return count

    path = tmp_path / "cifar-10-python.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as stream, \
            tarfile.open(fileobj=stream, mode="w|") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 100 * 1024**2
        tar.addfile(info, io.BufferedReader(Zeros(info.size)))
    with pytest.raises(DataError, match=r"data_batch_1 declares 104,857,600 bytes; a CIFAR-10 "
                                        r"batch is about 31 MB"):
        load_dataset("cifar10", "train", data_dir=tmp_path)
