"""Normalization, augmentation, splitting and batching: each checked against plain NumPy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convnet.data import (
    BatchLoader,
    DataError,
    Dataset,
    Normalization,
    augment,
    train_val_split,
)


def make_dataset(rng, n=50, c=3, h=6, w=5, classes=5):
    images = rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    labels = np.arange(n) % classes
    return Dataset(images, labels, [f"c{i}" for i in range(classes)], "synthetic")


# --- normalization ---------------------------------------------------------------------------

def test_fit_equals_numpy_statistics(rng):
    images = rng.integers(0, 256, size=(37, 3, 9, 7), dtype=np.uint8)
    images[:, 2] //= 4  # give the channels different statistics
    norm = Normalization.fit(images)
    x = images.astype(np.float64) / 255
    np.testing.assert_allclose(norm.mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(norm.std, x.std(axis=(0, 2, 3)), rtol=1e-12)


def test_fit_is_exact_in_chunks(rng, monkeypatch):
    import convnet.data.normalization as module

    images = rng.integers(0, 256, size=(23, 1, 4, 4), dtype=np.uint8)
    whole = Normalization.fit(images)
    monkeypatch.setattr(module, "CHUNK_IMAGES", 5)
    assert Normalization.fit(images) == whole  # exact integer sums: identical, not close


def test_apply_equals_the_formula(rng):
    images = rng.integers(0, 256, size=(4, 3, 5, 5), dtype=np.uint8)
    norm = Normalization(mean=[0.1, 0.5, 0.9], std=[0.2, 0.25, 0.5])
    out = norm.apply(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    mean = np.array(norm.mean)[:, None, None]
    std = np.array(norm.std)[:, None, None]
    np.testing.assert_allclose(out, (images / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.apply(images[0]), out[0])


def test_fitted_normalization_standardises_the_training_set(rng):
    images = rng.integers(0, 256, size=(40, 2, 8, 8), dtype=np.uint8)
    out = Normalization.fit(images).apply(images)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)


def test_constant_channel_gets_std_one():
    images = np.full((3, 1, 2, 2), 51, np.uint8)
    norm = Normalization.fit(images)
    assert norm.mean == [0.2] and norm.std == [1.0]
    np.testing.assert_allclose(norm.apply(images), 0, atol=1e-6)


def test_json_round_trip():
    norm = Normalization(mean=[0.1307], std=[0.3081])
    again = Normalization.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm


def test_normalization_errors(rng):
    norm = Normalization(mean=[0.5], std=[0.5])
    with pytest.raises(DataError, match=r"statistics are for 1 channel\(s\), the images have 3"):
        norm.apply(rng.integers(0, 256, size=(2, 3, 4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="expected uint8 images"):
        norm.apply(np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(DataError, match="std must be finite and > 0"):
        Normalization(mean=[0.5], std=[0.0])
    with pytest.raises(DataError, match=r"expected a dict with 'mean' and 'std' lists, "
                                        r"received \['avg'\]"):
        Normalization.from_dict({"avg": [0.1]})
    with pytest.raises(DataError, match="received 0 images"):
        Normalization.fit(np.zeros((0, 1, 2, 2), np.uint8))


# --- augmentation ----------------------------------------------------------------------------

def naive_augment(images, dy, dx, flips, p):
    """The obvious per-image loop, as the oracle."""
    out = np.empty_like(images)
    n, c, h, w = images.shape
    for i in range(n):
        padded = np.zeros((c, h + 2 * p, w + 2 * p), images.dtype)
        padded[:, p:p + h, p:p + w] = images[i]
        crop = padded[:, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


def test_augment_matches_the_naive_loop(rng):
    images = rng.integers(1, 256, size=(16, 3, 7, 9), dtype=np.uint8)
    before = images.copy()
    out = augment(images, np.random.default_rng(5), crop_padding=3, hflip=True)
    draws = np.random.default_rng(5)  # replay the documented draw order
    dy = draws.integers(0, 7, size=16)
    dx = draws.integers(0, 7, size=16)
    flips = draws.random(16) < 0.5
    np.testing.assert_array_equal(out, naive_augment(images, dy, dx, flips, 3))
    np.testing.assert_array_equal(images, before)  # the input is untouched
    assert 0 < flips.sum() < 16 and (dy != 3).any()


def test_augment_is_deterministic_given_the_generator(rng):
    images = rng.integers(0, 256, size=(8, 1, 6, 6), dtype=np.uint8)
    a = augment(images, np.random.default_rng(1), crop_padding=2, hflip=True)
    b = augment(images, np.random.default_rng(1), crop_padding=2, hflip=True)
    c = augment(images, np.random.default_rng(2), crop_padding=2, hflip=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_flip_only_mirrors_some_and_keeps_the_rest(rng):
    images = rng.integers(0, 256, size=(64, 2, 4, 5), dtype=np.uint8)
    out = augment(images, np.random.default_rng(0), hflip=True)
    same = np.all(out == images, axis=(1, 2, 3))
    mirrored = np.all(out == images[..., ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and same.any() and mirrored.any()


def test_no_augmentation_is_a_copy(rng):
    images = rng.integers(0, 256, size=(2, 1, 3, 3), dtype=np.uint8)
    out = augment(images, np.random.default_rng(0))
    np.testing.assert_array_equal(out, images)
    assert out is not images


def test_augment_rejects_bad_options(rng):
    images = np.zeros((1, 1, 3, 3), np.uint8)
    with pytest.raises(DataError, match="crop_padding must be an integer >= 0, received -1"):
        augment(images, rng, crop_padding=-1)
    with pytest.raises(DataError, match=r"unknown key\(s\) \['rotate'\]"):
        BatchLoader(make_dataset(rng), 4, shuffle=False, seed=0, normalization=None,
                    augmentation={"rotate": 10})


# --- train/validation split ------------------------------------------------------------------

def test_split_is_stratified_disjoint_and_complete(rng):
    ds = make_dataset(rng, n=100, classes=5)  # 20 per class
    train, val = train_val_split(ds, 0.25, seed=3)
    np.testing.assert_array_equal(val.class_counts(), [5] * 5)
    np.testing.assert_array_equal(train.class_counts(), [15] * 5)
    rows = {img.tobytes() for img in ds.images}
    got = [img.tobytes() for img in train.images] + [img.tobytes() for img in val.images]
    assert len(got) == 100 and set(got) == rows
    assert train.split == "train" and val.split == "val"


def test_split_depends_on_the_seed_only(rng):
    ds = make_dataset(rng, n=60)
    a = train_val_split(ds, 0.2, seed=7)[1]
    b = train_val_split(ds, 0.2, seed=7)[1]
    c = train_val_split(ds, 0.2, seed=8)[1]
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_split_edges(rng):
    ds = make_dataset(rng, n=10)
    train, val = train_val_split(ds, 0, seed=0)
    assert len(train) == 10 and len(val) == 0
    with pytest.raises(DataError, match=r"val_fraction must be a number in \[0, 1\)"):
        train_val_split(ds, 1.0, seed=0)
    with pytest.raises(DataError, match="leaves no validation images"):
        train_val_split(ds, 0.1, seed=0)  # 2 per class: round(0.2) = 0 each


# --- batches ---------------------------------------------------------------------------------

def collect(iterable):
    xs, ys = zip(*iterable, strict=True)
    return list(xs), list(ys)


def test_batches_have_the_right_types_and_cover_the_epoch(rng):
    ds = make_dataset(rng, n=23)
    norm = Normalization.fit(ds.images)
    loader = BatchLoader(ds, 5, shuffle=True, seed=0, normalization=norm)
    assert len(loader) == 5
    xs, ys = collect(loader)
    assert [len(y) for y in ys] == [5, 5, 5, 5, 3]
    assert xs[0].dtype == np.float32 and xs[0].shape == (5, 3, 6, 5) and ys[0].dtype == np.int64
    x = np.concatenate(xs)
    # every image exactly once: undo the normalization and compare as sets of rows
    restored = np.rint((x * np.array(norm.std)[:, None, None]
                        + np.array(norm.mean)[:, None, None]) * 255).astype(np.uint8)
    assert sorted(r.tobytes() for r in restored) == sorted(r.tobytes() for r in ds.images)
    np.testing.assert_array_equal(np.sort(np.concatenate(ys)), np.sort(ds.labels))


def test_unshuffled_order_and_normalization(rng):
    ds = make_dataset(rng, n=7)
    norm = Normalization(mean=[0.5] * 3, std=[0.25] * 3)
    xs, ys = collect(BatchLoader(ds, 4, shuffle=False, seed=0, normalization=norm))
    np.testing.assert_array_equal(np.concatenate(ys), ds.labels)
    np.testing.assert_allclose(np.concatenate(xs), (ds.images / 255 - 0.5) / 0.25, atol=1e-5)


def test_order_is_a_pure_function_of_seed_and_epoch(rng):
    ds = make_dataset(rng, n=40)
    a = BatchLoader(ds, 8, shuffle=True, seed=1, normalization=None,
                    augmentation={"crop_padding": 1, "hflip": True})
    b = BatchLoader(ds, 8, shuffle=True, seed=1, normalization=None,
                    augmentation={"crop_padding": 1, "hflip": True})
    collect(a)  # a has been used; b is fresh: still the same batches
    a.set_epoch(2)
    b.set_epoch(2)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a.order(2), a.order(3))
    other_seed = BatchLoader(ds, 8, shuffle=True, seed=2, normalization=None)
    assert not np.array_equal(a.order(2), other_seed.order(2))


def test_iter_from_resumes_mid_epoch_exactly(rng):
    ds = make_dataset(rng, n=30)
    options = dict(shuffle=True, seed=4, normalization=Normalization.fit(ds.images),
                   augmentation={"crop_padding": 2, "hflip": True})
    full = list(BatchLoader(ds, 4, **options).iter_from(3, 0))
    resumed = list(BatchLoader(ds, 4, **options).iter_from(3, 5))
    assert len(full) == 8 and len(resumed) == 3
    for (xf, yf), (xr, yr) in zip(full[5:], resumed, strict=True):
        np.testing.assert_array_equal(xf, xr)
        np.testing.assert_array_equal(yf, yr)
    with pytest.raises(DataError, match=r"batch_index must be in \[0, 8\], received 9"):
        BatchLoader(ds, 4, **options).iter_from(0, 9)


def test_augmentation_changes_pixels_but_not_labels(rng):
    ds = make_dataset(rng, n=16)
    plain = collect(BatchLoader(ds, 16, shuffle=True, seed=0, normalization=None))
    augmented = collect(BatchLoader(ds, 16, shuffle=True, seed=0, normalization=None,
                                    augmentation={"crop_padding": 2}))
    np.testing.assert_array_equal(plain[1][0], augmented[1][0])
    assert not np.array_equal(plain[0][0], augmented[0][0])
    np.testing.assert_allclose(plain[0][0], ds.images[BatchLoader(
        ds, 16, shuffle=True, seed=0, normalization=None).order(0)] / 255, atol=1e-6)


def test_drop_last_and_errors(rng):
    ds = make_dataset(rng, n=10)
    loader = BatchLoader(ds, 4, shuffle=False, seed=0, normalization=None, drop_last=True)
    assert len(loader) == 2 and [len(y) for _, y in loader] == [4, 4]
    with pytest.raises(DataError, match="give no batch"):
        BatchLoader(ds, 11, shuffle=False, seed=0, normalization=None, drop_last=True)
    with pytest.raises(DataError, match="batch_size must be a positive integer, received 0"):
        BatchLoader(ds, 0, shuffle=False, seed=0, normalization=None)
    with pytest.raises(DataError, match=r"normalization is for 1 channel\(s\)"):
        BatchLoader(ds, 2, shuffle=False, seed=0, normalization=Normalization([0.5], [0.5]))
