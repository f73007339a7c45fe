"""ONNX -> convnet, checked against onnxruntime: each operator and attribute variant, random
window configurations, residual graphs, models exported by PyTorch, refusals, the CLI command."""

import argparse
import re
import warnings

import numpy as np
import onnx
import pytest
from exchange_helpers import assert_close, ort_run, ort_session, real_like
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import convnet as cn
import convnet.io.onnx
from convnet.cli import onnx as commands
from convnet.core import rng as shared_rng
from convnet.io.onnx import OnnxImportError

pytest.importorskip("onnxruntime")

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_model(nodes, input_shape, inits=None, opset=17, batch="N", elem=TensorProto.FLOAT,
               input_name="x", output="y", metadata=None):
    """A one-input, one-output ONNX model around `nodes`, with `inits` as initializers."""
    inputs = [helper.make_tensor_value_info(input_name, elem, [batch, *input_shape])]
    initializers = [numpy_helper.from_array(np.asarray(value), name)
                    for name, value in (inits or {}).items()]
    graph = helper.make_graph(nodes, "test", inputs,
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what every opset used here needs, and onnxruntime reads
    if metadata:
        helper.set_model_props(model, metadata)
    return model


def check(model, shape, rng, input_shape=None):
    """convnet's import computes what onnxruntime computes, on random and image-like input."""
    imported = cn.onnx.from_onnx(model, input_shape)
    samples = [rng.normal(size=(3, *shape)).astype(np.float32)]
    if len(shape) == 3:
        samples.append(real_like(rng, 2, shape))
    for x in samples:
        assert_close(imported.forward(x), ort_run(model, x))
    return imported


def weights(rng, *shape):
    return rng.normal(0, 0.5, size=shape).astype(np.float32)


def conv_model(rng, shape, out_channels=4, kernel=(3, 3), group=1, bias=True, **attrs):
    c = shape[0]
    inits = {"W": weights(rng, out_channels, c // group, *kernel)}
    inputs = ["x", "W"]
    if bias:
        inits["B"] = weights(rng, out_channels)
        inputs.append("B")
    node = helper.make_node("Conv", inputs, ["y"], name="conv", group=group, **attrs)
    return make_model([node], shape, inits)


# -- Conv -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, options", [
    ((3, 8, 8), {}),
    ((3, 9, 10), {"strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((3, 9, 9), {"dilations": [2, 1], "pads": [2, 1, 2, 1]}),
    ((4, 7, 7), {"group": 2, "out_channels": 6}),
    ((4, 7, 7), {"group": 4, "out_channels": 4, "pads": [1, 1, 1, 1]}),
    ((3, 7, 8), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((3, 8, 8), {"auto_pad": "SAME_UPPER", "strides": [2, 2], "kernel": (4, 4)}),
    ((3, 8, 7), {"auto_pad": "SAME_LOWER", "strides": [2, 2], "kernel": (4, 2)}),
    ((3, 8, 8), {"auto_pad": "VALID", "strides": [2, 2]}),  # floors: one row and column dropped
    ((3, 6, 6), {"bias": False, "kernel_shape": [3, 3]}),
    ((3, 6, 5), {"kernel": (1, 1)}),
], ids=["plain", "stride-asymmetric-pads", "dilation", "groups", "depthwise", "same-upper",
        "same-upper-even", "same-lower", "valid-floor", "no-bias", "pointwise"])
def test_conv_variants(shape, options, rng):
    options = dict(options)
    kernel = options.pop("kernel", (3, 3))
    out_channels = options.pop("out_channels", 4)
    bias = options.pop("bias", True)
    model = conv_model(rng, shape, out_channels, kernel, bias=bias, **options)
    imported = check(model, shape, rng)
    conv = imported.layers[0]
    assert isinstance(conv, cn.Conv2d) and conv.kernel_size == kernel
    # a stride that can leave a border uncovered floors as ONNX does, at any input size
    floors = max(conv.stride) > 1 and conv.padding != "same"
    assert conv.strict is (False if floors else None)


@SETTINGS
@given(kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 2)] * 4),
       auto_pad=st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
       group=st.sampled_from([1, 2]), hw=st.tuples(st.integers(5, 10), st.integers(5, 10)))
def test_random_conv_attributes(kernel, strides, dilations, pads, auto_pad, group, hw):
    rng = np.random.default_rng(3)
    shape = (2, *hw)
    attrs = {"strides": list(strides), "dilations": list(dilations), "auto_pad": auto_pad}
    # onnxruntime's Conv refuses dilation with SAME_UPPER/SAME_LOWER (convnet computes it)
    assume(not auto_pad.startswith("SAME") or dilations == (1, 1))
    if auto_pad == "NOTSET":
        attrs["pads"] = list(pads)
    assume(all(hw[i] + 2 * max(pads) >= dilations[i] * (kernel[i] - 1) + 1 for i in range(2)))
    assume(auto_pad != "VALID" or all(hw[i] >= dilations[i] * (kernel[i] - 1) + 1
                                      for i in range(2)))
    if auto_pad == "NOTSET":
        assume(all(hw[i] + pads[i] + pads[i + 2] >= dilations[i] * (kernel[i] - 1) + 1
                   for i in range(2)))
    check(conv_model(rng, shape, 4, kernel, group=group, **attrs), shape, rng)


# -- pooling ------------------------------------------------------------------------------------
def pool_model(op, shape, **attrs):
    return make_model([helper.make_node(op, ["x"], ["y"], name="pool", **attrs)], shape)


@pytest.mark.parametrize("op, shape, attrs", [
    ("MaxPool", (2, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("MaxPool", (2, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", (2, 7, 8), {"kernel_shape": [2, 3], "pads": [1, 0, 0, 1]}),
    ("MaxPool", (2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", (2, 7, 7), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", (2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("MaxPool", (2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ("MaxPool", (2, 7, 7), {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "VALID"}),
    ("MaxPool", (2, 6, 6), {"kernel_shape": [3, 3], "storage_order": 0, "dilations": [1, 1]}),
    ("AveragePool", (2, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool", (2, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2],
                                "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", (2, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2],
                                "pads": [1, 1, 1, 1], "count_include_pad": 0}),
    ("AveragePool", (2, 7, 8), {"kernel_shape": [3, 2], "pads": [0, 1, 1, 0],
                                "count_include_pad": 1}),
    ("AveragePool", (2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1,
                                "count_include_pad": 1}),
    ("AveragePool", (2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1,
                                "count_include_pad": 0}),
    ("AveragePool", (2, 7, 7), {"kernel_shape": [2, 2], "strides": [2, 2],
                                "auto_pad": "SAME_UPPER"}),
    ("AveragePool", (2, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2],
                                "auto_pad": "SAME_LOWER", "count_include_pad": 1}),
])
def test_pool_variants(op, shape, attrs, rng):
    check(pool_model(op, shape, **attrs), shape, rng)


@SETTINGS
@given(op=st.sampled_from(["MaxPool", "AveragePool"]),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       pads=st.tuples(*[st.integers(0, 2)] * 4), ceil_mode=st.integers(0, 1),
       include_pad=st.integers(0, 1),
       auto_pad=st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
       hw=st.tuples(st.integers(4, 9), st.integers(4, 9)))
def test_random_pool_attributes_import_exactly_or_are_refused(op, kernel, strides, pads,
                                                              ceil_mode, include_pad, auto_pad,
                                                              hw):
    """Either convnet computes what onnxruntime computes, or the import names the reason."""
    rng = np.random.default_rng(5)
    shape = (2, *hw)
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "auto_pad": auto_pad}
    if auto_pad == "NOTSET":
        assume(all(p < kernel[i % 2] for i, p in enumerate(pads)))  # ONNX: pads < kernel
        assume(all(hw[i] + pads[i] + pads[i + 2] >= kernel[i] for i in range(2)))
        attrs["pads"] = list(pads)
        attrs["ceil_mode"] = ceil_mode
    else:
        assume(all(hw[i] >= kernel[i] for i in range(2)))
        # onnxruntime computes negative SAME padding when the kernel is smaller than the stride
        assume(not auto_pad.startswith("SAME") or all(k >= s for k, s in zip(kernel, strides,
                                                                              strict=True)))
    if op == "AveragePool":
        attrs["count_include_pad"] = include_pad
    model = pool_model(op, shape, **attrs)
    try:
        imported = cn.onnx.from_onnx(model)
    except OnnxImportError as error:
        assert re.search("exceeds half the kernel|convnet cannot express", str(error)), error
        return
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    assert_close(imported.forward(x), ort_run(model, x))


# -- elementwise, fully connected, shape operators ----------------------------------------------
def test_activation_chain(rng):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("LeakyRelu", ["a"], ["b"], name="leaky", alpha=0.3),
             helper.make_node("Identity", ["b"], ["c"], name="same"),
             helper.make_node("Sigmoid", ["c"], ["d"], name="sigmoid"),
             helper.make_node("Tanh", ["d"], ["e"], name="tanh"),
             helper.make_node("GlobalAveragePool", ["e"], ["y"], name="gap")]
    imported = check(make_model(nodes, (3, 5, 6)), (3, 5, 6), rng)
    assert [type(layer) for layer in imported.layers] == [
        cn.ReLU, cn.LeakyReLU, cn.Sigmoid, cn.Tanh, cn.GlobalAvgPool2d]
    assert imported.layers[1].negative_slope == 0.3
    assert imported.onnx_names == {"relu1": "relu", "lrelu1": "leaky", "sigmoid1": "sigmoid",
                                   "tanh1": "tanh", "gap1": "gap"}


@pytest.mark.parametrize("attrs, c_shape", [
    ({"transB": 1}, (5,)),
    ({"transB": 0}, (5,)),
    ({"transB": 1, "alpha": 0.5, "beta": 2.0}, (1, 5)),
    ({"transB": 1}, (1,)),
    ({"transB": 1}, ()),
    ({"transB": 0}, None),
    ({"transB": 1, "beta": 0.0}, (5,)),
])
def test_gemm_variants(attrs, c_shape, rng):
    b = weights(rng, 5, 12) if attrs["transB"] else weights(rng, 12, 5)
    inits = {"B": b}
    inputs = ["x", "B"]
    if c_shape is not None:
        inits["C"] = weights(rng, *c_shape) if c_shape else np.float32(0.7)
        inputs.append("C")
    nodes = [helper.make_node("Gemm", inputs, ["y"], name="fc", **attrs)]
    imported = check(make_model(nodes, (12,), inits), (12,), rng)
    assert (imported.layers[0].bias is None) == (c_shape is None or attrs.get("beta") == 0.0)


def test_matmul_with_and_without_bias_add(rng):
    inits = {"W1": weights(rng, 12, 6), "b1": weights(rng, 6), "W2": weights(rng, 6, 3)}
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "W1"], ["m"], name="fc1"),
             helper.make_node("Add", ["m", "b1"], ["h"], name="bias1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="fc2")]
    imported = check(make_model(nodes, (3, 2, 2), inits), (3, 2, 2), rng)
    assert imported.layers[1].bias is not None and imported.layers[3].bias is None


def test_constant_add_becomes_the_conv_bias(rng):
    inits = {"W": weights(rng, 4, 2, 3, 3), "B": weights(rng, 4), "b": weights(rng, 1, 4, 1, 1),
             "b2": weights(rng, 4, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Add", ["b", "c"], ["d"], name="bias"),
             helper.make_node("Relu", ["d"], ["e"], name="relu"),
             helper.make_node("Conv", ["e", "W2", "B"], ["f"], name="conv2"),
             helper.make_node("Add", ["f", "b2"], ["y"], name="more_bias")]
    inits["W2"] = weights(rng, 4, 4, 1, 1)
    imported = check(make_model(nodes, (2, 6, 6), inits), (2, 6, 6), rng)
    assert imported.layers[0].bias is not None
    assert imported.onnx_names["conv1"] == "conv"


@pytest.mark.parametrize("node_args, inits, shape", [
    (("Flatten", {"axis": 1}), {}, (3, 2, 2)),
    (("Flatten", {"axis": -3}), {}, (3, 2, 2)),
    (("Reshape", {}), {"s": np.array([0, -1])}, (3, 2, 2)),
    (("Reshape", {}), {"s": np.array([-1, 12])}, (3, 2, 2)),
    (("Reshape", {}), {"s": np.array([0, 12])}, (3, 2, 2)),
    (("Squeeze", {}), {"s": np.array([2, 3])}, (3, 1, 1)),
    (("Squeeze", {}), {"s": np.array([-1, -2])}, (3, 1, 1)),
])
def test_flatten_reshape_squeeze(node_args, inits, shape, rng):
    op, attrs = node_args
    inputs = ["x", *inits]
    model = make_model([helper.make_node(op, inputs, ["y"], name="flat", **attrs)], shape, inits)
    imported = check(model, shape, rng)
    assert isinstance(imported.layers[0], cn.Flatten)


def test_reshape_with_the_graphs_fixed_batch(rng):
    model = make_model([helper.make_node("Reshape", ["x", "s"], ["y"], name="r")], (3, 2, 2),
                       {"s": np.array([1, -1])}, batch=1)
    imported = cn.onnx.from_onnx(model)
    x = rng.normal(size=(1, 3, 2, 2)).astype(np.float32)
    assert_close(imported.forward(x), ort_run(model, x))
    assert imported.forward(np.zeros((4, 3, 2, 2), np.float32)).shape == (4, 12)


@pytest.mark.parametrize("opset, keepdims", [(17, 1), (17, 0), (18, 1), (18, 0)])
def test_reduce_mean_over_space_is_global_average_pooling(opset, keepdims, rng):
    inits = {}
    inputs = ["x"]
    attrs = {"keepdims": keepdims}
    if opset >= 18:
        inits["axes"] = np.array([2, 3])
        inputs.append("axes")
    else:
        attrs["axes"] = [-2, -1]
    node = helper.make_node("ReduceMean", inputs, ["y"], name="mean", **attrs)
    check(make_model([node], (3, 4, 5), inits, opset=opset), (3, 4, 5), rng)


def test_squeeze_before_opset_13_takes_an_attribute(rng):
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
             helper.make_node("Squeeze", ["g"], ["y"], name="squeeze", axes=[2, 3])]
    check(make_model(nodes, (3, 4, 4), opset=11), (3, 4, 4), rng)


# -- batch norm, dropout, softmax ----------------------------------------------------------------
def test_batch_normalization(rng):
    c = 4
    inits = {"s": rng.uniform(0.5, 1.5, c).astype(np.float32), "b": weights(rng, c),
             "m": weights(rng, c), "v": rng.uniform(0.5, 2, c).astype(np.float32)}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn",
                            epsilon=1e-3, momentum=0.8)
    imported = check(make_model([node], (c, 5, 5), inits), (c, 5, 5), rng)
    bn = imported.layers[0]
    assert bn.eps == 1e-3 and bn.momentum == pytest.approx(0.2)
    assert not bn.training


@pytest.mark.parametrize("opset, with_ratio_input, mask", [(17, True, False), (17, False, True),
                                                           (11, False, False)])
def test_dropout_is_inference_identity(opset, with_ratio_input, mask, rng):
    inits, inputs, attrs = {}, ["x"], {}
    if with_ratio_input:
        inits = {"ratio": np.array(0.25, np.float32), "training": np.array(False)}
        inputs += ["ratio", "training"]
    elif opset < 12:
        attrs["ratio"] = 0.25
    outputs = ["d", "mask"] if mask else ["d"]
    nodes = [helper.make_node("Dropout", inputs, outputs, name="drop", **attrs),
             helper.make_node("Relu", ["d"], ["y"], name="relu")]
    imported = check(make_model(nodes, (3, 4, 4), inits, opset=opset), (3, 4, 4), rng)
    assert isinstance(imported.layers[0], cn.Dropout)
    assert imported.layers[0].p == (0.25 if with_ratio_input or opset < 12 else 0.5)


@pytest.mark.parametrize("opset, axis, shape", [(13, 1, (5, 2, 3)), (17, -1, (6,)),
                                                (17, None, (6,)), (11, 1, (6,)),
                                                (11, None, (5, 1, 1)), (17, -3, (4, 2, 2))])
def test_softmax_over_the_channel_axis(opset, axis, shape, rng):
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node("Softmax", ["x"], ["y"], name="softmax", **attrs)
    check(make_model([node], shape, opset=opset), shape, rng)


# -- constants ----------------------------------------------------------------------------------
def test_weights_from_constant_nodes_and_folded_computations(rng):
    w = weights(rng, 3, 8)  # stored transposed; a Transpose node turns it into (8, 3)
    nodes = [
        helper.make_node("Constant", [], ["Wt"], name="weight",
                         value=numpy_helper.from_array(w, "Wt")),
        helper.make_node("Transpose", ["Wt"], ["W"], name="transpose", perm=[1, 0]),
        helper.make_node("Constant", [], ["b"], name="bias", value_floats=[0.1, 0.2, 0.3]),
        helper.make_node("Constant", [], ["shape"], name="shape", value_ints=[0, -1]),
        helper.make_node("Reshape", ["x", "shape"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "W"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "b"], ["y"], name="fc_bias"),
    ]
    imported = check(make_model(nodes, (2, 2, 2)), (2, 2, 2), rng)
    np.testing.assert_array_equal(imported.layers[1].weight.data, w)


# -- residual connections ---------------------------------------------------------------------
def _basic_block(rng, prefix, x, c_in, c_out, stride, nodes, inits, add_order=0):
    """conv-bn-relu-conv-bn plus the shortcut (a strided 1x1 conv when the shape changes)."""
    def conv(name, src, cin, cout, k, s, pad):
        inits[f"{name}.W"] = weights(rng, cout, cin, k, k)
        nodes.append(helper.make_node("Conv", [src, f"{name}.W"], [name], name=name,
                                      strides=[s, s], pads=[pad] * 4))
        return name

    def bn(name, src, c):
        for key, value in (("s", rng.uniform(0.5, 1.5, c)), ("b", rng.normal(0, 0.1, c)),
                           ("m", rng.normal(0, 0.1, c)), ("v", rng.uniform(0.5, 1.5, c))):
            inits[f"{name}.{key}"] = value.astype(np.float32)
        nodes.append(helper.make_node("BatchNormalization",
                                      [src, *(f"{name}.{k}" for k in "sbmv")], [name], name=name))
        return name

    h = conv(f"{prefix}conv1", x, c_in, c_out, 3, stride, 1)
    h = bn(f"{prefix}bn1", h, c_out)
    nodes.append(helper.make_node("Relu", [h], [f"{prefix}relu1"], name=f"{prefix}relu1"))
    h = conv(f"{prefix}conv2", f"{prefix}relu1", c_out, c_out, 3, 1, 1)
    h = bn(f"{prefix}bn2", h, c_out)
    shortcut = x
    if stride != 1 or c_in != c_out:
        shortcut = conv(f"{prefix}down", x, c_in, c_out, 1, stride, 0)
    pair = [h, shortcut] if add_order == 0 else [shortcut, h]
    nodes.append(helper.make_node("Add", pair, [f"{prefix}add"], name=f"{prefix}add"))
    nodes.append(helper.make_node("Relu", [f"{prefix}add"], [f"{prefix}out"],
                                  name=f"{prefix}out"))
    return f"{prefix}out"


def test_resnet_like_graph_becomes_a_graph_with_residual_adds(rng):
    nodes, inits = [], {}
    x = _basic_block(rng, "a.", "x", 3, 3, 1, nodes, inits)
    x = _basic_block(rng, "b.", x, 3, 6, 2, nodes, inits, add_order=1)
    x = _basic_block(rng, "c.", x, 6, 6, 1, nodes, inits, add_order=1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["g"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["g"], ["f"], name="flatten"))
    inits["fc.W"] = weights(rng, 4, 6)
    inits["fc.b"] = weights(rng, 4)
    nodes.append(helper.make_node("Gemm", ["f", "fc.W", "fc.b"], ["y"], name="fc", transB=1))
    imported = check(make_model(nodes, (3, 8, 8), inits), (3, 8, 8), rng)
    kinds = [type(layer).__name__ for layer in imported.layers]
    assert kinds.count("Add") == 3 and kinds.count("Conv2d") == 7  # two 3x3 each, one 1x1
    assert kinds[-3:] == ["GlobalAvgPool2d", "Flatten", "Linear"]
    assert imported.onnx_names["add2"] == "b.add"
    add2 = next(step for step in imported.steps if step.layer.name == "add2")
    sources = [imported.slot_names[s] for s in add2.inputs]
    assert sources == ["conv5", "bn4"]  # the shortcut's 1x1 conv first, as in the file


def test_nested_residuals_and_a_multi_layer_projection(rng):
    inits = {"W1": weights(rng, 2, 2, 3, 3), "W2": weights(rng, 2, 2, 1, 1),
             "P1": weights(rng, 2, 2, 1, 1), "P2": weights(rng, 2, 2, 3, 3)}
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["c1"], ["t"], name="t"),
        helper.make_node("Conv", ["t", "W2"], ["c2"], name="c2"),
        helper.make_node("Add", ["t", "c2"], ["inner"], name="inner"),  # t + f(t)
        helper.make_node("Conv", ["x", "P1"], ["p1"], name="p1"),
        helper.make_node("Relu", ["p1"], ["pr"], name="pr"),
        helper.make_node("Conv", ["pr", "P2"], ["p2"], name="p2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["inner", "p2"], ["y"], name="outer"),
    ]
    imported = check(make_model(nodes, (2, 5, 5), inits), (2, 5, 5), rng)
    assert [type(layer).__name__ for layer in imported.layers].count("Add") == 2
    assert imported.onnx_names == {"conv1": "c1", "tanh1": "t", "conv2": "c2", "add1": "inner",
                                   "conv3": "p1", "relu1": "pr", "conv4": "p2", "add2": "outer"}


# -- round trips and models from PyTorch ----------------------------------------------------------
def test_export_then_import_gives_back_the_same_model(tmp_path, rng):
    model = cn.Sequential(
        cn.Conv2d(3, 8, 3, padding=(1, 0, 2, 1)), cn.BatchNorm2d(8), cn.LeakyReLU(0.1),
        cn.Residual(cn.Conv2d(8, 8, 3, padding=1), cn.ReLU(), cn.Conv2d(8, 8, 3, padding=1)),
        cn.Residual(cn.Conv2d(8, 4, 3, stride=2, padding=1), projection=cn.Conv2d(8, 4, 1, 2)),
        cn.MaxPool2d(3, 2, padding=1), cn.AvgPool2d(3, count_include_pad=False), cn.Dropout(0.1),
        cn.Flatten(), cn.Linear(4, 5, bias=False), cn.Softmax())
    model.eval()
    path = tmp_path / "model.onnx"
    cn.onnx.export(model, path, (3, 10, 8), class_names=list("abcde"),
                   normalization={"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.2]})
    imported = cn.onnx.load(path)
    assert [type(layer).__name__ for layer in imported.layers] == [
        "Conv2d", "BatchNorm2d", "LeakyReLU", "Conv2d", "ReLU", "Conv2d", "Add", "Conv2d",
        "Conv2d", "Add", "MaxPool2d", "AvgPool2d", "Dropout", "Flatten", "Linear", "Softmax"]

    def arrays(layer):
        return [v for k, v in layer.state_dict().items() if not k.endswith("batches_tracked")]

    assert len(arrays(imported)) == len(arrays(model))
    for ours, theirs in zip(arrays(imported), arrays(model), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert imported.class_names == list("abcde")
    assert imported.normalization == {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.2]}
    assert imported.input_shape == (3, 10, 8)
    assert imported.onnx_names["conv1"] == "conv1"
    x = real_like(rng, 2, (3, 10, 8))
    assert_close(imported.forward(x), model.forward(x))
    assert imported.describe().total_params == model.num_parameters()


def _torch_export(module, shape, path, **kwargs):
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (torch.zeros(1, *shape),), str(path), dynamo=False,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, **kwargs)
        except Exception as error:  # the exporter needs packages this machine may lack
            pytest.skip(f"torch.onnx.export is not available here: {error}")
    return torch


@pytest.mark.parametrize("opset", [13, 17])
def test_models_exported_by_pytorch(opset, tmp_path, rng):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                      nn.BatchNorm2d(c_out)) if stride != 1 else None

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + (x if self.down is None else self.down(x)))

    net = nn.Sequential(
        nn.Conv2d(3, 8, 5, padding=2), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True), Block(8, 8, 1), Block(8, 16, 2),
        nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False), nn.Dropout(0.2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10), nn.LeakyReLU(0.05), nn.Linear(10, 4),
        nn.Softmax(dim=1))
    net.train()
    net(torch.randn(16, 3, 12, 12))  # running statistics away from 0 and 1
    net.eval()
    path = tmp_path / "torch.onnx"
    _torch_export(net, (3, 12, 12), path, opset_version=opset, do_constant_folding=False)
    imported = cn.onnx.load(path)
    x = real_like(rng, 3, (3, 12, 12))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(imported.forward(x), expected)
    assert_close(imported.forward(x), ort_run(path, x))
    assert sum(isinstance(layer, cn.Add) for layer in imported.layers) == 2


def test_pytorch_view_flatten_with_shape_arithmetic(tmp_path, rng):
    """x.view(x.size(0), -1) exports as Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    torch = pytest.importorskip("torch")

    class ViewNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)
            self.fc = torch.nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            h = self.conv(x)
            return self.fc(h.view(h.size(0), -1))

    path = tmp_path / "view.onnx"
    _torch_export(ViewNet().eval(), (1, 6, 6), path)
    imported = cn.onnx.load(path)
    assert [type(layer) for layer in imported.layers] == [cn.Conv2d, cn.Flatten, cn.Linear]
    x = rng.normal(size=(2, 1, 6, 6)).astype(np.float32)
    assert_close(imported.forward(x), ort_run(path, x))


def test_reshape_target_computed_from_the_batch_size(rng):
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Slice", ["s", "zero", "one"], ["n"], name="slice"),
        helper.make_node("Concat", ["n", "minus_one"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape"),
    ]
    inits = {"zero": np.array([0]), "one": np.array([1]), "minus_one": np.array([-1])}
    imported = check(make_model(nodes, (2, 3, 3), inits), (2, 3, 3), rng)
    assert isinstance(imported.layers[0], cn.Flatten)


def test_reshape_keeping_the_channels_runs_at_any_size(rng):
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape", start=0, end=2),
             helper.make_node("Concat", ["s", "minus_one"], ["t"], name="concat", axis=0),
             helper.make_node("Reshape", ["x", "t"], ["y"], name="reshape")]
    model = make_model(nodes, (2, 3, 3), {"minus_one": np.array([-1])})
    imported = check(model, (2, 3, 3), rng)
    layer = imported.layers[0]
    assert isinstance(layer, cn.Reshape) and (layer.shape, layer.start_dim) == ((-1,), 2)
    x = rng.normal(size=(2, 2, 5, 4)).astype(np.float32)
    assert imported.forward(x).shape == (2, 2, 20)


# -- metadata, shapes, side effects -------------------------------------------------------------
def test_metadata_and_input_shape_override(rng):
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv")
    model = make_model([node], ("C", "H", "W"), {"W": weights(rng, 2, 1, 3, 3)}, metadata={
        "convnet.class_names": '["a", "b"]', "author": "someone"})
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
    with pytest.raises(OnnxImportError, match=re.escape("pass input_shape=(C, H, W) to load()")):
        cn.onnx.from_onnx(model)
    imported = cn.onnx.from_onnx(model, input_shape=(1, 7, 6))
    assert imported.input_shape == (1, 7, 6)
    assert imported.class_names == ["a", "b"] and imported.normalization is None
    assert imported.metadata["author"] == "someone"
    with pytest.raises(OnnxImportError, match="does not fit input"):
        cn.onnx.from_onnx(model, input_shape=(3, 7, 6))


def test_loading_leaves_the_seeded_generator_alone(rng):
    model = conv_model(rng, (3, 6, 6))
    cn.manual_seed(11)
    expected = shared_rng.generator().random(3)
    cn.manual_seed(11)
    cn.onnx.from_onnx(model)
    np.testing.assert_array_equal(shared_rng.generator().random(3), expected)


# -- refusals ---------------------------------------------------------------------------------
def _refusal_cases():
    rng = np.random.default_rng(0)
    w = weights(rng, 2, 2, 3, 3)
    cases = {
        "unsupported-op": (make_model([helper.make_node("Hardmax", ["x"], ["y"], name="hm1")],
                                      (2, 4, 4)),
                           "node 'hm1' (Hardmax): operator Hardmax is not supported; convnet "
                           "imports Abs, Add, AveragePool, BatchNormalization"),
        "pool-dilation": (pool_model("MaxPool", (2, 6, 6), kernel_shape=[2, 2],
                                     dilations=[2, 2]),
                          "node 'pool' (MaxPool): dilations [2, 2]: convnet pools have no "
                          "dilation; supported: 2-D"),
        "pool-padding": (pool_model("MaxPool", (2, 6, 6), kernel_shape=[3, 3],
                                    pads=[2, 2, 2, 2]),
                         "padding top 2, bottom 2, left 2, right 2 exceeds half the kernel "
                         "[3, 3]: convnet pools pad at most 1 rows and 1 columns per side"),
        "pool-ceil-padding": (pool_model("MaxPool", (2, 8, 8), kernel_shape=[3, 3],
                                         strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
                              "(with ceil_mode's extra bottom/right padding) exceeds half the "
                              "kernel"),
        "avgpool-ceil-include-pad": (
            pool_model("AveragePool", (2, 7, 7), kernel_shape=[4, 4], strides=[2, 2],
                       pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
            "ceil_mode=1 with count_include_pad=1 and pads (top, bottom, left, right) "
            "[1, 1, 1, 1]: windows hanging over the bottom/right edge divide by a count "
            "convnet cannot express"),
        "gemm-transA": (make_model([helper.make_node("Gemm", ["x", "B"], ["y"], name="fc",
                                                     transA=1)], (4,), {"B": weights(rng, 3, 4)}),
                        "node 'fc' (Gemm): transA=1"),
        "gemm-data-second": (make_model([helper.make_node("Gemm", ["A", "x"], ["y"], name="fc")],
                                        (4,), {"A": weights(rng, 3, 4)}),
                             "the data must be the first input (A)"),
        "flatten-axis": (make_model([helper.make_node("Flatten", ["x"], ["y"], name="f",
                                                      axis=2)], (2, 3, 3)),
                         "node 'f' (Flatten): axis=2 (flattening the batch axis in); "
                         "supported: axis=1"),
        "reshape-across-batch": (make_model([helper.make_node("Reshape", ["x", "s"], ["y"],
                                                              name="r")],
                                            (2, 3, 3), {"s": np.array([-1, 6])}),
                                 "node 'r' (Reshape): target shape [-1, 6] for per-sample input "
                                 "(2, 3, 3) does not keep the batch axis first and whole"),
        "bn-training": (make_model([helper.make_node(
            "BatchNormalization", ["x", "s", "s", "s", "s"], ["y"], name="bn", training_mode=1)],
            (2, 3, 3), {"s": np.ones(2, np.float32)}), "node 'bn' (BatchNormalization): "
            "training_mode=1"),
        "dropout-training": (make_model([helper.make_node(
            "Dropout", ["x", "r", "t"], ["y"], name="drop")], (2, 3, 3),
            {"r": np.array(0.5, np.float32), "t": np.array(True)}),
            "training_mode true (dropout would be applied)"),
        "softmax-axis": (make_model([helper.make_node("Softmax", ["x"], ["y"], name="sm",
                                                      axis=0)], (2, 3, 3)),
                         "node 'sm' (Softmax): axis 0 (the batch axis)"),
        "softmax-old-opset": (make_model([helper.make_node("Softmax", ["x"], ["y"], name="sm",
                                                           axis=0)], (2, 3, 3), opset=11),
                              "axis 0 (the batch axis flattened in)"),
        "transpose-batch": (make_model([helper.make_node("Transpose", ["x"], ["y"], name="t",
                                                         perm=[1, 0, 2, 3])], (2, 3, 3)),
                            "node 't' (Transpose): perm [1, 0, 2, 3] moves the batch axis"),
        "shape-mismatch-add": (make_model([
            helper.make_node("Conv", ["x", "W"], ["c"], name="c", strides=[2, 2]),
            helper.make_node("Add", ["c", "x"], ["y"], name="add")], (2, 7, 7), {"W": w}),
            "node 'add' (Add): add1 (Add): shapes that do not broadcast"),
        "unknown-attribute": (make_model([helper.make_node("Relu", ["x"], ["y"], name="r",
                                                           flavour=1)], (2, 3, 3)),
                              "node 'r' (Relu): attribute(s) flavour not understood"),
        "conv-1d": (make_model([helper.make_node("Conv", ["x", "W"], ["y"], name="c")],
                               (2, 9, 9), {"W": weights(rng, 2, 2, 3)}),
                    "node 'c' (Conv): a weight of shape (2, 2, 3); only 2-D convolution"),
        "other-domain": (make_model([helper.make_node("FusedConv", ["x"], ["y"], name="fc",
                                                      domain="com.microsoft")], (2, 3, 3)),
                         "node 'fc' (FusedConv): operators of domain 'com.microsoft' are not "
                         "supported"),
        "old-opset": (make_model([helper.make_node("Relu", ["x"], ["y"])], (2, 3, 3), opset=6),
                      "opset 6 is older than convnet reads"),
        "integer-input": (make_model([helper.make_node("Relu", ["x"], ["y"])], (2, 3, 3),
                                     elem=TensorProto.INT64),
                          "input 'x' is INT64; convnet imports float32"),
        "1d-input": (make_model([helper.make_node("Relu", ["x"], ["y"])], ()),
                     "input 'x' has rank 1"),
    }
    return cases


def _formerly_refused():
    """Graphs the chain importer refused, imported now that any DAG becomes a cn.Model."""
    w = weights(np.random.default_rng(0), 2, 2, 3, 3)
    cases = {
        "three-way-fanout": make_model([
            helper.make_node("Relu", ["x"], ["a"], name="a"),
            helper.make_node("Tanh", ["x"], ["b"], name="b"),
            helper.make_node("Sigmoid", ["x"], ["c"], name="c"),
            helper.make_node("Add", ["a", "b"], ["d"], name="d"),
            helper.make_node("Add", ["d", "c"], ["y"], name="y")], (2, 3, 3)),
        "add-to-itself": make_model([helper.make_node("Add", ["x", "x"], ["y"], name="twice")],
                                    (2, 3, 3)),
        "mul-to-itself": make_model([helper.make_node("Mul", ["x", "x"], ["y"], name="sq")],
                                    (2, 3, 3)),
        "bias-without-layer": make_model([
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Add", ["r", "b"], ["y"], name="shift")], (2, 3, 3),
            {"b": np.array([0.5, -1.0, 2.0], np.float32)}),
        "broadcast-add": make_model([
            helper.make_node("Conv", ["x", "W"], ["c"], name="c", strides=[2, 2]),
            helper.make_node("GlobalAveragePool", ["c"], ["g"], name="g"),
            helper.make_node("Add", ["c", "g"], ["y"], name="add")], (2, 7, 7), {"W": w}),
        "3d-input": make_model([helper.make_node("Relu", ["x"], ["y"])], (2, 3)),
        "reshape-3d": make_model([helper.make_node("Reshape", ["x", "s"], ["y"], name="r")],
                                 (2, 3, 3), {"s": np.array([0, 2, -1])}),
    }
    two_inputs = make_model([helper.make_node("Add", ["x", "z"], ["y"], name="add")], (2, 3, 3))
    two_inputs.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT,
                                                                ["N", 2, 3, 3]))
    cases["two-inputs"] = two_inputs
    two_outputs = make_model([helper.make_node("Relu", ["x"], ["y"], name="r"),
                              helper.make_node("Tanh", ["y"], ["z"], name="t")], (2, 3, 3))
    two_outputs.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    cases["two-outputs"] = two_outputs
    return cases


@pytest.mark.parametrize("name", list(_formerly_refused()))
def test_graphs_the_chain_importer_refused_now_match_onnxruntime(name, rng):
    model = _formerly_refused()[name]
    imported = cn.onnx.from_onnx(model)
    session = ort_session(model)
    feeds = {i.name: rng.normal(size=(3, *i.shape[1:])).astype(np.float32)
             for i in session.get_inputs()}
    expected = session.run(None, feeds)
    ours = imported.forward(*feeds.values())
    ours = list(ours) if isinstance(ours, tuple) else [ours]
    assert imported.output_names == [o.name for o in model.graph.output]
    for a, b in zip(ours, expected, strict=True):
        assert_close(a, b)


@pytest.mark.parametrize("name", list(_refusal_cases()))
def test_unsupported_graphs_are_refused_with_the_node_named(name):
    model, fragment = _refusal_cases()[name]
    with pytest.raises(OnnxImportError, match=re.escape(fragment)) as caught:
        cn.onnx.from_onnx(model)
    assert isinstance(caught.value, ValueError)


def test_errors_carry_the_node_and_operator():
    model = make_model([helper.make_node("Hardmax", ["x"], ["y"], name="hm1")], (2, 4, 4))
    with pytest.raises(OnnxImportError) as caught:
        cn.onnx.from_onnx(model)
    assert (caught.value.node, caught.value.op_type) == ("hm1", "Hardmax")


def test_load_refuses_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        cn.onnx.load(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(OnnxImportError, match="is not a readable ONNX file"):
        cn.onnx.load(bad)


def test_supported_ops_cover_the_issue_list():
    required = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "LeakyRelu",
                "Sigmoid", "Tanh", "Gemm", "MatMul", "Add", "Flatten", "Reshape",
                "BatchNormalization", "Dropout", "Softmax", "Identity"}
    graph_import = {"ConvTranspose", "Concat", "Sub", "Mul", "Div", "Pad", "Resize", "Upsample",
                    "DepthToSpace", "SpaceToDepth", "PRelu", "Clip", "HardSigmoid",
                    "HardSwish", "Elu", "Transpose", "LogSoftmax", "ReduceMean", "ReduceMax",
                    "Squeeze", "Unsqueeze", "LayerNormalization", "Split", "Slice", "Erf",
                    "Gelu", "LRN", "Sqrt", "Pow", "Sum", "Constant", "Shape", "Gather"}
    assert required | graph_import <= set(cn.onnx.SUPPORTED_OPS)


# -- the CLI command --------------------------------------------------------------------------
def _parser():
    parser = argparse.ArgumentParser(prog="convnet")
    commands.register(parser.add_subparsers(dest="command"))
    return parser


def test_import_command_writes_a_run_folder(tmp_path, capsys, rng):
    checkpoint = pytest.importorskip("convnet.io.checkpoint")
    model = cn.Sequential(cn.Conv2d(1, 4, 3, padding=1), cn.BatchNorm2d(4), cn.ReLU(),
                          cn.MaxPool2d(2), cn.Flatten(), cn.Linear(4 * 3 * 3, 3))
    model.eval()
    path = tmp_path / "model.onnx"
    cn.onnx.export(model, path, (1, 6, 6), class_names=["x", "y", "z"],
                   normalization={"mean": [0.5], "std": [0.5]})
    run = tmp_path / "run"
    args = _parser().parse_args(["import", str(path), "-o", str(run)])
    assert args.func(args) == 0
    assert "imported" in capsys.readouterr().out
    loaded = checkpoint.load(run)
    assert loaded.class_names == ["x", "y", "z"]
    assert loaded.normalization == {"mean": [0.5], "std": [0.5]}
    x = real_like(rng, 2, (1, 6, 6))
    assert_close(loaded.model.forward(x), model.forward(x))
    args = _parser().parse_args(["import", str(path), "-o", str(run)])
    assert args.func(args) == 1
    assert "exists and is not empty" in capsys.readouterr().err


def test_import_command_reports_refusals(tmp_path, capsys):
    pytest.importorskip("convnet.io.checkpoint")
    path = tmp_path / "hardmax.onnx"
    onnx.save_model(make_model([helper.make_node("Hardmax", ["x"], ["y"], name="hm1")],
                               (2, 4, 4)), str(path))
    args = _parser().parse_args(["import", str(path), "-o", str(tmp_path / "run")])
    assert args.func(args) == 1
    assert "convnet import: error: node 'hm1' (Hardmax): operator Hardmax" in (
        capsys.readouterr().err)
    assert not (tmp_path / "run").exists()
