"""Resize (ONNX) and Upsample (PyTorch): values and gradients against F.interpolate over
configurations drawn by hypothesis, against the loop oracle for every coordinate and rounding
mode, against onnx.reference on fixed cases, centred differences, shapes and errors.

Tolerances: PyTorch parity at engine_checks.assert_close (float32 both sides, rtol 1e-5,
atol 2e-6 x max(1, max|torch|)); nearest values must be equal. 200 draws of Upsample against
PyTorch (nearest and bilinear, sizes or integer and non-integer scale factors), 150 of Resize
against the oracle (float64, 1e-12).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's own alias
from engine_checks import ATOL, RTOL, assert_close, check_gradients, leaf
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.core import reference
from convnet.core.arithmetic import ReceptiveField
from convnet.nn.resize import COORDINATE_MODES, NEAREST_MODES, torch_nearest_index

torch.set_num_threads(1)
seeds = st.integers(0, 2**32 - 1)
# Scale factors with integer, short decimal and arbitrary values: the decimal ones put
# x / scale_factor on or next to integers, where PyTorch's float32 index arithmetic decides.
scale_values = st.one_of(st.integers(1, 4).map(float), st.sampled_from(
    [0.5, 0.6, 0.7, 1.3, 1.5, 1.7, 2.1, 2.5, 2.75, 3.3]),
    st.floats(0.25, 4.0, allow_nan=False))


@st.composite
def upsample_configs(draw):
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    align = draw(st.sampled_from([None, False, True])) if mode == "bilinear" else None
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 11)),
             draw(st.integers(1, 11)))
    config = {"mode": mode, "align_corners": align}
    if draw(st.booleans()):
        size = (draw(st.integers(1, 23)), draw(st.integers(1, 23)))
        config["size"] = size if size[0] != size[1] or draw(st.booleans()) else size[0]
    else:
        scales = (draw(scale_values), draw(scale_values))
        assume(all(int(np.floor(n * s)) >= 1 for n, s in zip(shape[2:], scales, strict=True)))
        config["scale_factor"] = scales if scales[0] != scales[1] else scales[0]
        config["recompute_scale_factor"] = draw(st.sampled_from([None, True]))
    return config, shape


@settings(max_examples=200, deadline=None)
@given(drawn=upsample_configs(), seed=seeds)
def test_upsample_matches_torch(drawn, seed):
    config, shape = drawn
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    layer = cn.Upsample(**config)
    out = layer.forward(x)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx = layer.backward(dy)

    tx = leaf(x)
    ty = F.interpolate(tx, **config)
    ty.backward(torch.from_numpy(dy))
    if config["mode"] == "nearest":
        np.testing.assert_array_equal(out, ty.detach().numpy())
    assert_close(out, ty, "output")
    # An input pixel's gradient sums every output it feeds (168 for 1x1 -> 21x8) in another
    # order than PyTorch's: each value within the parity tolerance of PyTorch's, or as close
    # to the float64 answer as PyTorch's float32 one (within twice its error)
    exact = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    F.interpolate(exact, **config).backward(torch.from_numpy(dy.astype(np.float64)))
    theirs, exact = tx.grad.numpy(), exact.grad.numpy()
    near_torch = np.abs(dx - theirs) <= RTOL * np.abs(theirs) + ATOL * max(
        1.0, float(np.abs(theirs).max(initial=0.0)))
    near_exact = np.abs(dx - exact) <= 2 * np.abs(theirs - exact)
    assert (near_torch | near_exact).all(), "input gradient"
    assert layer.output_shape(shape[1:]) == out.shape[1:]


def test_torch_nearest_index_on_a_float32_edge():
    # 17 / 1.7 = 10, but float32(17) * float32(1 / 1.7) lands just below it: PyTorch reads 9.
    exact = np.floor(np.arange(34) / 1.7).astype(int)
    ours = torch_nearest_index(20, 34, 1.7)
    theirs = F.interpolate(torch.arange(20.0).reshape(1, 1, 1, 20), scale_factor=(1, 1.7))
    np.testing.assert_array_equal(ours, theirs[0, 0, 0].numpy().astype(int))
    # and at twice the length PyTorch halves the index whatever the scale factor says
    np.testing.assert_array_equal(torch_nearest_index(4, 8, 2.1), [0, 0, 1, 1, 2, 2, 3, 3])
    assert exact[6] == 3 and torch_nearest_index(4, 8, 2.1)[6] == 3


@st.composite
def resize_configs(draw):
    mode = draw(st.sampled_from(["nearest", "linear"]))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 9)),
             draw(st.integers(1, 9)))
    config = {"mode": mode,
              "coordinate_transformation_mode": draw(st.sampled_from(COORDINATE_MODES)),
              "nearest_mode": draw(st.sampled_from(NEAREST_MODES))}
    if draw(st.booleans()):
        config["size"] = (draw(st.integers(1, 19)), draw(st.integers(1, 19)))
    else:
        scales = (draw(scale_values), draw(scale_values))
        assume(all(int(np.floor(n * s)) >= 1 for n, s in zip(shape[2:], scales, strict=True)))
        config["scales"] = scales
    return config, shape


@settings(max_examples=150, deadline=None)
@given(drawn=resize_configs(), seed=seeds)
# 0.6 is 0.59999999999999998: 7 -> 4 columns put column 0 at 0.49999999999999997, and
# round_prefer_ceil reads column 0 (the float form of half_pixel_symmetric made it 0.5)
@example(drawn=({"mode": "nearest", "coordinate_transformation_mode": "half_pixel_symmetric",
                 "nearest_mode": "round_prefer_ceil", "scales": (1.0, 0.6)}, (1, 1, 1, 7)),
         seed=0)
def test_resize_matches_the_loop_oracle(drawn, seed):
    config, shape = drawn
    x = np.random.default_rng(seed).standard_normal(shape)
    layer = cn.Resize(**config)
    out = layer.forward(x)
    expected = reference.resize2d(x, out.shape[2:], config["mode"],
                                  config["coordinate_transformation_mode"],
                                  config["nearest_mode"], config.get("scales"))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def _onnx_resize(x, mode, transform, nearest_mode, size=None, scales=None):
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    if scales is not None:
        inputs, init = ["x", "", "scales"], helper.make_tensor("scales", TensorProto.FLOAT, [4],
                                                                [1, 1, *scales])
    else:
        inputs, init = ["x", "", "", "sizes"], helper.make_tensor("sizes", TensorProto.INT64,
                                                                   [4], [*x.shape[:2], *size])
    node = helper.make_node("Resize", inputs, ["y"], mode=mode, nearest_mode=nearest_mode,
                            coordinate_transformation_mode=transform)
    graph = helper.make_graph(
        [node], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("transform", ["half_pixel", "pytorch_half_pixel", "align_corners",
                                       "asymmetric", "half_pixel_symmetric"])
@pytest.mark.parametrize("mode, nearest_mode", [
    ("nearest", "round_prefer_floor"), ("nearest", "round_prefer_ceil"), ("nearest", "floor"),
    ("nearest", "ceil"), ("linear", "round_prefer_floor")])
@pytest.mark.parametrize("hw, target", [
    ((4, 5), {"size": (8, 3)}), ((5, 3), {"size": (7, 11)}), ((6, 6), {"scales": (2.0, 0.5)}),
    ((3, 4), {"scales": (3.0, 2.0)})])
def test_resize_matches_onnx_reference(transform, mode, nearest_mode, hw, target, rng):
    x = rng.standard_normal((1, 2, *hw)).astype(np.float32)
    ours = cn.Resize(**target, mode=mode, coordinate_transformation_mode=transform,
                     nearest_mode=nearest_mode).forward(x)
    theirs = _onnx_resize(x, mode, transform, nearest_mode, target.get("size"),
                          target.get("scales"))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rows, out_rows, nearest_mode", [(6, 2, "floor"), (9, 3, "floor"),
                                                       (9, 15, "ceil")])
def test_half_pixel_symmetric_sizes_on_a_whole_source_row(rows, out_rows, nearest_mode, rng):
    """Sizes whose source positions fall exactly on rows (6 -> 2: rows 1 and 4), where floor
    and ceil see any rounding: the layer, the loop oracle (the sizes' own ratio, exactly) and
    ONNX's reference evaluator read the same rows (a hypothesis draw found the oracle reading
    row 0 with the float 2/6 taken as exact)."""
    x = rng.standard_normal((1, 1, rows, 3)).astype(np.float32)
    config = {"size": (out_rows, 3), "mode": "nearest", "nearest_mode": nearest_mode,
              "coordinate_transformation_mode": "half_pixel_symmetric"}
    ours = cn.Resize(**config).forward(x)
    oracle = reference.resize2d(x, (out_rows, 3), "nearest", "half_pixel_symmetric",
                                nearest_mode)
    theirs = _onnx_resize(x, "nearest", "half_pixel_symmetric", nearest_mode, (out_rows, 3))
    np.testing.assert_array_equal(ours, oracle)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("layer", [
    lambda: cn.Upsample(scale_factor=2), lambda: cn.Upsample(size=(3, 7)),
    lambda: cn.Upsample(scale_factor=(1.5, 0.5), mode="bilinear"),
    lambda: cn.Upsample(size=(9, 4), mode="bilinear", align_corners=True),
    lambda: cn.Resize(scales=(0.6, 1.7), mode="nearest",
                      coordinate_transformation_mode="half_pixel_symmetric"),
    lambda: cn.Resize(size=(2, 8), mode="linear",
                      coordinate_transformation_mode="pytorch_half_pixel")],
    ids=["nearest-x2", "nearest-size", "bilinear-scales", "bilinear-corners", "resize-nearest",
         "resize-linear"])
def test_gradients_match_centred_differences(layer, rng):
    check_gradients(layer(), rng.standard_normal((2, 3, 5, 6)), rng)


def test_bilinear_doubling_worked_example():
    # half_pixel: output j reads input (j + 0.5) / 2 - 0.5, clamped: 0, 0.25, 0.75, 1
    x = np.array([[[[0.0, 4.0]]]], np.float32)
    out = cn.Upsample(scale_factor=(1, 2), mode="bilinear").forward(x)
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 1.0, 3.0, 4.0])
    corners = cn.Upsample(size=(1, 4), mode="bilinear", align_corners=True).forward(x)
    np.testing.assert_allclose(corners[0, 0, 0], [0.0, 4 / 3, 8 / 3, 4.0], rtol=1e-6)


def test_nearest_backward_sums_the_copies_and_skips_unread_pixels():
    up = cn.Upsample(scale_factor=2)
    up.forward(np.zeros((1, 1, 2, 2), np.float32))
    np.testing.assert_array_equal(up.backward(np.ones((1, 1, 4, 4), np.float32)),
                                  np.full((1, 1, 2, 2), 4.0))
    down = cn.Upsample(size=(1, 2))  # reads rows 0 and columns 0, 2 of a 3x4 input
    down.forward(np.zeros((1, 1, 3, 4), np.float32))
    dx = down.backward(np.array([[[[1.0, 2.0]]]], np.float32))
    np.testing.assert_array_equal(dx[0, 0], [[1, 0, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_shapes_reprs_and_summary():
    assert cn.Upsample(scale_factor=2).output_shape((3, 5, 7)) == (3, 10, 14)
    assert cn.Upsample(scale_factor=1.5).output_shape((3, 5, 7)) == (3, 7, 10)
    assert cn.Upsample(size=(4, 6)).output_shape((3, 5, 7)) == (3, 4, 6)
    assert cn.Resize(scales=(0.5, 2)).output_shape((1, 5, 3)) == (1, 2, 6)
    assert repr(cn.Upsample(scale_factor=2)) == "Upsample(scale_factor=2.0)"
    assert repr(cn.Upsample(size=5, mode="bilinear", align_corners=False)) == (
        "Upsample(size=5, mode='bilinear', align_corners=False)")
    assert repr(cn.Resize(size=(2, 3), mode="linear")) == "Resize(size=(2, 3), mode='linear')"
    model = cn.Sequential(cn.Conv2d(1, 2, 3, padding=1), cn.Upsample(scale_factor=2),
                          input_shape=(1, 4, 4))
    assert model[1].name == "up1"
    assert model.output_shape((1, 4, 4)) == (2, 8, 8)
    assert "up1 (Upsample)" in str(cn.summarize(model, (1, 4, 4)))


def test_errors_say_what_to_do():
    with pytest.raises(cn.ShapeError, match=r"scale 0.3 turns the input height 3 into "
                                            r"floor\(3 \* 0.3\) = 0 pixels"):
        cn.Upsample(scale_factor=0.3).output_shape((1, 3, 9))
    with pytest.raises(ValueError, match="give size or scale_factor"):
        cn.Upsample()
    with pytest.raises(ValueError, match="only one of size and scale_factor"):
        cn.Upsample(size=4, scale_factor=2)
    with pytest.raises(ValueError, match="align_corners can only be set with mode='bilinear'"):
        cn.Upsample(scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="mode must be 'nearest' or 'bilinear'"):
        cn.Upsample(scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="coordinate_transformation_mode must be one of"):
        cn.Resize(size=2, coordinate_transformation_mode="tf_crop_and_resize")
    with pytest.raises(ValueError, match="exactly one of size and scales"):
        cn.Resize()
    with pytest.raises(TypeError, match=r"size must be an int or an \(h, w\) pair"):
        cn.Upsample(size=2.5)
    with pytest.raises(ValueError, match="expected a 4-D array"):
        cn.Upsample(scale_factor=2).forward(np.zeros((2, 3), np.float32))


# -- receptive fields ---------------------------------------------------------------------------

def _resize_chain(rng):
    """Convs, pools and whole-factor resizes along the height (width 1 stays 1)."""
    layers = []
    for _ in range(rng.integers(1, 5)):
        pick = rng.random()
        if pick < 0.35:
            kernel = int(rng.integers(1, 5))
            layers.append(cn.Conv2d(1, 1, (kernel, 1), (int(rng.integers(1, 3)), 1),
                                    (int(rng.integers(0, kernel)), 0)))
        elif pick < 0.75:
            factor = int(rng.integers(2, 5))
            mode = str(rng.choice(["nearest", "bilinear"]))
            layers.append(cn.Upsample(scale_factor=(factor, 1), mode=mode))
        elif pick < 0.9:
            mode = str(rng.choice(["nearest", "linear"]))
            rule = str(rng.choice(["half_pixel", "asymmetric", "tf_half_pixel_for_nn"]))
            layers.append(cn.Resize(scales=(0.5, 1), mode=mode,
                                    coordinate_transformation_mode=rule))
        else:
            layers.append(cn.AvgPool2d((2, 1), (2, 1)))
    return layers


def test_whole_factor_resizes_give_the_exact_receptive_field():
    # Chains of convs, pools and whole-factor resizes (nearest and bilinear, up by 2-4, down by
    # 2): for every output row away from the borders (where padding and clamping reach), the
    # first and last input rows whose value changes it (a one-hot input row per sample, weights
    # 1, biases 0, interpolation weights positive) are the window_on_input's first and last.
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(150):
        layers = _resize_chain(rng)
        model = cn.Sequential(*layers, strict=False).astype(np.float64)
        rows = 40
        try:
            out_rows = model.build((1, rows, 1))[1]
        except cn.ShapeError:
            continue
        for name, param in model.named_parameters():
            param.data[...] = 0.0 if name.endswith("bias") else 1.0
        with cn.no_grad():
            response = model.forward(np.eye(rows).reshape(rows, 1, rows, 1))[:, 0, :, 0]
        field = model.receptive_field(ReceptiveField(), (1, rows, 1))
        for row in range(out_rows):
            reached = np.nonzero(response[:, row])[0]
            top, _, height, _ = field.window_on_input(row, 0)
            if len(reached) and top > 0 and top + height < rows:
                assert (reached.min(), reached.max()) == (top, top + height - 1), (layers, row)
                checked += 1
    assert checked > 1500


def test_half_pixel_symmetric_keeps_whole_source_positions_whole():
    """7 columns -> 3 at scale 0.5: sources 1, 3 and 5 exactly (ONNX's literal formula gave
    1.0000000000000002 in float64, and nearest_mode='ceil' then read column 2); the exact
    loop oracle and onnxruntime read column 1."""
    from convnet.nn.resize import source_positions

    assert source_positions(3, 7, 0.5, "half_pixel_symmetric").tolist() == [1.0, 3.0, 5.0]
    x = np.arange(14, dtype=np.float32).reshape(1, 1, 2, 7)
    layer = cn.Resize(scales=(0.5, 0.5), mode="nearest",
                      coordinate_transformation_mode="half_pixel_symmetric", nearest_mode="ceil")
    assert layer.forward(x).tolist() == [[[[8.0, 10.0, 12.0]]]]
