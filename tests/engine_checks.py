"""Shared helpers for the engine tests: centred-difference gradient checks, PyTorch copies,
and hypothesis strategies for window-layer configurations.

Nothing here calls the code under test to compute an expected value: padding amounts and
output sizes are written out from their definitions.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

import convnet as cn

# Centred differences in float64: truncation error ~ EPS**2, round-off ~ 1e-16 / EPS.
EPS = 1e-6
GRAD_RTOL = 1e-6
GRAD_ATOL = 1e-8
# At most this many coordinates of each array are perturbed (all of them when smaller).
MAX_COORDS = 40


def sample_indices(shape, rng, limit=MAX_COORDS):
    """Up to `limit` distinct multi-indices of an array of `shape`."""
    size = math.prod(shape)
    flat = np.arange(size) if size <= limit else rng.choice(size, limit, replace=False)
    return [np.unravel_index(i, shape) for i in flat]


def numeric_gradient(loss, array, indices, eps=EPS):
    """d loss / d array[index] by centred differences, perturbing `array` in place."""
    out = []
    for index in indices:
        old = array[index]
        array[index] = old + eps
        plus = loss()
        array[index] = old - eps
        minus = loss()
        array[index] = old
        out.append((plus - minus) / (2 * eps))
    return np.array(out)


def assert_gradient_matches(analytic, loss, array, rng, what, rtol=GRAD_RTOL, atol=GRAD_ATOL):
    indices = sample_indices(array.shape, rng)
    numeric = numeric_gradient(loss, array, indices)
    picked = np.array([analytic[index] for index in indices])
    scale = max(1.0, float(np.abs(numeric).max(initial=0.0)))
    np.testing.assert_allclose(picked, numeric, rtol=rtol, atol=atol * scale, err_msg=what)


def check_gradients(layer, x, rng, before_forward=None, rtol=GRAD_RTOL, atol=GRAD_ATOL):
    """Compare backward's input and parameter gradients with centred differences.

    The scalar checked is L = sum(forward(x) * g) for a fixed random g, so that dL/dy = g.
    `before_forward` runs before every forward (re-seeding keeps a dropout mask fixed).
    """
    assert x.dtype == np.float64
    layer.astype(np.float64)
    prepare = before_forward or (lambda: None)

    def loss():
        prepare()
        with cn.no_grad():
            return float((layer.forward(x) * g).sum())

    prepare()
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(g.copy())
    assert dx.shape == x.shape
    assert_gradient_matches(dx, loss, x, rng, "input gradient", rtol, atol)
    for name, param in layer.named_parameters():
        assert param.grad.shape == param.data.shape, name
        assert_gradient_matches(param.grad.copy(), loss, param.data, rng, name, rtol, atol)
    return dx


def check_loss_gradients(model, loss_fn, x, labels, rng, rtol=GRAD_RTOL, atol=GRAD_ATOL):
    """Whole-network check: d loss_fn(model(x), labels) / d (x, every parameter)."""
    model.astype(np.float64)

    def loss():
        with cn.no_grad():
            return loss_fn.forward(model.forward(x), labels)

    model.zero_grad()
    loss_fn.forward(model.forward(x), labels)
    dx = model.backward(loss_fn.backward())
    assert_gradient_matches(dx, loss, x, rng, "input gradient", rtol, atol)
    for name, param in model.named_parameters():
        assert_gradient_matches(param.grad.copy(), loss, param.data, rng, name, rtol, atol)


def spread_values(rng, shape, gap=1e-3):
    """Float64 values in [-1, 1] whose pairwise gaps and distance from zero are all >= gap/2,
    so max-pool windows have no near-ties and ReLU inputs sit off the kink."""
    size = math.prod(shape)
    grid = (np.arange(size) - (size - 1) / 2) * gap  # evenly spaced, symmetric about zero
    if size % 2:
        grid = grid + gap / 2  # keep the middle value off zero
    grid = grid / max(1.0, float(np.abs(grid).max()))
    assert np.abs(grid).min() > 0
    return rng.permutation(grid).reshape(shape)


# -- PyTorch side ------------------------------------------------------------------------

# PyTorch parity, float32 on both sides: |ours - torch| <= RTOL * |torch| + ATOL * max(1,
# max|torch|) elementwise (see tests/test_torch_parity.py).
RTOL = 1e-5
ATOL = 2e-6


def assert_close(ours, theirs, what=""):
    """ours (NumPy) against theirs (a PyTorch tensor or array) at the parity tolerance."""
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == theirs.shape, what
    scale = max(1.0, float(np.abs(theirs).max(initial=0.0)))
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL * scale, err_msg=what)


def assert_conv_matches_torch(conv, out, dx, torch_out, tx, tw, tb, dy=None):
    """A conv's output and gradients (after backward) against its PyTorch twin's: torch_out
    computed from the leaves tx (input), tw (weight) and tb (bias, or None), backward done.
    Given the output gradient dy, the bias gradient is checked against its float64 sum over
    (N, H, W) instead: PyTorch's own float32 sum drifted 1.4e-5 from it on a -0.11 sum of
    500 values (a hypothesis draw of tests/test_blocked_training.py)."""
    assert_close(out, torch_out, "output")
    assert_close(dx, tx.grad, "input gradient")
    assert_close(conv.weight.grad, tw.grad, "weight gradient")
    if tb is not None and dy is not None:
        exact = np.asarray(dy, np.float64).sum(axis=(0, 2, 3))
        assert_close(conv.bias.grad, exact, "bias gradient")
    elif tb is not None:
        assert_close(conv.bias.grad, tb.grad, "bias gradient")


def leaf(array):
    """A PyTorch tensor copied from `array`, with requires_grad."""
    return torch_tensor(array, requires_grad=True)


def torch_tensor(array, requires_grad=False):
    import torch

    return torch.tensor(np.array(array), requires_grad=requires_grad)


def tf_same_padding(n: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same': output ceil(n/stride), the odd pixel of padding after."""
    extent = dilation * (kernel - 1) + 1
    out = -(-n // stride)
    total = max((out - 1) * stride + extent - n, 0)
    return total // 2, total - total // 2


# -- hypothesis strategies ---------------------------------------------------------------

@st.composite
def conv_configs(draw, max_channels=6, max_kernel=4, max_stride=3, max_size=11, batch=3):
    """A Conv2d configuration and an input shape it applies to.

    Non-square kernels, strides and dilations; integer (h, w) padding or 'same'/'valid';
    groups and depthwise. Input sizes whose window does not fit exactly come with
    strict=False, as PyTorch floors.
    """
    groups = draw(st.sampled_from([1, 1, 2, 3, "depthwise"]))
    if groups == "depthwise":
        c_in = draw(st.integers(1, max_channels))
        groups = c_in
        c_out = c_in * draw(st.integers(1, 2))
    else:
        c_in = groups * draw(st.integers(1, max(1, max_channels // groups)))
        c_out = groups * draw(st.integers(1, max(1, max_channels // groups)))
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    mode = draw(st.sampled_from(["int", "int", "same", "valid"]))
    if mode == "int":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    else:
        padding = mode
    pads = (0, 0) if mode != "int" else padding
    hw = []
    for axis in range(2):
        extent = dilation[axis] * (kernel[axis] - 1) + 1
        smallest = max(1, extent - 2 * pads[axis]) if mode != "same" else 1
        hw.append(draw(st.integers(smallest, max(smallest, max_size))))
    n = draw(st.integers(1, batch))
    bias = draw(st.booleans())
    return {
        "in_channels": c_in, "out_channels": c_out, "kernel_size": kernel, "stride": stride,
        "padding": padding, "dilation": dilation, "groups": groups, "bias": bias,
        "input_shape": (n, c_in, hw[0], hw[1]),
    }


def conv_fits_exactly(config) -> bool:
    """Whether every window position fits with no border left over (strict arithmetic)."""
    if config["padding"] == "same":
        return True
    pads = (0, 0) if config["padding"] == "valid" else config["padding"]
    for axis in range(2):
        extent = config["dilation"][axis] * (config["kernel_size"][axis] - 1) + 1
        span = config["input_shape"][2 + axis] + 2 * pads[axis] - extent
        if span % config["stride"][axis]:
            return False
    return True


def build_conv(config) -> cn.Conv2d:
    args = {k: v for k, v in config.items() if k != "input_shape"}
    return cn.Conv2d(**args, strict=conv_fits_exactly(config))


@st.composite
def pool_configs(draw, max_kernel=4, max_stride=3, max_size=11, batch=2, channels=3):
    """A max/avg pool configuration with PyTorch's padding limit (pad <= kernel // 2)."""
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    hw = tuple(
        draw(st.integers(max(1, kernel[a] - 2 * padding[a]), max(kernel[a], max_size)))
        for a in range(2)
    )
    n = draw(st.integers(1, batch))
    c = draw(st.integers(1, channels))
    return {"kernel_size": kernel, "stride": stride, "padding": padding,
            "input_shape": (n, c, *hw)}


def pool_fits_exactly(config) -> bool:
    for axis in range(2):
        span = (config["input_shape"][2 + axis] + 2 * config["padding"][axis]
                - config["kernel_size"][axis])
        if span % config["stride"][axis]:
            return False
    return True


def assert_compiled_conv_agrees(conv, x, dy, kept_type):
    """A Conv2d's training passes on one thread, on two, and on the NumPy path (compiled
    kernels off): forward and every gradient. Two threads give one thread's answers to
    float32 rounding (1e-5 of the largest value: the weight gradient sums a group of images'
    positions in registers, so a split sums in another order), the NumPy path the same to
    the parity tolerance. kept_type: the cache's kept input when the compiled passes ran."""
    from convnet.core import backend, kernels

    results = {}
    previous = backend.num_threads()
    for name, threads, enabled in (("one", 1, True), ("two", 2, True), ("numpy", 1, False)):
        backend.set_num_threads(threads)
        kernels.set_enabled(enabled)
        try:
            out = conv.forward(x)
            assert isinstance(conv.cache[1], kept_type) == enabled
            conv.zero_grad()
            dx = conv.backward(dy)
            results[name] = (out, dx, conv.weight.grad.copy(), conv.bias.grad.copy())
        finally:
            backend.set_num_threads(previous)
            kernels.set_enabled(True)
    for one, two, numpy_path in zip(results["one"], results["two"], results["numpy"],
                                    strict=True):
        scale = max(float(np.abs(one).max()), 1.0)
        np.testing.assert_allclose(two, one, rtol=0, atol=1e-5 * scale)
        assert_close(one, numpy_path)
