"""The one place window arithmetic lives: output sizes, 'same' padding, strict refusals with
their exact messages, PyTorch's flooring under strict=False, and receptive fields."""

import math

import numpy as np
import pytest
import torch

import convnet as cn
from convnet.core.arithmetic import (
    Padding,
    ReceptiveField,
    pair,
    same_padding,
    window_fit,
    window_output,
)


def _torch_output_size(n, f, s, p, d):
    """PyTorch's documented Conv2d output size (it floors)."""
    return math.floor((n + 2 * p - d * (f - 1) - 1) / s + 1)


@pytest.mark.parametrize(
    "n, f, s, p, expected",
    [(7, 3, 1, 0, 5), (7, 3, 2, 0, 3), (32, 5, 1, 0, 28), (7, 3, 1, 1, 7), (32, 5, 1, 2, 32),
     (56, 1, 1, 0, 56), (227, 11, 4, 0, 55), (8, 2, 2, 0, 4)],
)
def test_conv_output_size(n, f, s, p, expected):
    assert cn.conv_output_size(n, f, s, p) == expected == _torch_output_size(n, f, s, p, 1)


def test_dilation_stretches_the_filter():
    # A 3-tap filter with dilation 2 spans 5 pixels: 9 -> 5.
    assert cn.conv_output_size(9, 3, 1, 0, d=2) == 5 == _torch_output_size(9, 3, 1, 0, 2)


def test_strict_false_floors_exactly_like_pytorch():
    for n in range(1, 14):
        for f in range(1, 6):
            for s in range(1, 5):
                for p in range(0, 3):
                    for d in (1, 2):
                        if d * (f - 1) + 1 > n + 2 * p:
                            continue
                        got = cn.conv_output_size(n, f, s, p, d, strict=False)
                        assert got == _torch_output_size(n, f, s, p, d), (n, f, s, p, d)


def test_strict_false_matches_pytorchs_layer_shapes():
    x = torch.zeros(1, 1, 7, 10)
    for kernel, stride, padding in [(3, 3, 0), ((2, 3), (3, 4), (1, 1)), (4, 2, 0)]:
        ours = cn.Conv2d(1, 1, kernel, stride, padding, strict=False).output_shape((1, 7, 10))
        theirs = torch.nn.Conv2d(1, 1, kernel, stride, padding)(x).shape[1:]
        assert ours == tuple(theirs)
        ours = cn.MaxPool2d(kernel, stride, padding, strict=False).output_shape((1, 7, 10))
        assert ours == tuple(torch.nn.MaxPool2d(kernel, stride, padding)(x).shape[1:])


def test_window_fit_reports_dropped_border_pixels():
    fit = window_fit(7, 3, 3, (0, 0), strict=False)
    assert (fit.output, fit.dropped) == (2, 1)  # positions 0 and 3 cover rows 0..5; row 6 lost
    assert window_fit(8, 3, 3, (0, 0), strict=False).dropped == 2
    assert window_fit(7, 3, 2, (0, 0)).dropped == 0


@pytest.mark.parametrize(
    "n, f, s, d, expected",
    [(7, 3, 1, 1, (1, 1)), (7, 3, 2, 1, (1, 1)), (6, 3, 2, 1, (0, 1)), (5, 2, 2, 1, (0, 1)),
     (6, 2, 2, 1, (0, 0)), (5, 3, 2, 2, (2, 2)), (4, 1, 3, 1, (0, 0)), (7, 4, 1, 1, (1, 2))],
)
def test_same_padding_is_tensorflows(n, f, s, d, expected):
    # out = ceil(n / s); total = (out - 1) * s + d * (f - 1) + 1 - n; the odd pixel goes after.
    assert same_padding(n, f, s, d) == expected
    before, after = expected
    fit = window_fit(n, f, s, (before, after), d)
    assert fit.output == -(-n // s) and fit.dropped == 0


def test_window_output_resolves_same_padding_per_side():
    shape = window_output((7, 6), (3, 3), (2, 2), "same")
    assert shape.out_hw == (4, 3)
    assert shape.padding == Padding(1, 1, 0, 1)
    assert not shape.padding.is_symmetric
    assert window_output((7, 6), (3, 3), (1, 1), "valid").out_hw == (5, 4)
    assert window_output((7, 6), (3, 3), (1, 1), (1, 0)).padding == Padding(1, 1, 0, 0)


# -- the exact messages ---------------------------------------------------------------

LECTURE_STRIDE_3 = (
    "conv1: input 7x7, filter 3, stride 3, pad 0 gives (7 - 3 + 2*0)/3 + 1 = 2.33 along the "
    "height, not an integer; stride 1 or 2 fits, or pad 1 with stride 3, or padding='same' "
    "(output ceil(7/3) = 3). Pass strict=False to floor like PyTorch (drops 1 border pixel)."
)


def test_message_for_the_lectures_stride_3():
    model = cn.Sequential(cn.Conv2d(3, 10, 3, stride=3))
    with pytest.raises(cn.ShapeError) as info:
        model.build((3, 7, 7))
    assert str(info.value) == LECTURE_STRIDE_3


def test_a_lone_layer_uses_its_kind_as_name():
    with pytest.raises(cn.ShapeError) as info:
        cn.Conv2d(3, 10, 3, stride=3).output_shape((3, 7, 7))
    assert str(info.value) == LECTURE_STRIDE_3.replace("conv1:", "conv:", 1)


@pytest.mark.parametrize(
    "layer, input_shape, message",
    [
        (cn.Conv2d(3, 8, 5, stride=2), (3, 32, 32),
         "conv1: input 32x32, filter 5, stride 2, pad 0 gives (32 - 5 + 2*0)/2 + 1 = 14.50 along "
         "the height, not an integer; stride 1 fits, or padding='same' (output ceil(32/2) = 16). "
         "Pass strict=False to floor like PyTorch (drops 1 border pixel)."),
        (cn.Conv2d(3, 96, 11, stride=4), (3, 224, 224),
         "conv1: input 224x224, filter 11, stride 4, pad 0 gives (224 - 11 + 2*0)/4 + 1 = 54.25 "
         "along the height, not an integer; stride 1 or 3 fits, or padding='same' (output "
         "ceil(224/4) = 56). Pass strict=False to floor like PyTorch (drops 1 border pixel)."),
        (cn.Conv2d(3, 4, (3, 2), stride=(2, 3)), (3, 7, 6),
         "conv1: input 7x6, filter 2, stride 3, pad 0 gives (6 - 2 + 2*0)/3 + 1 = 2.33 along "
         "the width, not an integer; stride 1 or 2 fits, or pad 1 with stride 3, or "
         "padding='same' (output ceil(6/3) = 2). Pass strict=False to floor like PyTorch "
         "(drops 1 border pixel)."),
        (cn.Conv2d(3, 4, 3, stride=2, padding=(0, 0, 0, 1)), (3, 7, 7),
         "conv1: input 7x7, filter 3, stride 2, pad (0, 1) gives (7 - 3 + 0+1)/2 + 1 = 3.50 "
         "along the width, not an integer; choose padding so that the window fits. Pass "
         "strict=False to floor like PyTorch (drops 1 border pixel)."),
        (cn.Conv2d(3, 4, 5, stride=4), (3, 11, 11),
         "conv1: input 11x11, filter 5, stride 4, pad 0 gives (11 - 5 + 2*0)/4 + 1 = 2.50 along "
         "the height, not an integer; stride 2 or 3 fits, or pad 1 with stride 4, or "
         "padding='same' (output ceil(11/4) = 3). Pass strict=False to floor like PyTorch "
         "(drops 2 border pixels)."),
        (cn.MaxPool2d(2), (3, 7, 7),
         "pool1: input 7x7, filter 2, stride 2, pad 0 gives (7 - 2 + 2*0)/2 + 1 = 3.50 along "
         "the height, not an integer; stride 1 fits, or padding='same' (output ceil(7/2) = 4). "
         "Pass strict=False to floor like PyTorch (drops 1 border pixel)."),
        (cn.Conv2d(3, 4, 9), (3, 7, 7),
         "conv1: filter 9 is larger than the padded height 7 (7 + 0 padding); use a smaller "
         "kernel_size or more padding"),
        (cn.Conv2d(3, 4, (1, 3), dilation=2), (3, 4, 4),
         "conv1: filter 5 (dilation 2 stretches 3 to 5) is larger than the padded width 4 "
         "(4 + 0 padding); use a smaller kernel_size or more padding"),
        (cn.AvgPool2d(4, padding=1), (3, 1, 1),
         "pool1: filter 4 is larger than the padded height 3 (1 + 2 padding); use a smaller "
         "kernel_size or more padding"),
    ],
    ids=["32-5-s2", "alexnet-224", "width-only", "asymmetric", "drops-2", "pool", "too-big",
         "dilated-too-big", "padded-too-big"],
)
def test_window_messages(layer, input_shape, message):
    with pytest.raises(cn.ShapeError) as info:
        cn.Sequential(layer).build(input_shape)
    assert str(info.value) == message


def test_message_suggestions_actually_fit():
    # Every stride and padding the lecture's message suggests gives an integer size.
    assert cn.conv_output_size(7, 3, 1, 0) == 5
    assert cn.conv_output_size(7, 3, 2, 0) == 3
    assert cn.conv_output_size(7, 3, 3, 1) == 3
    assert cn.Conv2d(3, 10, 3, stride=3, padding="same").output_shape((3, 7, 7)) == (10, 3, 3)


def test_channel_mismatch_message():
    model = cn.Sequential(cn.Conv2d(3, 10, 3), cn.ReLU(), cn.Conv2d(8, 4, 3))
    with pytest.raises(cn.ShapeError) as info:
        model.build((3, 9, 9))
    assert str(info.value) == (
        "conv2 (Conv2d): in_channels=8 but the input reaching it has 10 channels (shape "
        "(10, 7, 7)); set in_channels=10 or change the layer before it")


def test_first_layer_channel_mismatch_message():
    with pytest.raises(cn.ShapeError) as info:
        cn.Sequential(cn.Conv2d(1, 4, 3)).build((3, 8, 8))
    assert str(info.value) == (
        "conv1 (Conv2d): in_channels=1 but the input reaching it has 3 channels (shape "
        "(3, 8, 8)); set in_channels=3 or change the layer before it")


def test_batchnorm_channel_mismatch_message():
    with pytest.raises(cn.ShapeError) as info:
        cn.Sequential(cn.Conv2d(3, 8, 3), cn.BatchNorm2d(6)).build((3, 8, 8))
    assert str(info.value) == (
        "bn1 (BatchNorm2d): num_features=6 but the input reaching it has 8 channels; set "
        "num_features=8")


def test_linear_in_features_mismatch_message():
    model = cn.Sequential(cn.Conv2d(3, 10, 3), cn.Flatten(), cn.Linear(100, 10))
    with pytest.raises(cn.ShapeError) as info:
        model.build((3, 9, 9))
    assert str(info.value) == (
        "fc1 (Linear): in_features=100 but 490 features reach it; set in_features=490")


def test_linear_on_a_volume_suggests_flatten():
    model = cn.Sequential(cn.Conv2d(3, 10, 3), cn.Linear(490, 10))
    with pytest.raises(cn.ShapeError) as info:
        model.build((3, 9, 9))
    assert str(info.value) == (
        "fc1 (Linear): expects a flat input of 490 features, received a volume of shape "
        "(10, 7, 7); add cn.Flatten() before it (it would give 490 features)")
    with pytest.raises(ValueError) as info:
        model.forward(np.zeros((2, 3, 9, 9), np.float32))
    assert str(info.value) == (
        "fc1 (Linear): expected a 2-D array (N, features), received shape (2, 10, 7, 7) "
        "(add cn.Flatten() before a Linear layer)")


def test_residual_shape_mismatch_message():
    model = cn.Sequential(cn.Residual(cn.Conv2d(3, 8, 3, padding=1)))
    with pytest.raises(cn.ShapeError) as info:
        model.build((3, 9, 9))
    assert str(info.value) == (
        "res1 (Residual): f(x) has shape (8, 9, 9) but the shortcut has (3, 9, 9); pass "
        "projection=cn.Conv2d(in, out, 1, stride=s) so that x matches f(x)")
    bad_projection = cn.Sequential(cn.Residual(cn.Conv2d(3, 8, 3, stride=2, padding=1),
                                               projection=cn.Conv2d(3, 8, 1)))
    with pytest.raises(cn.ShapeError) as info:
        bad_projection.build((3, 9, 9))
    assert str(info.value) == (
        "res1 (Residual): f(x) has shape (8, 5, 5) but the shortcut has (8, 9, 9); make the "
        "projection produce f(x)'s shape")


def test_errors_come_before_any_data_flows():
    # Building with input_shape validates at construction time.
    with pytest.raises(cn.ShapeError, match="conv1: input 7x7"):
        cn.Sequential(cn.Conv2d(3, 10, 3, stride=3), input_shape=(3, 7, 7))


# -- strict=False ---------------------------------------------------------------------

def test_strict_false_model_floors_and_the_summary_shows_dropped_pixels():
    model = cn.Sequential(cn.Conv2d(3, 10, 3, stride=3), strict=False)
    assert model.build((3, 7, 7)) == (10, 2, 2)
    summary = model.describe((3, 7, 7))
    assert summary.rows[0].dropped == (1, 1)
    assert "[drops 1 row(s), 1 col(s)]" in str(summary)
    out = model.forward(np.zeros((1, 3, 7, 7), np.float32))
    assert out.shape == (1, 10, 2, 2)


def test_strict_false_on_one_layer_only():
    model = cn.Sequential(cn.Conv2d(3, 4, 3, stride=3, strict=False), cn.MaxPool2d(2))
    with pytest.raises(cn.ShapeError, match="pool1: input 3x3"):
        model.build((3, 10, 10))
    model = cn.Sequential(cn.Conv2d(3, 4, 3, stride=3, strict=False), cn.MaxPool2d(2))
    assert model.build((3, 13, 13)) == (4, 2, 2)
    assert model.describe((3, 13, 13)).rows[0].dropped == (1, 1)


def test_exact_fits_drop_nothing():
    summary = cn.Sequential(cn.Conv2d(3, 4, 3, stride=2)).describe((3, 7, 7))
    assert summary.rows[0].dropped == (0, 0)
    assert "drops" not in str(summary)


# -- receptive fields -------------------------------------------------------------------

def test_receptive_field_through_layers():
    field = ReceptiveField()
    conv3 = field.through((3, 3), (1, 1), (1, 1), Padding(1, 1, 1, 1))
    assert (conv3.size, conv3.jump) == ((3, 3), (1, 1))
    two = conv3.through((3, 3), (1, 1), (1, 1), Padding(1, 1, 1, 1))
    assert (two.size, two.jump) == ((5, 5), (1, 1))  # two 3x3 convs see 5x5
    pooled = field.through((5, 5), (1, 1), (1, 1), Padding(0, 0, 0, 0)).through(
        (2, 2), (2, 2), (1, 1), Padding(0, 0, 0, 0))
    assert (pooled.size, pooled.jump) == ((6, 6), (2, 2))
    dilated = field.through((3, 1), (2, 1), (2, 1), Padding(0, 0, 0, 0))
    assert (dilated.size, dilated.jump) == ((5, 1), (2, 1))


def test_receptive_field_window_on_input():
    # A 3x3 conv without padding: output unit (0, 0) sees input rows 0..2, cols 0..2.
    field = ReceptiveField().through((3, 3), (1, 1), (1, 1), Padding(0, 0, 0, 0))
    assert field.window_on_input(0, 0) == (0, 0, 3, 3)
    assert field.window_on_input(2, 1) == (2, 1, 3, 3)
    padded = ReceptiveField().through((3, 3), (2, 2), (1, 1), Padding(1, 1, 1, 1))
    assert padded.window_on_input(0, 0) == (-1, -1, 3, 3)
    assert padded.window_on_input(1, 2) == (1, 3, 3, 3)


# -- argument normalisation ---------------------------------------------------------------

def test_pair_accepts_ints_and_pairs_only():
    assert pair(3, "kernel_size", "Conv2d") == (3, 3)
    assert pair((3, 1), "kernel_size", "Conv2d") == (3, 1)
    assert pair([2, 4], "stride", "Conv2d") == (2, 4)
    assert pair(np.int64(3), "kernel_size", "Conv2d") == (3, 3)
    for bad in (True, 2.5, (1, 2, 3), "3", (1.0, 2)):
        with pytest.raises(TypeError, match="Conv2d: kernel_size must be an int or an"):
            pair(bad, "kernel_size", "Conv2d")
