"""Pad and ZeroPad2d: F.pad parity over configurations drawn by hypothesis, the loop oracle,
onnx.reference's Pad, centred differences, receptive fields and errors.

The layers only copy values, so forward is compared exactly; gradients sum a few border
values and are compared at engine_checks.assert_close. 150 draws against PyTorch (constant
with negative amounts, reflect, replicate, circular).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's own alias
from engine_checks import assert_close, check_gradients, leaf
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.core import reference

torch.set_num_threads(1)


@st.composite
def pad_configs(draw):
    mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 7)),
             draw(st.integers(1, 7)))
    h, w = shape[2:]
    low = -3 if mode == "constant" else 0
    limits = {"reflect": (w - 1, w - 1, h - 1, h - 1), "circular": (w, w, h, h)}.get(
        mode, (4, 4, 4, 4))
    padding = tuple(draw(st.integers(low, max(low, limit))) for limit in limits)
    assume(w + padding[0] + padding[1] >= 1 and h + padding[2] + padding[3] >= 1)
    # PyTorch refuses crops that together remove more than the input (narrow() < 0), even
    # where padding on the other side leaves an output; ours pads, then crops.
    assume(w + min(0, padding[0]) + min(0, padding[1]) >= 0)
    assume(h + min(0, padding[2]) + min(0, padding[3]) >= 0)
    value = draw(st.sampled_from([0.0, 1.5])) if mode == "constant" else 0.0
    return padding, mode, value, shape


@settings(max_examples=150, deadline=None)
@given(config=pad_configs(), seed=st.integers(0, 2**32 - 1))
def test_pad_matches_torch_and_the_oracle(config, seed):
    padding, mode, value, shape = config
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    layer = cn.Pad(padding, mode, value)
    out = layer.forward(x)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx = layer.backward(dy)
    tx = leaf(x)
    ty = F.pad(tx, padding, mode, value) if mode == "constant" else F.pad(tx, padding, mode)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(out, ty.detach().numpy())
    np.testing.assert_array_equal(out, reference.pad2d(x, padding, mode, value))
    assert_close(dx, tx.grad, "input gradient")
    assert layer.output_shape(shape[1:]) == out.shape[1:]


@pytest.mark.parametrize("mode, onnx_mode", [("constant", "constant"), ("reflect", "reflect"),
                                             ("replicate", "edge"), ("circular", "wrap")])
def test_pad_matches_onnx_reference(mode, onnx_mode, rng):
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    left, right, top, bottom = (2, 1, 3, 0)
    pads = [0, 0, top, left, 0, 0, bottom, right]  # ONNX: all begins, then all ends
    node = helper.make_node("Pad", ["x", "pads"], ["y"], mode=onnx_mode)
    graph = helper.make_graph(
        [node], "pad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("pads", TensorProto.INT64, [8], pads)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(cn.Pad((left, right, top, bottom), mode).forward(x), expected)


@pytest.mark.parametrize("layer", [
    lambda: cn.ZeroPad2d((1, 2, 0, 3)), lambda: cn.Pad((-1, 2, 1, -2), value=0.5),
    lambda: cn.Pad((2, 1, 3, 2), "reflect"), lambda: cn.Pad((3, 0, 1, 4), "replicate"),
    lambda: cn.Pad((4, 1, 2, 3), "circular")],
    ids=["zero", "crop", "reflect", "replicate", "circular"])
def test_gradients_match_centred_differences(layer, rng):
    check_gradients(layer(), rng.standard_normal((2, 3, 4, 5)), rng)


def test_reflect_gradient_folds_the_borders_back():
    pad = cn.Pad((2, 2, 0, 0), "reflect")  # a b c -> c b | a b c | b a
    pad.forward(np.zeros((1, 1, 1, 3), np.float32))
    dx = pad.backward(np.ones((1, 1, 1, 7), np.float32))
    np.testing.assert_array_equal(dx[0, 0, 0], [2, 3, 2])


def test_receptive_field_starts_earlier_by_the_padding():
    model = cn.Sequential(cn.ZeroPad2d((2, 0, 1, 0)), cn.Conv2d(1, 1, 3),
                          input_shape=(1, 6, 6))
    plain = cn.Sequential(cn.Conv2d(1, 1, 3, padding=(1, 2)), input_shape=(1, 6, 6))
    field = model.receptive_field(cn.ReceptiveField(), (1, 6, 6))
    assert field == plain.receptive_field(cn.ReceptiveField(), (1, 6, 6))
    assert field.start == (0.5, -0.5)
    crop = cn.Pad((-1, 0, 0, 0)).receptive_field(cn.ReceptiveField(), (1, 4, 4))
    assert crop.start == (0.5, 1.5) and crop.size == (1, 1)


def test_shapes_reprs_and_names():
    assert cn.ZeroPad2d(2).output_shape((3, 4, 5)) == (3, 8, 9)
    assert cn.Pad((1, 0, -1, -1)).output_shape((3, 4, 5)) == (3, 2, 6)
    assert repr(cn.ZeroPad2d(1)) == "ZeroPad2d(1)"
    assert repr(cn.ZeroPad2d((1, 0, 2, 0))) == "ZeroPad2d((1, 0, 2, 0))"
    assert repr(cn.Pad(1, "reflect")) == "Pad(1, mode='reflect')"
    assert repr(cn.Pad((0, 1, 0, 1), value=-1)) == "Pad((0, 1, 0, 1), value=-1.0)"
    model = cn.Sequential(cn.ZeroPad2d(1), cn.Pad(1, "replicate"), input_shape=(1, 3, 3))
    assert [layer.name for layer in model] == ["pad1", "pad2"]


def test_errors_say_what_fits():
    with pytest.raises(cn.ShapeError, match=r"reflect padding \(3, 0\) along the width needs "
                                            r"each amount below the input width 3.*at most 2, "
                                            r"or mode 'replicate'"):
        cn.Pad((3, 0, 0, 0), "reflect").output_shape((1, 5, 3))
    with pytest.raises(cn.ShapeError, match=r"circular padding \(0, 4\) along the height would "
                                            r"wrap around the input height 3 more than once"):
        cn.Pad((0, 0, 0, 4), "circular").forward(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(cn.ShapeError, match=r"padding \(-2, -2\) crops the input height 4 to 0"):
        cn.Pad((0, 0, -2, -2)).output_shape((1, 4, 4))
    with pytest.raises(ValueError, match="negative padding .* only mode 'constant' does"):
        cn.Pad((-1, 0, 0, 0), "reflect")
    with pytest.raises(ValueError, match="mode 'replicate' takes no fill value"):
        cn.Pad(1, "replicate", value=1.0)
    with pytest.raises(TypeError, match=r"F.pad reads a pair as \(left, right\) of the width "
                                        r"only: write \(1, 2, 0, 0\)"):
        cn.ZeroPad2d((1, 2))
    with pytest.raises(ValueError, match="mode must be one of constant, reflect"):
        cn.Pad(1, "symmetric")


def test_a_crop_beyond_the_input_leaves_only_the_fill():
    # two fill rows above, then two rows cropped from the bottom: the input row goes (ONNX
    # Pad does the same; PyTorch refuses)
    out = cn.Pad((0, 0, 2, -2), value=7.0).forward(np.ones((1, 1, 1, 2), np.float32))
    np.testing.assert_array_equal(out, np.full((1, 1, 1, 2), 7.0))
