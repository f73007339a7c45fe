"""The tensor-op layers that imported graphs are made of (Reshape, Permute, Split, Slice,
reductions, MatMul, Constant, LayerNorm, LocalResponseNorm, elementwise math): gradients
against centred differences in float64, forward and backward against PyTorch."""

import numpy as np
import pytest
from engine_checks import assert_gradient_matches, check_gradients
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.core.errors import ShapeError

torch = pytest.importorskip("torch")
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def torch_check(layer, x, torch_fn, params=()):
    """Forward and input/parameter gradients of `layer` against torch_fn on the same data."""
    x = x.astype(np.float64)
    layer.astype(np.float64)
    y = layer.forward(x)
    g = np.random.default_rng(1).standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(g.copy())
    tx = torch.tensor(x, requires_grad=True)
    tparams = [torch.tensor(p.data, requires_grad=True) for p in params]
    ty = torch_fn(tx, *tparams)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    for param, tparam in zip(params, tparams, strict=True):
        np.testing.assert_allclose(param.grad, tparam.grad.numpy(), rtol=1e-9, atol=1e-12)


def spread(rng, *shape):
    """Distinct values (no max ties), away from zero."""
    values = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64)
    return (values + 1) / np.prod(shape) * rng.choice([-1.0, 1.0], size=shape) + 0.01


# -- Reshape and Permute --------------------------------------------------------------------
@pytest.mark.parametrize("layer, shape, expected", [
    (cn.Reshape((-1,)), (3, 4, 5), (60,)),
    (cn.Reshape((2, -1), start_dim=1, end_dim=1), (6, 4, 5), (2, 3, 4, 5)),
    (cn.Reshape((12,), start_dim=1, end_dim=2), (3, 4, 5), (12, 5)),
    (cn.Reshape((5, 1), start_dim=3, end_dim=3), (3, 4, 5), (3, 4, 5, 1)),
    (cn.Reshape((4, 3, 5)), (3, 4, 5), (4, 3, 5)),
])
def test_reshape_shapes_and_gradient(layer, shape, expected, rng):
    assert layer.output_shape(shape) == expected
    x = rng.normal(size=(2, *shape))
    dx = check_gradients(layer, x, rng)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(layer.forward(x), x.reshape(2, *expected))


def test_reshape_of_the_channels_runs_at_any_spatial_size(rng):
    layer = cn.Reshape((2, -1), start_dim=1, end_dim=1)
    for hw in ((3, 5), (7, 2)):
        x = rng.normal(size=(2, 6, *hw))
        assert layer.forward(x).shape == (2, 2, 3, *hw)


def test_reshape_refusals():
    with pytest.raises(ShapeError, match=r"cannot view 60 values .* as \(7, 8\)"):
        cn.Reshape((7, 8)).output_shape((3, 4, 5))
    with pytest.raises(ValueError, match="start_dim must be >= 1"):
        cn.Reshape((-1,), start_dim=0)
    with pytest.raises(ValueError, match="at most one -1"):
        cn.Reshape((-1, -1))


def test_permute_matches_torch_and_keeps_the_batch_first(rng):
    layer = cn.Permute([0, 2, 3, 1])
    assert layer.output_shape((3, 4, 5)) == (4, 5, 3)
    torch_check(layer, rng.normal(size=(2, 3, 4, 5)), lambda t: t.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="batch axis must stay first"):
        cn.Permute([1, 0, 2])


def test_channel_shuffle_as_reshape_permute_reshape(rng):
    """ShuffleNet: (N, g*c, H, W) -> (N, g, c, H, W) -> swap -> (N, c*g, H, W)."""
    x = cn.Input((6, 4, 4))
    y = cn.Reshape((2, 3), start_dim=1, end_dim=1)(x)
    y = cn.Permute([0, 2, 1, 3, 4])(y)
    y = cn.Reshape((-1,), start_dim=1, end_dim=2)(y)
    model = cn.Model(x, y)
    data = rng.normal(size=(2, 6, 4, 4))
    expected = torch.tensor(data).view(2, 2, 3, 4, 4).transpose(1, 2).reshape(2, 6, 4, 4)
    np.testing.assert_array_equal(model.forward(data), expected.numpy())
    assert model.output_shape((6, 9, 7)) == (6, 9, 7)


# -- Split and Slice ------------------------------------------------------------------------
def test_split_forward_backward_and_a_missing_gradient(rng):
    x = cn.Input((5, 3, 3))
    a, b = cn.Split([2, 3], dim=1)(x)
    model = cn.Model(x, [a, cn.Sigmoid()(b)])
    data = rng.normal(size=(2, 5, 3, 3))
    out_a, out_b = model.forward(data)
    np.testing.assert_array_equal(out_a, data[:, :2])
    grad = rng.normal(size=out_b.shape)
    dx = model.backward([None, grad])
    s = 1 / (1 + np.exp(-data[:, 2:]))
    np.testing.assert_allclose(dx[:, 2:], grad * s * (1 - s), rtol=1e-6)
    assert not dx[:, :2].any()
    with pytest.raises(ShapeError, match="add up to 4"):
        cn.Split([2, 2]).output_shape((5, 3, 3))


def test_split_matches_torch(rng):
    layer = cn.Split([1, 2, 1], dim=-1)
    x = rng.normal(size=(2, 3, 4))
    outs = layer.forward(x)
    grads = [rng.normal(size=o.shape) for o in outs]
    dx = layer.backward(grads)
    tx = torch.tensor(x, requires_grad=True)
    touts = torch.split(tx, [1, 2, 1], dim=-1)
    torch.autograd.backward(touts, [torch.tensor(g) for g in grads])
    for ours, theirs in zip(outs, touts, strict=True):
        np.testing.assert_array_equal(ours, theirs.detach().numpy())
    np.testing.assert_array_equal(dx, tx.grad.numpy())


@SETTINGS
@given(start=st.integers(-6, 6), end=st.integers(-7, 9), step=st.sampled_from([1, 2, 3, -1, -2]),
       axis=st.sampled_from([1, 2, -1]))
def test_slice_matches_python_slicing(start, end, step, axis):
    rng = np.random.default_rng(0)
    layer = cn.Slice([axis], [start], [end], [step])
    shape = (5, 6)
    index = [slice(None)] * 3
    index[axis] = slice(start, end, step)
    expected = np.zeros((2, *shape))[tuple(index)].shape[1:]
    if 0 in expected:
        with pytest.raises(ShapeError, match="is empty"):
            layer.output_shape(shape)
        return
    assert layer.output_shape(shape) == expected
    x = rng.normal(size=(2, *shape))
    check_gradients(layer, x, rng)
    np.testing.assert_array_equal(layer.forward(x), x[tuple(index)])


def test_slice_to_the_end_fits_any_size(rng):
    layer = cn.Slice([2, 3], [1, 0], [2**62, 2**62], [2, 1])
    assert layer.output_shape((3, 9, 4)) == (3, 4, 4)
    assert layer.output_shape((3, 20, 7)) == (3, 10, 7)


# -- reductions ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, fn", [
    (cn.ReduceMean, lambda t, d, k: t.mean(dim=d, keepdim=k)),
    (cn.ReduceSum, lambda t, d, k: t.sum(dim=d, keepdim=k)),
    (cn.ReduceMax, lambda t, d, k: t.amax(dim=d, keepdim=k)),
])
@pytest.mark.parametrize("dim, keepdim", [((2, 3), True), ((2, 3), False), (1, False),
                                          ((-1,), True), ((1, 3), False)])
def test_reductions_match_torch(cls, fn, dim, keepdim, rng):
    layer = cls(dim, keepdim=keepdim)
    x = spread(rng, 2, 3, 4, 5)
    torch_check(layer, x, lambda t: fn(t, dim, keepdim))
    check_gradients(cls(dim, keepdim=keepdim), x, rng)


def test_reduce_max_shares_the_gradient_of_ties():
    layer = cn.ReduceMax(1)
    x = np.array([[[1.0], [3.0], [3.0]]])
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(np.array([[4.0]])), [[[0.0], [2.0], [2.0]]])


# -- MatMul -----------------------------------------------------------------------------------
@pytest.mark.parametrize("a_shape, b_shape", [((4, 3), (3, 5)), ((2, 4, 3), (1, 3, 5)),
                                              ((1, 4, 3), (2, 3, 2))])
def test_matmul_matches_torch_with_broadcasting(a_shape, b_shape, rng):
    layer = cn.MatMul()
    a, b = rng.normal(size=(2, *a_shape)), rng.normal(size=(2, *b_shape))
    out = layer.forward([a, b])
    g = rng.normal(size=out.shape)
    da, db = layer.backward(g)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (ta @ tb).backward(torch.tensor(g))
    np.testing.assert_allclose(out, (ta @ tb).detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(da, ta.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-10)
    assert layer.output_shape([a_shape, b_shape]) == out.shape[1:]


def test_matmul_refuses_mismatched_inner_sizes():
    with pytest.raises(ShapeError, match=r"the inner sizes 3 and 4 differ"):
        cn.MatMul().output_shape([(2, 3), (4, 5)])


# -- Constant -------------------------------------------------------------------------------
def test_constant_is_a_buffer_or_a_trained_parameter(rng):
    value = rng.normal(size=(3, 1, 1)).astype(np.float32)
    x = cn.Input((3, 4, 4))
    frozen = cn.Constant(value)
    model = cn.Model(x, cn.Mul()([x, frozen(x)]))
    assert list(model.state_dict()) == ["const1.value"] and not model.parameters()
    learned = cn.Constant(value, trainable=True)
    model2 = cn.Model(x2 := cn.Input((3, 4, 4)), cn.Add()([x2, learned(x2)]))
    assert [name for name, _ in model2.named_parameters()] == ["const1.value"]
    data = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    out = model2.forward(data)
    np.testing.assert_allclose(out, data + value, rtol=1e-6)
    model2.backward(np.ones_like(out))
    np.testing.assert_allclose(learned.weight.grad, np.full((3, 1, 1), 32.0))


def test_constant_gradient_by_differences(rng):
    layer = cn.Constant(rng.normal(size=(2, 3)), trainable=True)
    x = rng.normal(size=(4, 5))
    layer.astype(np.float64)
    y = layer.forward(x)
    g = rng.normal(size=y.shape)
    layer.zero_grad()
    layer.backward(g)

    def loss():
        with cn.no_grad():
            return float((layer.forward(x) * g).sum())

    assert_gradient_matches(layer.weight.grad.copy(), loss, layer.weight.data, rng, "value")


# -- normalizations ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape, normalized", [((3, 4, 5), 5), ((3, 4, 5), (4, 5)),
                                               ((7,), 7)])
def test_layer_norm_matches_torch(shape, normalized, rng):
    layer = cn.LayerNorm(normalized, eps=1e-3)
    layer.weight.data[...] = rng.normal(size=layer.weight.shape)
    layer.bias.data[...] = rng.normal(size=layer.bias.shape)
    x = rng.normal(size=(2, *shape))
    norm = torch.nn.functional.layer_norm
    dims = layer.normalized_shape
    torch_check(layer, x, lambda t, w, b: norm(t, dims, w, b, 1e-3),
                [layer.weight, layer.bias])
    check_gradients(layer, x, rng)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 6])
def test_local_response_norm_matches_torch(size, rng):
    layer = cn.LocalResponseNorm(size, alpha=0.3, beta=0.75, k=1.5)
    x = rng.normal(size=(2, 7, 3, 4))
    torch_check(layer, x, lambda t: torch.nn.functional.local_response_norm(
        t, size, alpha=0.3, beta=0.75, k=1.5))
    check_gradients(layer, x, rng)


# -- elementwise math -------------------------------------------------------------------------
@pytest.mark.parametrize("layer, fn, positive", [
    (cn.Erf(), torch.erf, False), (cn.Sqrt(), torch.sqrt, True), (cn.Exp(), torch.exp, False),
    (cn.Log(), torch.log, True), (cn.Abs(), torch.abs, False), (cn.Neg(), torch.neg, False),
    (cn.Reciprocal(), torch.reciprocal, True), (cn.Pow(2.0), lambda t: t**2, False),
    (cn.Pow(1.5), lambda t: t**1.5, True), (cn.Pow(-1.0), lambda t: t**-1.0, True),
])
def test_elementwise_math_matches_torch(layer, fn, positive, rng):
    x = spread(rng, 2, 3, 4)
    if positive:
        x = np.abs(x) + 0.5
    torch_check(layer, x, fn)
    check_gradients(layer, x, rng)
