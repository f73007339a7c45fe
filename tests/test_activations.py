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


def test_softmax_refuses_an_axis_the_input_lacks():
    with pytest.raises(cn.ShapeError, match=r"dim=3 is out of range for a 3-D input of shape "
                                            r"\(2, 4, 5\); use a dim from -3 to 2"):
        cn.Softmax(dim=3).forward(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(cn.ShapeError, match=r"dim=-4 is out of range for a 3-D input of shape "
                                            r"\('N', 4, 5\)"):
        cn.LogSoftmax(dim=-4).output_shape((4, 5))
    with pytest.raises(TypeError, match="dim must be an int"):
        cn.Softmax(dim=1.0)


def test_leaky_relu_repr_shows_a_non_default_slope():
    assert repr(cn.LeakyReLU()) == "LeakyReLU()"
    assert repr(cn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"


# -- ReLU6, Hardsigmoid, Hardswish, SiLU, ELU, GELU, Hardtanh, PReLU, LogSoftmax ---------------
# PyTorch parity: 60 draws per activation (shape, scale, dtype float32), values and input
# gradients at engine_checks.assert_close; each kink checked on its own below.

import torch  # noqa: E402 - the PyTorch half of this file
import torch.nn.functional as F  # noqa: E402, N812 - PyTorch's own alias
from engine_checks import assert_close, leaf  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

torch.set_num_threads(1)

# (convnet layer, PyTorch function, the kinks its derivative jumps at)
NEW_ACTIVATIONS = {
    "relu6": (cn.ReLU6, F.relu6, (0.0, 6.0)),
    "hardsigmoid": (cn.Hardsigmoid, F.hardsigmoid, (-3.0, 3.0)),
    "hardswish": (cn.Hardswish, F.hardswish, (-3.0, 3.0)),
    "silu": (cn.SiLU, F.silu, ()),
    "elu": (cn.ELU, F.elu, (0.0,)),
    "elu-0.3": (lambda: cn.ELU(0.3), lambda t: F.elu(t, 0.3), (0.0,)),
    "gelu": (cn.GELU, F.gelu, ()),
    "gelu-tanh": (lambda: cn.GELU("tanh"), lambda t: F.gelu(t, approximate="tanh"), ()),
    "hardtanh": (cn.Hardtanh, F.hardtanh, (-1.0, 1.0)),
    "hardtanh-0-4": (lambda: cn.Hardtanh(0.5, 4), lambda t: F.hardtanh(t, 0.5, 4), (0.5, 4.0)),
    "prelu": (cn.PReLU, lambda t: F.prelu(t, torch.tensor([0.25])), (0.0,)),
    "logsoftmax": (cn.LogSoftmax, lambda t: F.log_softmax(t, 1), ()),
    "logsoftmax-last": (lambda: cn.LogSoftmax(-1), lambda t: F.log_softmax(t, -1), ()),
    "softmax-2": (lambda: cn.Softmax(-2), lambda t: F.softmax(t, -2), ()),
}


def off_kinks(x, kinks, gap=1e-3):
    """x with every value within `gap` of a kink moved `gap` away from it."""
    for kink in kinks:
        near = np.abs(x - kink) < gap
        x[near] = kink + np.where(x[near] >= kink, gap, -gap)
    return x


@pytest.mark.parametrize("name", sorted(NEW_ACTIVATIONS))
def test_new_activation_gradients_match_centred_differences(name, rng):
    layer, _, kinks = NEW_ACTIVATIONS[name]
    x = off_kinks(4 * rng.standard_normal((2, 3, 4, 5)), kinks)
    check_gradients(layer(), x, rng)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(NEW_ACTIVATIONS)), seed=st.integers(0, 2**32 - 1),
       shape=st.sampled_from([(3, 7), (2, 3, 4, 5), (1, 4, 1, 9), (5, 2, 3)]),
       scale=st.sampled_from([0.5, 3.0, 10.0]))
def test_new_activations_match_torch(name, seed, shape, scale):
    layer, theirs, _ = NEW_ACTIVATIONS[name]
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal(shape)).astype(np.float32)
    ours = layer()
    out = ours.forward(x)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx = ours.backward(dy)
    tx = leaf(x)
    ty = theirs(tx)
    ty.backward(torch.from_numpy(dy))
    assert out.dtype == np.float32 and dx.dtype == np.float32
    assert_close(out, ty, f"{name} output")
    assert_close(dx, tx.grad, f"{name} input gradient")


@pytest.mark.parametrize("name", sorted(k for k, v in NEW_ACTIVATIONS.items() if v[2]))
def test_gradients_at_the_kinks_are_pytorchs(name):
    layer, theirs, kinks = NEW_ACTIVATIONS[name]
    x = np.array([[k for kink in kinks for k in (kink, kink - 1e-3, kink + 1e-3)]], np.float32)
    ours = layer()
    ours.forward(x)
    dx = ours.backward(np.ones_like(x))
    tx = leaf(x)
    theirs(tx).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)


def test_gelu_in_float64_matches_torch_to_rounding(rng):
    x = np.concatenate([np.linspace(-12, 12, 24001), 4 * rng.standard_normal(2000)])[None]
    ours = cn.GELU()
    out = ours.forward(x)
    dx = ours.backward(np.ones_like(x))
    tx = leaf(x)
    ty = F.gelu(tx)
    ty.sum().backward()
    # PyTorch's 0.5 x (1 + erf(x / sqrt 2)) loses the tail below x = -6 that erfc keeps
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=2e-15, atol=1e-15)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=2e-15, atol=1e-15)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4, 5)])
def test_prelu_per_channel_matches_torch(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    prelu = cn.PReLU(3, init=0.1)
    prelu.weight.data[...] = [0.1, -0.5, 2.0]
    out = prelu.forward(x)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx = prelu.backward(dy)
    tx, tw = leaf(x), leaf(prelu.weight.data)
    ty = F.prelu(tx, tw)
    ty.backward(torch.from_numpy(dy))
    assert_close(out, ty, "output")
    assert_close(dx, tx.grad, "input gradient")
    assert_close(prelu.weight.grad, tw.grad, "weight gradient")
    assert list(prelu.state_dict()) == list(torch.nn.PReLU(3).state_dict()) == ["weight"]


@pytest.mark.parametrize("channels", [1, 3])
def test_prelu_weight_gradient_matches_centred_differences(channels, rng):
    prelu = cn.PReLU(channels)
    prelu.weight.data[...] = rng.uniform(-1, 1, channels)
    check_gradients(prelu, off_kinks(rng.standard_normal((2, 3, 4, 4)), (0.0,)), rng)


def test_hardsigmoid_with_onnx_alpha_and_beta():
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    x = np.linspace(-6, 6, 49, dtype=np.float32)[None]
    node = helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.2, beta=0.5)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, x.shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, x.shape)])
    expected = ReferenceEvaluator(helper.make_model(graph)).run(None, {"x": x})[0]
    layer = cn.Hardsigmoid(alpha=0.2, beta=0.5)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-6, atol=1e-7)
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, np.where(np.abs(x) < 2.5, np.float32(0.2), 0))
    assert repr(layer) == "Hardsigmoid(alpha=0.2, beta=0.5)" and repr(cn.Hardsigmoid()) == (
        "Hardsigmoid()")


def test_hardtanh_is_onnx_clip_with_an_open_bound():
    x = np.array([[-5.0, -0.5, 0.5, 5.0]], np.float32)
    np.testing.assert_array_equal(cn.Hardtanh(0.0, np.inf).forward(x), [[0.0, 0.0, 0.5, 5.0]])
    np.testing.assert_array_equal(cn.Hardtanh(-np.inf, 1.0).forward(x), [[-5.0, -0.5, 0.5, 1]])
    assert repr(cn.Hardtanh(0.0, 6.0)) == "Hardtanh(min_val=0.0, max_val=6.0)"
    assert repr(cn.ReLU6()) == "ReLU6()" and isinstance(cn.ReLU6(), cn.Hardtanh)


def test_new_activations_refuse_bad_arguments():
    with pytest.raises(ValueError, match="min_val must be less than max_val, received "
                                         "min_val=1.0, max_val=1.0"):
        cn.Hardtanh(1, 1)
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        cn.GELU("erf")
    with pytest.raises(TypeError, match="ELU: alpha must be a number"):
        cn.ELU("1")
    with pytest.raises(ValueError, match="num_parameters must be an int >= 1"):
        cn.PReLU(0)
    with pytest.raises(cn.ShapeError, match=r"num_parameters=3 slopes, one per channel, but the "
                                            r"input reaching it has 4 channels"):
        cn.PReLU(3).output_shape((4, 5, 5))
    with pytest.raises(ValueError, match="expected 3 input channels, received 4"):
        cn.PReLU(3).forward(np.zeros((2, 4, 5, 5), np.float32))


@pytest.mark.parametrize("layer", [cn.ReLU6(), cn.Hardsigmoid(), cn.Hardswish(), cn.SiLU(),
                                   cn.ELU(), cn.GELU(), cn.Hardtanh(), cn.PReLU(),
                                   cn.LogSoftmax()])
def test_new_activations_keep_shape_and_dtype_and_name(layer, rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    out = layer.forward(x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert layer.output_shape((3, 4, 5)) == (3, 4, 5)
    assert layer.backward(np.ones_like(out)).dtype == np.float32
    with cn.no_grad():
        layer.forward(x)
    assert layer.cache is None
    model = cn.Sequential(type(layer)(), input_shape=(3, 4, 5))
    assert model[0].name == f"{layer.kind}1"


def test_log_softmax_is_stable_and_exponentiates_to_softmax():
    x = np.array([[1000.0, 1000.0, -1000.0], [1.0, 2.0, 3.0]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = cn.LogSoftmax().forward(x)
    np.testing.assert_allclose(np.exp(out), cn.Softmax().forward(x), atol=1e-7)
    np.testing.assert_allclose(out[0, :2], [np.log(0.5)] * 2, rtol=1e-6)


@pytest.mark.parametrize("layer", [cn.ReLU6(), cn.Hardtanh(-0.5, 2.0)])
def test_hardtanh_keeps_its_output_for_backward(layer, rng):
    """Its input (a batch norm's output, say) is freed once the output exists: the slope is
    read from y, which is strictly inside the bounds exactly where x is."""
    x = np.concatenate([rng.standard_normal(40) * 4, [layer.min_val, layer.max_val, np.nan]])
    x = x.astype(np.float32).reshape(1, -1)
    out = layer.forward(x)
    assert layer.cache is out
    dx = layer.backward(np.ones_like(x))
    inside = (x > layer.min_val) & (x < layer.max_val)
    np.testing.assert_array_equal(dx, inside.astype(np.float32))


# -- the compiled passes (convnet.core.activation_kernels) against the NumPy layer and PyTorch
def _both_paths(x, dy, threads, make=cn.ReLU):
    """(output, input gradient) of the layer `make()` (ReLU) with the compiled kernels on, at
    `threads`, and off."""
    from convnet.core import activation_kernels, backend, kernels

    results = []
    previous = backend.num_threads()
    for enabled in (True, False):
        kernels.set_enabled(enabled)
        backend.set_num_threads(threads)
        try:
            layer = make()
            out = layer.forward(x)
            assert activation_kernels.usable(x) == (enabled and x.flags.c_contiguous)
            results.append((out, layer.backward(dy)))  # inf * 0: NaN, and no warning
        finally:
            kernels.set_enabled(True)
            backend.set_num_threads(previous)
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 4, 5), (4, 8, 64, 70)])  # the last splits
def test_compiled_relu_matches_numpy_and_torch(shape, threads, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-30]
    dy = rng.standard_normal(shape).astype(dtype)
    (out, dx), (numpy_out, numpy_dx) = _both_paths(x, dy, threads)
    assert out.dtype == dtype and dx.dtype == dtype and out.shape == shape
    np.testing.assert_array_equal(out, numpy_out)  # NaN where x is NaN, in both
    finite = np.isfinite(x)  # the NumPy layer's dy * (out > 0) differs at a NaN unit only
    np.testing.assert_array_equal(dx[finite], numpy_dx[finite])
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    torch.relu(tx).backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(out, torch.relu(torch.from_numpy(x)).numpy())
    np.testing.assert_array_equal(dx, tx.grad.numpy())


def test_compiled_relu_gradient_is_zero_where_off_whatever_dy(rng):
    """PyTorch's threshold_backward: no NaN or inf from dy leaks through a unit that is off
    (NumPy's dy * mask gave NaN there)."""
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    dy = np.array([[np.nan, np.nan, np.inf, -np.inf]], np.float32)
    layer = cn.ReLU()
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(dy), [[0.0, np.nan, 0.0, -np.inf]])


def test_relu_of_a_strided_view_takes_the_numpy_path_and_agrees(rng):
    x = rng.standard_normal((4, 6, 8, 10)).astype(np.float32)[:, ::2]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    (out, dx), (numpy_out, numpy_dx) = _both_paths(x, dy, 1)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    np.testing.assert_array_equal(dx, np.where(x > 0, dy, 0))
    np.testing.assert_array_equal(out, numpy_out)


def test_relu_under_no_grad_keeps_no_mask(rng):
    layer = cn.ReLU()
    with cn.no_grad():
        out = layer.forward(rng.standard_normal((2, 3, 4, 5)).astype(np.float32))
    assert layer.cache is None and (out >= 0).all()


# -- Hardtanh's (ReLU6's) compiled passes against the NumPy layer, bit for bit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bounds", [(0.0, 6.0), (-1.0, 1.0), (-np.inf, 0.5), (-2.5, np.inf)])
def test_compiled_hardtanh_matches_the_numpy_layer(bounds, threads, dtype, rng):
    """NaN, infinities, signed zeros and values on the bounds, in x and in dy: the compiled
    passes give the NumPy layer's output and gradient bit for bit (signs of zero included)."""
    x = rng.standard_normal((4, 8, 64, 70)).astype(dtype) * 4  # large enough to split
    flat = x.reshape(-1)
    flat[:9] = [np.nan, -0.0, 0.0, np.inf, -np.inf, 6.0, -1.0, 1.0, 0.5]
    dy = rng.standard_normal(x.shape).astype(dtype)
    dy.reshape(-1)[9:14] = [np.nan, np.inf, -np.inf, -0.0, -1.0]
    dy.reshape(-1)[:4] = -dy.reshape(-1)[:4]
    results = _both_paths(x, dy, threads, make=lambda: cn.Hardtanh(*bounds))
    (out, dx), (numpy_out, numpy_dx) = results
    assert out.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(out, numpy_out)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(numpy_out))
    np.testing.assert_array_equal(dx, numpy_dx)
    np.testing.assert_array_equal(np.signbit(dx), np.signbit(numpy_dx))
