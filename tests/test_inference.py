"""Inference plans (convnet.nn.inference) and the blocked kernels under them
(convnet.core.blocked): every plan's output against the layers' own NumPy forward (the
reference), every fused pattern and kernel shape, the blocked layout, repacking after any weight
change, and the cases that must not take a plan."""

import contextlib
import threading
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.core import backend, blocked, kernels, team
from convnet.io import zoo
from convnet.nn import inference
from convnet.nn.resize import COORDINATE_MODES


@pytest.fixture(autouse=True)
def any_size_takes_a_plan(monkeypatch):
    """These tests use small batches: let them load the kernels (see the test of the limit),
    and one image's small layers take Winograd on any CPU (see the test of the floor)."""
    monkeypatch.setattr(inference, "MIN_LOAD_MACS", 0)
    monkeypatch.setattr(inference, "WINOGRAD_ONE_IMAGE_MIN_MACS", 0)


def reference(model, *arrays):
    """The layers' own forward (no plan), in eval mode under no_grad."""
    previous = kernels._enabled
    kernels.set_enabled(False)
    try:
        with cn.no_grad():
            return model.forward(*arrays)
    finally:
        kernels.set_enabled(previous)


def planned(model, *arrays):
    with cn.no_grad():
        out = model.forward(*arrays)
    assert model.__dict__.get("_inference_plans"), "the forward did not take a plan"
    return out


def steps_of(model):
    plan = next(iter(model._inference_plans.values()))
    return [type(step).__name__ for step in plan.steps]


def assert_matches(ours, expected, rtol=2e-5):
    scale = max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=rtol * scale)


def assert_planned_matches_twice(model, x, threads: int) -> None:
    """Every output of the plan as the layers give it, on `threads` threads, twice (the
    plan's buffers reused)."""
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        for _ in range(2):
            for mine, theirs in zip(planned(model, x), reference(model, x), strict=True):
                assert_matches(mine, theirs)
    finally:
        backend.set_num_threads(previous)


def randomize_batch_norms(model, rng):
    for module in model.modules():
        if isinstance(module, cn.BatchNorm2d):
            count = module.num_features
            module.running_mean[...] = rng.standard_normal(count) * 0.2
            module.running_var[...] = rng.uniform(0.5, 2.0, count)
            module.weight.assign(rng.uniform(0.5, 1.5, count).astype(np.float32))
            module.bias.assign((rng.standard_normal(count) * 0.2).astype(np.float32))


# -- the layout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3, 8, 19])
@pytest.mark.parametrize("border", [0, 2])
def test_blocked_layout_round_trip(channels, border, rng):
    x = rng.standard_normal((2, channels, 5, 7)).astype(np.float32)
    value = blocked.to_blocked(x, border)
    assert value.data.shape == (2, -(-channels // 8), 5 + 2 * border, 7 + 2 * border, 8)
    assert value.shape == x.shape
    np.testing.assert_array_equal(blocked.from_blocked(value), x)
    inside = np.zeros_like(value.data, dtype=bool)
    inside[:, :, border : border + 5, border : border + 7] = True
    assert not value.data[~inside].any()  # the border is zero
    assert not value.interior[:, -1, ..., channels % 8 or 8 :].any()  # and the lanes past C


def test_empty_blocked_zeroes_only_the_border():
    value = blocked.empty_blocked(1, 9, (3, 4), 1)
    value.interior[...] = 7
    assert value.data.shape == (1, 2, 5, 6, 8)
    assert (value.data.sum() == 7 * value.interior.size)


# -- whole models --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_every_zoo_model_matches_its_layers(name, rng):
    model = zoo.build_model(name)
    randomize_batch_norms(model, rng)
    model.eval()
    x = rng.standard_normal((3, *zoo.MODELS[name].input_shape)).astype(np.float32)
    assert_matches(planned(model, x), reference(model, x))
    if name in ("vggish", "resnet8", "mobilenet-mini", "squeezenet-mini", "inception-mini"):
        assert steps_of(model).count("FallbackStep") <= (22 if "mobile" in name else 2)
    if name in ("lenet5", "convnetjs"):  # the Flatten taken into the first Linear
        assert "FlattenStep" not in steps_of(model) and "DenseStep" in steps_of(model)


def test_batch_of_one_and_a_new_size_get_their_own_plans(rng):
    model = cn.Sequential(cn.Conv2d(3, 16, 3, padding=1), cn.ReLU(), cn.MaxPool2d(2),
                          cn.Conv2d(16, 24, 3, padding=1), cn.ReLU()).eval()
    for shape in [(1, 3, 12, 12), (5, 3, 12, 12), (2, 3, 10, 14)]:
        x = rng.standard_normal(shape).astype(np.float32)
        assert_matches(planned(model, x), reference(model, x))
    assert len(model._inference_plans) == 2  # one per per-sample shape


# -- convolutions: geometry, groups, fusions ----------------------------------------------------
@st.composite
def conv_chains(draw):
    """A conv reading a blocked input (after a first conv) or the plain image, with any
    stride, dilation, padding (asymmetric and 'same' too), channel count and kernel."""
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    mode = draw(st.sampled_from(["pair", "four", "same", "valid"]))
    if mode == "pair":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    elif mode == "four":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(4))
    else:
        padding = mode
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    return {
        "first": draw(st.booleans()), "in_channels": draw(st.integers(1, 20)),
        "out_channels": draw(st.integers(1, 40)), "kernel_size": kernel, "stride": stride,
        "dilation": dilation, "padding": padding, "bias": draw(st.booleans()),
        "height": draw(st.integers(extent[0], 13)), "width": draw(st.integers(extent[1], 17)),
        "batch": draw(st.integers(1, 3)),
        "after": draw(st.sampled_from(["none", "relu", "relu6", "bn-relu", "hardswish", "silu",
                                       "leaky", "hardsigmoid", "sigmoid", "bn"])),
    }


@contextlib.contextmanager
def on_threads(threads: int):
    """backend's thread count set to `threads` for the block."""
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        yield
    finally:
        backend.set_num_threads(previous)


@contextlib.contextmanager
def steps_split(split: bool):
    """Two threads with every step split between them (one image by output positions) when
    `split`, else no step split at all."""
    previous = backend.num_threads()
    if split:
        backend.set_num_threads(2)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(inference, "SPLIT_MIN_WORK", 0 if split else 1 << 40)
            yield
    finally:
        backend.set_num_threads(previous)


AFTER = {"none": [], "relu": [cn.ReLU], "relu6": [cn.ReLU6], "hardswish": [cn.Hardswish],
         "silu": [cn.SiLU], "leaky": [lambda: cn.LeakyReLU(0.1)], "sigmoid": [cn.Sigmoid],
         "hardsigmoid": [cn.Hardsigmoid]}


@settings(max_examples=60, deadline=None)
@example(kind="max", kernel=(2, 2), stride=(2, 2), pad=(0, 0), size=(4, 4), channels=1,
         batch=1, seed=0)  # a pool the convolution before it takes in
@given(kind=st.sampled_from(["max", "avg", "avg_exclude"]), kernel=st.tuples(
           st.integers(1, 4), st.integers(1, 4)), stride=st.tuples(st.integers(1, 3),
                                                                   st.integers(1, 3)),
       pad=st.tuples(st.integers(0, 2), st.integers(0, 2)), size=st.tuples(
           st.integers(4, 13), st.integers(4, 13)),
       channels=st.integers(1, 20), batch=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_pooling_steps_match_the_layers(kind, kernel, stride, pad, size, channels, batch, seed):
    """Max and average pooling over the blocked layout, windows clipped by padding on every
    side (PyTorch allows padding up to half the window), rectangular windows, strides and
    inputs, against the layers' forward."""
    padding = tuple(min(p, k // 2) for p, k in zip(pad, kernel, strict=True))
    pool = (cn.MaxPool2d(kernel, stride, padding, strict=False) if kind == "max" else
            cn.AvgPool2d(kernel, stride, padding, count_include_pad=kind == "avg",
                         strict=False))
    model = cn.Sequential(cn.Conv2d(3, channels, 3, padding=1), pool,
                          cn.Conv2d(channels, 5, 3, padding=1)).eval()
    x = np.random.default_rng(seed).standard_normal((batch, 3, *size)).astype(np.float32)
    assert_matches(planned(model, x), reference(model, x))
    plan = next(iter(model._inference_plans.values()))
    taken_in = [step for step in plan.steps if getattr(step, "pool", False)]
    assert steps_of(model).count("PoolStep") + len(taken_in) == 1  # a 2x2 max pool may be
    # taken into the convolution before it (test_a_max_pool_after_a_convolution_is_taken...)


@pytest.mark.parametrize("width", [blocked.SCRATCH // blocked.LANES,
                                   blocked.SCRATCH // blocked.LANES + 3])
def test_rows_wider_than_the_stack_scratch_match_the_layers(width, rng):
    """Pooling, resizing, global pooling and a gate's Mul keep a row of W x 8 items of scratch
    on the stack up to blocked.SCRATCH items, on the heap past it: both give the layers'
    answer."""
    x_in = cn.Input((3, 2, width))
    features = cn.Conv2d(3, 8, 3, padding=1)(x_in)
    pooled = cn.MaxPool2d((1, 2), strict=False)(features)
    averaged = cn.AvgPool2d((1, 3), stride=1, padding=(0, 1), strict=False)(features)
    wide = cn.Upsample(scale_factor=(1, 2), mode="bilinear")(features)
    gate = cn.GlobalAvgPool2d()(features)
    gated = cn.Mul()([averaged, gate])
    model = cn.Model(x_in, [wide, gated, gate, pooled]).eval()
    x = rng.standard_normal((1, 3, 2, width)).astype(np.float32)
    for mine, theirs in zip(planned(model, x), reference(model, x), strict=True):
        assert_matches(mine, theirs)
    steps = steps_of(model)
    assert {"PoolStep", "ResizeStep", "GlobalPoolStep", "MergeStep"} <= set(steps), steps


@st.composite
def resizes(draw):
    """Upsample and Resize layers: nearest or linear, by a scale (up or down) or to a size,
    every coordinate rule and rounding mode."""
    if draw(st.booleans()):
        mode = draw(st.sampled_from(["nearest", "bilinear"]))
        corners = draw(st.sampled_from([None, True, False])) if mode == "bilinear" else None
        if draw(st.booleans()):
            return cn.Upsample(scale_factor=draw(st.sampled_from([2, 3, (2, 1), 1.5])),
                               mode=mode, align_corners=corners)
        return cn.Upsample(size=draw(st.tuples(st.integers(2, 17), st.integers(2, 17))),
                           mode=mode, align_corners=corners)
    mode = draw(st.sampled_from(["nearest", "linear"]))
    transform = draw(st.sampled_from(COORDINATE_MODES))
    rounding = draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor",
                                     "ceil"]))
    scales = draw(st.sampled_from([(2.0, 2.0), (0.5, 2.0), (1.5, 0.75), (3.0, 1.0)]))
    return cn.Resize(scales=scales, mode=mode, coordinate_transformation_mode=transform,
                     nearest_mode=rounding)


@settings(max_examples=60, deadline=None)
@given(resize=resizes(), channels=st.integers(1, 20), size=st.tuples(
           st.integers(2, 9), st.integers(2, 9)), bordered=st.booleans(),
       batch=st.integers(1, 3), split=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_resize_steps_match_the_layers(resize, channels, size, bordered, batch, split, seed):
    """Resize / Upsample over the blocked layout (into a buffer with a border when a padded
    convolution reads it), split over two threads or not, against the layers' forward."""
    model = cn.Sequential(cn.Conv2d(3, channels, 3, padding=1), resize,
                          cn.Conv2d(channels, 4, 3, padding=1 if bordered else 0)).eval()
    out_hw = resize.output_hw(size)
    assume(not bordered or min(out_hw) >= 1)
    assume(bordered or min(out_hw) >= 3)
    x = np.random.default_rng(seed).standard_normal((batch, 3, *size)).astype(np.float32)
    with steps_split(split):
        assert_matches(planned(model, x), reference(model, x))
    assert steps_of(model) == ["ConvStep", "ResizeStep", "ConvStep"]


@settings(max_examples=60, deadline=None)
@given(kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
       extra=st.tuples(st.integers(0, 2), st.integers(0, 2)), channels=st.integers(1, 12),
       filters=st.integers(1, 20), first=st.booleans(), after=st.sampled_from(sorted(AFTER)),
       size=st.tuples(st.integers(1, 7), st.integers(1, 7)), batch=st.integers(1, 3),
       split=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_transposed_convolution_steps_match_the_layers(kernel, stride, dilation, padding, extra,
                                                       channels, filters, first, after, size,
                                                       batch, split, seed):
    """ConvTranspose2d as phases on the direct convolution: kernels, strides, dilations,
    crops and output paddings along each axis (phases without taps too), as a first layer or
    after one, an activation fused, two threads or one, against the layers' forward."""
    output_padding = tuple(e % max(s, d) for e, s, d in zip(extra, stride, dilation,
                                                            strict=True))
    try:
        up = cn.ConvTranspose2d(channels, filters, kernel, stride, padding, output_padding,
                                dilation=dilation)
        up.output_shape((channels, *size))
    except (ValueError, cn.ShapeError):
        assume(False)
    layers = ([] if first else [cn.Conv2d(3, channels, 3, padding=1)]) + [up] + [
        make() for make in AFTER[after]]
    model = cn.Sequential(*layers).eval()
    rng = np.random.default_rng(seed)
    up.bias.assign(rng.standard_normal(filters).astype(np.float32))
    x = rng.standard_normal((batch, channels if first else 3, *size)).astype(np.float32)
    with steps_split(split):
        assert_matches(planned(model, x), reference(model, x))
    assert "TransposedConvStep" in steps_of(model)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["PixelShuffle", "PixelUnshuffle", "DepthToSpace DCR",
                             "DepthToSpace CRD", "SpaceToDepth"]),
       block=st.integers(1, 3), groups=st.integers(1, 5), size=st.tuples(
           st.integers(2, 4), st.integers(2, 4)), bordered=st.booleans(), last=st.booleans(),
       batch=st.integers(1, 3), split=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_rearrange_steps_match_the_layers(kind, block, groups, size, bordered, last, batch,
                                          split, seed):
    """Channels to space and back over the blocked layout (by the table the layer's own
    forward gives), into a buffer with a border or not, as the model's output or not, split
    over two threads or not, against the layers' forward."""
    name, *mode = kind.split()
    layer = getattr(cn, name)(block, *mode)
    to_space = name in ("PixelShuffle", "DepthToSpace")
    channels = groups * block * block if to_space else groups
    hw = size if to_space else tuple(v * block for v in size)
    after = layer.output_shape((channels, *hw))[0]
    layers = [cn.Conv2d(3, channels, 3, padding=1), layer]
    if not last:
        layers.append(cn.Conv2d(after, 4, 3, padding=1 if bordered else 0))
        assume(bordered or min(layer.output_shape((channels, *hw))[1:]) >= 3)
    model = cn.Sequential(*layers).eval()
    x = np.random.default_rng(seed).standard_normal((batch, 3, *hw)).astype(np.float32)
    with steps_split(split):
        assert_matches(planned(model, x), reference(model, x))
    assert "RearrangeStep" in steps_of(model)
    plan = next(iter(model._inference_plans.values()))
    step = next(step for step in plan.steps if type(step).__name__ == "RearrangeStep")
    runner = next(rt for runners in plan._runners.values() for rt in runners)
    value = runner.buffer(step.outputs[0])
    assert not value.interior[:, -1, ..., (after % 8 or 8):].any()  # lanes past C: zero


@settings(max_examples=60, deadline=None)
@given(config=conv_chains(), seed=st.integers(0, 2**32 - 1))
def test_convolution_steps_match_the_layers(config, seed):
    rng = np.random.default_rng(seed)
    c = config["in_channels"]
    layers = [] if config["first"] else [cn.Conv2d(3, c, 3, padding=1)]
    conv = cn.Conv2d(c, config["out_channels"], config["kernel_size"], config["stride"],
                     config["padding"], config["dilation"], bias=config["bias"], strict=False)
    if conv.bias is not None:
        conv.bias.assign(rng.standard_normal(conv.bias.shape).astype(np.float32))
    layers.append(conv)
    after = config["after"]
    if after.startswith("bn"):
        layers.append(cn.BatchNorm2d(config["out_channels"]))
        after = after[3:] or "none"
    layers += [make() for make in AFTER[after]]
    model = cn.Sequential(*layers, strict=False).eval()
    randomize_batch_norms(model, rng)
    x = rng.standard_normal((config["batch"], 3 if not config["first"] else c,
                             config["height"], config["width"])).astype(np.float32)
    try:
        expected = reference(model, x)
    except (cn.ShapeError, ValueError):
        return  # a geometry the layers refuse
    assert_matches(planned(model, x), expected)
    one_by_one = x.shape[2] * x.shape[3] == 1 or expected.shape[2] * expected.shape[3] == 1
    assert "ConvStep" in steps_of(model) or one_by_one  # a 1x1 map is NumPy's matrix product


@pytest.mark.parametrize("groups, channels", [(2, 16), (4, 32), (3, 24), (12, 12), (5, 10)])
def test_grouped_and_depthwise_convolutions(groups, channels, rng):
    depthwise = groups == channels
    model = cn.Sequential(
        cn.Conv2d(3, channels, 3, padding=1), cn.ReLU(),
        cn.Conv2d(channels, channels, 3, stride=2 if depthwise else 1, padding="same",
                  groups=groups),
        cn.BatchNorm2d(channels), cn.ReLU6()).eval()
    randomize_batch_norms(model, rng)
    x = rng.standard_normal((2, 3, 11, 13)).astype(np.float32)
    assert_matches(planned(model, x), reference(model, x))
    kind = steps_of(model)[1]
    if depthwise:
        assert kind == "DepthwiseStep"
    elif channels // groups % 8 == 0:
        assert kind == "ConvStep"
    else:
        assert kind == "FallbackStep"  # groups of 8 channels or more, whole blocks only


@settings(max_examples=40, deadline=None)
@given(kernel=st.sampled_from([(3, 3), (3, 3), (3, 3), (2, 3), (5, 5)]),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       padding=st.sampled_from([(1, 1), (0, 2), (2, 1, 0, 1), "same", "valid"]),
       channels=st.integers(1, 20), after=st.sampled_from(["none", "relu6", "bn-relu", "silu"]),
       hw=st.tuples(st.integers(9, 15), st.integers(9, 18)), batch=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_depthwise_steps_match_the_layers(kernel, stride, dilation, padding, channels, after,
                                          hw, batch, seed):
    """The depthwise step (3x3 windows on their unrolled module, others on the looped one)
    against the layers, with strides, dilation, padding and fused batch norm and activations."""
    rng = np.random.default_rng(seed)
    conv = cn.Conv2d(channels, channels, kernel, stride, padding, dilation, groups=channels,
                     strict=False)
    conv.bias.assign(rng.standard_normal(conv.bias.shape).astype(np.float32))
    layers = [cn.Conv2d(3, channels, 3, padding=1), conv]
    if after.startswith("bn"):
        layers.append(cn.BatchNorm2d(channels))
        after = after[3:]
    layers += [make() for make in AFTER[after]]
    model = cn.Sequential(*layers, strict=False).eval()
    randomize_batch_norms(model, rng)
    x = rng.standard_normal((batch, 3, *hw)).astype(np.float32)
    assert_matches(planned(model, x), reference(model, x))
    assert steps_of(model)[1] == "DepthwiseStep" or channels == 1


def test_residual_blocks_fuse_the_add_and_its_activation(rng):
    body = [cn.Conv2d(16, 16, 3, padding=1), cn.BatchNorm2d(16), cn.ReLU(),
            cn.Conv2d(16, 16, 3, padding=1), cn.BatchNorm2d(16)]
    projected = cn.Residual(cn.Conv2d(16, 24, 3, stride=2, padding=1), cn.ReLU(),
                            cn.Conv2d(24, 24, 3, padding=1),
                            projection=cn.Conv2d(16, 24, 1, stride=2))
    model = cn.Sequential(cn.Conv2d(3, 16, 3, padding=1), cn.Residual(*body), cn.ReLU(),
                          projected, cn.ReLU()).eval()
    randomize_batch_norms(model, rng)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    assert_matches(planned(model, x), reference(model, x))
    assert steps_of(model) == ["ConvStep"] * 6  # every BN, ReLU and Add taken in


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", [5, 7, 9])  # positions per image not a multiple of any tile
def test_a_residual_convolution_writes_over_its_shortcut_where_nothing_reads_it_later(
        size, threads, monkeypatch, rng):
    """Its output takes the shortcut's buffer when the shortcut has no later reader (the
    borders made one), whatever its filters (24: a tile and a part of one), activation
    (hardswish: the lane-by-lane epilogue) or the tile's clamped repeats of its last position;
    not when the shortcut is also read after it, is a model output, or is the convolution's
    own input. Every output as the layers give it, twice (the buffers reused)."""
    monkeypatch.setattr(inference, "SPLIT_MIN_WORK", 0)
    x_in = cn.Input((3, size, size))
    stem = cn.ReLU()(cn.Conv2d(3, 24, 3, padding=1)(x_in))
    body = cn.Conv2d(24, 24, 3, padding=1)(cn.ReLU()(cn.Conv2d(24, 24, 3, padding=1)(stem)))
    over = cn.ReLU()(cn.Add()([body, stem]))  # written over stem
    projected = cn.Conv2d(24, 16, 1)(over)  # border 0, the output after it 1: made one
    swished = cn.Hardswish()(cn.Add()([cn.Conv2d(24, 16, 3, padding=1)(over), projected]))
    kept = cn.Conv2d(16, 16, 1)(swished)
    again = cn.Add()([cn.Conv2d(16, 16, 3, padding=1)(cn.Conv2d(16, 16, 1)(kept)), kept])
    own = cn.Add()([cn.Conv2d(16, 16, 3, padding=1)(again), again])  # its own input
    tail = cn.Conv2d(16, 8, 1)(cn.Add()([own, kept]))  # kept read after its Add
    model = cn.Model(x_in, [tail, cn.Conv2d(16, 8, 3, padding=1)(swished)]).eval()
    x = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    assert_planned_matches_twice(model, x, threads)
    plan = next(iter(model._inference_plans.values()))
    (runner,) = plan._runners[(3, threads)]
    residual_convs = [step for step in plan.steps
                      if isinstance(step, inference.ConvStep) and step.residual is not None]
    shared = [runner.buffers[step.outputs[0]] is runner.buffers[step.residual]
              for step in residual_convs]
    # stem and projected are written over; kept is read after its Add, again is the input
    # of the convolution whose shortcut it is
    assert shared == [True, True, False, False]


def test_graph_merges_concat_and_squeeze_excitation(rng):
    x_in = cn.Input((3, 11, 11))
    a = cn.ReLU()(cn.Conv2d(3, 16, 1)(x_in))
    b = cn.Conv2d(3, 8, 3, padding=1)(x_in)
    c = cn.Conv2d(3, 5, 3, padding=1)(x_in)  # the last input of a concat may be partial
    joined = cn.Concat(axis=1)([a, b, c])  # 29 channels
    pooled = cn.MaxPool2d(3, stride=1, padding=1)(joined)
    averaged = cn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)(pooled)
    gate = cn.Hardsigmoid()(cn.Conv2d(29, 29, 1)(cn.GlobalAvgPool2d()(averaged)))
    scaled = cn.Mul()([averaged, gate])
    diff = cn.Sub()([scaled, averaged])
    ratio = cn.Div()([diff, cn.Sigmoid()(averaged)])
    summed = cn.Add()([ratio, cn.AvgPool2d(3, stride=2, padding=1)(pooled)])
    head = cn.Linear(29, 4)(cn.Flatten()(cn.GlobalAvgPool2d()(summed)))
    model = cn.Model(x_in, [head, summed]).eval()
    x = rng.standard_normal((3, 3, 11, 11)).astype(np.float32)
    ours, expected = planned(model, x), reference(model, x)
    for mine, theirs in zip(ours, expected, strict=True):
        assert_matches(mine, theirs)
    kinds = steps_of(model)
    assert "ConcatStep" in kinds and kinds.count("PoolStep") == 3 and "MergeStep" in kinds


@settings(max_examples=40, deadline=None)
@given(channels=st.integers(1, 7), filters=st.integers(1, 8), kernel=st.integers(1, 5),
       dilation=st.integers(1, 2), stride_h=st.integers(1, 2), padding=st.integers(0, 2),
       width=st.integers(8, 40), height=st.integers(5, 9), batch=st.integers(1, 3),
       split=st.booleans(), after=st.sampled_from(["none", "relu", "relu6", "silu"]),
       tile=st.sampled_from([blocked.ROW_TILE, blocked.AVX2_ROW_TILE]),
       kind=st.sampled_from(["conv_rows", "conv_rows_filters"]),
       seed=st.integers(0, 2**32 - 1))
def test_row_kernel_of_a_plain_input_matches_the_layers(channels, filters, kernel, dilation,
                                                        stride_h, padding, width, height, batch,
                                                        split, after, tile, kind, seed):
    """A first layer of at most 8 filters on rows of at least the tile's 16 (8 without
    AVX-512) outputs takes the row kernel (blocked.conv_rows_source, vectorized over the
    columns or over the filters: `blocked.row_kernel`'s kinds): rows whose last 16 (8)
    columns overlap the ones before, ranges that start and end inside a row (split: one image
    over two threads), activations fused or not (SiLU takes the lane-by-lane epilogue)."""
    with mock.patch.object(blocked, "row_tile", lambda: tile), \
            mock.patch.object(blocked, "row_kernel", lambda filters: (kind, tile)):
        _row_kernel_case(channels, filters, kernel, dilation, stride_h, padding, width,
                         height, batch, split, after, seed, kind)


def _row_kernel_case(channels, filters, kernel, dilation, stride_h, padding, width, height,
                     batch, split, after, seed, kind=None):
    assume(width + 2 * padding >= (kernel - 1) * dilation + 1)  # the window fits the row
    rng = np.random.default_rng(seed)
    conv = cn.Conv2d(channels, filters, kernel, (stride_h, 1), padding, dilation, strict=False)
    conv.bias.assign(rng.standard_normal(filters).astype(np.float32))
    model = cn.Sequential(conv, *[make() for make in AFTER[after]], strict=False).eval()
    x = rng.standard_normal((batch, channels, height + (kernel - 1) * dilation,
                             width)).astype(np.float32)
    with steps_split(split):
        expected = reference(model, x)
        ours = planned(model, x)
    if expected.shape[3] < blocked.row_tile()[0]:
        return  # too narrow for it: the other tiles' case
    assert_matches(ours, expected)
    plan = next(iter(model._inference_plans.values()))
    assert plan.steps[0].kernel == (kind or blocked.row_kernel(filters)[0])


@pytest.mark.parametrize("tile", sorted(set(blocked.TILES + blocked.WIDE_TILES
                                              + blocked.HALVED_TILES)))
def test_every_tile_gives_the_layers_answer(tile, monkeypatch, rng):
    """choose_tile picks some tiles rarely (4 x 3), and some only on AVX-512: each is held to
    the layers' answer on filters that do not fill it, strides, dilation, groups and a fused
    residual."""
    pooling = (tile[0] + tile[0] % 2, tile[1])  # a tile taking a max pool in: P even
    monkeypatch.setattr(blocked, "choose_tile", lambda filters, positions, width=None,
                        pooled=False: pooling if pooled else tile)
    x_in = cn.Input((16, 10, 10))
    a = cn.MaxPool2d(2)(cn.ReLU()(cn.Conv2d(16, 32, 3, padding=1)(x_in)))
    b = cn.Conv2d(32, 16, 3, stride=2, padding=2, dilation=2)(a)
    c = cn.Conv2d(16, 16, 3, padding=1, groups=2)(b)
    out = cn.ReLU()(cn.Add()([cn.Conv2d(16, 16, 1)(c), c]))
    model = cn.Model(x_in, out).eval()
    x = rng.standard_normal((3, 16, 10, 10)).astype(np.float32)
    assert_matches(planned(model, x), reference(model, x))
    steps = steps_of(model)
    assert set(steps) - {"PoolStep"} == {"ConvStep"}
    assert steps.count("PoolStep") == (1 if 32 % (8 * tile[1]) else 0)  # whole tiles take it


@pytest.mark.parametrize("width", [16, 30])
@pytest.mark.parametrize("batch, threads", [(3, 1), (1, 2)])
def test_the_span_kernel_gives_the_layers_answer(width, batch, threads, monkeypatch, rng):
    """With AVX-512 at full rate (here on any CPU: monkeypatched) a tile of
    16 lanes of filters at column stride 1 on rows of enough columns takes the span kernel
    (blocked.conv_span_source): from a plain input (a first layer) and a blocked one, a row
    whose last tile overlaps the one before (30 columns in tiles of 16), one image split over
    two threads inside a row, 24 filters (a tile and a block), groups, dilation, a row stride
    of 2, shortcuts written over or not, activations fused (hardswish and SiLU lane by lane);
    a max pool taken in and a plain shortcut keep the tile kernel."""
    monkeypatch.setattr(kernels, "full_rate_512", lambda: True)
    monkeypatch.setattr(kernels, "wide_registers", lambda: True)
    monkeypatch.setattr(blocked, "choose_tile", lambda *args, **kwargs: (8, 2))
    monkeypatch.setattr(inference, "SPLIT_MIN_WORK", 0)
    x_in = cn.Input((3, 12, width))
    stem = cn.ReLU()(cn.Conv2d(3, 16, 3, padding=1)(x_in))
    body = cn.Conv2d(16, 16, 3, padding=1)(cn.ReLU()(cn.Conv2d(16, 16, 3, padding=1)(stem)))
    over = cn.ReLU()(cn.Add()([body, stem]))  # written over stem
    wide = cn.Hardswish()(cn.Conv2d(16, 24, 3, padding=2, dilation=2)(over))
    projected = cn.Conv2d(24, 32, 1)(wide)
    swished = cn.SiLU()(cn.Add()([cn.Conv2d(32, 32, (3, 1), padding=(1, 0), groups=2)(
        projected), projected]))
    rows = cn.Conv2d(32, 16, (2, 3), stride=(2, 1), padding=(0, 1))(swished)
    pooled = cn.MaxPool2d(2)(cn.Conv2d(16, 16, 3, padding=1)(rows))
    plain_shortcut = cn.Add()([cn.Conv2d(3, 3, 1)(x_in), x_in])
    model = cn.Model(x_in, [wide, pooled, plain_shortcut]).eval()
    x = rng.standard_normal((batch, 3, 12, width)).astype(np.float32)
    assert_planned_matches_twice(model, x, threads)
    plan = next(iter(model._inference_plans.values()))
    kinds = [(step.conv.out_channels, step.kernel, step.tile) for step in plan.steps
             if isinstance(step, inference.ConvStep)]
    span, tile = "conv_span", blocked.SPAN_TILES[0][0]
    assert kinds == [(16, span, (tile, 2, 1)), (16, span, (tile, 2, 8)), (16, span, (tile, 2, 8)),
                     (24, span, (tile, 2, 8)), (32, span, (tile, 2, 8)), (32, span, (tile, 2, 8)),
                     (16, span, (tile, 2, 8)), (16, "conv", (8, 2)), (3, "conv", (8, 2))]


def test_the_span_kernel_is_taken_where_it_pays(monkeypatch):
    """Only with AVX-512 (at full or half rate), and on rows its tiles cover with few
    columns computed twice (rows of 20 or 28 would compute 32)."""
    x_in = cn.Input((16, 4, 40))
    outs = [cn.Conv2d(16, 16, 3, padding=1)(cn.Conv2d(16, 16, (1, 41 - w))(x_in))
            for w in (16, 20, 28, 30, 32, 34, 11)]
    model = cn.Model(x_in, outs).eval()
    for wide, half in ((True, False), (True, True), (False, False)):
        monkeypatch.setattr(kernels, "wide_registers", lambda wide=wide: wide)
        monkeypatch.setattr(kernels, "full_rate_512",
                            lambda wide=wide, half=half: wide and not half)
        monkeypatch.setattr(blocked, "choose_tile", lambda *args, **kwargs: (8, 2))
        plan = inference.Plan(model, [(16, 4, 40)])
        tiles = [step.tile[0] if step.kernel == "conv_span" else None
                 for step in plan.steps if step.conv.kernel_size == (3, 3)]
        assert tiles == ([16, None, None, 16, 16, None, None] if wide else [None] * 7)


POOLED_AFTER = {"none": [], "relu": [cn.ReLU], "relu6": [cn.ReLU6],
                "hardtanh": [lambda: cn.Hardtanh(-0.5, 1.25)]}


@pytest.mark.parametrize("after", sorted(POOLED_AFTER))
@pytest.mark.parametrize("filters, size, batch, threads", [
    (32, (8, 12), 3, 1), (64, (6, 6), 1, 2), (16, (10, 4), 1, 2), (8, (2, 2), 2, 2),
    (128, (4, 8), 1, 2), (6, (28, 28), 1, 2), (8, (4, 34), 3, 1)])
def test_a_max_pool_after_a_convolution_is_taken_into_it(after, filters, size, batch, threads,
                                                        monkeypatch, rng):
    """Conv (+ activation) + MaxPool2d(2) in one step: the pooled maxima stored straight from
    the tile (or, for 6 and 8 filters on rows of 16 or more, from the row kernel's columns),
    on one or two threads (one image's rows split between them in whole pooling windows),
    the next convolution reading the pooled map."""
    monkeypatch.setattr(inference, "SPLIT_MIN_WORK", 0)
    conv = cn.Conv2d(5, filters, 3, padding=1)
    conv.bias.assign(rng.standard_normal(filters).astype(np.float32))
    model = cn.Sequential(conv, *[make() for make in POOLED_AFTER[after]], cn.MaxPool2d(2),
                          cn.Conv2d(filters, 4, 3, padding=1)).eval()
    x = rng.standard_normal((batch, 5, *size)).astype(np.float32)
    with on_threads(threads):
        ours = planned(model, x)
    assert_matches(ours, reference(model, x))
    assert steps_of(model) == ["ConvStep", "ConvStep"]
    first = next(iter(model._inference_plans.values())).steps[0]
    assert first.pool and first.kernel == (blocked.row_kernel(filters)[0] if size[1] >= 16
                                           else "conv")


@pytest.mark.parametrize("tile", sorted(blocked.POOLED_WINDOW_TILES))
@pytest.mark.parametrize("size, batch, threads", [
    ((8, 16), 2, 1), ((6, 10), 1, 2), ((4, 2), 3, 1), ((10, 6), 1, 2), ((2, 12), 2, 2)])
def test_a_pooled_tile_takes_two_rows_of_whole_windows(tile, size, batch, threads,
                                                       monkeypatch, rng):
    """Where 512-bit multiply-adds run at full rate (monkeypatched here) the 8 x 4 and 8 x 2
    tiles take a max pool in two output rows at a time (blocked._pooled_windows): rows whose
    columns fill the tile or not (a row's last windows past its end not stored), one image's
    row pairs split between two threads, a bias and ReLU, against the layers."""
    monkeypatch.setattr(kernels, "full_rate_512", lambda: True)
    monkeypatch.setattr(kernels, "wide_registers", lambda: True)
    monkeypatch.setattr(inference, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(blocked, "choose_tile", lambda *args, **kwargs: tile)
    filters = 16 * tile[1]
    conv = cn.Conv2d(16, filters, 3, padding=1)
    conv.bias.assign(rng.standard_normal(filters).astype(np.float32))
    model = cn.Sequential(cn.Conv2d(3, 16, 1), conv, cn.ReLU(), cn.MaxPool2d(2),
                          cn.Conv2d(filters, 4, 1)).eval()
    x = rng.standard_normal((batch, 3, *size)).astype(np.float32)
    with on_threads(threads):
        ours = planned(model, x)
    assert_matches(ours, reference(model, x))
    step = next(iter(model._inference_plans.values())).steps[1]
    assert step.pool and step.tile == tile and blocked.pooled_windows(step.tile)
    assert "odds[" not in blocked.conv_source(*tile)  # no row's pairs (_pooled_stores)
    # Winograd's modules, whose products never pool, keep the text they had before the windows
    assert "if pool:\n" not in blocked.conv_source(*tile, pooled=False).split("for b in")[0]
    monkeypatch.setattr(kernels, "full_rate_512", lambda: False)  # which other CPUs keep
    assert blocked.pooled_windows(tile) is None and "odds[" in blocked.conv_source(*tile)


@settings(max_examples=40, deadline=None)
@given(channels=st.integers(1, 20), filters=st.integers(1, 40), size=st.tuples(
           st.integers(1, 10), st.integers(1, 20)), kernel=st.integers(1, 3),
       after=st.sampled_from(sorted(POOLED_AFTER)), first=st.booleans(),
       batch=st.integers(1, 3), split=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_any_convolution_and_max_pool_match_the_layers(channels, filters, size, kernel, after,
                                                       first, batch, split, seed):
    """Conv (+ activation) + MaxPool2d(2) of any sizes, even or odd (taken in or not), as a
    first layer or after another, each step split between two threads (one image's rows
    too) or not split, against the layers."""
    rng = np.random.default_rng(seed)
    layers = [] if first else [cn.Conv2d(3, channels, 3, padding=1)]
    conv = cn.Conv2d(channels, filters, kernel, padding=kernel // 2)
    conv.bias.assign(rng.standard_normal(filters).astype(np.float32))
    model = cn.Sequential(*layers, conv, *[make() for make in POOLED_AFTER[after]],
                          cn.MaxPool2d(2, strict=False), strict=False).eval()
    x = rng.standard_normal((batch, channels if first else 3, 2 * size[0],
                             size[1] + 1)).astype(np.float32)
    with steps_split(split):
        ours = planned(model, x)
    assert_matches(ours, reference(model, x))
    pooled = any(getattr(step, "pool", False)
                 for step in next(iter(model._inference_plans.values())).steps)
    out_h, out_w = (length + 2 * (kernel // 2) - kernel + 1 for length in x.shape[2:])
    assert pooled == (out_h % 2 == 0 and out_w % 2 == 0)  # taken in wherever the sizes allow


@pytest.mark.parametrize("case", ["odd size", "stride 1", "padded", "3x3", "leaky", "read twice",
                                  "residual", "odd tile", "partial tile"])
def test_a_max_pool_the_kernel_cannot_take_in_stays_a_step(case, monkeypatch, rng):
    """Pools the fused stores do not cover keep their own step, with the same answer; so
    does one whose tile (from a chooser that ignores `pooled`) has an odd count of positions
    or does not divide the filters' blocks."""
    if case in ("odd tile", "partial tile"):
        tile = (7, 2) if case == "odd tile" else (4, 3)
        monkeypatch.setattr(blocked, "choose_tile", lambda *args, **kwargs: tile)
    size, channels, filters = (9, 8) if case == "odd size" else (8, 8), 16, 16
    pool = {"stride 1": lambda: cn.MaxPool2d(2, 1), "padded": lambda: cn.MaxPool2d(2, 2, 1),
            "3x3": lambda: cn.MaxPool2d(3, 2, strict=False)}.get(
        case, lambda: cn.MaxPool2d(2, strict=False))()
    x_in = cn.Input((channels, *size))
    y = cn.Conv2d(channels, filters, 3, padding=1)(x_in)
    if case == "residual":
        y = cn.Add()([y, x_in])
    y = (cn.LeakyReLU(0.1) if case == "leaky" else cn.ReLU())(y)
    out = pool(y)
    model = cn.Model(x_in, [out, y] if case == "read twice" else out).eval()
    x = rng.standard_normal((2, channels, *size)).astype(np.float32)
    ours, expected = planned(model, x), reference(model, x)
    for a, b in zip(ours if case == "read twice" else [ours],
                    expected if case == "read twice" else [expected], strict=True):
        assert_matches(a, b)
    assert "PoolStep" in steps_of(model)


def test_tiles_stay_within_a_row_where_they_can(monkeypatch):
    """With AVX-512's registers a 3x3 layer's tile holds the positions of whole rows where one
    divides the row (8 of 8 or 16, 7 of 14 or 28), else the least waste; 32 lanes a position
    where 512-bit multiply-adds run at full rate and the filters fill them, 16 where they run
    at half; without AVX-512, 6 x 2 (or 8 x 1 and 4 x 3 for filters that fill neither)."""
    monkeypatch.setattr(kernels, "wide_registers", lambda: True)
    monkeypatch.setattr(kernels, "half_rate_512", lambda: True)  # Zen 4
    assert blocked.choose_tile(64, 8 * 8, 8) == (8, 2)
    assert blocked.choose_tile(32, 16 * 16, 16) == (8, 2)
    assert blocked.choose_tile(32, 14 * 14, 14) == (7, 2)
    assert blocked.choose_tile(32, 28 * 28, 28) == (7, 2)
    assert blocked.choose_tile(32, 10 * 10, 10) == (8, 2)  # 104 positions for 100, all cross
    assert blocked.choose_tile(4, 8 * 8, 8) == (8, 1)
    # three blocks (20 filters) under a 2x2 pool: whole filter tiles, 8 x 1 (4 x 3 ran 1.2-1.3x
    # slower there); unpooled, 8 x 2 over a fourth block of zeros
    assert blocked.choose_tile(20, 16 * 16, 16, pooled=True) == (8, 1)
    assert blocked.choose_tile(24, 16 * 16, 16) == (8, 2)
    assert set(blocked.tiles()) == set(blocked.HALVED_TILES)
    monkeypatch.setattr(kernels, "half_rate_512", lambda: False)  # Zen 5, Intel's servers
    assert blocked.choose_tile(64, 8 * 8, 8) == (8, 4)
    assert blocked.choose_tile(128, 32 * 32, 32) == (8, 4)
    assert blocked.choose_tile(32, 14 * 14, 14) == (7, 4)
    assert blocked.choose_tile(16, 32 * 32, 32) == (8, 2)  # half of 32 lanes would idle
    assert blocked.choose_tile(8, 8 * 8, 8) == (8, 1)
    assert set(blocked.tiles()) == set(blocked.WIDE_TILES)
    monkeypatch.setattr(kernels, "wide_registers", lambda: False)
    assert blocked.choose_tile(64, 8 * 8, 8) == (6, 2)
    assert blocked.choose_tile(32, 14 * 14, 14) == (6, 2)
    assert blocked.choose_tile(4, 8 * 8, 8) == (8, 1)
    assert blocked.choose_tile(20, 8 * 8, 8) == (4, 3)  # 24 lanes for 20, not 32
    assert blocked.choose_tile(24, 16 * 16, 16) == (4, 3)
    assert set(blocked.tiles()) == set(blocked.TILES)


def test_only_the_avx2_tile_that_fills_every_register_is_compiled_without_runtime_unrolling(
        monkeypatch):
    """Unrolled, the 4 x 3 tile's tap loop kept an accumulator on the stack (blocked.
    _llvm_options); its module says how it was compiled, so a cached one compiled otherwise
    is never taken for it."""
    monkeypatch.setattr(kernels, "wide_registers", lambda: False)
    assert blocked._llvm_options("conv", (4, 3)) == ("-unroll-runtime=false",)
    assert blocked._llvm_options("conv", (6, 2)) == ()
    assert blocked._llvm_options("conv", (8, 1)) == ("-slp-max-reg-size=256",)
    assert blocked._llvm_options("depthwise", (9,)) == ()
    unrolled_off = "runtime loop unrolling off"
    assert unrolled_off in blocked.module_source("conv", "float32", (4, 3))
    assert unrolled_off not in blocked.module_source("conv", "float32", (6, 2))
    monkeypatch.setattr(kernels, "wide_registers", lambda: True)
    assert blocked._llvm_options("conv", (4, 3)) == ()
    assert unrolled_off not in blocked.module_source("conv", "float32", (4, 3))


def test_cpu_name_follows_numba_cpu_name(monkeypatch):
    """The half-rate table is chosen by LLVM's name of the CPU Numba compiles for: the host's,
    or the one NUMBA_CPU_NAME sets."""
    from numba.core import config

    monkeypatch.setattr(config, "CPU_NAME", "znver4")
    kernels.cpu_name.cache_clear()
    try:
        assert kernels.cpu_name() == "znver4" and kernels.half_rate_512()
        monkeypatch.setattr(config, "CPU_NAME", "znver5")
        kernels.cpu_name.cache_clear()
        assert not kernels.half_rate_512()
    finally:
        monkeypatch.undo()
        kernels.cpu_name.cache_clear()


@pytest.mark.parametrize("batch", [1, 3])
def test_concat_inputs_are_written_in_place_where_they_can_be(batch, rng):
    """A Concat's inputs that a kernel makes and only the Concat reads (a convolution's, a
    Mul's, a depthwise convolution's) are written into its buffer (no copy); one read twice,
    one that is also a model output and a nested Concat's output are copied; a padded
    convolution then reads the joined buffer's zero border."""
    x_in = cn.Input((3, 7, 7))
    a = cn.ReLU()(cn.Conv2d(3, 8, 1)(x_in))  # in place
    b = cn.Conv2d(3, 16, 3, padding=1)(x_in)  # in place
    c = cn.MaxPool2d(3, stride=1, padding=1)(cn.Conv2d(3, 8, 1)(x_in))  # in place (pool)
    shared = cn.Conv2d(3, 8, 3, padding=1)(x_in)  # also read by the head: copied
    inner = cn.Concat(axis=1)([a, b])  # nested: its own inputs in place, itself copied
    product = cn.Mul()([cn.Conv2d(3, 8, 1)(x_in), cn.Conv2d(3, 8, 3, padding=1)(x_in)])
    depthwise = cn.Conv2d(8, 8, 3, padding=1, groups=8)(cn.Conv2d(3, 8, 1)(x_in))
    joined = cn.Concat(axis=1)([inner, c, shared, product, depthwise,  # 61 channels
                                cn.Conv2d(3, 5, 1)(x_in)])
    head = cn.Conv2d(61, 6, 3, padding=1)(joined)
    side = cn.Conv2d(8, 4, 1)(shared)
    model = cn.Model(x_in, [head, side, c]).eval()  # c is an output too: copied after all
    x = rng.standard_normal((batch, 3, 7, 7)).astype(np.float32)
    for _ in range(2):  # buffers reused on the second call
        for mine, theirs in zip(planned(model, x), reference(model, x), strict=True):
            assert_matches(mine, theirs)
    plan = next(iter(model._inference_plans.values()))
    writers = {type(step).__name__ for step in plan.steps if step.outputs[0] in plan.views}
    assert len(plan.views) == 5 and writers == {"ConvStep", "MergeStep", "DepthwiseStep"}
    assert sorted(plan.shapes[v][0] for v in plan.views) == [5, 8, 8, 8, 16]


def test_a_division_leaves_no_nan_in_the_lanes_past_its_channels(rng):
    """13 channels: the lanes past them hold relu(0) = 0 in both operands, and 0 / 0 there
    must not reach the convolution after (its filters are zero there, but 0 * NaN is NaN)."""
    x_in = cn.Input((3, 6, 6))
    top = cn.Conv2d(3, 13, 3, padding=1)(x_in)
    bottom_conv = cn.Conv2d(3, 13, 3, padding=1)
    bottom_conv.bias.data = np.full(13, 50.0, np.float32)  # every real channel above 0
    ratio = cn.Div()([top, cn.ReLU()(bottom_conv(x_in))])
    model = cn.Model(x_in, cn.Conv2d(13, 4, 3, padding=1)(ratio)).eval()
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    ours = planned(model, x)
    assert np.isfinite(ours).all()
    assert_matches(ours, reference(model, x))
    assert "MergeStep" in steps_of(model)


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(["Add", "Sub", "Mul", "Div"]),
       gate=st.sampled_from(["none", "first", "second", "dense-first", "dense-second"]),
       channels=st.integers(1, 20), size=st.tuples(st.integers(3, 9), st.integers(3, 9)),
       bordered=st.booleans(), batch=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_merge_steps_match_the_layers(op, gate, channels, size, bordered, batch, seed):
    """Add, Sub, Mul and Div of two blocked tensors (one read by a padded convolution, so
    with a border, or not) or of a tensor and a per-channel gate on either side (a global
    average, or a 1x1 convolution of one: the DenseStep's rows), against the layers."""
    x_in = cn.Input((3, *size))
    y = cn.Conv2d(3, channels, 3, padding=1)(x_in)
    if gate == "none":
        other = cn.Sigmoid()(cn.Conv2d(3, channels, 1)(x_in))  # (Div: no zero divisors)
    else:
        other = cn.GlobalAvgPool2d()(y)
        if gate.startswith("dense"):
            other = cn.Conv2d(channels, channels, 1)(other)
        other = cn.Sigmoid()(other)
    pair = [other, y] if gate.endswith("first") else [y, other]
    if op == "Div" and gate.endswith("first"):
        # a divisor near zero magnifies its rounding past any fixed tolerance (a draw divided
        # by a convolution's 0.0048: 104.0752 against 104.0730): keep it in (0, 1)
        pair = [other, cn.Sigmoid()(y)]
    merged = getattr(cn, op)()(pair)
    after = cn.Conv2d(channels, 2, 3, padding=1 if bordered else 0)(merged)
    model = cn.Model(x_in, [after, merged]).eval()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, *size)).astype(np.float32)
    for mine, theirs in zip(planned(model, x), reference(model, x), strict=True):
        assert_matches(mine, theirs)
    assert "MergeStep" in steps_of(model)


@pytest.mark.parametrize("gate", ["relu", "relu6", "hardsigmoid", "sigmoid", "silu"])
def test_squeeze_excitation_gates_are_matrix_products(gate, rng):
    x_in = cn.Input((3, 6, 6))
    y = cn.Conv2d(3, 12, 3, padding=1)(x_in)
    squeezed = cn.Conv2d(12, 4, 1)(cn.GlobalAvgPool2d()(y))
    weights = cn.Conv2d(4, 12, 1)(AFTER[gate][0]()(squeezed))
    head = cn.Linear(12, 3)(cn.Flatten()(cn.GlobalAvgPool2d()(cn.Mul()([y, weights]))))
    model = cn.Model(x_in, cn.ReLU6()(head)).eval()
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    assert_matches(planned(model, x), reference(model, x))
    assert steps_of(model).count("DenseStep") == 3
    assert steps_of(model).count("FallbackStep") == (1 if gate == "silu" else 0)


# -- runners: buffers kept per batch size --------------------------------------------------------
def test_outputs_outlive_the_next_call_and_buffers_are_shared(rng):
    x_in = cn.Input((3, 8, 8))
    y = cn.MaxPool2d(2)(cn.ReLU()(cn.Conv2d(3, 8, 3, padding=1)(x_in)))
    for _ in range(3):
        y = cn.Conv2d(8, 8, 3, padding=1)(y)
    pooled = cn.GlobalAvgPool2d()(y)
    flat = cn.Flatten()(pooled)
    head = cn.Linear(8, 5)(cn.ReLU()(cn.Linear(8, 8)(flat)))
    model = cn.Model(x_in, [head, pooled, flat]).eval()
    first = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    second = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    kept = [out.copy() for out in planned(model, first)]
    again = planned(model, second)
    outs = planned(model, first)
    for mine, theirs in zip(again, reference(model, second), strict=True):
        assert_matches(mine, theirs)
    for mine, before in zip(outs, kept, strict=True):
        np.testing.assert_array_equal(mine, before)
    assert not np.shares_memory(outs[0], again[0]) and not np.shares_memory(outs[1], again[1])
    assert "DenseStep" in steps_of(model) and "FlattenStep" in steps_of(model)
    plan = next(iter(model._inference_plans.values()))
    (runner,) = plan._runners[(2, backend.num_threads())]
    assert len({id(b) for b in runner.buffers.values()}) < len(runner.buffers)  # reused


@pytest.mark.parametrize("batch", [1, 3])
def test_one_image_split_over_two_threads(batch, monkeypatch, rng):
    """Every step split in chunks the team's two threads share; the tables of chunks follow a
    change of the weights (they hold the packed filters' addresses)."""
    monkeypatch.setattr(inference, "SPLIT_MIN_WORK", 0)
    previous = backend.num_threads()
    backend.set_num_threads(2)
    try:
        for name in ("resnet8", "mobilenet-mini", "inception-mini", "unet-mini"):
            model = zoo.build_model(name)
            randomize_batch_norms(model, rng)
            model.eval()
            x = rng.standard_normal((batch, *zoo.MODELS[name].input_shape)).astype(np.float32)
            before = team._team().control[team.STATE] >> 32
            assert_matches(planned(model, x), reference(model, x))
            assert team._team().control[team.STATE] >> 32 > before, "no table reached the team"
            conv = next(layer for layer in model.modules() if isinstance(layer, cn.Conv2d))
            conv.weight.data = (conv.weight.data * 1.5).astype(np.float32)
            assert_matches(planned(model, x), reference(model, x))
    finally:
        backend.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_network_of_kernels_runs_as_one_program(threads, monkeypatch, rng):
    """lenet5 and mobilenet-mini on one image: every step (the dense layers and the
    squeeze-and-excitation gates included) in one segment, whose kernels run back to back in
    one team.Program; the answers equal the layers', before and after the weights change."""
    monkeypatch.setattr(inference, "SPLIT_MIN_WORK", 0)
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        for name in ("lenet5", "mobilenet-mini"):
            model = zoo.build_model(name)
            randomize_batch_norms(model, rng)
            model.eval()
            x = rng.standard_normal((1, *zoo.MODELS[name].input_shape)).astype(np.float32)
            assert_matches(planned(model, x), reference(model, x))
            plan = next(iter(model._inference_plans.values()))
            (runner,) = plan._runners[(1, threads)]
            kinds = [type(call).__name__ for call, _ in runner.calls]
            assert kinds == ["Segment"], kinds
            dense = [layer for layer in model.modules()
                     if isinstance(layer, (cn.Linear, cn.Conv2d))][-1]
            dense.weight.data = (dense.weight.data * -2).astype(np.float32)
            assert_matches(planned(model, x), reference(model, x))
    finally:
        backend.set_num_threads(previous)


@pytest.mark.parametrize("batch", [1, 5])
def test_each_call_reads_its_own_input(batch, rng):
    """The first convolution's padded copy of the plan's input runs in the program, which
    holds the input's address: a new array at each call (and a strided view, copied to be
    contiguous first) must be the one read."""
    model = cn.Sequential(cn.Conv2d(3, 8, 3, padding=2), cn.ReLU(), cn.MaxPool2d(2),
                          cn.Conv2d(8, 8, 3, padding=1)).eval()
    previous = backend.num_threads()
    backend.set_num_threads(2)
    try:
        for _ in range(3):
            x = rng.standard_normal((batch, 3, 10, 10)).astype(np.float32)
            assert_matches(planned(model, x), reference(model, x))
        wide = rng.standard_normal((batch, 3, 10, 20)).astype(np.float32)
        view = wide[:, :, :, ::2]
        assert_matches(planned(model, view), reference(model, np.ascontiguousarray(view)))
    finally:
        backend.set_num_threads(previous)


def _runner(model, batch, threads):
    plan = next(iter(model._inference_plans.values()))
    (runner,) = plan._runners[(batch, threads)]
    return runner


@pytest.mark.parametrize("name", ["lenet5", "resnet8", "inception-mini", "fcn-mini"])
@pytest.mark.parametrize("batch", [1, 3])
def test_calls_after_the_first_run_only_the_kernels(name, batch, monkeypatch, rng):
    """A runner whose steps are all segments (the first reading the plan's input) answers
    every call after its first from the kernels alone (`Runner._run_direct`: no step's
    Python): each call reads its own input (a strided view too), returns new arrays, and
    follows a change of the weights."""
    previous = backend.num_threads()
    backend.set_num_threads(2)
    try:
        model = zoo.build_model(name)
        randomize_batch_norms(model, rng)
        model.eval()
        shape = zoo.MODELS[name].input_shape
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        first = planned(model, x)
        runner = _runner(model, batch, 2)
        assert runner._direct is not None, "the runner recorded no direct path"
        posts = []
        for segment, _ in runner.calls:
            segment.posts = [lambda values, post=post: posts.append(post) or post(values)
                             for post in segment.posts]
        kept = first.copy()
        for _ in range(3):
            x = rng.standard_normal((batch, *shape)).astype(np.float32)
            assert_matches(planned(model, x), reference(model, x))
        assert posts == [] and _runner(model, batch, 2) is runner
        wide = rng.standard_normal((batch, shape[0], shape[1], 2 * shape[2])).astype(np.float32)
        view = wide[..., ::2]  # (not contiguous: the steps' way, which copies it first)
        assert_matches(planned(model, view), reference(model, np.ascontiguousarray(view)))
        np.testing.assert_array_equal(first, kept)  # the first answer was not written over
        conv = next(layer for layer in model.modules() if isinstance(layer, cn.Conv2d))
        conv.weight.data = (conv.weight.data * -1.5).astype(np.float32)
        assert_matches(planned(model, x), reference(model, x))
    finally:
        backend.set_num_threads(previous)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, -1])
def test_a_non_finite_input_is_refused_after_the_first_call_too(bad, where, rng):
    """The calls that skip the layers' checks (`inference.answer`) check finiteness with a
    kernel: the same one-line error as the first call's, from a Sequential and a Model."""
    x_in = cn.Input((3, 8, 8))
    graph = cn.Model(x_in, cn.ReLU()(cn.Conv2d(3, 8, 3, padding=1)(x_in))).eval()
    chain = cn.Sequential(cn.Conv2d(3, 8, 3, padding=1), cn.ReLU()).eval()
    for model, owner in ((chain, "Sequential"), (graph, "Model input 'input")):
        x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
        for _ in range(2):
            planned(model, x)
        x.reshape(-1)[where] = bad
        with pytest.raises(ValueError, match=f"{owner}.*1 NaN or infinite value"):
            with cn.no_grad():
                model.forward(x)
        x.reshape(-1)[where] = 3e38  # finite, however large
        with cn.no_grad():
            model.forward(x)


def test_a_model_that_has_a_plan_still_refuses_a_wrong_count_of_inputs(rng):
    x_in = cn.Input((3, 8, 8))
    model = cn.Model(x_in, cn.ReLU()(cn.Conv2d(3, 8, 3, padding=1)(x_in))).eval()
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    for _ in range(2):
        planned(model, x)
    for arrays in ((), (x, x)):
        with pytest.raises(TypeError, match=f"expected 1 input array.*received {len(arrays)}"):
            with cn.no_grad():
                model.forward(*arrays)


def test_the_finiteness_kernel_finds_any_non_finite_value(rng):
    finite = blocked.compiled("merge").finite
    for shape in [(1, 1, 1, 1), (1, 3, 7, 5), (2, 8, 16, 17)]:
        x = rng.standard_normal(shape).astype(np.float32)
        assert finite(x)
        assert finite(np.full(shape, np.finfo(np.float32).max, np.float32))
        for bad in (np.nan, np.inf, -np.inf):
            for at in {0, x.size // 2, x.size - 1}:
                y = x.copy()
                y.reshape(-1)[at] = bad
                assert not finite(y), (shape, bad, at)
    assert finite(np.zeros((0, 3, 4, 4), np.float32))


def test_an_output_that_views_the_input_is_taken_from_each_call(rng):
    """An output that is a view of the plan's input (a Flatten of it) is not one of the
    runner's buffers: every call reads it from that call's input."""
    x_in = cn.Input((3, 6, 6))
    conv = cn.ReLU()(cn.Conv2d(3, 8, 3, padding=1)(x_in))
    model = cn.Model(x_in, [conv, cn.Flatten()(x_in)]).eval()
    for _ in range(3):
        x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
        for mine, theirs in zip(planned(model, x), reference(model, x), strict=True):
            assert_matches(mine, theirs)
    assert _runner(model, 2, backend.num_threads())._direct is None


def _winograd_steps(model, batch, threads) -> int:
    runner = _runner(model, batch, threads)
    return sum(any(getattr(call.kernel, "__name__", "") in ("winograd_input", "winograd_band")
                   for call in bound.calls) for bound in runner.bounds)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", [
    dict(channels=32, filters=32, size=8, after="relu"),
    dict(channels=36, filters=44, size=6, after="none"),  # lanes past C and K
    dict(channels=32, filters=40, size=10, after="pool"),  # a 2x2 max pool taken in
    dict(channels=48, filters=32, size=4, after="silu"),  # an activation lane by lane
    dict(channels=32, filters=32, size=2, after="clip"),
    dict(channels=32, filters=32, size=8, after="residual"),  # + a shortcut, then ReLU
    dict(channels=32, filters=32, size=6, after="concat"),  # into its Concat's buffer
])
def test_winograd_steps_match_the_layers(case, threads, rng):
    """One image's 3x3 stride-1 convolutions of 32 channels or more run as Winograd F(2x2,
    3x3) (input tiles transformed, 16 products, transformed back with the bias, batch norm,
    shortcut, activation or pool): the layers' answer, before and after the weights change;
    a batch of two takes it on one thread, the direct kernel on two (split by images)."""
    c, k, size, after = case["channels"], case["filters"], case["size"], case["after"]
    x_in = cn.Input((c, size, size))
    first = cn.Conv2d(c, c, 1)(x_in)  # (the 3x3 layer's input blocked)
    conv = cn.Conv2d(c, k, 3, padding=1)
    y = conv(first)
    if after == "relu":
        y = cn.ReLU()(y)
    elif after == "pool":
        y = cn.MaxPool2d(2)(cn.ReLU()(y))
    elif after == "silu":
        y = cn.SiLU()(cn.BatchNorm2d(k)(y))
    elif after == "clip":
        y = cn.ReLU6()(y)
    elif after == "residual":
        y = cn.ReLU()(cn.Add()([cn.BatchNorm2d(k)(y), first]))
    elif after == "concat":
        y = cn.Concat()([y, cn.ReLU()(cn.Conv2d(c, 8, 3, padding=1)(first))])
    model = cn.Model(x_in, y)
    randomize_batch_norms(model, rng)
    model.eval()
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        for batch, expected in ((1, 1), (2, int(threads == 1 and inference.WINOGRAD_LANES))):
            x = rng.standard_normal((batch, c, size, size)).astype(np.float32)
            assert_matches(planned(model, x), reference(model, x))
            assert _winograd_steps(model, batch, threads) == expected
        conv.weight.data = (conv.weight.data * -0.5).astype(np.float32)
        x = rng.standard_normal((1, c, size, size)).astype(np.float32)
        for _ in range(2):
            assert_matches(planned(model, x), reference(model, x))
    finally:
        backend.set_num_threads(previous)


@pytest.mark.parametrize("band_bytes", [1, 64 << 10])
def test_one_image_runs_winograd_in_bands_of_tile_rows(band_bytes, monkeypatch, rng):
    """One image's Winograd goes in bands of tile rows, each band's three calls in one chunk
    (`ConvStep._winograd_bands`): one row a band where none fits blocked.WINOGRAD_BAND_BYTES, or
    bands of two rows (12 x 12: 6 tile rows; 64 KiB hold 2 of 32 + 40 channels); the layers'
    answer with a shortcut, a pool and an output into a Concat's buffer."""
    monkeypatch.setattr(blocked, "WINOGRAD_BAND_BYTES", band_bytes)
    x_in = cn.Input((32, 12, 12))
    first = cn.Conv2d(32, 32, 1)(x_in)
    y = cn.ReLU()(cn.Add()([cn.Conv2d(32, 32, 3, padding=1)(first), first]))
    pooled = cn.MaxPool2d(2)(cn.ReLU()(cn.Conv2d(32, 40, 3, padding=1)(y)))
    y = cn.Concat()([cn.Conv2d(40, 32, 3, padding=1)(pooled), pooled])
    model = cn.Model(x_in, y).eval()
    previous = backend.num_threads()
    backend.set_num_threads(2)
    try:
        for _ in range(2):
            x = rng.standard_normal((1, 32, 12, 12)).astype(np.float32)
            assert_matches(planned(model, x), reference(model, x))
        runner = _runner(model, 1, 2)
        bands = [len(call.chunks) for bound in runner.bounds for call in bound.calls
                 if getattr(call.kernel, "__name__", "") == "winograd_band"]
        assert bands == ([6, 6, 3] if band_bytes == 1 else [3, 3, 3]), bands
    finally:
        backend.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_runs_a_batch_image_by_image(threads, monkeypatch, rng):
    """A runner of several images on one thread takes Winograd, each image's three calls
    reading and writing that image's place (and its shortcut's): on one thread a batch of 5
    whole, on two a large batch's lanes (`Plan._in_lanes`: here of 2 and 1 images, the
    plan's piece made 2 images), each lane on one thread (WINOGRAD_LANES, the default)."""
    monkeypatch.setattr(inference, "WINOGRAD_LANES", True)
    x_in = cn.Input((32, 6, 6))
    first = cn.Conv2d(32, 32, 1)(x_in)
    y = cn.ReLU()(cn.Add()([cn.Conv2d(32, 32, 3, padding=1)(first), first]))
    y = cn.MaxPool2d(2)(cn.ReLU()(cn.Conv2d(32, 40, 3, padding=1)(y)))
    model = cn.Model(x_in, y).eval()
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        planned(model, np.zeros((1, 32, 6, 6), np.float32))
        next(iter(model._inference_plans.values())).piece = 2 if threads == 2 else 5
        for _ in range(2):
            x = rng.standard_normal((5, 32, 6, 6)).astype(np.float32)
            assert_matches(planned(model, x), reference(model, x))
        assert _winograd_steps(model, 5 if threads == 1 else 2, 1) == 2
    finally:
        backend.set_num_threads(previous)


@pytest.mark.parametrize("lanes", [False, True])
def test_winograd_lanes_decides_a_batch_on_one_thread(lanes, monkeypatch, rng):
    """WINOGRAD_LANES off: a batch of several images on one thread takes the direct kernel
    (`inference.WINOGRAD_LANES`); on (the default): Winograd; one image takes Winograd either
    way. The layer's answer both ways."""
    monkeypatch.setattr(inference, "WINOGRAD_LANES", lanes)
    x_in = cn.Input((32, 6, 6))
    y = cn.ReLU()(cn.Conv2d(32, 32, 3, padding=1)(cn.Conv2d(32, 32, 1)(x_in)))
    model = cn.Model(x_in, y).eval()
    previous = backend.num_threads()
    backend.set_num_threads(1)
    try:
        for batch in (1, 3):
            x = rng.standard_normal((batch, 32, 6, 6)).astype(np.float32)
            assert_matches(planned(model, x), reference(model, x))
        assert _winograd_steps(model, 1, 1) == 1
        assert _winograd_steps(model, 3, 1) == int(lanes)
    finally:
        backend.set_num_threads(previous)


def test_one_image_takes_winograd_from_the_floor_up(monkeypatch, rng):
    """Where the floor applies (CPUs with AVX-512, forced here), one image's 3x3 layer of
    fewer multiply-adds than WINOGRAD_ONE_IMAGE_MIN_MACS keeps the direct kernel and one of as
    many takes Winograd; the answers both ways. AVX2's have no floor."""
    monkeypatch.setattr(kernels, "wide_registers", lambda: True)
    for size, expected in ((8, 0), (10, 1)):  # 32 x 32 x 9 x 64 or x 100 against x 80
        monkeypatch.setattr(inference, "WINOGRAD_ONE_IMAGE_MIN_MACS", 32 * 32 * 9 * 80)
        model = cn.Sequential(cn.Conv2d(32, 32, 1), cn.Conv2d(32, 32, 3, padding=1)).eval()
        x = rng.standard_normal((1, 32, size, size)).astype(np.float32)
        assert_matches(planned(model, x), reference(model, x))
        assert _winograd_steps(model, 1, backend.num_threads()) == expected, size
    monkeypatch.setattr(kernels, "wide_registers", lambda: False)
    assert inference.one_image_winograd_floor() == 0


def test_winograd_serves_only_where_it_fits(monkeypatch, rng):
    """Not for fewer than 32 channels, odd sizes, stride 2, dilation, groups or another
    padding; and CONVNET_WINOGRAD=0 (inference.WINOGRAD) switches it off."""
    cases = [(cn.Conv2d(16, 32, 3, padding=1), 8), (cn.Conv2d(32, 32, 3, padding=2,
                                                             dilation=2), 8),
             (cn.Conv2d(32, 32, 3, padding=1, stride=2), 9),
             (cn.Conv2d(32, 32, 3, padding=1, groups=2), 8), (cn.Conv2d(32, 32, 3), 8),
             (cn.Conv2d(32, 32, 3, padding=1), 7)]
    for conv, size in cases:
        c = conv.in_channels
        model = cn.Sequential(cn.Conv2d(c, c, 1), conv).eval()
        x = rng.standard_normal((1, c, size, size)).astype(np.float32)
        assert_matches(planned(model, x), reference(model, x))
        assert _winograd_steps(model, 1, backend.num_threads()) == 0, conv
    monkeypatch.setattr(inference, "WINOGRAD", False)
    model = cn.Sequential(cn.Conv2d(32, 32, 1), cn.Conv2d(32, 32, 3, padding=1)).eval()
    planned(model, rng.standard_normal((1, 32, 8, 8)).astype(np.float32))
    assert _winograd_steps(model, 1, backend.num_threads()) == 0


def test_a_segment_without_kernels_runs_nothing_on_the_team(rng):
    """Flatten of a blocked tensor (Python), then Dropout (an alias: a segment of its own,
    with no kernel), then a Linear (BLAS): the empty segment publishes no program (one with
    no steps once waited on a step that was not there)."""
    model = cn.Sequential(cn.Conv2d(3, 8, 3, padding=1), cn.ReLU(), cn.MaxPool2d(2),
                          cn.Flatten(), cn.Dropout(0.5), cn.Linear(8 * 4 * 4, 5)).eval()
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    previous = backend.num_threads()
    backend.set_num_threads(2)
    results = []
    try:
        worker = threading.Thread(target=lambda: results.append(planned(model, x)),
                                  daemon=True)
        worker.start()
        worker.join(timeout=30)
    finally:
        backend.set_num_threads(previous)
    assert results, "the plan hung"
    assert_matches(results[0], reference(model, x))
    plan = next(iter(model._inference_plans.values()))
    (runner,) = plan._runners[(1, 2)]
    assert any(type(call).__name__ == "Segment" and not call.calls for call, _ in runner.calls)


@pytest.mark.parametrize("batch", [4, 5, 9])
def test_a_batch_split_by_whole_images_between_threads(batch, rng):
    """Two threads, every step's chunks whole images of the batch (the first half and the
    rest); every output, a plain and a blocked one, equal to the layers'."""
    x_in = cn.Input((3, 9, 9))
    features = cn.ReLU()(cn.Conv2d(3, 16, 3, padding=1)(x_in))
    pooled = cn.MaxPool2d(2, stride=2, strict=False)(features)
    head = cn.Linear(16, 5)(cn.Flatten()(cn.GlobalAvgPool2d()(pooled)))
    model = cn.Model(x_in, [head, pooled]).eval()
    x = rng.standard_normal((batch, 3, 9, 9)).astype(np.float32)
    previous = backend.num_threads()
    backend.set_num_threads(2)
    try:
        ours = planned(model, x)
    finally:
        backend.set_num_threads(previous)
    for mine, theirs in zip(ours, reference(model, x), strict=True):
        assert mine.shape[0] == batch
        assert_matches(mine, theirs)
    plan = next(iter(model._inference_plans.values()))
    half = -(-batch // 2)
    assert set(plan._runners) == {(batch, 2)}
    (runner,) = plan._runners[(batch, 2)]
    conv = runner.bounds[0].calls[-1]  # (the first copies the plain input, padded)
    ranges = [(int(g[blocked.G["b0"]]), int(g[blocked.G["b1"]])) for _, g in conv.chunks]
    assert ranges == [(0, half), (half, batch)]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_batch_runs_in_lanes_that_stay_in_the_cache(threads, monkeypatch, rng):
    """A batch of more than a piece a thread runs in lanes, `threads` times as many as pieces,
    of sizes within one image of each other, each lane through every step on one thread
    (here pieces of 1 image, the most a 3 KiB cache allows: 7 images in 7 lanes); the
    outputs, a plain and a blocked one, are the layers'."""
    monkeypatch.setattr(inference, "PIECE_BYTES", 3 << 10)
    x_in = cn.Input((3, 6, 6))
    features = cn.ReLU()(cn.Conv2d(3, 8, 3, padding=1)(x_in))  # 8 x 8 x 8 x 4 bytes blocked
    head = cn.Linear(8, 5)(cn.Flatten()(cn.GlobalAvgPool2d()(features)))
    model = cn.Model(x_in, [head, features]).eval()
    x = rng.standard_normal((7, 3, 6, 6)).astype(np.float32)
    with on_threads(threads):
        ours = planned(model, x)
    for mine, theirs in zip(ours, reference(model, x), strict=True):
        assert mine.shape[0] == 7
        assert_matches(mine, theirs)
    plan = next(iter(model._inference_plans.values()))
    assert plan.piece == 1
    assert set(plan._runners) == {(1, 1)}


@pytest.mark.parametrize("batch, threads, sizes", [
    (9, 2, [2, 2, 2, 1, 1, 1]),  # pieces of 2: a piece a thread a round, 3 rounds, 6 lanes
    (8, 2, [2, 2, 2, 2]),
    (12, 2, [2] * 6),
    (10, 2, [1] * 10),  # 6 lanes would be of two sizes; 10 (up to 12) are of one
    (9, 1, [1] * 9),  # 5 (up to 10): 9
    (13, 3, [2, 2, 2, 2, 1, 1, 1, 1, 1]),  # 9 (up to 18): none divides 13
    (14, 3, [2, 2, 2, 2, 2, 1, 1, 1, 1]),
])
def test_lanes_split_the_batch_evenly_for_the_threads(batch, threads, sizes, monkeypatch, rng):
    """Every thread gets as many lanes (whole rounds of a piece per thread, or up to twice as
    many lanes where that makes them all one size), the lanes' sizes within one image of each
    other and in order; each runs on a runner of one thread, the outputs written into their
    rows of the batch's."""
    monkeypatch.setattr(inference, "PIECE_BYTES", 3 << 10)
    model = cn.Sequential(cn.Conv2d(3, 8, 3, padding=1), cn.ReLU(), cn.Flatten()).eval()
    x = rng.standard_normal((batch, 3, 4, 4)).astype(np.float32)
    with on_threads(threads):
        planned(model, x[:1])
        plan = next(iter(model._inference_plans.values()))
        monkeypatch.setattr(plan, "piece", 2)
        seen = []
        run_on = plan._run_on

        def recorded(arrays, threads, into=None):
            seen.append((arrays[0][0, 0, 0, 0], len(arrays[0]), threads))
            return run_on(arrays, threads, into)

        monkeypatch.setattr(plan, "_run_on", recorded)
        ours = planned(model, x)
    assert_matches(ours, reference(model, x))
    seen.sort(key=lambda entry: list(x[:, 0, 0, 0]).index(entry[0]))
    assert [size for _, size, _ in seen] == sizes
    assert {on for _, _, on in seen} == {1}


class _Recording(cn.Layer):
    """A layer with no plan step of its own (its NumPy forward runs as a fallback step),
    which records whether it was asked to keep what backward needs."""

    kind = "recording"

    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x):
        self.modes.append(cn.nn.layer.grad_enabled())
        return x * 2


def test_a_layer_in_a_lane_on_a_helper_thread_keeps_no_cache(monkeypatch, rng):
    """Lanes run on the team's helper threads too, whose no_grad() is their own: a fallback
    layer there runs under no_grad like the caller's, and gives the layers' answer."""
    monkeypatch.setattr(inference, "PIECE_BYTES", 3 << 10)
    recording = _Recording()
    model = cn.Sequential(cn.Conv2d(3, 8, 3, padding=1), recording, cn.ReLU()).eval()
    x = rng.standard_normal((16, 3, 4, 4)).astype(np.float32)
    with on_threads(2):
        for _ in range(5):
            ours = planned(model, x)
    assert "FallbackStep" in steps_of(model)
    assert len(recording.modes) >= 5 * 2 and not any(recording.modes)
    assert_matches(ours, reference(model, x))


def test_an_error_in_a_lane_reaches_the_caller(monkeypatch, rng):
    monkeypatch.setattr(inference, "PIECE_BYTES", 3 << 10)

    class Failing(_Recording):
        def forward(self, x):
            if x.shape[0] and x[0, 0, 0, 0] > 100:
                raise ValueError("lane 3 failed")
            return x

    model = cn.Sequential(cn.Conv2d(3, 8, 3, padding=1), Failing(), cn.ReLU()).eval()
    with cn.no_grad():
        model[0].bias.assign(np.zeros(8, np.float32))
        model[0].weight.assign(np.zeros((8, 3, 3, 3), np.float32))
        model[0].weight.data[0, 0, 1, 1] = 1.0
    x = np.zeros((16, 3, 4, 4), np.float32)
    x[6, 0, 0, 0] = 1000.0
    with on_threads(2), pytest.raises(ValueError, match="lane 3 failed"):
        planned(model, x)


@pytest.mark.parametrize("channels", [3, 11, 16])
@pytest.mark.parametrize("split", [False, True])
def test_blocked_outputs_are_written_into_the_whole_batch(channels, split, monkeypatch, rng):
    """A blocked output (a partial last block, a border for the padded convolution that also
    reads it) comes out plain, each piece's images written by the compiled unblocking into
    its rows of the batch's output, split over two threads or not; a fresh array per call."""
    monkeypatch.setattr(inference, "PIECE_BYTES", 3 << 10)
    x_in = cn.Input((3, 5, 6))
    features = cn.ReLU()(cn.Conv2d(3, channels, 3, padding=1)(x_in))
    after = cn.Conv2d(channels, 4, 3, padding=1)(features)
    model = cn.Model(x_in, [features, after]).eval()
    x = rng.standard_normal((9, 3, 5, 6)).astype(np.float32)
    with steps_split(split):
        ours = planned(model, x)
        again = planned(model, x + 1)
    for mine, theirs in zip(ours, reference(model, x), strict=True):
        assert mine.flags.c_contiguous and mine.dtype == np.float32
        assert_matches(mine, theirs)
    for mine, theirs in zip(again, reference(model, x + 1), strict=True):
        assert_matches(mine, theirs)
    assert not any(np.shares_memory(a, b) for a in ours for b in again)


@pytest.mark.parametrize("in_lanes", [False, True])
def test_concurrent_calls_get_their_own_buffers(in_lanes, monkeypatch, rng):
    """Two threads calling one model at once (a server): each call its own runners, whether
    its batch runs whole or in lanes (then the call that has the team's helpers shares its
    lanes with them and the other runs its own on its thread)."""
    if in_lanes:
        monkeypatch.setattr(inference, "PIECE_BYTES", 3 << 10)
    model = small_model().eval()
    batch = 9 if in_lanes else 2
    xs = [rng.standard_normal((batch, 3, 8, 8)).astype(np.float32) for _ in range(2)]
    expected = [reference(model, x) for x in xs]
    failures = []

    def work(index):
        for _ in range(30):
            with cn.no_grad():
                out = model.forward(xs[index])
            if not np.allclose(out, expected[index], atol=1e-4):
                failures.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    with on_threads(2):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures
    plan = next(iter(model._inference_plans.values()))
    assert all(count == 1 for _, count in plan._runners) == in_lanes


# -- when weights change ---------------------------------------------------------------------------
def small_model():
    return cn.Sequential(cn.Conv2d(3, 16, 3, padding=1), cn.BatchNorm2d(16), cn.ReLU(),
                         cn.MaxPool2d(2), cn.Conv2d(16, 8, 3, padding=1), cn.ReLU(),
                         cn.Flatten(), cn.Linear(8 * 4 * 4, 3))


@pytest.mark.parametrize("change", ["optimizer", "load_state_dict", "assign_data",
                                    "mark_changed", "train_eval", "batchnorm_buffers",
                                    "reset_parameters", "astype_round_trip"])
def test_any_weight_update_repacks_the_filters(change, rng):
    model = small_model().eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    before = planned(model, x)
    conv = model.layers[0]
    if change == "optimizer":
        model.train()
        loss_fn = cn.CrossEntropyLoss()
        optimizer = cn.SGD(model.parameters(), lr=0.5)
        loss_fn.forward(model.forward(x), np.array([0, 1]))
        model.backward(loss_fn.backward())
        optimizer.step()
        model.eval()
    elif change == "load_state_dict":
        other = small_model()
        model.load_state_dict(other.state_dict())
    elif change == "assign_data":
        conv.weight.data = conv.weight.data * 2
    elif change == "mark_changed":
        conv.weight.data[...] *= -1
        conv.weight.mark_changed()
    elif change == "train_eval":
        conv.weight.data[...] *= 3  # in place, unannounced: an eval() switch repacks anyway
        model.train()
        model.eval()
    elif change == "batchnorm_buffers":
        bn = model.layers[1]
        model.load_state_dict({**model.state_dict(),
                               "1.running_mean": np.full(16, 0.5, np.float32)})
        assert bn.running_mean[0] == 0.5
    elif change == "reset_parameters":
        conv.reset_parameters()
    elif change == "astype_round_trip":
        model.astype(np.float64)
        for param in model.parameters():
            param.data = param.data * 1.5
        model.astype(np.float32)
    after = planned(model, x)
    assert not np.allclose(after, before)
    assert_matches(after, reference(model, x))


def test_eval_of_a_model_in_eval_mode_keeps_the_packed_filters(rng):
    model = small_model().eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    planned(model, x)
    plan = next(iter(model._inference_plans.values()))
    packed = plan.steps[0].filters
    model.eval()  # as a serving loop or the benchmark does before every batch
    planned(model, x)
    assert plan.steps[0].filters is packed
    model.train()
    model.eval()
    planned(model, x)
    assert plan.steps[0].filters is not packed  # a real switch repacks


def test_training_lets_go_of_the_plans_buffers_and_eval_makes_them_again(monkeypatch, rng):
    """train() drops the plans' runners and hands the freed memory back (once, and only when
    there was something to drop, and only once their buffers are gone: no reference cycle
    through the kernel calls that view them keeps them); eval() runs make them again."""
    import weakref

    trims, buffers = [], []

    def trim():
        trims.append([buffer() for buffer in buffers])

    monkeypatch.setattr(cn.nn.layer, "return_freed_memory", trim)
    model = cn.Sequential(small_model())  # a plan of the inner model's too, by running it
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    model.eval()
    before = planned(model, x)
    planned(model.layers[0], x)
    plans = [plan for module in model.modules()
             for plan in module.__dict__.get("_inference_plans", {}).values()]
    assert len(plans) == 2 and all(plan._runners for plan in plans)
    buffers += [weakref.ref(buffer.data) for plan in plans for kept in plan._runners.values()
                for rt in kept for buffer in rt.buffers.values() if buffer.data.base is None]
    model.eval()  # no switch: the buffers stay
    assert all(plan._runners for plan in plans)
    model.train()
    assert not any(plan._runners for plan in plans)
    assert len(trims) == 1 and len(trims[0]) >= 2 and all(b is None for b in trims[0])
    model.eval()
    model.train()  # nothing was run: nothing to hand back
    assert len(trims) == 1
    model.eval()
    assert_matches(planned(model, x), before)
    assert plans[0]._runners


def test_a_weight_update_in_another_model_keeps_this_plan(rng):
    model = small_model().eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    planned(model, x)
    plan = next(iter(model._inference_plans.values()))
    packed = plan.steps[0].filters
    other = small_model()
    other.layers[0].weight.data = other.layers[0].weight.data + 1
    planned(model, x)
    assert plan.steps[0].filters is packed  # checked, found unchanged, not repacked


# -- when no plan is taken ------------------------------------------------------------------------
def test_training_and_recorded_gradients_never_take_a_plan(rng):
    model = small_model()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    model.forward(x)  # training mode
    model.eval()
    model.forward(x)  # eval, recording gradients (Grad-CAM does)
    with cn.no_grad():
        model.train()
        model.forward(x)  # no_grad in training mode: batch statistics
    assert not model.__dict__.get("_inference_plans")


def test_float64_models_and_switched_off_kernels_run_the_layers(rng):
    model = small_model().eval()
    x = rng.standard_normal((2, 3, 8, 8))
    with cn.no_grad():
        model.astype(np.float64).forward(x)
    assert not model.__dict__.get("_inference_plans")
    model.astype(np.float32)
    previous = kernels._enabled
    kernels.set_enabled(False)
    try:
        with cn.no_grad():
            model.forward(x.astype(np.float32))
    finally:
        kernels.set_enabled(previous)
    assert not model.__dict__.get("_inference_plans")


def test_small_work_does_not_load_the_kernels(monkeypatch, rng):
    monkeypatch.setattr(inference, "MIN_LOAD_MACS", 10**12)
    monkeypatch.setattr(blocked, "_modules", {})
    model = small_model().eval()
    with cn.no_grad():
        model.forward(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    assert not blocked._modules


def test_repeated_small_calls_load_the_kernels(monkeypatch, rng):
    """One image at a time in a loop (a server): the first calls run the layers, then the
    plan loads the kernels and serves the rest, with the layers' answer."""
    monkeypatch.setattr(inference, "MIN_LOAD_MACS", 10**12)
    monkeypatch.setattr(blocked, "_modules", {})
    model = small_model().eval()
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    with cn.no_grad():
        for _ in range(2 * inference.SMALL_CALLS_BEFORE_LOAD):  # batches of two: no count
            model.forward(np.concatenate([x, x]))
        first = [model.forward(x) for _ in range(inference.SMALL_CALLS_BEFORE_LOAD)]
        assert not blocked._modules
        later = model.forward(x)
    assert blocked._modules
    np.testing.assert_allclose(later, first[0], rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(first[0], other) for other in first[1:])


def test_small_work_takes_a_plan_once_the_kernels_are_loaded(monkeypatch, rng):
    model = small_model().eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    planned(model, x)  # loads the kernels (the fixture lets any size do it)
    monkeypatch.setattr(inference, "MIN_LOAD_MACS", 10**12)
    other = small_model().eval()
    planned(other, x[:1])  # a new model, one small image: the loaded kernels serve it


def test_kept_tensors_take_the_layers(rng):
    """Model.forward(keep=...) shows inner tensors (activation maps): no plan then."""
    x_in = cn.Input((3, 8, 8))
    y = cn.ReLU()(cn.Conv2d(3, 8, 3, padding=1)(x_in))
    model = cn.Model(x_in, y).eval()
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    with cn.no_grad():
        model.forward(x, keep=(1,))
    assert model.kept and not model.__dict__.get("_inference_plans")


def test_the_container_kinds_the_plans_rely_on():
    # convnet.nn.inference tells containers apart by kind, so that it need not import them.
    from convnet.nn import inference

    assert (cn.Sequential.kind, cn.Residual.kind, cn.Model.kind) == (
        inference.SEQUENTIAL, inference.RESIDUAL, inference.GRAPH)
    x = cn.Input((3, 8, 8))
    branch = cn.Sequential(cn.Conv2d(3, 8, 3, padding=1),
                           cn.Residual(cn.Sequential(cn.Conv2d(8, 8, 3, padding=1), cn.ReLU())))
    model = cn.Model(x, cn.Concat(axis=1)([branch(x), cn.Conv2d(3, 8, 1)(x)]))
    leaves = [type(node.layer).__name__ for node in inference.flatten(model).nodes]
    assert sorted(leaves) == ["Concat", "Conv2d", "Conv2d", "Conv2d", "ReLU", "_ResidualAdd"]


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 19), channels=st.integers(1, 12), size=st.integers(1, 3),
       outs=st.sampled_from([1, 3, 10, 16, 17, 40, 70]),
       after=st.sampled_from(["none", "relu", "relu6", "sigmoid"]), split=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_dense_steps_match_the_layers(batch, channels, size, outs, after, split, seed):
    """Linear after a Flatten of a blocked tensor on the compiled kernel: images eight at a
    time (outputs in tiles of 32, layers of more than 16; without AVX-512 six at a time, tiles
    of 16: `blocked.dense_wide_tile`), four at a time (tiles of 16), then one by one (tiles of
    16 for narrow layers, else 64), activations fused; split between two threads by images, or
    one image by outputs."""
    rng = np.random.default_rng(seed)
    model = cn.Sequential(cn.Conv2d(3, channels, 3, padding=1), cn.Flatten(),
                          cn.Linear(channels * size * size, outs),
                          *[make() for make in AFTER[after]]).eval()
    model[2].bias.assign(rng.standard_normal(outs).astype(np.float32))
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    with steps_split(split):
        assert_matches(planned(model, x), reference(model, x))
    assert "DenseStep" in steps_of(model)


def test_a_first_layer_that_is_a_matrix_product_reads_the_plain_input(rng):
    """A 1x1 convolution on 1x1 maps as a model's first layer: a matrix product of the plain
    input (its step once took the empty list of steps before it for a Flatten to read)."""
    model = cn.Sequential(cn.Conv2d(3, 4, 1), cn.ReLU()).eval()
    x = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    assert_matches(planned(model, x), reference(model, x))
    assert steps_of(model) == ["DenseStep"]


@settings(max_examples=300, deadline=None)
@given(in_h=st.integers(1, 12), kernel=st.integers(1, 5), stride=st.integers(1, 3),
       dilation=st.integers(1, 3), pad_top=st.integers(0, 6), pad_bottom=st.integers(0, 6),
       per_row=st.integers(1, 3))
def test_a_row_tap_table_lists_the_kernel_rows_that_read_the_image(
        in_h, kernel, stride, dilation, pad_top, pad_bottom, per_row):
    """For each output row, the taps (kernel row by kernel row) whose input row is inside the
    image, counted one by one; None only where every row reads every kernel row."""
    span = (kernel - 1) * dilation + 1
    out_h = (in_h + pad_top + pad_bottom - span) // stride + 1
    assume(out_h >= 1)
    table = blocked.row_tap_table(in_h, out_h, kernel, stride, dilation, pad_top, per_row)
    inside = [[0 <= i * stride - pad_top + u * dilation < in_h for u in range(kernel)]
              for i in range(out_h)]
    if table is None:
        assert all(all(row) for row in inside)
        return
    assert table.shape == (out_h, 2)
    for (first, last), row in zip(table.tolist(), inside, strict=True):
        kept = [u for u in range(kernel) if row[u]]
        assert (first, last) == ((kept[0] * per_row, (kept[-1] + 1) * per_row) if kept
                                 else (first, first))
    # both ends never grow as the rows go down (a tile of several rows takes the union)
    assert (np.diff(table[:, 0]) <= 0).all() and (np.diff(table[:, 1]) <= 0).all()


@pytest.mark.parametrize("span", [False, True])
@pytest.mark.parametrize("batch, threads", [(2, 1), (1, 2)])
def test_rows_over_the_border_skip_its_taps_and_give_the_layers_answer(
        span, batch, threads, monkeypatch, rng):
    """Output rows whose window hangs over the image's top or bottom run only the taps of the
    kernel rows inside it (blocked.row_tap_table), in the tile, span and row kernels: padding
    past the kernel (rows that read no pixel: the bias alone), dilation, a row stride of 2,
    rows narrower than a tile (a tile's positions on several rows), a shortcut written over,
    a pool taken in, one image split between two threads; every output as the layers give it."""
    monkeypatch.setattr(kernels, "full_rate_512", lambda: span)
    if span:
        monkeypatch.setattr(kernels, "wide_registers", lambda: True)
    monkeypatch.setattr(blocked, "choose_tile", lambda *args, **kwargs: (8, 2 if span else 4))
    monkeypatch.setattr(inference, "SPLIT_MIN_WORK", 0)
    x_in = cn.Input((1, 8, 16))
    first = cn.ReLU()(cn.Conv2d(1, 6, 5, padding=2)(x_in))  # plain input, 6 filters: rows
    wide = cn.Conv2d(6, 16, 3, padding=1)(first)
    beyond = cn.Conv2d(16, 16, 3, padding=(3, 1))(wide)  # rows 0 and 11 read no pixel
    dilated = cn.ReLU()(cn.Add()([cn.Conv2d(16, 16, 3, padding=2, dilation=2)(beyond), beyond]))
    strided = cn.Conv2d(16, 16, 4, stride=2, padding=1)(dilated)
    narrow = cn.Conv2d(16, 24, (5, 6), padding=(2, 0))(strided)  # 3 columns a row
    pooled = cn.MaxPool2d(2)(cn.Conv2d(16, 16, 3, padding=1)(dilated))
    model = cn.Model(x_in, [narrow, pooled]).eval()
    for module in model.modules():  # a bias that shows where a row reads no pixel
        if isinstance(module, cn.Conv2d):
            module.bias.data[...] = rng.standard_normal(module.bias.data.shape)
    x = rng.standard_normal((batch, 1, 8, 16)).astype(np.float32)
    assert_planned_matches_twice(model, x, threads)
    plan = next(iter(model._inference_plans.values()))
    convs = [step for step in plan.steps if isinstance(step, inference.ConvStep)]
    assert all(step.row_table is not None for step in convs)
    assert convs[0].kernel == blocked.row_kernel(6)[0]  # the first layer's 6 filters
    assert {step.kernel for step in convs[1:]} == ({"conv_span", "conv"} if span else {"conv"})
    assert convs[2].row_table[0].tolist() == [convs[2].row_table[0][0]] * 2  # no taps


@pytest.mark.parametrize(("wide", "full_rate", "expected"), [
    (True, False, ["conv_rows_filters"] * 2),  # Zen 4's kind: over the filters
    (True, True, ["conv_rows", "conv_rows_filters"]),  # full rate: a whole block of 8
    (False, False, ["conv_rows"] * 2),  # AVX2: its own source, over the filters
])
def test_which_row_kernel_a_first_layer_takes(wide, full_rate, expected, monkeypatch):
    """`blocked.row_kernel` by CPU, for 6 and 8 filters."""
    monkeypatch.setattr(kernels, "wide_registers", lambda: wide)
    monkeypatch.setattr(kernels, "full_rate_512", lambda: full_rate)
    assert [blocked.row_kernel(filters)[0] for filters in (6, 8)] == expected
