"""Folders of the user's own images: one subfolder per class."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convnet.data import DataError, load_dataset
from convnet.data.folder import load_folder


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def pets(tmp_path, rng):
    """cat: 2 gray 16x16 PNGs, dog: 1 RGB 16x16 PNG and 1 RGB JPEG."""
    root = tmp_path / "pets"
    pixels = {
        "cat/a.png": rng.integers(0, 256, size=(16, 16), dtype=np.uint8),
        "cat/b.png": rng.integers(0, 256, size=(16, 16), dtype=np.uint8),
        "dog/a.png": rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8),
        "dog/b.jpg": np.full((16, 16, 3), 90, np.uint8),
    }
    for name, array in pixels.items():
        write(root / name, array)
    return root, pixels


def test_classes_labels_and_inferred_channels(pets):
    root, pixels = pets
    ds = load_dataset(str(root))
    assert ds.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])
    assert ds.images.shape == (4, 3, 16, 16)  # one color image makes it RGB
    np.testing.assert_array_equal(ds.images[2], pixels["dog/a.png"].transpose(2, 0, 1))
    np.testing.assert_array_equal(ds.images[0, 1], pixels["cat/a.png"])
    assert ds.name == f"folder:{root.resolve()}"
    assert ds.notes == ["2 of 4 images: gray repeated into 3 channels (RGB) (e.g. cat/a.png)"]


def test_gray_request_converts_color_images(pets):
    root, pixels = pets
    ds = load_dataset("folder", data_dir=root, channels=1, image_size=(8, 8))
    assert ds.images.shape == (4, 1, 8, 8)
    assert "4 of 4 images: resized to 8x8 (e.g. cat/a.png)" in ds.notes
    assert "2 of 4 images: RGB converted to 1 gray channel (luma) (e.g. dog/a.png)" in ds.notes


def test_folder_prefix_name(pets):
    root, _ = pets
    assert len(load_dataset(f"folder:{root}")) == 4


def test_images_of_different_sizes_need_image_size(pets, rng):
    root, _ = pets
    write(root / "dog" / "c.png", rng.integers(0, 256, size=(20, 10, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"differ in size .*16x16.*20x10.*pass image_size"):
        load_dataset(str(root))
    ds = load_dataset(str(root), image_size=12)
    assert ds.images.shape == (5, 3, 12, 12)


def test_unreadable_image_names_the_file(pets):
    root, _ = pets
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError) as info:
        load_dataset(str(root))
    assert str(bad) in str(info.value)


def test_non_image_files_are_skipped_with_a_note(pets):
    root, _ = pets
    (root / "cat" / "README.txt").write_text("my cats")
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    ds = load_dataset(str(root))
    assert len(ds) == 4
    assert "skipped 1 file(s) that are not images by their name: cat/README.txt" in ds.notes


def test_empty_class_folder(pets):
    root, _ = pets
    (root / "bird").mkdir()
    with pytest.raises(DataError, match="class folder .*bird has no images"):
        load_dataset(str(root))


def test_no_class_subfolders(tmp_path, rng):
    write(tmp_path / "flat" / "a.png", rng.integers(0, 256, size=(4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="has no class subfolders; expected .*/<class>/<image>"):
        load_dataset(str(tmp_path / "flat"))


def test_unknown_name_that_looks_like_a_path(tmp_path):
    with pytest.raises(DataError, match="looks like a path but is not an existing folder"):
        load_dataset(str(tmp_path / "missing" / "images"))


def test_train_test_layout(tmp_path, rng):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("x", "y"):
            for i in range(n):
                write(tmp_path / split / cls / f"{i}.png",
                      rng.integers(0, 256, size=(5, 5), dtype=np.uint8))
    train = load_dataset(str(tmp_path), "train")
    test = load_dataset(str(tmp_path), "test")
    assert (len(train), len(test)) == (6, 4) and test.class_names == ["x", "y"]
    assert train.input_shape == (1, 5, 5) and train.notes == []
    with pytest.raises(DataError, match=r"split subfolders \['test', 'train'\], not 'val'"):
        load_dataset(str(tmp_path), "val")


def test_a_plain_folder_as_test_split_says_so(pets):
    root, _ = pets
    ds = load_dataset(str(root), "test")
    assert len(ds) == 4 and "split 'test' is every image in it" in ds.notes[0]


def test_class_names_of_a_trained_model(pets):
    root, _ = pets
    ds = load_folder(root, class_names=["bird", "cat", "dog"])
    np.testing.assert_array_equal(ds.labels, [1, 1, 2, 2])
    assert ds.class_names == ["bird", "cat", "dog"]
    with pytest.raises(DataError, match=r"subfolder\(s\) \['dog'\] are not among the classes"):
        load_folder(root, class_names=["cat"])
