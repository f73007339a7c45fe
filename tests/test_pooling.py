"""Pooling: the tap-walking fast paths against the loop oracle, and backward against centred
differences (max-pool inputs without ties)."""

import numpy as np
import pytest
from engine_checks import (
    check_gradients,
    pool_configs,
    pool_fits_exactly,
    spread_values,
    tf_same_padding,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.core import reference


@settings(max_examples=30, deadline=None)
@given(config=pool_configs(), mode=st.sampled_from(["max", "avg", "avg_exclude_pad"]))
def test_forward_matches_loop_oracle(config, mode):
    strict = pool_fits_exactly(config)
    if mode == "max":
        pool = cn.MaxPool2d(config["kernel_size"], config["stride"], config["padding"],
                            strict=strict)
    else:
        pool = cn.AvgPool2d(config["kernel_size"], config["stride"], config["padding"],
                            count_include_pad=mode == "avg", strict=strict)
    x = np.random.default_rng(3).standard_normal(config["input_shape"]).astype(np.float32)
    out = pool.forward(x)
    expected = reference.pool2d(x, config["kernel_size"], config["stride"], config["padding"],
                                mode="max" if mode == "max" else "avg",
                                count_include_pad=mode == "avg")
    assert out.shape == expected.shape
    assert out.shape[1:] == pool.output_shape(config["input_shape"][1:])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kernel, stride, padding, shape",
    [
        (2, None, 0, (2, 3, 6, 8)),
        (3, 2, 1, (2, 2, 7, 5)),
        ((3, 2), (1, 2), (1, 0), (1, 3, 5, 6)),
        ((2, 3), (2, 1), (1, 1), (2, 2, 4, 5)),  # overlapping windows along the width
    ],
)
def test_max_pool_gradients_match_centred_differences(kernel, stride, padding, shape, rng):
    pool = cn.MaxPool2d(kernel, stride, padding)
    check_gradients(pool, spread_values(rng, shape), rng)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(
    "kernel, stride, padding, shape",
    [
        (2, None, 0, (2, 3, 6, 8)),
        (3, 2, 1, (2, 2, 7, 5)),
        ((3, 2), (1, 2), (1, 1), (1, 3, 5, 6)),
    ],
)
def test_avg_pool_gradients_match_centred_differences(kernel, stride, padding, shape,
                                                      count_include_pad, rng):
    pool = cn.AvgPool2d(kernel, stride, padding, count_include_pad=count_include_pad)
    check_gradients(pool, rng.standard_normal(shape), rng)


def test_global_avg_pool_gradients_match_centred_differences(rng):
    check_gradients(cn.GlobalAvgPool2d(), rng.standard_normal((2, 3, 5, 4)), rng)


def test_global_avg_pool_is_the_mean_of_each_map(rng):
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    out = cn.GlobalAvgPool2d().forward(x)
    assert out.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(out[:, :, 0, 0], x.mean(axis=(2, 3)), rtol=1e-6)
    assert cn.GlobalAvgPool2d().output_shape((3, 5, 4)) == (3, 1, 1)


def test_max_pool_sends_the_gradient_to_the_first_of_tied_maxima():
    # PyTorch's rule: a tie goes to the first tap in row-major order.
    pool = cn.MaxPool2d(2)
    x = np.ones((1, 1, 2, 2), np.float32)
    pool.forward(x)
    dx = pool.backward(np.ones((1, 1, 1, 1), np.float32))
    assert dx[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_max_pool_with_more_than_256_taps(rng):
    # A window of 17x16 = 272 taps: the index of the winning tap no longer fits a byte.
    pool = cn.MaxPool2d((17, 16))
    x = spread_values(rng, (2, 3, 17, 16)).astype(np.float32)
    out = pool.forward(x)
    np.testing.assert_array_equal(out[:, :, 0, 0], x.max(axis=(2, 3)))
    dx = pool.backward(np.ones(out.shape, np.float32))
    winners = x == x.max(axis=(2, 3), keepdims=True)
    np.testing.assert_array_equal(dx, winners.astype(np.float32))


def test_max_pool_padding_never_wins(rng):
    # Padding is -inf for max pooling, so an all-negative input is never replaced by zeros.
    x = -1 - rng.random((1, 2, 5, 5)).astype(np.float32)
    out = cn.MaxPool2d(3, stride=2, padding=1).forward(x)
    assert (out < -1).all()


def test_avg_pool_count_include_pad_divisor():
    # 3x3 window with padding 1 on a corner: 4 real ones out of 9 taps.
    x = np.ones((1, 1, 3, 3), np.float32)
    included = cn.AvgPool2d(3, stride=2, padding=1).forward(x)
    excluded = cn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False).forward(x)
    np.testing.assert_allclose(included[0, 0], [[4 / 9, 4 / 9], [4 / 9, 4 / 9]], rtol=1e-6)
    np.testing.assert_allclose(excluded[0, 0], np.ones((2, 2)), rtol=1e-6)


@pytest.mark.parametrize("pool", [cn.MaxPool2d(2), cn.AvgPool2d(2)])
def test_pooling_keeps_depth(pool):
    assert pool.output_shape((7, 10, 6)) == (7, 5, 3)
    assert pool.forward(np.zeros((2, 7, 10, 6), np.float32)).shape == (2, 7, 5, 3)


def test_stride_defaults_to_kernel_size():
    assert cn.MaxPool2d((3, 2)).stride == (3, 2)
    assert cn.AvgPool2d(3, stride=1).stride == (1, 1)


def test_pool_repr_shows_only_non_default_arguments():
    assert repr(cn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2)"
    assert repr(cn.AvgPool2d(3, 2, 1, count_include_pad=False)) == (
        "AvgPool2d(kernel_size=3, stride=2, padding=1, count_include_pad=False)")


@settings(max_examples=20, deadline=None)
@given(kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
       mode=st.sampled_from(["max", "avg", "avg_exclude_pad"]))
def test_same_padding_matches_the_oracle_on_explicitly_padded_input(kernel, stride, size, mode):
    # TensorFlow's 'same': output ceil(N/S), the odd pixel of padding after. The oracle takes
    # symmetric padding only, so pad by hand: -inf for max, zeros for average; the average
    # without padding divides the window sum by the count of real pixels under the window.
    (top, bottom), (left, right) = (tf_same_padding(size[a], kernel[a], stride[a], 1)
                                    for a in range(2))
    x = np.random.default_rng(5).standard_normal((2, 3, *size)).astype(np.float32)
    sides = ((0, 0), (0, 0), (top, bottom), (left, right))
    if mode == "max":
        layer = cn.MaxPool2d(kernel, stride, padding="same")
        padded = np.pad(x, sides, constant_values=-np.inf)
        expected = reference.pool2d(padded, kernel, stride, mode="max")
    else:
        include = mode == "avg"
        layer = cn.AvgPool2d(kernel, stride, padding="same", count_include_pad=include)
        window_sum = reference.pool2d(np.pad(x, sides), kernel, stride, mode="avg")
        expected = window_sum
        if not include:
            count = reference.pool2d(np.pad(np.ones_like(x), sides), kernel, stride, mode="avg")
            expected = window_sum / count
    out = layer.forward(x)
    assert out.shape == (2, 3, -(-size[0] // stride[0]), -(-size[1] // stride[1]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(config=pool_configs(channels=4), compiled=st.booleans(), seed=st.integers(0, 2**16))
def test_a_relu_before_a_max_pool_runs_after_it_with_the_same_answers(config, compiled, seed):
    """A Sequential runs a ReLU's max pool first (`pools_first`): on input full of ties and
    zeros (values from -2 to 2), its output and input gradient are the two layers' run in
    their own order, on the NumPy path and the compiled one, with overlapping, padded and
    cropped windows."""
    from convnet.core import kernels, pool_kernels

    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, config["input_shape"]).astype(np.float32)
    relu, pool = cn.ReLU(), cn.MaxPool2d(config["kernel_size"], config["stride"],
                                         config["padding"], strict=False)
    model = cn.Sequential(relu, pool)
    assert model._run_order() == [pool, relu]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pool_kernels, "MIN_LOAD_VALUES", 0)
        patch.setattr(kernels, "_enabled", compiled and kernels.available())
        out = model.forward(x)
        assert relu.cache.shape == out.shape  # the ReLU ran on the pooled output
        dy = rng.standard_normal(out.shape).astype(np.float32)
        dx = model.backward(dy)
        expected = pool.forward(relu.forward(x))
        expected_dx = relu.backward(pool.backward(dy))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-6, atol=1e-6)  # (sums' order)
