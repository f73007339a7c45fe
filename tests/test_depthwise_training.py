"""A depthwise convolution's compiled training passes (convnet.core.depthwise_kernels):
output and every gradient against PyTorch over drawn configurations, against the NumPy path
and over threads; and which layers take them."""

import numpy as np
import pytest
import torch.nn.functional as F  # noqa: N812 - PyTorch's own alias
from engine_checks import assert_compiled_conv_agrees, assert_conv_matches_torch, leaf
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.core import depthwise_kernels, kernels


@pytest.fixture(autouse=True)
def any_size_loads_the_kernels(monkeypatch):
    monkeypatch.setattr(kernels, "MIN_LOAD_MACS", 0)


@st.composite
def depthwise_configs(draw):
    channels = draw(st.integers(2, 12))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.sampled_from([(0, 0), (1, 1), (2, 1), "same", "valid"]))
    pads = padding if isinstance(padding, tuple) else (0, 0)
    hw = []
    for axis in range(2):
        extent = dilation[axis] * (kernel[axis] - 1) + 1
        smallest = 1 if padding == "same" else max(1, extent - 2 * pads[axis])
        hw.append(draw(st.integers(smallest, smallest + 12)))
    return {"in_channels": channels, "out_channels": channels * draw(st.integers(1, 2)),
            "kernel_size": kernel, "stride": stride, "dilation": dilation, "padding": padding,
            "groups": channels, "bias": draw(st.booleans()), "strict": False,
            "input_shape": (draw(st.integers(1, 3)), channels, *hw)}


def torch_twin(conv, x, dy):
    pad = conv.geometry(x.shape[2:]).padding
    tx, tw = leaf(x), leaf(conv.weight.data)
    tb = leaf(conv.bias.data) if conv.bias is not None else None
    ty = F.conv2d(F.pad(tx, (pad.left, pad.right, pad.top, pad.bottom)), tw, tb,
                  stride=conv.stride, dilation=conv.dilation, groups=conv.groups)
    ty.backward(leaf(dy))
    return ty, tx, tw, tb


@settings(max_examples=60, deadline=None)
@given(config=depthwise_configs(), seed=st.integers(0, 2**32 - 1))
def test_depthwise_training_matches_torch(config, seed):
    rng = np.random.default_rng(seed)
    shape = config.pop("input_shape")
    conv = cn.Conv2d(**config)
    if conv.bias is not None:
        conv.bias.data[...] = rng.standard_normal(conv.bias.shape)
    x = rng.standard_normal(shape).astype(np.float32)
    out = conv.forward(x)
    assert isinstance(conv.cache[1], depthwise_kernels.Kept) == bool(conv.kernel_size != (1, 1)
                                                                 or conv.stride != (1, 1)
                                                                 or conv.geometry(
                                                                     shape[2:]).padding.top)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx = conv.backward(dy)
    assert_conv_matches_torch(conv, out, dx, *torch_twin(conv, x, dy), dy=dy)


@pytest.mark.parametrize("kwargs", [
    {"in_channels": 24, "out_channels": 24, "kernel_size": 3, "padding": 1, "groups": 24},
    {"in_channels": 16, "out_channels": 32, "kernel_size": 5, "stride": 2, "padding": 2,
     "groups": 16},
])
def test_threads_and_the_numpy_path_agree(kwargs, rng):
    conv = cn.Conv2d(**kwargs)
    x = rng.standard_normal((5, kwargs["in_channels"], 13, 11)).astype(np.float32)
    dy = rng.standard_normal(conv.forward(x).shape).astype(np.float32)
    assert_compiled_conv_agrees(conv, x, dy, depthwise_kernels.Kept)


def test_without_the_input_gradient(rng):
    conv = cn.Conv2d(8, 8, 3, padding=1, groups=8)
    x = rng.standard_normal((2, 8, 6, 6)).astype(np.float32)
    dy = rng.standard_normal(conv.forward(x).shape).astype(np.float32)
    conv.zero_grad()
    dx = conv.backward(dy)
    expected = conv.weight.grad.copy()
    conv.forward(x)
    conv.zero_grad()
    assert conv.backward(dy, input_grad=False) is None
    np.testing.assert_array_equal(conv.weight.grad, expected)
    assert dx.shape == x.shape


@pytest.mark.parametrize("kwargs, dtype, takes", [
    ({"in_channels": 4, "out_channels": 4, "kernel_size": 3, "groups": 4}, np.float32, True),
    ({"in_channels": 4, "out_channels": 8, "kernel_size": 3, "groups": 4}, np.float32, True),
    ({"in_channels": 4, "out_channels": 4, "kernel_size": 3, "groups": 2}, np.float32, False),
    ({"in_channels": 4, "out_channels": 4, "kernel_size": 3, "groups": 4}, np.float64, False),
])
def test_which_layers_take_them(kwargs, dtype, takes, rng):
    conv = cn.Conv2d(**kwargs).astype(dtype)
    x = rng.standard_normal((2, 4, 7, 7)).astype(dtype)
    assert depthwise_kernels.usable(conv, x) == takes
    kernels.set_enabled(False)
    try:
        assert not depthwise_kernels.usable(conv, x)
    finally:
        kernels.set_enabled(True)


@pytest.mark.parametrize("kwargs, hw", [
    ({"kernel_size": 3, "padding": 1}, (9, 10)),
    ({"kernel_size": (3, 2), "stride": (2, 3), "dilation": (2, 1), "padding": (2, 1)}, (11, 9)),
    ({"kernel_size": (7, 8), "padding": 3, "stride": 2}, (12, 13)),
])
def test_windows_past_the_unrolled_taps_loop_over_them(kwargs, hw, rng, monkeypatch):
    """The module for windows over MAX_UNROLLED_TAPS taps (here every window) matches
    PyTorch as the unrolled ones do."""
    monkeypatch.setattr(depthwise_kernels, "MAX_UNROLLED_TAPS", 0)
    conv = cn.Conv2d(6, 12, groups=6, strict=False, **kwargs)
    conv.bias.data[...] = rng.standard_normal(conv.bias.shape)
    x = rng.standard_normal((3, 6, *hw)).astype(np.float32)
    out = conv.forward(x)
    assert isinstance(conv.cache[1], depthwise_kernels.Kept)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx = conv.backward(dy)
    assert_conv_matches_torch(conv, out, dx, *torch_twin(conv, x, dy), dy=dy)


def test_forward_keeps_the_input_itself(rng):
    """No padded copy the size of the activation: backward reads the caller's array."""
    conv = cn.Conv2d(8, 8, 3, padding=1, groups=8)
    x = rng.standard_normal((2, 8, 6, 6)).astype(np.float32)
    conv.forward(x)
    assert conv.cache[1].data is x
