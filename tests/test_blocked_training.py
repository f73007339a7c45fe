"""A convolution's (and a transposed convolution's) training passes on the blocked kernels
(convnet.core.blocked_training): output, input, weight and bias gradients against PyTorch over
drawn configurations, against the NumPy im2col path, with the batch split over threads; and
which layers take them."""

import numpy as np
import pytest
import torch.nn.functional as F  # noqa: N812 - PyTorch's own alias
from engine_checks import (
    assert_close,
    assert_compiled_conv_agrees,
    assert_conv_matches_torch,
    build_conv,
    conv_configs,
    leaf,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.core import backend, blocked, blocked_training, kernels, pool_kernels
from convnet.core.arithmetic import Padding


@pytest.fixture(autouse=True)
def any_size_loads_the_kernels(monkeypatch):
    """These tests use small arrays: let them load the kernels."""
    monkeypatch.setattr(kernels, "MIN_LOAD_MACS", 0)


@pytest.fixture
def two_threads():
    previous = backend.num_threads()
    backend.set_num_threads(2)
    try:
        yield
    finally:
        backend.set_num_threads(previous)


def torch_twin(conv, x, dy):
    """PyTorch's output and leaves (input, weight, bias) after backward of dy."""
    pad = conv.geometry(x.shape[2:]).padding
    tx, tw = leaf(x), leaf(conv.weight.data)
    tb = leaf(conv.bias.data) if conv.bias is not None else None
    ty = F.conv2d(F.pad(tx, (pad.left, pad.right, pad.top, pad.bottom)), tw, tb,
                  stride=conv.stride, dilation=conv.dilation)
    ty.backward(leaf(dy))
    return ty, tx, tw, tb


def run(conv, x, rng, input_grad=True):
    out = conv.forward(x)
    assert isinstance(conv.cache[1], blocked_training.Kept)  # it ran here
    dy = rng.standard_normal(out.shape).astype(np.float32)
    conv.zero_grad()
    return out, dy, conv.backward(dy, input_grad=input_grad)


@settings(max_examples=60, deadline=None)
@given(config=conv_configs(max_channels=20, max_kernel=5, max_size=13),
       seed=st.integers(0, 2**32 - 1))
def test_training_passes_match_torch(config, seed):
    """Strides, dilations, 'same'/'valid'/integer padding, channels across the 8-lane
    blocks (plain input below 8), windows that leave pixels uncovered (PyTorch's floor)."""
    config = dict(config, groups=1, in_channels=config["input_shape"][1])
    assume(config["kernel_size"] != (1, 1) or config["stride"] != (1, 1))
    rng = np.random.default_rng(seed)
    conv = build_conv(config)
    if conv.bias is not None:
        conv.bias.data[...] = rng.standard_normal(conv.bias.shape)
    x = rng.standard_normal(config["input_shape"]).astype(np.float32)
    out, dy, dx = run(conv, x, rng)
    assert_conv_matches_torch(conv, out, dx, *torch_twin(conv, x, dy), dy=dy)


@settings(max_examples=60, deadline=None)
@given(channels=st.integers(1, 20), filters=st.integers(1, 20),
       kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
       extra=st.tuples(st.integers(0, 2), st.integers(0, 2)), bias=st.booleans(),
       size=st.tuples(st.integers(1, 7), st.integers(1, 7)), batch=st.integers(1, 3),
       threads=st.integers(1, 2), seed=st.integers(0, 2**32 - 1))
def test_transposed_convolution_training_matches_torch(channels, filters, kernel, stride,
                                                       dilation, padding, extra, bias, size,
                                                       batch, threads, seed):
    """ConvTranspose2d's forward (phases of the direct convolution), input gradient (a
    convolution of dy) and weight gradient on the blocked kernels, against PyTorch: kernels,
    strides, dilations, crops and output paddings along each axis, channels across blocks."""
    output_padding = tuple(e % max(s, d) for e, s, d in zip(extra, stride, dilation,
                                                            strict=True))
    try:
        layer = cn.ConvTranspose2d(channels, filters, kernel, stride, padding, output_padding,
                                   bias=bias, dilation=dilation)
        layer.output_shape((channels, *size))
    except (ValueError, cn.ShapeError):
        assume(False)
    rng = np.random.default_rng(seed)
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(filters)
    x = rng.standard_normal((batch, channels, *size)).astype(np.float32)
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        out = layer.forward(x)
        assert isinstance(layer.cache[0], blocked_training.Kept)  # it ran here
        dy = rng.standard_normal(out.shape).astype(np.float32)
        layer.zero_grad()
        dx = layer.backward(dy)
    finally:
        backend.set_num_threads(previous)
    tx, tw = leaf(x), leaf(layer.weight.data)
    tb = leaf(layer.bias.data) if layer.bias is not None else None
    ty = F.conv_transpose2d(tx, tw, tb, layer.stride, layer.padding, layer.output_padding, 1,
                            layer.dilation)
    ty.backward(leaf(dy))
    assert_conv_matches_torch(layer, out, dx, ty, tx, tw, tb, dy=dy)


@settings(max_examples=30, deadline=None)
@given(channels=st.integers(1, 7), filters=st.integers(1, 8), kernel=st.integers(1, 5),
       stride_h=st.integers(1, 2), dilation=st.integers(1, 2), padding=st.integers(0, 2),
       width=st.integers(16, 30), threads=st.integers(1, 2), seed=st.integers(0, 2**32 - 1))
def test_row_kernel_forward_of_a_plain_input_matches_torch(channels, filters, kernel, stride_h,
                                                           dilation, padding, width, threads,
                                                           seed):
    """A first layer of at most 8 filters on rows of 16 or more outputs: the forward on the
    row kernel (blocked.conv_rows_source, plain output), one or two threads."""
    rng = np.random.default_rng(seed)
    conv = cn.Conv2d(channels, filters, kernel, (stride_h, 1), padding, dilation, strict=False)
    assume(kernel > 1 or stride_h > 1)  # a 1x1 stride-1 layer is a matrix product
    conv.bias.data[...] = rng.standard_normal(filters)
    x = rng.standard_normal((2, channels, 6 + (kernel - 1) * dilation,
                             width + (kernel - 1) * dilation)).astype(np.float32)
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        out, dy, dx = run(conv, x, rng)
    finally:
        backend.set_num_threads(previous)
    assert out.shape[3] >= blocked.row_tile()[0]  # the row kernel's case
    assert_conv_matches_torch(conv, out, dx, *torch_twin(conv, x, dy), dy=dy)


@settings(max_examples=40, deadline=None)
@given(channels=st.integers(1, 20), filters=st.integers(1, 40), kernel=st.integers(1, 5),
       stride_h=st.integers(1, 2), dilation=st.integers(1, 2), padding=st.integers(0, 2),
       width=st.integers(16, 40), batch=st.integers(1, 3), threads=st.integers(1, 2),
       seed=st.integers(0, 2**32 - 1))
def test_row_kernel_forward_over_channels_matches_torch(channels, filters, kernel, stride_h,
                                                        dilation, padding, width, batch,
                                                        threads, seed):
    """A layer on rows of 16 or more outputs, on any CPU (the choice `rows_over_channels`
    makes on Zen 4 forced): the forward on the row kernel over a plain copy (one block of
    filters up to 8, two above: blocked.conv_rows_source's block_count), spans recomputed at
    a row's end, the positions split over threads; the weight gradient from the plain copy."""
    assume(kernel > 1 or stride_h > 1)  # a 1x1 stride-1 layer is a matrix product
    rng = np.random.default_rng(seed)
    conv = cn.Conv2d(channels, filters, kernel, (stride_h, 1), padding, dilation, strict=False)
    conv.bias.data[...] = rng.standard_normal(filters)
    x = rng.standard_normal((batch, channels, 5 + (kernel - 1) * dilation,
                             width + (kernel - 1) * dilation - 2 * padding)).astype(np.float32)
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        with pytest.MonkeyPatch.context() as patch:  # (a function fixture would be shared)
            patch.setattr(blocked_training, "rows_over_channels",
                          lambda channels, filters, stride_w, out_w: (
                              stride_w == 1 and out_w >= 16))
            out = conv.forward(x)
            kept = conv.cache[1]
            dy = rng.standard_normal(out.shape).astype(np.float32)
            dx = conv.backward(dy)
    finally:
        backend.set_num_threads(previous)
    assert out.shape[3] == width and kept.lanes == 1  # the row kernel's case, a plain copy
    assert_conv_matches_torch(conv, out, dx, *torch_twin(conv, x, dy), dy=dy)


def test_the_row_kernel_trains_a_layer_of_many_channels_from_a_plain_copy(monkeypatch, rng):
    """Where `rows_over_channels` says so, the kept input is the plain padded copy."""
    monkeypatch.setattr(blocked_training, "rows_over_channels", lambda *args: True)
    conv = cn.Conv2d(16, 24, 3, padding=1)
    conv.forward(rng.standard_normal((2, 16, 6, 32)).astype(np.float32))
    kept = conv.cache[1]
    assert isinstance(kept, blocked_training.Kept)
    assert kept.lanes == 1 and kept.data.shape == (2, 16, 8, 34)


@pytest.mark.parametrize(("wide", "full_rate", "expected"), [
    (True, False, [True, True, True, True, False, False]),  # Zen 4's kind: any filter count
    (True, True, [True, True, False, True, False, False]),  # full rate: 16 filters, or few
    (False, False, [False, False, False, False, False, False]),  # AVX2: the tiles
])
def test_which_training_forwards_take_the_row_kernel(wide, full_rate, expected, monkeypatch):
    """`rows_over_channels` by CPU, for 8, 16 and 32 filters of 16 channels on rows of 32, 32
    filters of 3 channels (a first layer), then 16 filters at column stride 2 and on rows of
    12 (fewer than the row kernel's 16 columns)."""
    monkeypatch.setattr(kernels, "wide_registers", lambda: wide)
    monkeypatch.setattr(kernels, "full_rate_512", lambda: full_rate)
    cases = [(16, 8, 1, 32), (16, 16, 1, 32), (16, 32, 1, 32), (3, 32, 1, 32), (16, 16, 2, 32),
             (16, 16, 1, 12)]
    assert [blocked_training.rows_over_channels(*case) for case in cases] == expected
    assert blocked_training.forward_plan(16, 16, 1, 32)[:2] == (
        (1, "conv_rows") if expected[1] else (blocked.LANES, "conv"))


@pytest.mark.parametrize("kwargs, input_shape", [
    ({"in_channels": 32, "out_channels": 24, "kernel_size": 3, "padding": 1}, (5, 32, 9, 13)),
    ({"in_channels": 3, "out_channels": 40, "kernel_size": 5, "stride": 2, "padding": 2},
     (3, 3, 17, 15)),
    ({"in_channels": 12, "out_channels": 8, "kernel_size": (1, 3), "padding": "same",
      "dilation": 2}, (4, 12, 6, 11)),
])
def test_split_over_threads_as_on_one_and_as_the_numpy_path(kwargs, input_shape, rng):
    """Two threads split the batch (each summing its own weight gradient) and the images'
    positions; the answers are one thread's, and the im2col path's to rounding."""
    conv = cn.Conv2d(**kwargs)
    x = rng.standard_normal(input_shape).astype(np.float32)
    dy = rng.standard_normal(conv.forward(x).shape).astype(np.float32)
    assert_compiled_conv_agrees(conv, x, dy, blocked_training.Kept)


def test_without_the_input_gradient_the_parameter_gradients_are_the_same(rng):
    conv = cn.Conv2d(10, 16, 3, padding=1)
    x = rng.standard_normal((2, 10, 7, 7)).astype(np.float32)
    _, dy, dx = run(conv, x, rng)
    with_dx = (conv.weight.grad.copy(), conv.bias.grad.copy())
    conv.forward(x)
    conv.zero_grad()
    assert conv.backward(dy, input_grad=False) is None
    np.testing.assert_array_equal(conv.weight.grad, with_dx[0])
    np.testing.assert_array_equal(conv.bias.grad, with_dx[1])
    assert dx.shape == x.shape


def test_the_kept_input_is_padded_and_blocked_and_freed_after_backward(rng):
    conv = cn.Conv2d(12, 8, 3, padding=(1, 2))
    x = rng.standard_normal((2, 12, 5, 6)).astype(np.float32)
    conv.forward(x)
    kept = conv.cache[1]
    assert kept.data.shape == (2, 2, 7, 10, 8)  # 12 channels in two blocks of 8, padded
    np.testing.assert_array_equal(kept.data[:, 1, 1:6, 2:8, :4], x[:, 8:].transpose(0, 2, 3, 1))
    assert not kept.data[:, 1, ..., 4:].any() and not kept.data[:, :, 0].any()
    conv.backward(np.ones((2, 8, 5, 6), np.float32))
    assert conv.cache is None


def test_backward_lets_go_of_the_kept_input_before_the_input_gradient_exists(rng):
    """The step's peak holds the padded input or the input gradient, not both."""
    import tracemalloc

    conv = cn.Conv2d(32, 32, 3, padding=1)
    x = rng.standard_normal((16, 32, 32, 32)).astype(np.float32)
    dy = rng.standard_normal((16, 32, 32, 32)).astype(np.float32)
    tracemalloc.start()
    try:
        conv.forward(x)
        kept_bytes = conv.cache[1].data.nbytes
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        dx_bytes = conv.backward(dy).nbytes
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    padded_dy = 16 * 4 * 34 * 34 * 8 * 4  # the blocked output gradient, padded by 1
    assert kept_bytes >= dx_bytes  # (dx fits where the kept input was)
    assert peak < padded_dy + 0.5 * dx_bytes, (peak, padded_dy, dx_bytes)


@pytest.mark.parametrize("kwargs, dtype, takes", [
    ({"in_channels": 4, "out_channels": 8, "kernel_size": 3}, np.float32, True),
    ({"in_channels": 4, "out_channels": 8, "kernel_size": 1, "stride": 2}, np.float32, True),
    ({"in_channels": 4, "out_channels": 8, "kernel_size": 1}, np.float32, False),  # a product
    ({"in_channels": 4, "out_channels": 8, "kernel_size": 3, "groups": 2}, np.float32, False),
    ({"in_channels": 4, "out_channels": 8, "kernel_size": 3}, np.float64, False),
])
def test_which_layers_train_here(kwargs, dtype, takes, monkeypatch, rng):
    conv = cn.Conv2d(**kwargs).astype(dtype)
    x = rng.standard_normal((2, 4, 7, 7)).astype(dtype)
    assert blocked_training.usable(conv, x) == takes
    kernels.set_enabled(False)
    try:
        assert not blocked_training.usable(conv, x)
    finally:
        kernels.set_enabled(True)

    def refused(*args):
        raise AssertionError("a forward under no_grad made the padded blocked copy")

    monkeypatch.setattr(blocked_training, "forward", refused)
    with cn.no_grad():  # inference never pays for the copy backward would need
        conv.forward(x)


def test_a_small_layer_does_not_load_the_kernels_for_itself(monkeypatch, rng):
    monkeypatch.setattr(kernels, "MIN_LOAD_MACS", 1 << 23)
    monkeypatch.setattr(blocked_training.blocked, "loaded", lambda *args, **kwargs: False)
    conv = cn.Conv2d(4, 8, 3)
    assert not blocked_training.usable(conv, np.zeros((1, 4, 8, 8), np.float32))
    assert blocked_training.usable(conv, np.zeros((256, 4, 64, 64), np.float32))


def test_a_network_trains_as_on_the_numpy_path(two_threads, rng):
    """Three SGD steps of a small ConvNet (a plain first layer, padding, a stride-2 layer
    whose input gradient is scattered): the weights after them are the NumPy path's."""
    def build():
        return cn.Sequential(
            cn.Conv2d(3, 12, 3, padding=1), cn.ReLU(), cn.Conv2d(12, 16, 3, stride=2),
            cn.ReLU(), cn.Conv2d(16, 8, 3, padding=1), cn.Flatten(), cn.Linear(8 * 7 * 7, 5))
    x = rng.standard_normal((6, 3, 15, 15)).astype(np.float32)
    labels = rng.integers(0, 5, 6)
    finals = []
    for enabled in (True, False):
        kernels.set_enabled(enabled)
        try:
            cn.manual_seed(3)
            model = build()
            optimizer = cn.SGD(model.parameters(), lr=0.05, momentum=0.9)
            loss = cn.CrossEntropyLoss()
            for _ in range(3):
                optimizer.zero_grad()
                loss.forward(model.forward(x), labels)
                model.backward(loss.backward())
                optimizer.step()
            finals.append([p.data.copy() for p in model.parameters()])
        finally:
            kernels.set_enabled(True)
    for ours, numpy_path in zip(*finals, strict=True):
        np.testing.assert_allclose(ours, numpy_path, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 7, 3), (2, 9, 4, 4), (16, 12, 33, 31)])
def test_bias_gradient_sums_each_channel_in_float64(shape, threads, rng):
    """channel_sums against math.fsum's exact sum of each channel (rounded once), and the same
    sums on one thread and on two (channels split, never a channel's sum)."""
    import math

    dy = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(np.float32)
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        sums = blocked_training.channel_sums(dy)
        again = blocked_training.channel_sums(dy)
    finally:
        backend.set_num_threads(previous)
    exact = np.array([math.fsum(dy[:, c].astype(np.float64).ravel()) for c in range(shape[1])])
    assert sums.dtype == np.float64 and sums.shape == (shape[1],)
    scale = np.array([np.abs(dy[:, c]).astype(np.float64).sum() for c in range(shape[1])])
    np.testing.assert_array_less(np.abs(sums - exact), 1e-12 * scale + 1e-300)
    np.testing.assert_array_equal(sums, again)
    np.testing.assert_array_equal(sums, blocked_training.channel_sums(dy[:]))


def test_every_plain_output_tile_gives_the_same_sums(monkeypatch, rng):
    """A plain output's tile is 6 x 2 without AVX-512 (4 x 3 for 17-24 channels), 8 x 2 with
    it, and 8 x 4 for more than 16 channels where its multiply-adds run at full rate: the
    same sums in the same order, so the same bits, all PyTorch's to rounding (forward and
    input gradient of a convolution and of a transposed one, each CPU's tile run on this
    one). 8 channels or fewer take 8 x 1 where the multiply-adds run at half rate (a
    forward of 8 filters on rows too short for the row kernel, and an input gradient into 6
    channels)."""
    conv = cn.Conv2d(20, 20, 3, padding=1)
    few = cn.Conv2d(6, 8, 3, padding=1)
    x_few = rng.standard_normal((3, 6, 9, 11)).astype(np.float32)
    dy_few = rng.standard_normal((3, 8, 9, 11)).astype(np.float32)
    transposed = cn.ConvTranspose2d(18, 20, 3, stride=2, padding=1, output_padding=1)
    x = rng.standard_normal((3, 20, 9, 11)).astype(np.float32)
    xt = rng.standard_normal((2, 18, 5, 7)).astype(np.float32)
    dy = rng.standard_normal((3, 20, 9, 11)).astype(np.float32)
    dyt = rng.standard_normal((2, 20, 10, 14)).astype(np.float32)
    answers = {}
    tiles = {"avx2": (4, 3), "half rate": (8, 2), "full rate": (8, 4)}
    for cpu, tile in tiles.items():
        monkeypatch.setattr(kernels, "wide_registers", lambda cpu=cpu: cpu != "avx2")
        monkeypatch.setattr(kernels, "half_rate_512", lambda cpu=cpu: cpu == "half rate")
        assert blocked_training.plain_tile(20) == tile
        assert blocked_training.plain_tile(16) == ((6, 2) if cpu == "avx2" else (8, 2))
        assert blocked_training.plain_tile(8) == blocked_training.plain_tile(6) == {
            "avx2": (6, 2), "half rate": (8, 1), "full rate": (8, 2)}[cpu]
        out_few = few.forward(x_few)
        assert isinstance(few.cache[1], blocked_training.Kept)
        few.zero_grad()
        dx_few = few.backward(dy_few)
        out = conv.forward(x)
        assert isinstance(conv.cache[1], blocked_training.Kept)  # on the blocked kernels
        conv.zero_grad()
        dx = conv.backward(dy)
        out_t = transposed.forward(xt)
        transposed.zero_grad()
        dx_t = transposed.backward(dyt)
        answers[cpu] = (out, dx, out_t, dx_t, out_few, dx_few)
    for cpu in ("half rate", "full rate"):
        for ours, theirs in zip(answers["avx2"], answers[cpu], strict=True):
            np.testing.assert_array_equal(ours, theirs)
    assert_conv_matches_torch(conv, answers["full rate"][0], answers["full rate"][1],
                              *torch_twin(conv, x, dy), dy=dy)
    assert_conv_matches_torch(few, answers["half rate"][4], answers["half rate"][5],
                              *torch_twin(few, x_few, dy_few), dy=dy_few)


@pytest.mark.parametrize("filters", [8, 16, 24, 40, 56, 72])
def test_every_weight_gradient_tile_gives_the_same_sums(filters, monkeypatch, rng):
    """The weight gradient's widest tile is 16 output channels, or 32 with AVX-512; the
    blocks past the last whole tile take narrower ones (there 24 channels a tile of 3 blocks,
    40 two of 3 and 2, 56 of 4 and 3, 72 of 4, 3 and 2). Without 512-bit multiply-adds at
    full rate a tile of two or more blocks sums 4 taps at a time, not 8, and the positions of
    fewer images before adding them to dw (blocked.FEW_TAPS_WEIGHT_GRAD_POSITIONS; 4 blocks of
    4 taps in 256-bit vectors at half rate). Each output channel's sums are the same, in the
    same order, whatever the widest (the same bits), those of 4 taps the same to float32
    rounding as those of 8, and PyTorch's to rounding."""
    x = rng.standard_normal((3, 12, 9, 11)).astype(np.float32)
    dy = rng.standard_normal((3, filters, 9, 11)).astype(np.float32)
    grads = {}
    for widest, taps in ((2, 8), (4, 8), (2, 4), (4, 4)):
        monkeypatch.setattr(blocked, "weight_grad_blocks", lambda widest=widest: widest)
        monkeypatch.setattr(blocked, "weight_grad_taps", lambda taps=taps: taps)
        conv = cn.Conv2d(12, filters, 3, padding=1)
        conv.weight.data[...] = np.linspace(-1, 1, conv.weight.size).reshape(conv.weight.shape)
        out = conv.forward(x)
        assert isinstance(conv.cache[1], blocked_training.Kept)  # on the blocked kernels
        dx = conv.backward(dy)
        assert blocked.loaded("weight_grad", tile=(widest,) if taps == 8 else (widest, taps))
        grads[widest, taps] = (out, dx, conv.weight.grad.copy(), conv.bias.grad.copy())
    for ours, theirs in zip(grads[2, 8], grads[4, 8], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(grads[2, 4], grads[4, 4], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for index, (ours, theirs) in enumerate(zip(grads[2, 8], grads[2, 4], strict=True)):
        if index == 2:  # the weight gradient: images grouped otherwise
            np.testing.assert_allclose(ours, theirs, rtol=1e-5,
                                       atol=1e-5 * float(np.abs(theirs).max()))
        else:
            np.testing.assert_array_equal(ours, theirs)
    assert_conv_matches_torch(conv, out, dx, *torch_twin(conv, x, dy), dy=dy)


def _relu_model(kind: str, rng):
    """conv -> relu -> conv -> relu -> flatten -> linear, as a Sequential or a graph Model
    whose second ReLU's output is also one of the model's outputs."""
    convs = [cn.Conv2d(3, 16, 3, padding=1), cn.Conv2d(16, 12, 3, padding=1)]
    for conv in convs:
        conv.bias.data[...] = rng.standard_normal(conv.bias.data.shape)
    head = cn.Linear(12 * 6 * 7, 5)
    if kind == "sequential":
        return cn.Sequential(convs[0], cn.ReLU(), convs[1], cn.ReLU(), cn.Flatten(), head)
    x_in = cn.Input((3, 6, 7))
    maps = cn.ReLU()(convs[1](cn.ReLU()(convs[0](x_in))))
    return cn.Model(x_in, [head(cn.Flatten()(maps)), maps])


def _gradients(model, x, dys, input_grad, fused: bool):
    """Output, input gradient and every parameter's gradient after one forward and backward,
    with a ReLU's backward taken into its convolution's or not (each layer's own)."""
    with pytest.MonkeyPatch.context() as patch:
        if not fused:
            patch.setattr(cn.Conv2d, "takes_backward_of", lambda self, activation, dy: False)
        calls = []
        real = cn.ReLU.backward
        patch.setattr(cn.ReLU, "backward", lambda self, dy: calls.append(1) or real(self, dy))
        model.zero_grad()
        out = model.forward(x)
        dx = model.backward(dys if isinstance(out, tuple) else dys[0], input_grad=input_grad)
    grads = [p.grad.copy() for p in model.parameters()]
    return out, dx, grads, len(calls)


@pytest.mark.parametrize("kind", ["sequential", "graph"])
@pytest.mark.parametrize("input_grad", [True, False])
def test_a_relu_after_a_convolution_runs_its_backward_inside_the_convolutions(
        kind, input_grad, rng):
    """A ReLU that alone reads a convolution's output (on the blocked training passes) has its
    mask applied in the copy the convolution's backward makes of dy, and the bias gradient
    summed in that copy: no ReLU backward runs, and every gradient is the one each layer's
    own backward gives (the same bits for the weights and the input; the bias summed in
    another order, in float64), in a Sequential and in a graph Model (where the second ReLU's
    output is also a model output: its gradient adds to the head's), the first layer with and
    without its input gradient."""
    model = _relu_model(kind, rng)
    x = rng.standard_normal((4, 3, 6, 7)).astype(np.float32)
    dys = [rng.standard_normal((4, 5)).astype(np.float32),
           rng.standard_normal((4, 12, 6, 7)).astype(np.float32)]
    fused = _gradients(model, x, dys, input_grad, fused=True)
    each = _gradients(model, x, dys, input_grad, fused=False)
    assert fused[3] == 0 and each[3] == 2  # ReLU backwards run
    for ours, theirs in zip(fused[0] if kind == "graph" else [fused[0]],
                            each[0] if kind == "graph" else [each[0]], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    if input_grad:
        np.testing.assert_array_equal(fused[1], each[1])
    else:
        assert fused[1] is None and each[1] is None
    for ours, theirs, param in zip(fused[2], each[2], model.parameters(), strict=True):
        if param.data.ndim == 1 and param.data.shape[0] in (16, 12):  # conv biases
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(ours, theirs)


def test_a_watched_or_shared_convolution_output_keeps_the_relus_own_backward(rng):
    """Grad-CAM's watched slot between a convolution and its ReLU needs the ReLU's input
    gradient as an array, and a convolution output read by two layers gets the sum of their
    gradients: there each backward runs on its own, with the same answers."""
    conv = cn.Conv2d(3, 16, 3, padding=1)
    x_in = cn.Input((3, 6, 7))
    maps = conv(x_in)
    model = cn.Model(x_in, cn.Add()([cn.ReLU()(maps), maps]))
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    dy = rng.standard_normal((2, 16, 6, 7)).astype(np.float32)
    fused, each = (_gradients(model, x, [dy], True, fused=flag) for flag in (True, False))
    assert fused[3] == each[3] == 1
    np.testing.assert_array_equal(fused[1], each[1])
    chain = cn.Model(x_in, cn.ReLU()(conv(x_in)))
    watched = chain.steps[0].outputs[0]
    chain.forward(x)
    chain.backward(dy, watch=watched)
    expected = np.where(chain.forward(x) > 0, dy, 0)
    chain.backward(dy, watch=watched)
    np.testing.assert_array_equal(chain.watched, expected)


@pytest.fixture
def winograd_here(monkeypatch):
    """Training's Winograd on this CPU whatever it is (a full-rate AVX-512 one keeps the direct
    kernels), from as few channels as the tests' small layers have."""
    monkeypatch.setattr(kernels, "full_rate_512", lambda: False)
    monkeypatch.setattr(blocked_training, "WINOGRAD_MIN_CHANNELS", 8)


@pytest.mark.parametrize(("kwargs", "input_shape", "band_bytes"), [
    ({"in_channels": 16, "out_channels": 8, "kernel_size": 3, "padding": 1}, (5, 16, 6, 10),
     None),  # several images a group, the last group short
    ({"in_channels": 8, "out_channels": 24, "kernel_size": 3, "padding": "same"},
     (3, 8, 12, 8), 16 << 10),  # one image at a time, in bands of tile rows
    ({"in_channels": 24, "out_channels": 16, "kernel_size": 3, "padding": 1, "bias": False},
     (2, 24, 4, 4), 1 << 10),  # bands of one tile row
])
def test_winograd_training_passes_match_torch_and_the_direct_kernels(
        kwargs, input_shape, band_bytes, winograd_here, two_threads, monkeypatch, rng):
    """A 3x3 layer that fits takes Winograd F(2x2, 3x3) for its forward, its input gradient
    (the transposed convolution's filters flipped and swapped in the packing) and its weight
    gradient (the output gradient's tiles transformed, each position's products summed over
    the tiles, G^T dU G), in groups of images or bands of rows: output and gradients match
    PyTorch's and the direct kernels' to the parity tolerance."""
    if band_bytes is not None:
        monkeypatch.setattr(blocked, "WINOGRAD_BAND_BYTES", band_bytes)
    calls = []
    real = blocked_training._run_winograd
    monkeypatch.setattr(blocked_training, "_run_winograd",
                        lambda *args: calls.append(args[2]) or real(*args))
    conv = cn.Conv2d(**kwargs)
    if conv.bias is not None:
        conv.bias.data[...] = rng.standard_normal(conv.bias.shape)
    x = rng.standard_normal(input_shape).astype(np.float32)
    weight_grads = []
    real_weight = blocked_training._winograd_weight_grad
    monkeypatch.setattr(blocked_training, "_winograd_weight_grad",
                        lambda *args: weight_grads.append(1) or real_weight(*args))
    out, dy, dx = run(conv, x, rng)
    assert calls == [False, True]  # the forward, then the input gradient (flipped)
    assert weight_grads == [1]
    assert_conv_matches_torch(conv, out, dx, *torch_twin(conv, x, dy), dy=dy)
    winograd = (out, dx, conv.weight.grad.copy())
    monkeypatch.setattr(blocked_training, "WINOGRAD", False)
    conv.zero_grad()
    direct_out = conv.forward(x)
    direct_dx = conv.backward(dy)
    assert len(calls) == 2
    for ours, theirs in zip(winograd, (direct_out, direct_dx, conv.weight.grad), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0,
                                   atol=1e-5 * max(float(np.abs(theirs).max()), 1.0))


@pytest.mark.parametrize(("kwargs", "input_shape", "padding"), [
    ({"stride": 2}, (1, 64, 8, 8), 1),
    ({}, (1, 64, 8, 7), 1),
    ({}, (1, 64, 8, 8), 0),
    ({"dilation": 2}, (1, 64, 8, 8), 1),
    ({"out_channels": 60}, (1, 64, 8, 8), 1),
    ({"in_channels": 32}, (1, 32, 8, 8), 1),
    ({"kernel_size": 5}, (1, 64, 8, 8), 1),
    ({"groups": 2}, (1, 64, 8, 8), 1),
])
def test_which_layers_train_on_winograd(kwargs, input_shape, padding, monkeypatch):
    """3x3, stride 1, no dilation, one group, a padding of 1, an even map, whole blocks of
    channels and filters and at least WINOGRAD_MIN_CHANNELS of each, not where 512-bit
    multiply-adds run at full rate: the 64 -> 64 layer below fits, and each of these changes
    one thing that keeps it direct."""
    from convnet.core.arithmetic import Padding

    monkeypatch.setattr(kernels, "full_rate_512", lambda: False)
    fits = cn.Conv2d(64, 64, 3, padding=1)
    assert blocked_training.winograd_fits(fits, (1, 64, 8, 8), Padding(1, 1, 1, 1))
    conv = cn.Conv2d(**{"in_channels": 64, "out_channels": 64, "kernel_size": 3, **kwargs})
    assert not blocked_training.winograd_fits(conv, input_shape, Padding(*[padding] * 4))
    monkeypatch.setattr(kernels, "full_rate_512", lambda: True)
    assert not blocked_training.winograd_fits(fits, (1, 64, 8, 8), Padding(1, 1, 1, 1))


@pytest.mark.parametrize("flip", [False, True])
def test_the_winograd_filters_are_packed_as_inference_packs_them(flip, rng):
    """winograd_pack's one pass gives what blocked.winograd_filters and pack_filters give
    (inference's packing), for the layer's filters and for its transposed convolution's
    (flipped, channels and filters swapped), with zeros past the filters of the last tile."""
    weight = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    source = weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1] if flip else weight
    tile = (8, 2)
    outs, ins = source.shape[:2]
    expected = np.concatenate([blocked.pack_filters(u, tile[1], blocked.LANES, live_only=True)
                               for u in blocked.winograd_filters(source)])
    tiles = -(-outs // 16)
    packed = np.zeros(16 * tiles * 16 * ins, np.float32)
    module = blocked.compiled("winograd_train", np.float32, tile)
    module.winograd_pack(weight.reshape(-1), packed,
                         np.array([24, 16, 16, tiles, int(flip)], np.int64))
    np.testing.assert_allclose(packed, expected, rtol=1e-6, atol=1e-6)


def test_winograd_weight_gradient_without_the_input_gradient(winograd_here, rng):
    """A first layer (no input gradient: its output gradient's copy has no border) still takes
    the Winograd weight gradient, and it matches PyTorch's."""
    conv = cn.Conv2d(8, 16, 3, padding=1)
    x = rng.standard_normal((3, 8, 6, 8)).astype(np.float32)
    out, dy, dx = run(conv, x, rng, input_grad=False)
    assert dx is None
    torch_out, _, tw, _ = torch_twin(conv, x, dy)
    assert_close(out, torch_out, "output")
    assert_close(conv.weight.grad, tw.grad, "weight gradient")


def _pooled_model(pool: cn.MaxPool2d, relu: bool, channels: int, rng):
    """conv (3 -> channels) [-> ReLU] -> the max pool -> conv (channels -> 8) -> ReLU -> a 2x2
    pool: each pool writes its convolution's blocked gradient, the second's with no input
    gradient around it for a transposed convolution's phases, the first's with one."""
    cn.manual_seed(int(rng.integers(1 << 16)))
    convs = [cn.Conv2d(3, channels, 3, padding=1), cn.Conv2d(channels, 8, 3, padding=1)]
    for conv in convs:
        conv.bias.data[...] = rng.standard_normal(conv.bias.data.shape)
    first = [convs[0], cn.ReLU(), pool] if relu else [convs[0], pool]
    return cn.Sequential(*first, convs[1], cn.ReLU(), cn.MaxPool2d(2, strict=False))


def _torch_pooled(model, x, dy):
    """PyTorch's output and leaves (input, then each convolution's weight and bias) for
    _pooled_model after backward of dy."""
    layers = model.layers
    tx = leaf(x)
    leaves, out = [tx], tx
    for layer in layers:
        if isinstance(layer, cn.Conv2d):
            tw, tb = leaf(layer.weight.data), leaf(layer.bias.data)
            leaves += [tw, tb]
            out = F.conv2d(out, tw, tb, padding=1)
        elif isinstance(layer, cn.ReLU):
            out = F.relu(out)
        else:
            pad = layer.geometry(tuple(out.shape[2:])).padding
            out = F.max_pool2d(out, layer.kernel_size, layer.stride, (pad.top, pad.left))
    out.backward(leaf(dy))
    return out, leaves


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize(("kernel", "stride", "padding", "channels"), [
    (2, 2, 0, 16), (3, 2, 1, 12), (2, 1, 0, 5), (3, 3, 1, 8)])
def test_a_max_pool_after_a_convolution_writes_its_blocked_gradient(
        relu, kernel, stride, padding, channels, two_threads, rng):
    """A max pool (after a ReLU or not) that alone reads a convolution's output on the
    blocked training passes sends its gradient straight into the blocked copy the
    convolution's backward makes (zeros around it and past the channels; overlapping,
    padded and stride-1 windows; channel counts not a multiple of 8), with the bias sums:
    no pool backward of its own runs, and the output and every gradient are PyTorch's. The
    ReLU before the pool runs after it (`pools_first`)."""
    pool = cn.MaxPool2d(kernel, stride, padding, strict=False)
    model = _pooled_model(pool, relu, channels, rng)
    x = rng.standard_normal((5, 3, 13, 12)).astype(np.float32)
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pool_kernels, "MIN_LOAD_VALUES", 0)
        real = cn.MaxPool2d.backward
        patch.setattr(cn.MaxPool2d, "backward",
                      lambda self, dy: calls.append(1) or real(self, dy))
        out = model.forward(x)
        dy = rng.standard_normal(out.shape).astype(np.float32)
        dx = model.backward(dy)
    assert not calls  # both pools' backwards ran inside their convolutions'
    torch_out, leaves = _torch_pooled(model, x, dy)
    assert_close(out, torch_out, "output")
    assert_close(dx, leaves[0].grad, "input gradient")
    convs = [layer for layer in model.layers if isinstance(layer, cn.Conv2d)]
    for conv, (tw, tb) in zip(convs, [leaves[1:3], leaves[3:5]], strict=True):
        assert_close(conv.weight.grad, tw.grad, "weight gradient")
        assert_close(conv.bias.grad, tb.grad, "bias gradient")


def test_the_pools_blocked_gradient_is_the_copy_of_its_own(rng):
    """pool_kernels.max_backward_blocked against max_backward's dx copied into the padded
    blocked layout, and its sums against dx's in float64: 13 channels (lanes past them zero),
    overlapping padded windows, a border of (1, 2, 0, 3) around."""
    x = rng.standard_normal((3, 13, 9, 10)).astype(np.float32)
    pool = cn.MaxPool2d(3, 2, 1, strict=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pool_kernels, "MIN_LOAD_VALUES", 0)
        out = pool.forward(x)
    x_shape, geometry, taps, _ = pool.cache
    dy = rng.standard_normal(out.shape).astype(np.float32)
    around = Padding(1, 2, 0, 3)
    dxb, sums = pool_kernels.max_backward_blocked(dy, taps, x_shape, pool.kernel_size,
                                                  pool.stride, geometry.padding, around)
    dx = pool.backward(dy)
    expected = np.zeros((3, 16, 12, 13), np.float32)
    expected[:, :13, 1:10, 0:10] = dx
    expected = expected.reshape(3, 2, 8, 12, 13).transpose(0, 1, 3, 4, 2)
    np.testing.assert_allclose(dxb, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sums, dx.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-6,
                               atol=1e-6)


def test_a_graph_models_convolution_takes_its_max_pools_backward(rng):
    """In a graph Model a max pool that alone reads a convolution's output (the pair
    `Layer.takes_backward_of` serves) writes the convolution's blocked gradient too: no pool
    backward of its own, every gradient the one each layer's own backward gives."""
    x_in = cn.Input((3, 12, 12))
    conv = cn.Conv2d(3, 12, 3, padding=1)
    conv.bias.data[...] = rng.standard_normal(12)
    pooled = cn.MaxPool2d(3, 2, 1, strict=False)(conv(x_in))
    model = cn.Model(x_in, cn.Linear(12 * 6 * 6, 4)(cn.Flatten()(pooled)))
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    dy = rng.standard_normal((4, 4)).astype(np.float32)

    def gradients(fused: bool):
        calls = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pool_kernels, "MIN_LOAD_VALUES", 0)
            if not fused:
                patch.setattr(cn.Conv2d, "takes_backward_of", lambda self, layer, dy: False)
            real = cn.MaxPool2d.backward
            patch.setattr(cn.MaxPool2d, "backward",
                          lambda self, dy: calls.append(1) or real(self, dy))
            model.zero_grad()
            model.forward(x)
            dx = model.backward(dy)
        return dx, [p.grad.copy() for p in model.parameters()], len(calls)

    fused, each = gradients(True), gradients(False)
    assert fused[2] == 0 and each[2] == 1
    np.testing.assert_array_equal(fused[0], each[0])
    for ours, theirs in zip(fused[1], each[1], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
