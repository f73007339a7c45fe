"""PyTorch <-> convnet weights: state dicts of the equivalent torch.nn.Sequential, both ways."""

import builtins
import re

import numpy as np
import pytest
from exchange_helpers import (
    assert_close,
    build_zoo_model,
    random_models,
    randomize_batchnorm,
    real_like,
    torch_equivalent,
    zoo_names,
)
from hypothesis import HealthCheck, given, settings

import convnet as cn
from convnet.io.torch_weights import (
    WeightsError,
    load_torch_weights,
    read_state_dict,
    save_torch_weights,
)

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def small_model():
    return cn.Sequential(
        cn.Conv2d(3, 6, 3, padding=1), cn.BatchNorm2d(6), cn.ReLU(),
        cn.Residual(cn.Conv2d(6, 8, 3, stride=2, padding=1), cn.BatchNorm2d(8),
                    projection=cn.Conv2d(6, 8, 1, stride=2)),
        cn.MaxPool2d(3, 2, padding=1), cn.Flatten(), cn.Dropout(0.3), cn.Linear(8 * 3 * 3, 5),
        cn.Softmax())


SHAPE = (3, 9, 9)


def trained_torch_twin(model, shape, seed=0):
    """The torch twin with fresh random weights and running statistics moved off 0 and 1."""
    torch.manual_seed(seed)
    twin = torch_equivalent(model, shape)
    for module in twin.modules():  # torch's own init, made less regular
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(module.weight, 0, 0.3)
            if module.bias is not None:
                torch.nn.init.normal_(module.bias, 0, 0.1)
    twin.train()
    with torch.no_grad():
        twin(torch.randn(8, *shape))
    return twin.eval()


def torch_forward(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


# -- PyTorch -> convnet -----------------------------------------------------------------------
@pytest.mark.parametrize("form", ["safetensors", "pt", "pth", "state-dict", "numpy-dict"])
def test_torch_weights_load_into_the_convnet_model(form, tmp_path, rng):
    model = small_model().eval()
    twin = trained_torch_twin(model, SHAPE)
    state = twin.state_dict()
    if form == "safetensors":
        source = tmp_path / "w.safetensors"
        safetensors_torch.save_file(state, str(source))
    elif form in ("pt", "pth"):
        source = tmp_path / f"w.{form}"
        torch.save(state, source)
    elif form == "state-dict":
        source = state
    else:
        source = {key: value.numpy() for key, value in state.items()}
    assert load_torch_weights(model, source) is model
    x = real_like(rng, 4, SHAPE)
    assert_close(model.forward(x), torch_forward(twin, x))
    assert int(model[1].num_batches_tracked) == 1
    np.testing.assert_array_equal(model[3].body[1].running_var,
                                  state["3.body.1.running_var"].numpy())


def test_training_checkpoint_wrappers_are_unwrapped(tmp_path, rng):
    model = small_model().eval()
    twin = trained_torch_twin(model, SHAPE)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model_state_dict": twin.state_dict()}, path)
    load_torch_weights(model, path)
    x = rng.normal(size=(2, *SHAPE)).astype(np.float32)
    assert_close(model.forward(x), torch_forward(twin, x))


def test_half_precision_tensors_are_widened(rng):
    model = cn.Sequential(cn.Flatten(), cn.Linear(4, 3))
    linear = torch.nn.Linear(4, 3)
    state = {f"1.{k}": v.to(torch.bfloat16) for k, v in linear.state_dict().items()}
    load_torch_weights(model, state)
    assert model[1].weight.data.dtype == np.float32
    np.testing.assert_array_equal(model[1].weight.data, state["1.weight"].float().numpy())


# -- convnet -> PyTorch -----------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_saved_weights_load_into_the_torch_model(suffix, tmp_path, rng):
    model = small_model().eval()
    randomize_batchnorm(model, rng)
    path = save_torch_weights(model, tmp_path / f"weights{suffix}")
    if suffix == ".safetensors":
        state = safetensors_torch.load_file(str(path))
    else:
        state = torch.load(path, weights_only=True)
    twin = torch_equivalent(model, SHAPE).eval()
    twin.load_state_dict(state, strict=True)
    x = real_like(rng, 3, SHAPE)
    assert_close(torch_forward(twin, x), model.forward(x))


def test_round_trip_through_a_file_is_exact(tmp_path, rng):
    model = small_model()
    randomize_batchnorm(model, rng)
    path = save_torch_weights(model, tmp_path / "w.safetensors")
    copy = load_torch_weights(small_model(), path)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(copy.state_dict()[key], value)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=random_models())
def test_random_layer_stacks_both_ways(case):
    model, shape = case
    rng = np.random.default_rng(11)
    model.eval()
    twin = trained_torch_twin(model, shape)
    load_torch_weights(model, twin.state_dict())
    x = real_like(rng, 2, shape)
    assert_close(model.forward(x), torch_forward(twin, x))
    randomize_batchnorm(model, rng)
    back = torch_equivalent(model, shape).eval()
    back.load_state_dict({k: torch.from_numpy(np.array(v))
                          for k, v in model.state_dict().items()}, strict=True)
    assert_close(torch_forward(back, x), model.forward(x))


@pytest.mark.skipif(not zoo_names(), reason="convnet.io.zoo is not there yet")
@pytest.mark.parametrize("name", zoo_names())
def test_zoo_models_both_ways(name, tmp_path, rng):
    model, shape = build_zoo_model(name)
    model.eval()
    twin = trained_torch_twin(model, shape)
    path = tmp_path / "torch.safetensors"
    safetensors_torch.save_file(twin.state_dict(), str(path))
    load_torch_weights(model, path)
    x = real_like(rng, 2, shape)
    ours = model.forward(x)
    # Untrained segmenters' scores reach thousands: float32 rounding is relative to that scale.
    tol = max(1e-4, 2e-6 * float(np.abs(ours).max()))
    np.testing.assert_allclose(ours, torch_forward(twin, x), rtol=1e-4, atol=tol)
    saved = save_torch_weights(model, tmp_path / "convnet.safetensors")
    back = torch_equivalent(model, shape).eval()
    back.load_state_dict(safetensors_torch.load_file(str(saved)), strict=True)
    np.testing.assert_allclose(torch_forward(back, x), ours, rtol=1e-4, atol=tol)


# -- mismatches -------------------------------------------------------------------------------
def _state(model):
    return {key: np.array(value) for key, value in model.state_dict().items()}


def test_missing_and_unexpected_keys_are_listed():
    model = small_model()
    state = _state(model)
    del state["7.bias"]
    state["9.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match=re.escape(
            "missing from the file: 7.bias; not in the model: 9.weight")):
        load_torch_weights(model, state)


def test_shape_mismatch_is_explained_and_nothing_is_written():
    model = small_model()
    before = _state(model)
    state = _state(model)
    state["0.weight"] = np.ones((6, 3, 5, 5), np.float32)
    state["7.weight"] = np.ones((5, 72), np.float32).T.copy()
    with pytest.raises(WeightsError) as caught:
        load_torch_weights(model, state)
    message = str(caught.value)
    assert "'0.weight': the model has shape (6, 3, 3, 3), the file (6, 3, 5, 5)" in message
    assert ("'7.weight': the model has shape (5, 72), the file (72, 5) (transposed? PyTorch "
            "Linear weights are (out_features, in_features))") in message
    for key, value in before.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)


def test_a_common_prefix_is_pointed_out():
    model = cn.Sequential(cn.Flatten(), cn.Linear(4, 2))
    state = {f"features.{key}": value for key, value in _state(model).items()}
    with pytest.raises(WeightsError, match=re.escape(
            "the file's keys start with 'features.': strip it")):
        load_torch_weights(model, state)


def test_strict_false_allows_partial_state_but_not_wrong_shapes():
    model = small_model()
    state = {"0.weight": np.full((6, 3, 3, 3), 0.5, np.float32), "extra": np.zeros(1)}
    load_torch_weights(model, state, strict=False)
    assert (model[0].weight.data == 0.5).all()
    with pytest.raises(WeightsError, match="the model has shape"):
        load_torch_weights(model, {"0.weight": np.zeros((1, 1, 1, 1))}, strict=False)


def test_num_batches_tracked_may_be_left_out():
    model = cn.Sequential(cn.BatchNorm2d(2))
    state = {k: v for k, v in _state(model).items() if not k.endswith("num_batches_tracked")}
    load_torch_weights(model, state)


@pytest.mark.parametrize("name, content, fragment", [
    ("w.npz", b"", "w.npz: unknown weights format .npz; expected .safetensors, .pt, .pth, .bin"),
    ("absent.safetensors", None, "no weights file at"),
])
def test_bad_paths(tmp_path, name, content, fragment):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((WeightsError, FileNotFoundError), match=re.escape(fragment)):
        read_state_dict(path)
    if content is not None:
        with pytest.raises(WeightsError, match="unknown weights format"):
            save_torch_weights(cn.Sequential(cn.ReLU()), path)


def test_a_pt_file_without_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        read_state_dict(path)


def test_pt_files_without_pytorch_say_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    torch.save({"1.weight": torch.zeros(2, 4)}, path)
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match=re.escape(
            "reading w.pt needs PyTorch, which is not installed; install it (pip install torch) "
            "or use a .safetensors file")):
        read_state_dict(path)
    with pytest.raises(ImportError, match="writing w.pt needs PyTorch"):
        save_torch_weights(cn.Sequential(cn.ReLU()), path)
