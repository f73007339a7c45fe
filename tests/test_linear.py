"""Linear, Flatten and Dropout: values, layouts and backward against centred differences."""

import numpy as np
import pytest
from engine_checks import check_gradients

import convnet as cn


def test_linear_gradients_match_centred_differences(rng):
    fc = cn.Linear(7, 4)
    fc.bias.data[...] = rng.standard_normal(4)
    check_gradients(fc, rng.standard_normal((5, 7)), rng)


def test_linear_without_bias_gradients(rng):
    fc = cn.Linear(6, 3, bias=False)
    assert [name for name, _ in fc.named_parameters()] == ["weight"]
    check_gradients(fc, rng.standard_normal((4, 6)), rng)


def test_linear_is_x_times_w_transpose_plus_b(rng):
    fc = cn.Linear(5, 3)
    fc.bias.data[...] = rng.standard_normal(3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    expected = x.astype(np.float64) @ fc.weight.data.T.astype(np.float64) + fc.bias.data
    np.testing.assert_allclose(fc.forward(x), expected, rtol=1e-5, atol=1e-6)
    assert fc.output_shape((5,)) == (3,)


def test_flatten_gradients_match_centred_differences(rng):
    check_gradients(cn.Flatten(), rng.standard_normal((2, 3, 4, 5)), rng)


def test_flatten_keeps_channel_height_width_order(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    out = cn.Flatten().forward(x)
    assert out.shape == (2, 60)
    assert out[1, 1 * 20 + 2 * 5 + 3] == x[1, 1, 2, 3]  # c*H*W + h*W + w
    assert cn.Flatten().output_shape((3, 4, 5)) == (60,)


def test_dropout_gradients_match_centred_differences_with_a_fixed_mask(rng):
    drop = cn.Dropout(0.4)
    x = rng.standard_normal((6, 9))
    dx = check_gradients(drop, x, rng, before_forward=lambda: cn.manual_seed(11))
    assert (dx == 0).any() and (dx != 0).any()


def test_dropout_zeroes_about_p_and_scales_the_rest(rng):
    cn.manual_seed(5)
    drop = cn.Dropout(0.25)
    x = np.ones((200, 200), np.float32)
    out = drop.forward(x)
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    dx = drop.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, out)  # the same mask and scale flow back


def test_dropout_mask_follows_the_seed():
    x = np.ones((8, 8), np.float32)
    cn.manual_seed(3)
    first = cn.Dropout(0.5).forward(x)
    cn.manual_seed(3)
    again = cn.Dropout(0.5).forward(x)
    cn.manual_seed(4)
    other = cn.Dropout(0.5).forward(x)
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


def test_dropout_in_eval_mode_is_the_identity(rng):
    drop = cn.Dropout(0.5).eval()
    x = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(drop.forward(x), x)
    np.testing.assert_array_equal(drop.backward(x), x)


def test_dropout_backward_after_no_grad_forward_raises():
    drop = cn.Dropout(0.5)
    with cn.no_grad():
        drop.forward(np.ones((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="without a forward"):
        drop.backward(np.ones((2, 3), np.float32))


def test_linear_weight_layout_is_pytorchs():
    fc = cn.Linear(3072, 10)
    assert fc.weight.shape == (10, 3072)
    assert fc.bias.shape == (10,)
    assert repr(fc) == "Linear(3072, 10)"
