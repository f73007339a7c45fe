"""The classic architectures of the lecture's history as they were exported to ONNX: the
onnx wheel's own copies of the Model Zoo's AlexNet, ZFNet, VGG-19, GoogLeNet (Inception v1),
Inception v2, ResNet-50, SqueezeNet, ShuffleNet and DenseNet-121 (onnx/backend/test/data/light:
the real graphs, opset 9, with every weight a ConstantOfShape). Their weights are redrawn at
random (He-scaled, so activations stay near 1 through 50-120 layers), and the imported models
must match onnxruntime within 1e-4 on image-like input at 224 x 224."""

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from exchange_helpers import assert_close, ort_session, real_like
from onnx import helper, numpy_helper

import convnet as cn

pytest.importorskip("onnxruntime")
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
NAMES = ["bvlc_alexnet", "zfnet512", "vgg19", "inception_v1", "inception_v2", "resnet50",
         "squeezenet", "shufflenet", "densenet121"]


def randomized(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The model with each ConstantOfShape weight replaced by a random initializer drawn for
    its role: He-normal for Conv and Gemm weights, batch-norm statistics near 1 and 0, small
    biases."""
    rng = np.random.default_rng(seed)
    graph = model.graph
    shapes = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    readers = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, (node, index))
    nodes, inits = [], []
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            nodes.append(node)
            continue
        shape = tuple(int(v) for v in shapes[node.input[0]])
        out = node.output[0]
        reader, index = readers.get(out, (None, None))
        if reader is None and out in {n.input[0] for n in graph.node if n.op_type == "Unsqueeze"}:
            reader = next(n for n in graph.node if n.op_type == "Unsqueeze" and n.input[0] == out)
            reader, index = readers.get(reader.output[0], (None, None))
        op = reader.op_type if reader is not None else ""
        if op in ("Conv", "Gemm") and index == 1:
            fan_in = math.prod(shape[1:]) if op == "Conv" else min(shape)
            if op == "Gemm":
                trans = {a.name: a.i for a in reader.attribute}.get("transB", 0)
                fan_in = shape[1] if trans else shape[0]
            value = rng.normal(0, math.sqrt(2.0 / fan_in), shape)
        elif op == "BatchNormalization" and index in (1, 4):
            value = rng.uniform(0.5, 1.5, shape)
        elif op == "Mul":
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        inits.append(numpy_helper.from_array(value.astype(np.float32), out))
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    copy.graph.initializer.extend(inits)
    return copy


def first_output(session, x):
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_classic_architectures_match_onnxruntime(name):
    model = randomized(onnx.load(str(LIGHT / f"light_{name}.onnx")))
    imported = cn.onnx.from_onnx(model)
    x = real_like(np.random.default_rng(1), 1, (3, 224, 224))
    ours = imported.forward(x)
    assert_close(ours, first_output(ort_session(model), x))
    assert imported.num_parameters() > 0


def test_squeezenet_runs_at_other_input_sizes():
    """Fully convolutional: ONNX's sizes are those of the file, the model takes others."""
    model = randomized(onnx.load(str(LIGHT / "light_squeezenet.onnx")))
    imported = cn.onnx.from_onnx(model)
    dynamic = onnx.ModelProto()
    dynamic.CopyFrom(model)
    inits = {i.name for i in dynamic.graph.initializer}
    data = next(v for v in dynamic.graph.input if v.name not in inits)
    for dim, name in zip(data.type.tensor_type.shape.dim[2:], "HW", strict=True):
        dim.dim_param = name
    del dynamic.graph.output[:]
    dynamic.graph.output.append(helper.make_tensor_value_info(
        model.graph.output[0].name, onnx.TensorProto.FLOAT, None))
    for shape in ((3, 160, 192), (3, 241, 227)):
        x = real_like(np.random.default_rng(2), 1, shape)
        assert imported.output_shape(shape) == (1000, 1, 1)
        assert_close(imported.forward(x), first_output(ort_session(dynamic), x))
