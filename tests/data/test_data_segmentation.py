"""Segmentation data: the embedded digits-seg canvases, datasets with masks, and folders of
images/ + masks/."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convnet.data import BatchLoader, DataError, Dataset, digits_seg, load_dataset, train_val_split
from convnet.data.embedded import load_mnist_5k
from convnet.data.mask_folder import load_mask_folder


# -- digits-seg ---------------------------------------------------------------------------------
def test_digits_seg_is_registered_and_shaped_as_documented():
    from convnet.data import DATASETS

    info = DATASETS["digits-seg"]
    assert info.task == "segment" and info.num_classes == 11 and info.input_shape == (1, 64, 64)
    test = load_dataset("digits_seg", "test")  # an alias
    assert test.images.shape == (1000, 1, 64, 64) and test.images.dtype == np.uint8
    assert test.labels.shape == (1000, 64, 64) and test.has_masks
    assert test.class_names == ["background", *"0123456789"]
    assert set(np.unique(test.labels)) == set(range(11))
    train = load_dataset("digits-seg", "train")
    assert len(train) == 32000 == info.sizes["train"]


def test_no_test_digit_is_ever_on_a_training_canvas():
    train_digits, test_digits = load_mnist_5k("train"), load_mnist_5k("test")
    used = {split: sorted({i for canvas in digits_seg.canvas_sources(split) for i in canvas})
            for split in ("train", "test")}
    assert max(used["train"]) < 4000 and max(used["test"]) < 1000
    # By the pixels themselves, not by index: no digit of a test canvas is a training digit.
    seen_in_training = {train_digits.images[i].tobytes() for i in used["train"]}
    on_test_canvases = {test_digits.images[i].tobytes() for i in used["test"]}
    assert len(used["test"]) > 900  # nearly every test digit appears somewhere
    assert not seen_in_training & on_test_canvases


def test_every_canvas_has_two_to_four_digits_and_labels_only_bright_ink():
    data = load_dataset("digits-seg", "test")
    mnist = load_mnist_5k("test")
    for index, sources in enumerate(digits_seg.canvas_sources("test")[:200]):
        assert 2 <= len(sources) <= 4
        allowed = {0} | {int(mnist.labels[s]) + 1 for s in sources}
        assert set(np.unique(data.labels[index])) <= allowed
        inked = data.labels[index] > 0
        assert (data.images[index, 0][inked] >= digits_seg.INK_THRESHOLD).all()


def test_canvases_are_a_pure_function_of_the_seed_and_the_later_digit_wins():
    # Solid squares labelled 1, 3, 5, 7: wherever they overlap, the square drawn last keeps its
    # whole area.
    digits = np.full((4, 28, 28), 255, np.uint8)
    labels = np.array([1, 3, 5, 7])
    images, masks, sources = digits_seg.make_canvases(digits, labels, 30, seed=5)
    again = digits_seg.make_canvases(digits, labels, 30, seed=5)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(masks, again[1])
    assert not np.array_equal(masks, digits_seg.make_canvases(digits, labels, 30, seed=6)[1])
    overlapped = 0
    for mask, order in zip(masks, sources, strict=True):
        last = labels[order[-1]] + 1
        rows, cols = np.nonzero(mask == last)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == rows.size  # the later square is whole
        first = labels[order[0]] + 1
        rows, cols = np.nonzero(mask == first)
        overlapped += rows.size == 0 or \
            (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) > rows.size
    assert overlapped > 0  # the case happened


def test_a_model_of_another_size_is_told_masks_are_not_resized():
    with pytest.raises(DataError, match=r"takes 32x32 images but digits-seg's are 64x64 .*"
                                        r"masks are not resized.*input_shape = \[1, 64, 64\]"):
        load_dataset("digits-seg", "test", image_size=(32, 32))


# -- datasets with masks ----------------------------------------------------------------------
def test_masks_split_unstratified_and_refuse_augmentation():
    images = np.zeros((10, 1, 4, 4), np.uint8)
    masks = np.zeros((10, 4, 4), np.uint8)
    masks[:, 0, 0] = 2
    ds = Dataset(images, masks, ["a", "b", "c"], "tiny")
    assert ds.class_counts().tolist() == [150, 0, 10]
    train, val = train_val_split(ds, 0.2, seed=0)
    assert (len(train), len(val)) == (8, 2) and val.has_masks
    batches = list(BatchLoader(train, 3, shuffle=True, seed=0, normalization=None))
    assert [y.shape for _, y in batches] == [(3, 4, 4), (3, 4, 4), (2, 4, 4)]
    with pytest.raises(DataError, match="has masks, and crops and flips are applied to images "
                                        "only; pass augmentation=None"):
        BatchLoader(train, 3, shuffle=True, seed=0, normalization=None,
                    augmentation={"crop_padding": 2})


def test_mask_values_and_shapes_are_checked():
    images = np.zeros((2, 1, 4, 4), np.uint8)
    with pytest.raises(DataError, match=r"labels must have shape \(2,\) .* or \(2, 4, 4\) .* "
                                        r"received shape \(2, 4, 5\)"):
        Dataset(images, np.zeros((2, 4, 5), np.uint8), ["a", "b"], "x")
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[1, 2, 3] = 5
    with pytest.raises(DataError, match=r"mask values must lie in \[0, 1\] for 2 classes, "
                                        r"received values from 0 to 5"):
        Dataset(images, masks, ["a", "b"], "x")
    masks[1, 2, 3] = 255
    ds = Dataset(images, masks, ["a", "b"], "x", ignore_label=255)
    assert ds.class_counts().tolist() == [31, 0]


# -- folders of images and masks ---------------------------------------------------------------
def write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


@pytest.fixture
def shapes(tmp_path, rng):
    """Three 8x8 gray images with index masks (0 background, 1 square, 2 bar; 255 void)."""
    root = tmp_path / "shapes"
    for i in range(3):
        image = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        mask = np.zeros((8, 8), np.uint8)
        mask[1:4, 1:4] = 1
        mask[6, :] = 2
        mask[7, 7] = 255
        write(root / "images" / f"{i:02d}.png", image)
        write(root / "masks" / f"{i:02d}.png", mask)
    return root


def test_a_folder_of_images_and_index_masks(shapes):
    ds = load_dataset(str(shapes), "train")
    assert ds.has_masks and ds.labels.shape == (3, 8, 8) and ds.images.shape == (3, 1, 8, 8)
    assert ds.class_names == ["0", "1", "2"] and ds.ignore_label == 255
    assert ds.class_counts().tolist() == [3 * (64 - 9 - 8 - 1), 27, 24]
    (shapes / "classes.txt").write_text("# index order\nbackground\nsquare\nbar\n")
    assert load_dataset(str(shapes)).class_names == ["background", "square", "bar"]


def test_colour_masks_go_through_classes_txt(tmp_path):
    root = tmp_path / "voc"
    mask = np.zeros((6, 6, 3), np.uint8)
    mask[:3] = (128, 0, 0)
    mask[5, 5] = (224, 224, 192)
    write(root / "images" / "a.png", np.zeros((6, 6, 3), np.uint8))
    write(root / "masks" / "a.png", mask)
    (root / "classes.txt").write_text("background #000000\ncat #800000   # a comment\n"
                                      "ignore #e0e0c0\n")
    ds = load_mask_folder(root)
    assert ds.class_names == ["background", "cat"] and ds.images.shape == (1, 3, 6, 6)
    assert ds.labels[0, 0, 0] == 1 and ds.labels[0, 4, 0] == 0 and ds.labels[0, 5, 5] == 255
    mask[2, 4] = (0, 0, 255)
    write(root / "masks" / "a.png", mask)
    with pytest.raises(DataError, match=r"masks/a.png: colour #0000ff at row 2, column 4 \(1 "
                                        r"pixels\) is not in classes.txt"):
        load_mask_folder(root)


def test_folder_errors_name_the_file_and_the_fix(shapes):
    write(shapes / "images" / "03.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"1 image\(s\) in .*images have no mask in .*masks: "
                                        r"03.png; each images/NAME.\* needs masks/NAME.png"):
        load_dataset(str(shapes))
    write(shapes / "masks" / "03.png", np.zeros((8, 9), np.uint8))
    with pytest.raises(DataError, match=r"masks/03.png is 8x9 but its image images/03.png is "
                                        r"8x8; a mask must have its image's size"):
        load_dataset(str(shapes))
    bad = np.zeros((8, 8), np.uint8)
    bad[4, 5] = 7
    write(shapes / "masks" / "03.png", bad)
    (shapes / "classes.txt").write_text("background\nsquare\nbar\n")
    with pytest.raises(DataError, match=r"masks/03.png: value 7 at row 4, column 5 is not a "
                                        r"class: there are 3 \(background, square, bar\)"):
        load_dataset(str(shapes))
    with pytest.raises(DataError, match=r"takes 16x16 images but those in .* are 8x8; masks are "
                                        r"not resized"):
        load_dataset(str(shapes), image_size=(16, 16))


def test_canvases_are_kept_in_the_cache_and_built_again_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path))
    built = digits_seg._cached("test")
    path = digits_seg.cache_path("test")
    assert path.is_file() and path.is_relative_to(tmp_path / "digits-seg")

    def never(*args):
        raise AssertionError("the canvases were built again instead of read")

    with monkeypatch.context() as patched:  # read back: the same canvases, nothing built
        patched.setattr(digits_seg, "make_canvases", never)
        read = digits_seg._cached("test")
    np.testing.assert_array_equal(read[0], built[0])
    np.testing.assert_array_equal(read[1], built[1])
    assert read[2] == built[2]
    for damage in (b"not a zip file", path.read_bytes()[:1000]):  # garbage, a cut-off file
        path.write_bytes(damage)
        again = digits_seg._cached("test")
        np.testing.assert_array_equal(again[1], built[1])
        assert again[2] == built[2] and path.stat().st_size > 1000  # rebuilt and kept
    # a file of the right name holding other arrays is not trusted either
    np.savez(path.with_suffix(".tmp.npz"), images=np.zeros((3, 1, 64, 64), np.uint8))
    path.with_suffix(".tmp.npz").replace(path)
    assert digits_seg._cached("test")[2] == built[2]
    # a cache folder that cannot be written to costs only the time
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path / "file"))
    (tmp_path / "file").write_text("a file where the cache folder should be")
    assert digits_seg._cached("test")[2] == built[2]
