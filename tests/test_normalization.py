"""BatchNorm2d: train and eval behaviour, running statistics, and backward against centred
differences in both modes."""

import numpy as np
import pytest
from engine_checks import check_gradients

import convnet as cn


def _bn_with_random_affine(rng, channels=3):
    bn = cn.BatchNorm2d(channels)
    bn.weight.data[...] = 1 + 0.5 * rng.standard_normal(channels)
    bn.bias.data[...] = rng.standard_normal(channels)
    return bn


def test_train_mode_gradients_match_centred_differences(rng):
    bn = _bn_with_random_affine(rng)
    check_gradients(bn, 2 + 3 * rng.standard_normal((4, 3, 3, 5)), rng)


def test_eval_mode_gradients_match_centred_differences(rng):
    bn = _bn_with_random_affine(rng)
    bn.running_mean[...] = rng.standard_normal(3)
    bn.running_var[...] = 0.5 + rng.random(3)
    bn.eval()
    check_gradients(bn, rng.standard_normal((2, 3, 4, 4)), rng)


def test_without_affine_gradients(rng):
    bn = cn.BatchNorm2d(2, affine=False)
    assert bn.parameters() == []
    check_gradients(bn, rng.standard_normal((3, 2, 3, 3)), rng)


def test_train_mode_normalises_each_channel(rng):
    bn = cn.BatchNorm2d(3)
    x = (5 + 4 * rng.standard_normal((8, 3, 6, 6))).astype(np.float32)
    out = bn.forward(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    assert out.dtype == np.float32


def test_running_statistics_follow_pytorchs_rule(rng):
    # running = (1 - momentum) * running + momentum * batch, with the unbiased variance.
    bn = cn.BatchNorm2d(2, momentum=0.3)
    mean = np.zeros(2)
    var = np.ones(2)
    for _ in range(3):
        x = (1 + 2 * rng.standard_normal((4, 2, 3, 3))).astype(np.float32)
        bn.forward(x)
        xs = x.astype(np.float64)
        mean = 0.7 * mean + 0.3 * xs.mean(axis=(0, 2, 3))
        var = 0.7 * var + 0.3 * xs.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var, var, rtol=1e-5)
    assert int(bn.num_batches_tracked) == 3


def test_eval_mode_uses_running_statistics_and_does_not_update_them(rng):
    bn = cn.BatchNorm2d(2, eps=1e-3)
    bn.running_mean[...] = [1.0, -2.0]
    bn.running_var[...] = [4.0, 0.25]
    bn.eval()
    x = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
    out = bn.forward(x)
    expected = (x - np.array([1.0, -2.0])[:, None, None]) / np.sqrt(
        np.array([4.0, 0.25]) + 1e-3)[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn.running_mean, [1.0, -2.0])
    assert int(bn.num_batches_tracked) == 0


def test_train_mode_refuses_a_single_value_per_channel():
    bn = cn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn.forward(np.ones((1, 3, 1, 1), np.float32))
    bn.eval()
    assert bn.forward(np.ones((1, 3, 1, 1), np.float32)).shape == (1, 3, 1, 1)


def test_state_keeps_pytorchs_buffer_names():
    bn = cn.BatchNorm2d(4)
    assert list(bn.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert bn.output_shape((4, 5, 5)) == (4, 5, 5)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (16, 12, 33, 17)])  # one chunk; 2 threads
def test_compiled_training_passes_match_numpy_and_torch(affine, shape, rng):
    """The compiled passes (convnet.core.batchnorm_kernels) against the NumPy layer and
    PyTorch: output, running statistics, input and parameter gradients."""
    import torch
    from engine_checks import assert_close, leaf

    from convnet.core import backend, kernels

    x = (3 + 2 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    results = []
    previous = backend.num_threads()
    for enabled in (True, False):
        kernels.set_enabled(enabled)
        backend.set_num_threads(2)
        try:
            bn = cn.BatchNorm2d(shape[1], affine=affine)
            if affine:
                bn.weight.data[...] = 1 + 0.5 * np.linspace(-1, 1, shape[1])
                bn.bias.data[...] = np.linspace(-2, 2, shape[1])
            out = bn.forward(x)
            assert (bn.cache[2] == "compiled") == enabled  # which passes ran
            dx = bn.backward(dy)
            grads = [p.grad.copy() for p in bn.parameters()]
            results.append((out, dx, bn.running_mean.copy(), bn.running_var.copy(), *grads))
        finally:
            kernels.set_enabled(True)
            backend.set_num_threads(previous)
    for compiled, numpy_path in zip(*results, strict=True):
        assert compiled.dtype == numpy_path.dtype == np.float32
        assert_close(compiled, numpy_path)
    twin = torch.nn.BatchNorm2d(shape[1], affine=affine)
    if affine:
        twin.weight.data = torch.from_numpy(bn.weight.data.copy())
        twin.bias.data = torch.from_numpy(bn.bias.data.copy())
    tx = leaf(x)
    ty = twin(tx)
    ty.backward(torch.from_numpy(dy))
    out, dx, running_mean, running_var, *grads = results[0]
    assert_close(out, ty)
    assert_close(dx, tx.grad)
    assert_close(running_mean, twin.running_mean)
    assert_close(running_var, twin.running_var)
    if affine:
        assert_close(grads[0], twin.weight.grad)
        assert_close(grads[1], twin.bias.grad)


ACTIVATIONS_TAKEN_IN = [cn.ReLU, cn.ReLU6, lambda: cn.Hardtanh(-0.5, 1.25)]


def _counting_forward(layer):
    """Count the calls of layer.forward (an activation taken in by batch norm gets none)."""
    layer.calls = 0
    own = layer.forward

    def forward(x):
        layer.calls += 1
        return own(x)
    layer.forward = forward
    return layer


def _bn_and_activation_run(make_activation, x, dy, container, compiled: bool):
    """Output, input gradient, parameter gradients and running statistics of batch norm then
    the activation, trained through `container` ("sequential" or "graph"), on the compiled
    passes or the NumPy layers; and how often the activation's own forward ran."""
    from convnet.core import backend, kernels

    previous = backend.num_threads()
    kernels.set_enabled(compiled)
    backend.set_num_threads(2)
    try:
        bn = cn.BatchNorm2d(x.shape[1])
        bn.weight.data[...] = 1 + 0.5 * np.linspace(-1, 1, x.shape[1])
        bn.bias.data[...] = np.linspace(-1, 1, x.shape[1])
        activation = _counting_forward(make_activation())
        if container == "sequential":
            model = cn.Sequential(bn, activation)
        else:
            inputs = cn.Input(x.shape[1:])
            model = cn.Model(inputs, activation(bn(inputs)))
        out = model.forward(x)
        dx = model.backward(dy)
        return (out, dx, bn.weight.grad.copy(), bn.bias.grad.copy(), bn.running_mean.copy(),
                bn.running_var.copy()), activation.calls
    finally:
        kernels.set_enabled(True)
        backend.set_num_threads(previous)


@pytest.mark.parametrize("container", ["sequential", "graph"])
@pytest.mark.parametrize("make_activation", ACTIVATIONS_TAKEN_IN)
def test_activation_taken_into_batchnorm_matches_numpy_and_torch(make_activation, container,
                                                                  rng):
    """Batch norm then ReLU / ReLU6 / Hardtanh in training: the compiled passes apply the
    activation in the normalising pass and leave it the cache its backward reads. Against the
    NumPy layers run one after the other, and PyTorch."""
    import torch
    from engine_checks import assert_close, leaf

    shape = (16, 12, 9, 13)
    x = (0.5 + 2 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    taken, taken_calls = _bn_and_activation_run(make_activation, x, dy, container, True)
    apart, apart_calls = _bn_and_activation_run(make_activation, x, dy, container, False)
    assert (taken_calls, apart_calls) == (0, 1)  # which path ran
    for ours, reference, what in zip(taken, apart, ["output", "input gradient", "weight grad",
                                                    "bias grad", "running mean", "running var"],
                                     strict=True):
        assert_close(ours, reference, what)
    activation = make_activation()
    assert 0 < (taken[0] == activation.min_val if isinstance(activation, cn.Hardtanh)
                else taken[0] == 0).mean() < 1  # the activation clipped some, not all
    twin = torch.nn.BatchNorm2d(shape[1])
    twin.weight.data = torch.linspace(0.5, 1.5, shape[1])
    twin.bias.data = torch.linspace(-1, 1, shape[1])
    low, high = ((activation.min_val, activation.max_val) if isinstance(activation, cn.Hardtanh)
                 else (0.0, None))
    tx = leaf(x)
    ty = twin(tx).clamp(low, high) if high is not None else torch.relu(twin(tx))
    ty.backward(torch.from_numpy(dy))
    for ours, theirs in zip(taken, [ty, tx.grad, twin.weight.grad, twin.bias.grad,
                                    twin.running_mean, twin.running_var], strict=True):
        assert_close(ours, theirs)


@pytest.mark.parametrize("make_activation", ACTIVATIONS_TAKEN_IN)
def test_taken_in_activation_is_the_separate_layers(make_activation, rng):
    """Taken in or run after batch norm's compiled passes as its own layer, the activation
    gives the same bits and keeps the same cache for its backward; NaN passes either way."""
    from convnet.core import backend

    x = (3 * rng.standard_normal((8, 6, 7, 7))).astype(np.float32)
    x[1, 2, 3, 4] = np.nan
    bn = cn.BatchNorm2d(6)
    bn.weight.data[...] = np.linspace(0.5, 2, 6)
    activation = make_activation()
    previous = backend.num_threads()
    backend.set_num_threads(2)
    try:
        apart = activation.forward(bn.forward(x))
        kept_apart = activation.cache
        taken = bn.forward_activated(x, activation)
        kept_taken = activation.cache
    finally:
        backend.set_num_threads(previous)
    np.testing.assert_array_equal(taken, apart)
    np.testing.assert_array_equal(kept_taken, kept_apart)
    assert np.isnan(taken[:, 2]).all()  # the NaN spoils its channel's statistics


def test_batchnorm_output_kept_or_read_twice_is_not_taken_in(rng):
    """A graph hands batch norm its activation only when nobody else sees the output between
    them: a kept slot (activation maps, Grad-CAM) or a second reader gets the normalised
    values themselves."""
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    inputs = cn.Input((3, 5, 5))
    normed = cn.BatchNorm2d(3)(inputs)
    relu = _counting_forward(cn.ReLU())
    model = cn.Model(inputs, relu(normed))
    slot = model.steps[0].outputs[0]
    model.forward(x, keep={slot})
    assert relu.calls == 1 and (model.kept[slot] < 0).any()
    model.forward(x)
    assert relu.calls == 1  # taken in
    relu2 = _counting_forward(cn.ReLU())
    both = cn.Model(inputs, [relu2(normed), cn.Sigmoid()(normed)])
    both.forward(x)
    assert relu2.calls == 1


@pytest.mark.parametrize("container", ["sequential", "graph"])
def test_a_relus_backward_runs_inside_batch_norms(container, rng, monkeypatch):
    """In training on the compiled passes, a ReLU after batch norm has its mask applied where
    batch norm's backward reads dy: no ReLU backward runs, and the gradients are those of the
    two backwards one after the other (to float64 sums' rounding), the layer before included
    (a convolution, which then gets batch norm's input gradient)."""
    from engine_checks import assert_close

    def run(fused: bool):
        calls = []
        with monkeypatch.context() as patch:
            if not fused:
                patch.setattr(cn.BatchNorm2d, "takes_backward_of", lambda *args: False)
            real = cn.ReLU.backward
            patch.setattr(cn.ReLU, "backward",
                          lambda self, dy: calls.append(1) or real(self, dy))
            conv = cn.Conv2d(3, 6, 3, padding=1)
            bn, relu = cn.BatchNorm2d(6), cn.ReLU()
            for layer, seed in ((conv, 1), (bn, 2)):
                for param in layer.parameters():
                    param.data[...] = np.random.default_rng(seed).standard_normal(
                        param.data.shape)
            if container == "sequential":
                model = cn.Sequential(conv, bn, relu)
            else:
                inputs = cn.Input((3, 9, 11))
                model = cn.Model(inputs, relu(bn(conv(inputs))))
            out = model.forward(x)
            dx = model.backward(dy)
        return [out, dx, *(p.grad.copy() for p in model.parameters())], len(calls)

    x = rng.standard_normal((8, 3, 9, 11)).astype(np.float32)
    dy = rng.standard_normal((8, 6, 9, 11)).astype(np.float32)
    (fused, fused_calls), (apart, apart_calls) = run(True), run(False)
    assert (fused_calls, apart_calls) == (0, 1)
    assert (fused[0] == 0).any() and (fused[0] > 0).any()  # the mask has both
    for ours, theirs in zip(fused, apart, strict=True):
        assert_close(ours, theirs)


def test_one_pass_statistics_hold_far_from_zero(rng):
    """The compiled statistics sum x minus one of the channel's values: a mean of 1e4 with a
    spread of 0.1 keeps its variance to float32 precision (a plain one-pass sum of squares
    would lose it all)."""
    from convnet.core import batchnorm_kernels

    x = (1e4 + 0.1 * rng.standard_normal((32, 4, 6, 6))).astype(np.float32)
    _, _, mean, var, _ = batchnorm_kernels.forward(x, None, None, 1e-5)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(var, exact.var(axis=(0, 2, 3)), rtol=1e-9)


def test_a_model_that_starts_with_batch_norm_and_relu_gives_no_input_gradient_unasked(rng):
    """backward(dy, input_grad=False) returns None, the parameters' gradients filled, where
    the first two layers' backwards run as one (a ReLU taken into batch norm's)."""
    from convnet.core import backend

    model = cn.Sequential(cn.BatchNorm2d(3), cn.ReLU(), cn.Conv2d(3, 4, 3, padding=1))
    x = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    previous = backend.num_threads()
    backend.set_num_threads(2)
    try:
        out = model.forward(x)
        assert model.backward(np.ones_like(out), input_grad=False) is None
    finally:
        backend.set_num_threads(previous)
    assert np.abs(model.layers[0].weight.grad).sum() > 0
