"""Elementwise nonlinearities and Softmax: values from their definitions, backward against
centred differences (ReLU inputs kept off the kink)."""

import numpy as np
import pytest
from engine_checks import check_gradients, spread_values

import convnet as cn


@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 4, 5)])
@pytest.mark.parametrize(
    "layer", [cn.ReLU, lambda: cn.LeakyReLU(0.2), cn.Sigmoid, cn.Tanh],
    ids=["relu", "leaky_relu", "sigmoid", "tanh"],
)
def test_gradients_match_centred_differences(layer, shape, rng):
    x = 3 * spread_values(rng, shape)  # no value within 1e-3 of the ReLU kink
    check_gradients(layer(), x, rng)


@pytest.mark.parametrize("shape", [(4, 6), (2, 5, 3, 3)])
def test_softmax_gradients_match_centred_differences(shape, rng):
    check_gradients(cn.Softmax(), 2 * rng.standard_normal(shape), rng)


def test_values_follow_the_definitions():
    x = np.array([[-2.0, -0.5, 0.5, 3.0]], np.float32)
    np.testing.assert_array_equal(cn.ReLU().forward(x), [[0.0, 0.0, 0.5, 3.0]])
    np.testing.assert_allclose(cn.LeakyReLU(0.1).forward(x), [[-0.2, -0.05, 0.5, 3.0]],
                               rtol=1e-6)
    np.testing.assert_allclose(cn.LeakyReLU().forward(x)[0, 0], -0.02, rtol=1e-6)
    np.testing.assert_allclose(cn.Sigmoid().forward(x), 1 / (1 + np.exp(-x.astype(float))),
                               rtol=1e-6)
    np.testing.assert_allclose(cn.Tanh().forward(x), np.tanh(x.astype(float)), rtol=1e-6)


@pytest.mark.parametrize("layer", [cn.ReLU(), cn.LeakyReLU(), cn.Sigmoid(), cn.Tanh()])
def test_elementwise_layers_keep_shape_and_dtype(layer, rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    out = layer.forward(x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert layer.output_shape((3, 4, 5)) == (3, 4, 5)
    dx = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape and dx.dtype == np.float32


def test_relu_gradient_passes_only_where_the_input_is_positive():
    relu = cn.ReLU()
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    relu.forward(x)
    np.testing.assert_array_equal(relu.backward(np.full((1, 4), 5.0, np.float32)),
                                  [[0.0, 5.0, 0.0, 5.0]])


def test_sigmoid_does_not_overflow_for_large_inputs():
    x = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = cn.Sigmoid().forward(x)
    assert np.isfinite(out).all()
    assert out[0, 0] == 0.0 and out[0, -1] == 1.0 and out[0, 2] == 0.5


def test_softmax_rows_are_probabilities_even_for_huge_scores():
    x = np.array([[1000.0, 1000.0, -1000.0], [1.0, 2.0, 3.0]], np.float32)
    out = cn.Softmax().forward(x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out[0], [0.5, 0.5, 0.0], atol=1e-7)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(out[1], e / e.sum(), rtol=1e-6)


def test_softmax_refuses_another_axis():
    with pytest.raises(ValueError, match="only dim=1"):
        cn.Softmax(dim=0)


def test_leaky_relu_repr_shows_a_non_default_slope():
    assert repr(cn.LeakyReLU()) == "LeakyReLU()"
    assert repr(cn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
