"""Generated ONNX graphs (hypothesis) of the operators added for graph import, across their
attributes: each imported model matches onnxruntime within 1e-4, or the import refuses it
with a one-line reason the test expects."""

import numpy as np
import pytest
from exchange_helpers import assert_close, ort_session
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import convnet as cn

pytest.importorskip("onnxruntime")
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def model(nodes, shape, inits=None, opset=17, outputs=("y",)):
    graph = helper.make_graph(
        nodes, "generated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return proto


def matches(proto, shape, seed=0):
    imported = cn.onnx.from_onnx(proto)
    x = np.random.default_rng(seed).normal(size=(2, *shape)).astype(np.float32)
    session = ort_session(proto)
    expected = session.run(None, {"x": x})
    ours = imported.forward(x)
    for a, b in zip(ours if isinstance(ours, tuple) else [ours], expected, strict=True):
        assert_close(a, b)
    return imported


@SETTINGS
@given(mode=st.sampled_from(["nearest", "linear"]),
       transform=st.sampled_from(["half_pixel", "pytorch_half_pixel", "align_corners",
                                  "asymmetric", "half_pixel_symmetric"]),
       nearest=st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]),
       by_size=st.booleans(), out=st.tuples(st.integers(1, 11), st.integers(1, 11)),
       scales=st.tuples(st.sampled_from([0.5, 0.75, 1.0, 1.5, 2.0, 3.0]),
                        st.sampled_from([0.5, 1.0, 2.0, 2.5])),
       hw=st.tuples(st.integers(2, 7), st.integers(2, 7)))
def test_resize(mode, transform, nearest, by_size, out, scales, hw):
    shape = (2, *hw)
    inits = {"roi": np.array([], np.float32)}
    if by_size:
        inits["sizes"] = np.array([2, 2, *out], np.int64)
        inputs = ["x", "roi", "", "sizes"]
    else:
        assume(all(int(n * s) >= 1 for n, s in zip(hw, scales, strict=True)))
        inits["scales"] = np.array([1, 1, *scales], np.float32)
        inputs = ["x", "roi", "scales"]
    node = helper.make_node("Resize", inputs, ["y"], mode=mode,
                            coordinate_transformation_mode=transform, nearest_mode=nearest)
    proto = model([node], shape, inits, opset=19)
    try:
        matches(proto, shape)
    except AssertionError:
        # onnxruntime computes source positions in float32: a position that is a whole number
        # (x_original = 1 for 3 -> 1 pixels, half_pixel_symmetric) can land just below it and
        # floor to the pixel before. Then convnet must give what ONNX's own reference
        # implementation gives, and onnxruntime must be the one that differs from it.
        from onnx.reference import ReferenceEvaluator

        x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
        reference = ReferenceEvaluator(proto).run(None, {"x": x})[0]
        assert_close(cn.onnx.from_onnx(proto).forward(x), reference)
        assert not np.allclose(ort_session(proto).run(None, {"x": x})[0], reference)


@SETTINGS
@given(kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 2)] * 4), extra=st.tuples(*[st.integers(0, 2)] * 2),
       group=st.sampled_from([1, 2]), bias=st.booleans(),
       auto_pad=st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
       hw=st.tuples(st.integers(2, 6), st.integers(2, 6)))
def test_conv_transpose(kernel, strides, dilations, pads, extra, group, bias, auto_pad, hw):
    rng = np.random.default_rng(0)
    extra = tuple(min(e, s - 1) for e, s in zip(extra, strides, strict=True))  # ORT's rule
    inits = {"W": rng.normal(0, 0.5, (4, 6 // group, *kernel)).astype(np.float32)}
    inputs = ["x", "W"]
    if bias:
        inits["B"] = rng.normal(0, 0.5, 6).astype(np.float32)
        inputs.append("B")
    attrs = {"strides": list(strides), "dilations": list(dilations), "group": group,
             "output_padding": list(extra), "auto_pad": auto_pad}
    if auto_pad == "NOTSET":
        attrs["pads"] = list(pads)
        full = [strides[i] * (hw[i] - 1) + extra[i] + dilations[i] * (kernel[i] - 1) + 1
                for i in range(2)]
        assume(all(full[i] - pads[i] - pads[i + 2] >= 1 for i in range(2)))
    elif auto_pad != "VALID":
        assume(dilations == (1, 1) and extra == (0, 0))
    node = helper.make_node("ConvTranspose", inputs, ["y"], **attrs)
    try:
        matches(model([node], (4, *hw), inits), (4, *hw))
    except cn.onnx.OnnxImportError as error:  # pads that would need a bigger output_padding
        assert "more than convnet's output_padding allows" in str(error)


@SETTINGS
@given(mode=st.sampled_from(["constant", "reflect", "edge", "wrap"]),
       pads=st.tuples(*[st.integers(-1, 3)] * 4), value=st.sampled_from([0.0, 1.5]),
       opset=st.sampled_from([11, 19]), hw=st.tuples(st.integers(4, 7), st.integers(4, 7)))
def test_pad(mode, pads, value, opset, hw):
    assume(mode != "wrap" or opset >= 19)
    if mode != "constant":
        pads = tuple(max(p, 0) for p in pads)
    top, left, bottom, right = pads
    inits = {"pads": np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)}
    inputs = ["x", "pads"]
    if mode == "constant":
        inits["value"] = np.array(value, np.float32)
        inputs.append("value")
    node = helper.make_node("Pad", inputs, ["y"], mode=mode)
    matches(model([node], (2, *hw), inits, opset=opset), (2, *hw))


@SETTINGS
@given(op=st.sampled_from(["Softmax", "LogSoftmax"]), opset=st.sampled_from([11, 13]),
       axis=st.integers(-4, 3), shape=st.sampled_from([(3, 4, 5), (2, 1, 3), (6, 1, 1)]))
def test_softmax_any_axis_and_the_old_coerced_meaning(op, opset, axis, shape):
    node = helper.make_node(op, ["x"], ["y"], axis=axis)
    proto = model([node], shape, opset=opset)
    if axis % 4 == 0:
        with pytest.raises(cn.onnx.OnnxImportError, match="batch axis"):
            cn.onnx.from_onnx(proto)
        return
    matches(proto, shape)


@SETTINGS
@given(perm=st.permutations([1, 2, 3]), groups=st.sampled_from([1, 2, 3]),
       split=st.sampled_from([[2, 4], [1, 2, 3], [6]]), axis=st.sampled_from([1, 2, 3]))
def test_reshape_transpose_split_slice(perm, groups, split, axis):
    """A channel shuffle, a transpose, a split and slices of the pieces."""
    c = 6
    nodes = [
        helper.make_node("Reshape", ["x", "grouped"], ["g"]),
        helper.make_node("Transpose", ["g"], ["t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "flat"], ["s"]),
        helper.make_node("Transpose", ["s"], ["p"], perm=[0, *perm]),
    ]
    shape = (c, 6, 6)
    inits = {"grouped": np.array([0, groups, c // groups, 6, 6], np.int64),
             "flat": np.array([0, c, 6, 6], np.int64), "split": np.array(split, np.int64),
             "starts": np.array([1], np.int64), "ends": np.array([-1], np.int64),
             "axes": np.array([axis % 3 + 1], np.int64)}  # another axis than the split's
    names = [f"part{i}" for i in range(len(split))]
    nodes.append(helper.make_node("Split", ["p", "split"], names, axis=axis))
    outputs = [f"y{i}" for i in range(len(split))]
    for name, out in zip(names, outputs, strict=True):
        nodes.append(helper.make_node("Slice", [name, "starts", "ends", "axes"], [out]))
    matches(model(nodes, shape, inits, outputs=outputs), shape)


@SETTINGS
@given(op=st.sampled_from(["Add", "Sub", "Mul", "Div"]), constant_first=st.booleans(),
       constant=st.sampled_from([(), (1,), (5,), (3, 1, 1), (1, 3, 1, 1), (4, 5), (3, 4, 5)]),
       clip=st.tuples(st.sampled_from([None, -1.0, 0.0]), st.sampled_from([None, 1.0, 6.0])))
def test_arithmetic_with_constants_and_clip(op, constant_first, constant, clip):
    rng = np.random.default_rng(2)
    value = rng.uniform(0.5, 2.0, constant).astype(np.float32)
    pair = ["c", "r"] if constant_first else ["r", "c"]
    nodes = [helper.make_node("Sigmoid", ["x"], ["r"]),  # never 0: a divisor too
             helper.make_node(op, pair, ["a"])]
    inits = {"c": value}
    inputs = ["a"]
    for name, bound in zip(("lo", "hi"), clip, strict=True):
        inputs.append(name if bound is not None else "")
        if bound is not None:
            inits[name] = np.array(bound, np.float32)
    nodes.append(helper.make_node("Clip", inputs, ["y"]))
    matches(model(nodes, (3, 4, 5), inits), (3, 4, 5))


@SETTINGS
@given(op=st.sampled_from(["ReduceMean", "ReduceMax", "ReduceSum"]),
       axes=st.lists(st.integers(1, 3), min_size=1, max_size=3, unique=True),
       keepdims=st.integers(0, 1), opset=st.sampled_from([13, 18]))
def test_reductions(op, axes, keepdims, opset):
    inits = {}
    attrs = {"keepdims": keepdims}
    inputs = ["x"]
    if opset >= 18 or op == "ReduceSum":
        inits["axes"] = np.array(axes, np.int64)
        inputs.append("axes")
    else:
        attrs["axes"] = axes
    assume(keepdims or len(axes) < 3)
    matches(model([helper.make_node(op, inputs, ["y"], **attrs)], (3, 4, 5), inits,
                  opset=opset), (3, 4, 5))
