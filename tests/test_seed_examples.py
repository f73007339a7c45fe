"""The worked examples of CS231n Lecture 5 (the seed document), one named test each."""

import numpy as np
import pytest

import convnet as cn


def test_32x32x3_with_ten_5x5_filters_stride_1_pad_2_gives_32x32x10_and_760_parameters():
    conv = cn.Conv2d(3, 10, 5, stride=1, padding=2)
    assert conv.output_shape((3, 32, 32)) == (10, 32, 32)
    assert conv.num_parameters() == 760  # each filter 5*5*3 + 1 = 76, times ten
    assert conv.weight.shape == (10, 3, 5, 5) and conv.bias.shape == (10,)
    assert conv.param_formula((3, 32, 32)) == "10 x (5*5*3 + 1) = 760"
    row = cn.Sequential(conv).describe((3, 32, 32)).rows[0]
    assert row.formula == "10 x (5*5*3 + 1) = 760"
    out = conv.forward(np.zeros((1, 3, 32, 32), np.float32))
    assert out.shape == (1, 10, 32, 32)


def test_7x7_input_3x3_filter_stride_1_gives_5x5():
    assert cn.conv_output_size(7, 3, 1) == 5
    assert cn.Conv2d(1, 1, 3, stride=1).output_shape((1, 7, 7)) == (1, 5, 5)


def test_7x7_input_3x3_filter_stride_2_gives_3x3():
    assert cn.conv_output_size(7, 3, 2) == 3
    assert cn.Conv2d(1, 1, 3, stride=2).forward(np.zeros((1, 1, 7, 7), np.float32)).shape == (
        1, 1, 3, 3)


def test_7x7_input_3x3_filter_stride_3_does_not_fit():
    with pytest.raises(cn.ShapeError, match=r"\(7 - 3 \+ 2\*0\)/3 \+ 1 = 2.33 along the width, "
                                            r"not an integer; stride 1 or 2 fits"):
        cn.conv_output_size(7, 3, 3)
    with pytest.raises(cn.ShapeError, match="stride 1 or 2 fits"):
        cn.Sequential(cn.Conv2d(1, 1, 3, stride=3), input_shape=(1, 7, 7))
    with pytest.raises(cn.ShapeError):
        cn.Conv2d(1, 1, 3, stride=3).forward(np.zeros((1, 1, 7, 7), np.float32))


def test_32x32_input_5x5_filter_stride_1_gives_28x28():
    assert cn.conv_output_size(32, 5, 1) == 28
    assert cn.Conv2d(3, 6, 5).output_shape((3, 32, 32)) == (6, 28, 28)


def test_7x7_input_3x3_filter_pad_1_keeps_7x7():
    assert cn.conv_output_size(7, 3, 1, 1) == 7
    assert cn.Conv2d(3, 4, 3, padding=1).output_shape((3, 7, 7)) == (4, 7, 7)


def test_56x56x64_with_thirty_two_1x1_filters_gives_56x56x32():
    conv = cn.Conv2d(64, 32, 1)
    assert conv.weight.shape == (32, 64, 1, 1)  # each filter is 1x1x64: the full depth
    assert conv.output_shape((64, 56, 56)) == (32, 56, 56)
    x = np.random.default_rng(0).standard_normal((1, 64, 56, 56)).astype(np.float32)
    assert conv.forward(x).shape == (1, 32, 56, 56)


def test_max_pool_2x2_stride_2_halves_width_and_height_and_keeps_depth():
    pool = cn.MaxPool2d(2, stride=2)
    assert pool.output_shape((64, 224, 224)) == (64, 112, 112)
    x = np.array([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], np.float32)
    out = pool.forward(x[None, None])
    np.testing.assert_array_equal(out[0, 0], [[6, 8], [3, 4]])  # the lecture's example


def test_fully_connected_layer_on_a_32x32x3_image_has_a_3072x10_weight():
    fc = cn.Linear(32 * 32 * 3, 10)
    assert fc.weight.shape == (10, 3072)  # 3072x10, stored (out, in) as in PyTorch
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    stretched = cn.Flatten().forward(image)
    assert stretched.shape == (1, 3072)
    scores = fc.forward(stretched)
    assert scores.shape == (1, 10)
    # Each score is the dot product of one row of W with the stretched image, plus a bias.
    np.testing.assert_allclose(scores[0, 4], fc.weight.data[4] @ stretched[0] + fc.bias.data[4],
                               rtol=1e-5, atol=1e-5)


def test_a_filter_always_spans_the_full_input_depth():
    conv = cn.Conv2d(3, 1, 5, bias=False)
    assert conv.weight.shape[1:] == (3, 5, 5)  # a 5x5x3 filter
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    out = conv.forward(x)
    assert out.shape == (1, 1, 28, 28)  # one filter, one activation map
    # Each output is w^T x over one 5x5x3 chunk of the image.
    patch = x[0, :, 10:15, 7:12]
    np.testing.assert_allclose(out[0, 0, 10, 7], (conv.weight.data[0] * patch).sum(),
                               rtol=1e-5, atol=1e-5)


def test_the_lectures_network_runs_forward_and_backward():
    model = cn.Sequential(cn.Conv2d(3, 10, 5, stride=1, padding=2), cn.ReLU(), cn.MaxPool2d(2),
                          cn.Flatten(), cn.Linear(10 * 16 * 16, 10))
    x = np.random.default_rng(2).standard_normal((4, 3, 32, 32)).astype(np.float32)
    y = np.array([0, 3, 9, 1])
    loss_fn = cn.CrossEntropyLoss()
    opt = cn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scores = model.forward(x)
    assert scores.shape == (4, 10)
    loss = loss_fn.forward(scores, y)
    model.backward(loss_fn.backward())
    conv = model.layers[0]
    assert conv.weight.grad.shape == conv.weight.data.shape and conv.weight.grad.any()
    before = conv.weight.data.copy()
    opt.step()
    model.zero_grad()
    assert not np.array_equal(before, conv.weight.data)
    assert loss_fn.forward(model.forward(x), y) < loss
