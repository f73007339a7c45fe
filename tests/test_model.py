"""Sequential and Residual: whole-network gradient checks, parameter names and state matching
PyTorch's, seeding, train/eval, no_grad, and the classic overfit-a-small-batch sanity check."""

import numpy as np
import pytest
import torch
from engine_checks import check_gradients, check_loss_gradients

import convnet as cn


def _small_net():
    return cn.Sequential(
        cn.Conv2d(2, 4, 3, padding=1), cn.BatchNorm2d(4), cn.ReLU(), cn.MaxPool2d(2),
        cn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding="same"), cn.Tanh(),
        cn.AvgPool2d((2, 1)), cn.Flatten(), cn.Linear(6 * 2 * 2, 5),
    )


def _randomise_biases(model, rng):
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            param.data[...] = 0.5 * rng.standard_normal(param.shape)


def test_small_network_gradients_with_cross_entropy(rng):
    model = _small_net()
    assert model.build((2, 8, 8)) == (5,)
    _randomise_biases(model, rng)
    x = rng.standard_normal((4, 2, 8, 8))
    check_loss_gradients(model, cn.CrossEntropyLoss(), x, rng.integers(0, 5, 4), rng)


def test_small_network_gradients_with_svm_loss(rng):
    model = _small_net().astype(np.float64)
    _randomise_biases(model, rng)
    x = rng.standard_normal((4, 2, 8, 8))
    labels = rng.integers(0, 5, 4)
    scores = model.forward(x)
    margins = scores - scores[np.arange(4), labels][:, None] + 1
    assert np.abs(margins).min() > 1e-3  # off the hinge, so the loss is smooth here
    check_loss_gradients(model, cn.SVMLoss(), x, labels, rng)


def test_residual_network_gradients(rng):
    model = cn.Sequential(
        cn.Conv2d(2, 4, 3, padding=1), cn.LeakyReLU(0.1),
        cn.Residual(cn.Conv2d(4, 4, 3, padding=1), cn.Tanh(), cn.Conv2d(4, 4, (1, 3),
                                                                        padding=(0, 1))),
        cn.Residual(cn.Conv2d(4, 6, 3, stride=2, padding=1), cn.Sigmoid(),
                    projection=cn.Conv2d(4, 6, 1, stride=2)),
        cn.GlobalAvgPool2d(), cn.Flatten(), cn.Linear(6, 3),
    )
    assert model.build((2, 7, 7)) == (3,)
    _randomise_biases(model, rng)
    check_loss_gradients(model, cn.CrossEntropyLoss(), rng.standard_normal((3, 2, 7, 7)),
                         np.array([0, 2, 1]), rng)


def test_residual_without_projection_gradients(rng):
    block = cn.Residual(cn.Conv2d(3, 3, 3, padding=1), cn.Tanh())
    check_gradients(block, rng.standard_normal((2, 3, 5, 4)), rng)


def test_residual_with_projection_gradients(rng):
    block = cn.Residual(cn.Conv2d(3, 5, 3, stride=2, padding=1), cn.Tanh(),
                        projection=cn.Conv2d(3, 5, 1, stride=2))
    check_gradients(block, rng.standard_normal((2, 3, 5, 7)), rng)


def test_residual_adds_the_shortcut(rng):
    body = cn.Conv2d(3, 3, 3, padding=1)
    block = cn.Residual(body)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    expected = body.forward(x) + x
    np.testing.assert_allclose(block.forward(x), expected, rtol=1e-6)
    projection = cn.Conv2d(3, 6, 1, stride=2)
    block = cn.Residual(cn.Conv2d(3, 6, 3, stride=2, padding=1), projection=projection)
    assert block.output_shape((3, 5, 5)) == (6, 3, 3)
    out = block.forward(x)
    np.testing.assert_allclose(out - projection.forward(x),
                               block.body.forward(x), rtol=1e-5, atol=1e-6)


def test_a_sequential_body_is_used_as_it_is():
    body = cn.Sequential(cn.Conv2d(2, 2, 1), cn.ReLU())
    assert cn.Residual(body).body is body


# -- names, state and seeding ------------------------------------------------------------

def test_parameter_names_are_stable_and_nested():
    model = cn.Sequential(
        cn.Conv2d(3, 4, 3, padding=1), cn.BatchNorm2d(4), cn.ReLU(),
        cn.Residual(cn.Conv2d(4, 8, 3, stride=2, padding=1), projection=cn.Conv2d(4, 8, 1, 2)),
        cn.Flatten(), cn.Linear(8, 2, bias=False),
    )
    assert [name for name, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "3.body.0.weight", "3.body.0.bias",
        "3.projection.weight", "3.projection.bias", "5.weight"]
    assert len(model.parameters()) == 9
    assert model.num_parameters() == sum(p.data.size for p in model.parameters())


def test_display_names_count_each_kind():
    model = cn.Sequential(cn.Conv2d(3, 4, 3), cn.ReLU(), cn.Conv2d(4, 4, 3), cn.ReLU(),
                          cn.MaxPool2d(2), cn.Flatten(), cn.Linear(4, 2))
    assert [layer.name for layer in model] == [
        "conv1", "relu1", "conv2", "relu2", "pool1", "flatten1", "fc1"]


def _torch_twin():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 10),
    )


def _our_twin():
    return cn.Sequential(
        cn.Conv2d(3, 4, 3, padding=1), cn.BatchNorm2d(4), cn.ReLU(), cn.MaxPool2d(2),
        cn.Flatten(), cn.Linear(4 * 4 * 4, 10),
    )


def test_state_dict_keys_and_shapes_match_torch_sequential():
    ours = _our_twin().state_dict()
    theirs = _torch_twin().state_dict()
    assert list(ours) == list(theirs)  # same keys, same order
    for key, value in theirs.items():
        assert tuple(ours[key].shape) == tuple(value.shape), key


def test_torch_weights_load_and_give_the_same_scores(rng):
    twin = _torch_twin()
    with torch.no_grad():
        twin[1].running_mean.uniform_(-1, 1)
        twin[1].running_var.uniform_(0.5, 2)
    twin.eval()
    model = _our_twin()
    model.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    model.eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-5, atol=1e-5)


def test_load_state_dict_refuses_missing_extra_and_misshapen():
    model = _our_twin()
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    del state["0.bias"]
    state["9.weight"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing \['0.bias'\], unexpected \['9.weight'\]"):
        model.load_state_dict(state)
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    state["5.weight"] = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"5.weight: expected shape \(10, 64\), received"):
        model.load_state_dict(state)


def test_load_state_dict_copies_values_in():
    target = _our_twin()
    cn.manual_seed(1)
    source = _our_twin()
    source[1].running_mean[...] = 3.0
    target.load_state_dict(source.state_dict())
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items(),
                                 strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert a is not b  # copied, not shared


def test_same_seed_same_weights_other_seed_other_weights():
    def build():
        return cn.Sequential(cn.Conv2d(3, 8, 3), cn.ReLU(), cn.Flatten(), cn.Linear(8, 4))

    cn.manual_seed(42)
    first = build()
    cn.manual_seed(42)
    second = build()
    cn.manual_seed(43)
    third = build()
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(first[0].weight.data, third[0].weight.data)
    assert not np.array_equal(first[3].weight.data, third[3].weight.data)


def test_kaiming_initialisation_scale():
    cn.manual_seed(0)
    conv = cn.Conv2d(64, 128, 3)
    fan_in = 64 * 3 * 3
    assert conv.weight.data.std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.03)
    assert not conv.bias.data.any()
    xavier = cn.Linear(300, 200, init="xavier")
    bound = np.sqrt(6 / 500)
    assert np.abs(xavier.weight.data).max() <= bound
    assert np.abs(xavier.weight.data).max() > 0.95 * bound


# -- modes, gradients, no_grad --------------------------------------------------------------

def test_train_and_eval_reach_nested_layers():
    model = cn.Sequential(cn.Residual(cn.Conv2d(2, 2, 1), cn.Dropout(0.5)), cn.BatchNorm2d(2))
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_dropout_and_batchnorm_behave_differently_in_eval(rng):
    model = cn.Sequential(cn.BatchNorm2d(2), cn.Dropout(0.5))
    x = (3 + rng.standard_normal((4, 2, 3, 3))).astype(np.float32)
    model.forward(x)
    model.eval()
    first = model.forward(x)
    np.testing.assert_array_equal(first, model.forward(x))  # deterministic in eval
    expected = (x - model[0].running_mean[:, None, None]) / np.sqrt(
        model[0].running_var[:, None, None] + 1e-5)
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-5)


def test_zero_grad_clears_every_gradient(rng):
    model = _our_twin()
    loss_fn = cn.CrossEntropyLoss()
    loss_fn.forward(model.forward(rng.standard_normal((2, 3, 8, 8)).astype(np.float32)), [1, 2])
    model.backward(loss_fn.backward())
    assert all(p.grad.any() for p in model.parameters())
    model.zero_grad()
    assert not any(p.grad.any() for p in model.parameters())


def test_no_grad_keeps_no_cache_and_backward_then_raises(rng):
    model = _our_twin()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with cn.no_grad():
        out = model.forward(x)
    assert out.shape == (2, 10)
    assert all(m.cache is None for m in model.modules())
    with pytest.raises(RuntimeError) as info:
        model.backward(np.ones((2, 10), np.float32))
    assert str(info.value) == (
        "fc1 (Linear): backward called without a forward that kept its cache (run forward "
        "outside no_grad(), once per backward)")
    # Outside the block, forward keeps what backward needs again.
    model.forward(x)
    assert model.backward(np.ones((2, 10), np.float32)).shape == x.shape


def test_no_grad_restores_the_mode_after_an_error():
    with pytest.raises(ZeroDivisionError), cn.no_grad():
        1 / 0  # noqa: B018
    relu = cn.ReLU()
    relu.forward(np.ones((1, 2), np.float32))
    assert relu.cache is not None


def test_backward_twice_after_one_forward_raises(rng):
    model = cn.Sequential(cn.Conv2d(1, 2, 3), cn.ReLU())
    model.forward(rng.standard_normal((1, 1, 5, 5)).astype(np.float32))
    model.backward(np.ones((1, 2, 3, 3), np.float32))
    with pytest.raises(RuntimeError, match="relu1 \\(ReLU\\): backward called without"):
        model.backward(np.ones((1, 2, 3, 3), np.float32))


def test_astype_casts_parameters_and_float_buffers():
    model = _our_twin().astype(np.float64)
    assert model.dtype == np.float64
    assert all(p.grad.dtype == np.float64 for p in model.parameters())
    assert model[1].running_var.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64
    assert model.forward(np.zeros((1, 3, 8, 8))).dtype == np.float64


def test_build_and_forward_shape_check(rng):
    model = cn.Sequential(cn.Conv2d(3, 4, 3), cn.ReLU(), input_shape=(3, 8, 8))
    assert model.input_shape == (3, 8, 8)
    with pytest.raises(ValueError) as info:
        model.forward(np.zeros((2, 3, 9, 9), np.float32))
    assert str(info.value) == (
        "Sequential: built for samples of shape (3, 8, 8), received a batch of shape "
        "(2, 3, 9, 9); resize the input or rebuild the model")


def test_sequential_container_protocol():
    layers = [cn.Conv2d(1, 2, 3), cn.ReLU()]
    model = cn.Sequential(layers)
    assert len(model) == 2 and model[1] is layers[1] and list(model) == layers
    assert repr(model) == "Sequential(\n  (0) Conv2d(1, 2, kernel_size=3)\n  (1) ReLU()\n)"
    empty = cn.Sequential()
    x = np.ones((1, 2), np.float32)
    assert empty.forward(x) is x


# -- the classic sanity check -------------------------------------------------------------

def test_tiny_convnet_overfits_a_small_batch():
    cn.manual_seed(0)
    data = np.random.default_rng(0)
    x = data.standard_normal((10, 3, 16, 16)).astype(np.float32)
    y = np.arange(10) % 5
    model = cn.Sequential(
        cn.Conv2d(3, 8, 3, padding=1), cn.ReLU(), cn.MaxPool2d(2),
        cn.Conv2d(8, 16, 3, padding=1), cn.ReLU(), cn.MaxPool2d(2),
        cn.Flatten(), cn.Linear(16 * 4 * 4, 5), input_shape=(3, 16, 16),
    )
    loss_fn = cn.CrossEntropyLoss()
    opt = cn.Adam(model.parameters(), lr=3e-3)
    first = loss_fn.forward(model.forward(x), y)
    for _ in range(100):
        loss = loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward())
        opt.step()
        model.zero_grad()
    assert first > 1.0
    assert loss < 0.01
    with cn.no_grad():
        assert (model.forward(x).argmax(axis=1) == y).all()


def test_no_grad_applies_to_its_own_thread_only():
    import threading

    model = cn.Sequential(cn.Linear(3, 2))
    x = np.ones((2, 3), np.float32)
    inside, leave = threading.Event(), threading.Event()

    def inference():
        with cn.no_grad():
            inside.set()
            leave.wait(5)

    worker = threading.Thread(target=inference)
    worker.start()
    inside.wait(5)
    model.forward(x)  # this thread still keeps its cache
    leave.set()
    worker.join()
    assert model.backward(np.ones((2, 2), np.float32)).shape == (2, 3)
