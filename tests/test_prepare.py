"""Input people have: a dark-on-light digit is inverted for an MNIST model and centred as MNIST
does (aspect ratio kept, centre of mass in the middle); `convnet predict --invert` and
`--centre`; each conversion says so."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convnet.cli import main
from convnet.data import DataError
from convnet.data.prepare import (
    centre_like_mnist,
    expects_light_on_dark,
    is_dark_on_light,
    is_mnist_like,
    prepare_image,
)


def drawn_one(size=280, ink=0, paper=255):
    """A tall bar drawn dark on light in the upper left of a large canvas, as a person draws."""
    image = np.full((1, size, size), paper, np.uint8)
    image[0, 30:190, 40:70] = ink  # 160 tall, 30 wide
    return image


def test_background_decides_the_polarity():
    assert is_dark_on_light(drawn_one())
    assert not is_dark_on_light(255 - drawn_one())
    rgb = np.repeat(drawn_one(), 3, axis=0)
    assert is_dark_on_light(rgb)


def test_which_models_want_light_on_dark_and_mnist_centring():
    assert expects_light_on_dark((1, 28, 28), {"mean": [0.13], "std": [0.3]})
    assert not expects_light_on_dark((1, 28, 28), {"mean": [0.8], "std": [0.3]})
    assert not expects_light_on_dark((3, 32, 32), None, "cifar10")
    assert expects_light_on_dark((1, 28, 28)) and expects_light_on_dark((1, 12, 12), None,
                                                                         "mnist-5k")
    assert is_mnist_like((1, 28, 28)) and is_mnist_like((1, 28, 28), "mnist-5k")
    assert not is_mnist_like((1, 28, 28), "fashion-mnist")
    assert not is_mnist_like((3, 28, 28))


def test_centring_keeps_the_aspect_ratio_and_puts_the_mass_in_the_middle():
    light = 255 - drawn_one()
    out, note = centre_like_mnist(light, (28, 28))
    ink = out[0] > 50
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    assert rows[-1] - rows[0] + 1 == 20  # the longer side fits the 20-pixel box
    assert cols[-1] - cols[0] + 1 in (4, 5)  # 30/160 of it: the aspect ratio kept
    weights = out[0].astype(float)
    centre = ((weights.sum(axis=1) * (np.arange(28) + 0.5)).sum() / weights.sum(),
              (weights.sum(axis=0) * (np.arange(28) + 0.5)).sum() / weights.sum())
    assert centre == pytest.approx((14, 14), abs=0.6)
    assert "aspect ratio kept" in note and "centre of mass" in note
    with pytest.raises(DataError, match="nothing to centre"):
        centre_like_mnist(np.zeros((1, 50, 50), np.uint8), (28, 28))


def test_prepare_inverts_and_centres_with_notes():
    image, notes = prepare_image(drawn_one(), (1, 28, 28), light_on_dark=True, mnist_like=True)
    assert image.shape == (1, 28, 28) and image[0, 0, 0] == 0 and image.max() > 200
    assert notes[0].startswith("inverted (dark on light became light on dark")
    assert notes[1].startswith("centred as MNIST digits are")
    same, notes = prepare_image(drawn_one(), (1, 28, 28), invert="no", centre="no")
    assert same[0, 0, 0] == 255 and notes == ["resized from 280x280 to 28x28 (bilinear)"]
    # An image already of the model's size is taken as the dataset gives it.
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 2:9, 3:6] = 255
    kept, notes = prepare_image(digit, (1, 28, 28), light_on_dark=True, mnist_like=True)
    assert np.array_equal(kept, digit) and notes == []
    with pytest.raises(DataError, match="invert must be auto, yes or no"):
        prepare_image(digit, (1, 28, 28), invert="maybe")


def test_cli_predict_inverts_and_centres_a_photo_of_a_digit(tmp_path, capsys):
    from convnet.io.checkpoint import save_model
    from convnet.io.zoo import build_model

    run = save_model(tmp_path / "run", build_model("lenet5"), (1, 28, 28),
                     [str(i) for i in range(10)], {"mean": [0.13], "std": [0.31]})
    path = tmp_path / "drawn.png"
    Image.fromarray(drawn_one()[0]).save(path)
    assert main(["predict", str(run), str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert "drawn.png: inverted (dark on light became light on dark" in captured.err
    assert "drawn.png: centred as MNIST digits are" in captured.err
    auto = json.loads(captured.out)[0]["top"]
    assert main(["predict", str(run), str(path), "--json", "--invert", "no", "--centre",
                 "no"]) == 0
    captured = capsys.readouterr()
    assert "inverted" not in captured.err and "resized from 280x280 to 28x28" in captured.err
    assert json.loads(captured.out)[0]["top"] != auto


def test_cli_predict_reads_a_huge_picture_block_averaged(tmp_path, capsys):
    """A picture over 1,024 pixels a side is block-averaged while it is read (a huge one took
    gigabytes), and predicts as the same picture at a modest size does; one of 280 pixels is
    resized as it always was (the test above)."""
    from convnet.io.checkpoint import save_model
    from convnet.io.zoo import build_model

    run = save_model(tmp_path / "run", build_model("lenet5"), (1, 28, 28),
                     [str(i) for i in range(10)], {"mean": [0.13], "std": [0.31]})
    small = Image.fromarray(drawn_one()[0])  # 280x280
    small.save(tmp_path / "small.png")
    small.resize((2800, 2800), Image.NEAREST).save(tmp_path / "huge.png")
    assert main(["predict", str(run), str(tmp_path / "huge.png"), "--json"]) == 0
    captured = capsys.readouterr()
    assert "huge.png: reduced from 2800x2800 to 1400x1400 (block mean)" in captured.err
    huge = json.loads(captured.out)[0]["top"]
    assert main(["predict", str(run), str(tmp_path / "small.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"] == huge
