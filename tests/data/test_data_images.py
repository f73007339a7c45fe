"""read_image for `convnet predict`, and the conversions it shares with datasets, checked
against Pillow."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convnet.data import DataError, convert_images, read_image
from convnet.data.convert import resize, resize_weights, to_gray


def save(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.fixture
def rgb(rng):
    return rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


def test_gray_png_at_the_model_size_needs_no_conversion(tmp_path, rng):
    pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
    image, notes = read_image(save(tmp_path / "d.png", pixels), (1, 28, 28))
    assert image.shape == (1, 28, 28) and image.dtype == np.uint8 and notes == []
    np.testing.assert_array_equal(image[0], pixels)


def test_rgb_to_gray_matches_pillow_and_says_so(tmp_path, rgb):
    image, notes = read_image(save(tmp_path / "c.png", rgb), (1, 20, 30))
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(image[0], expected)
    assert notes == ["RGB converted to 1 gray channel (luma 0.299 R + 0.587 G + 0.114 B) for a "
                     "1-channel input"]


def test_gray_to_rgb_repeats_and_says_so(tmp_path, rng):
    pixels = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    image, notes = read_image(save(tmp_path / "g.png", pixels), (3, 8, 8))
    assert image.shape == (3, 8, 8)
    for c in range(3):
        np.testing.assert_array_equal(image[c], pixels)
    assert len(notes) == 1 and "gray repeated into 3 channels" in notes[0]


def test_rgba_drops_alpha(tmp_path, rgb):
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    image, notes = read_image(save(tmp_path / "a.png", rgba), (3, 20, 30))
    np.testing.assert_array_equal(image, rgb.transpose(2, 0, 1))
    assert notes == ["alpha channel dropped"]


def test_palette_image(tmp_path, rgb):
    path = tmp_path / "p.png"
    Image.fromarray(rgb).convert("P").save(path)
    image, notes = read_image(path, (3, 20, 30))
    expected = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(image, expected)
    assert notes == []


def test_sixteen_bit_gray_is_scaled(tmp_path):
    pixels = np.array([[0, 65535], [257 * 100, 257 * 200]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    image, notes = read_image(path, (1, 2, 2))
    np.testing.assert_array_equal(image[0], [[0, 255], [100, 200]])
    assert notes == ["16-bit values scaled to 8 bits"]


def test_resize_is_reported_with_sizes(tmp_path, rgb):
    image, notes = read_image(save(tmp_path / "big.png", rgb), (3, 10, 10))
    assert image.shape == (3, 10, 10)
    assert notes == ["resized from 20x30 to 10x10 (bilinear, aspect ratio not kept)"]


def test_jpeg_with_exif_rotation(tmp_path, rgb):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(path, exif=exif.tobytes(), quality=95)
    image, notes = read_image(path, (3, 30, 20))
    assert "rotated as its EXIF orientation says" in notes
    assert not any("resized" in n for n in notes)  # 20x30 stored, 30x20 upright
    assert image.shape == (3, 30, 20)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello, I am text")
    with pytest.raises(DataError) as info:
        read_image(path, (1, 28, 28))
    message = str(info.value)
    assert str(path) in message and "not an image Pillow can read" in message
    assert "68 65 6c 6c 6f" in message  # what it starts with: "hello"
    assert isinstance(info.value, ValueError)


def test_truncated_png(tmp_path, rgb):
    path = save(tmp_path / "cut.png", rgb)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"cut.png: the image is corrupt or truncated"):
        read_image(path, (3, 20, 30))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="image file not found"):
        read_image(tmp_path / "nope.png", (1, 28, 28))
    with pytest.raises(DataError, match="is a folder, expected an image file"):
        read_image(tmp_path, (1, 28, 28))


@pytest.mark.parametrize("shape", [(2, 28, 28), (1, 0, 28), (28, 28), "abc"])
def test_bad_input_shape(tmp_path, shape):
    with pytest.raises(DataError, match="input_shape must be"):
        read_image(tmp_path / "x.png", shape)


def test_to_gray_is_pillow_luma_exactly(rng):
    images = rng.integers(0, 256, size=(5, 3, 9, 11), dtype=np.uint8)
    gray = to_gray(images)
    for i in range(5):
        expected = np.asarray(Image.fromarray(images[i].transpose(1, 2, 0)).convert("L"))
        np.testing.assert_array_equal(gray[i, 0], expected)


@pytest.mark.parametrize("size_in,size_out", [((28, 28), (32, 32)), ((28, 28), (24, 24)),
                                              ((32, 32), (7, 13)), ((100, 60), (31, 29))])
def test_resize_agrees_with_pillow_bilinear(rng, size_in, size_out):
    images = rng.integers(0, 256, size=(3, 1, *size_in), dtype=np.uint8)
    out = resize(images, size_out)
    assert out.shape == (3, 1, *size_out)
    for i in range(3):
        pil = Image.fromarray(images[i, 0]).resize(size_out[::-1], Image.Resampling.BILINEAR)
        diff = np.abs(out[i, 0].astype(int) - np.asarray(pil).astype(int))
        assert diff.max() <= 1, diff.max()  # Pillow rounds between its two passes


def test_resize_weights_rows_sum_to_one_and_shrink_averages():
    w = resize_weights(4, 2)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    # output 0 is centred at input 1.0; the triangle, stretched x2, weighs inputs 0.5, 1.5, 2.5
    # by 0.75, 0.75, 0.25 (the part beyond the border is dropped), then rows are normalised
    np.testing.assert_allclose(w, [[3 / 7, 3 / 7, 1 / 7, 0], [0, 1 / 7, 3 / 7, 3 / 7]])
    constant = np.full((1, 1, 17, 5), 123, np.uint8)
    assert np.all(resize(constant, (6, 11)) == 123)


def test_convert_images_leaves_matching_images_alone(rng):
    images = rng.integers(0, 256, size=(2, 3, 8, 8), dtype=np.uint8)
    out, notes = convert_images(images, (8, 8), 3)
    assert out is images and notes == []
    with pytest.raises(DataError, match=r"channels must be 1 \(gray\) or 3 \(RGB\), received 4"):
        convert_images(images, None, 4)
    with pytest.raises(DataError, match=r"image_size must be \(height, width\)"):
        convert_images(images, (0, 8), None)


def test_a_large_picture_is_reduced_before_it_is_converted(tmp_path):
    # Uploads ask for it: a 6000x6000 photo costs the memory of a 4x-the-input one.
    from PIL import Image

    from convnet.data.images import open_image

    pixels = np.zeros((900, 1200, 3), np.uint8)
    pixels[:, ::2] = 255
    # The largest integer factor keeping both sides >= 4 x 28 is 8 (JPEG decodes at 1/8).
    for suffix, size in (("png", (113, 150)), ("jpg", (113, 150))):
        path = tmp_path / f"big.{suffix}"
        Image.fromarray(pixels).save(path)
        array, notes = open_image(path, reduce_to=(28, 28))
        assert array.shape[1:] == size
        assert ("reduce", f"reduced from 900x1200 to {size[0]}x{size[1]} (block mean) before "
                          f"resizing") in notes
        assert 100 < array.mean() < 155  # the stripes average to grey, not aliased
        full, notes = open_image(path)
        assert full.shape[1:] == (900, 1200) and not [n for n in notes if n[0] == "reduce"]
