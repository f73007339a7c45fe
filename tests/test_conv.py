"""Conv2d: the im2col fast path against the loop oracle, and backward against centred
differences, on non-square kernels, odd sizes, stride > 1, padding, dilation and groups."""

import numpy as np
import pytest
from engine_checks import (
    build_conv,
    check_gradients,
    conv_configs,
    conv_fits_exactly,
    tf_same_padding,
)
from hypothesis import given, settings

import convnet as cn
from convnet.core import reference


def _explicit_padding(config):
    """(top, bottom, left, right) from the configuration, written out from the definitions."""
    if config["padding"] == "valid":
        return (0, 0, 0, 0)
    if config["padding"] == "same":
        _, _, h, w = config["input_shape"]
        top, bottom = tf_same_padding(h, config["kernel_size"][0], config["stride"][0],
                                      config["dilation"][0])
        left, right = tf_same_padding(w, config["kernel_size"][1], config["stride"][1],
                                      config["dilation"][1])
        return (top, bottom, left, right)
    ph, pw = config["padding"]
    return (ph, ph, pw, pw)


@settings(max_examples=30, deadline=None)
@given(config=conv_configs(max_channels=4, max_size=9, batch=2))
def test_forward_matches_loop_oracle(config):
    conv = build_conv(config)
    rng = np.random.default_rng(7)
    if conv.bias is not None:
        conv.bias.data[...] = rng.standard_normal(conv.bias.shape)
    x = rng.standard_normal(config["input_shape"]).astype(np.float32)
    out = conv.forward(x)
    expected = reference.conv2d(
        x.astype(np.float64), conv.weight.data.astype(np.float64),
        None if conv.bias is None else conv.bias.data.astype(np.float64),
        config["stride"], _explicit_padding(config), config["dilation"], config["groups"])
    assert out.dtype == np.float32
    assert out.shape == expected.shape
    assert out.shape[1:] == conv.output_shape(config["input_shape"][1:])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h, w, stride", [(7, 7, 2), (8, 5, 3), (1, 6, 2), (9, 4, (2, 3))])
def test_same_padding_output_is_ceil_of_size_over_stride(h, w, stride):
    conv = cn.Conv2d(2, 3, (3, 2), stride=stride, padding="same")
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    assert conv.output_shape((2, h, w)) == (3, -(-h // sh), -(-w // sw))
    x = np.random.default_rng(0).standard_normal((1, 2, h, w)).astype(np.float32)
    assert conv.forward(x).shape == (1, 3, -(-h // sh), -(-w // sw))


def test_same_padding_puts_the_odd_pixel_bottom_right():
    # 6 wide, kernel 2, stride 2: no padding needed; 5 wide: one pixel, after the input.
    conv = cn.Conv2d(1, 1, 2, stride=2, padding="same", bias=False)
    conv.weight.data[...] = 1.0
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    out = conv.forward(x)
    assert out.shape == (1, 1, 3, 3)
    # The last window of each row covers column 4 and a zero column on the right.
    assert out[0, 0, 0, 2] == x[0, 0, 0, 4] + x[0, 0, 1, 4]
    assert out[0, 0, 2, 2] == x[0, 0, 4, 4]
    assert out[0, 0, 0, 0] == x[0, 0, :2, :2].sum()


@pytest.mark.parametrize(
    "kwargs, input_shape",
    [
        ({"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 0)}, (2, 3, 7, 6)),
        ({"kernel_size": (2, 3), "stride": 2, "padding": "same"}, (2, 3, 7, 6)),  # asymmetric
        ({"kernel_size": 3, "stride": (1, 2), "dilation": (2, 1), "padding": 2}, (2, 3, 7, 7)),
        ({"kernel_size": (1, 3), "stride": 3, "padding": "valid"}, (2, 3, 7, 9)),
        ({"kernel_size": 1}, (3, 3, 4, 5)),  # the pointwise fast path
        ({"kernel_size": 1, "stride": 2}, (2, 3, 5, 5)),
    ],
)
def test_gradients_match_centred_differences(kwargs, input_shape, rng):
    conv = cn.Conv2d(3, 4, **kwargs)
    conv.bias.data[...] = rng.standard_normal(4)
    check_gradients(conv, rng.standard_normal(input_shape), rng)


@pytest.mark.parametrize(
    "c_in, c_out, groups, kwargs",
    [
        (4, 6, 2, {"kernel_size": (3, 2), "padding": 1}),
        (3, 3, 3, {"kernel_size": 3, "stride": 2, "padding": "same"}),  # depthwise
        (3, 6, 3, {"kernel_size": (2, 3), "dilation": (1, 2)}),  # depthwise, multiplier 2
        (6, 4, 2, {"kernel_size": 1}),  # grouped pointwise
    ],
)
def test_grouped_gradients_match_centred_differences(c_in, c_out, groups, kwargs, rng):
    conv = cn.Conv2d(c_in, c_out, groups=groups, **kwargs)
    conv.bias.data[...] = rng.standard_normal(c_out)
    check_gradients(conv, rng.standard_normal((2, c_in, 6, 5)), rng)


def test_gradients_without_bias(rng):
    conv = cn.Conv2d(2, 3, (2, 3), stride=(2, 1), bias=False)
    assert [name for name, _ in conv.named_parameters()] == ["weight"]
    check_gradients(conv, rng.standard_normal((2, 2, 6, 6)), rng)


def test_backward_accumulates_into_grad(rng):
    conv = cn.Conv2d(2, 3, 3, padding=1)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    conv.forward(x)
    conv.backward(dy)
    first = conv.weight.grad.copy()
    conv.forward(x)
    conv.backward(dy)
    np.testing.assert_allclose(conv.weight.grad, 2 * first, rtol=1e-6)
    conv.zero_grad()
    assert not conv.weight.grad.any() and not conv.bias.grad.any()


def test_pointwise_conv_is_a_plain_matrix_product(rng):
    # 56x56x64 with thirty-two 1x1 filters, at a smaller spatial size: each output pixel is
    # W (32, 64) times the 64-vector of that pixel, plus the bias.
    conv = cn.Conv2d(64, 32, 1)
    conv.bias.data[...] = rng.standard_normal(32)
    assert conv.is_pointwise
    x = rng.standard_normal((2, 64, 7, 5)).astype(np.float32)
    out = conv.forward(x)
    kept_columns = conv.cache[1]
    assert np.shares_memory(kept_columns, x)  # no im2col copy: the input already is the matrix
    w = conv.weight.data.reshape(32, 64).astype(np.float64)
    expected = np.einsum("kc,nchw->nkhw", w, x.astype(np.float64)) + conv.bias.data[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # The backward is the transposed product.
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx = conv.backward(dy)
    np.testing.assert_allclose(dx, np.einsum("kc,nkhw->nchw", w, dy), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv.weight.grad.reshape(32, 64),
                               np.einsum("nkhw,nchw->kc", dy, x), rtol=1e-4, atol=1e-4)


def test_conv_output_depth_is_the_number_of_filters():
    conv = cn.Conv2d(3, 10, 5)
    assert conv.weight.shape == (10, 3, 5, 5)  # PyTorch's (out, in/groups, kh, kw)
    assert conv.bias.shape == (10,)
    assert conv.output_shape((3, 32, 32))[0] == 10


def test_non_square_kernel_uses_each_axis_for_its_own_size():
    # A kernel 5 high and 1 wide on a 9x9 input: 5 rows lost in height, none in width.
    conv = cn.Conv2d(1, 1, (5, 1))
    assert conv.output_shape((1, 9, 9)) == (1, 5, 9)
    assert conv.forward(np.ones((1, 1, 9, 9), np.float32)).shape == (1, 1, 5, 9)


def test_strict_false_floors_like_the_oracle(rng):
    config = {"in_channels": 2, "out_channels": 3, "kernel_size": (3, 2), "stride": (3, 2),
              "padding": (0, 1), "dilation": (1, 1), "groups": 1, "bias": True,
              "input_shape": (1, 2, 7, 6)}
    assert not conv_fits_exactly(config)
    with pytest.raises(cn.ShapeError):
        cn.Conv2d(2, 3, (3, 2), stride=(3, 2), padding=(0, 1)).output_shape((2, 7, 6))
    conv = build_conv(config)
    x = rng.standard_normal(config["input_shape"]).astype(np.float32)
    expected = reference.conv2d(x, conv.weight.data, conv.bias.data, (3, 2), (0, 0, 1, 1))
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-5, atol=1e-5)
    assert conv.dropped_pixels((2, 7, 6)) == (1, 0)


def test_repr_shows_only_non_default_arguments():
    assert repr(cn.Conv2d(3, 10, 5)) == "Conv2d(3, 10, kernel_size=5)"
    assert repr(cn.Conv2d(4, 8, (3, 1), stride=2, padding="same", groups=2, bias=False)) == (
        "Conv2d(4, 8, kernel_size=(3, 1), stride=2, padding='same', groups=2, bias=False)")
