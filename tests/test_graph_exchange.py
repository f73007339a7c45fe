"""Graph models leave convnet intact: ONNX export checked by onnxruntime (several inputs and
outputs, shared weights, merges), and PyTorch weights by name."""

import numpy as np
import onnx
import pytest
from exchange_helpers import ort_session

import convnet as cn

pytest.importorskip("onnxruntime")


def se_two_heads():
    """Squeeze-and-excitation, a concat skip and two heads: scores and the gated maps."""
    x = cn.Input((3, 12, 12))
    a = cn.ReLU()(cn.Conv2d(3, 6, 3, padding=1)(x))
    squeeze = cn.Flatten()(cn.GlobalAvgPool2d()(a))
    gate = cn.Sigmoid()(cn.Linear(6, 6)(cn.ReLU()(cn.Linear(6, 6)(squeeze))))
    # (N, 6) back to (N, 6, 1, 1) via a 1x1 conv on the pooled maps keeps it in layers
    gate_maps = cn.Sigmoid()(cn.Conv2d(6, 6, 1)(cn.GlobalAvgPool2d()(a)))
    gated = cn.Mul()([a, gate_maps])
    skip = cn.Concat(axis=1)([gated, x])
    pooled = cn.MaxPool2d(2)(skip)
    scores = cn.Linear(9 * 36, 4)(cn.Flatten()(cn.Sub()([pooled, cn.MaxPool2d(2)(skip)])))
    scores2 = cn.Add()([scores, cn.Linear(6, 4)(gate)])
    return cn.Model(inputs=x, outputs=[scores2, gated])


def siamese():
    conv = cn.Conv2d(1, 2, 3, padding=1)
    left, right = cn.Input((1, 8, 8), name="left"), cn.Input((1, 8, 8), name="right")
    diff = cn.Div()([conv(left), cn.Add()([cn.Sigmoid()(conv(right)), cn.Sigmoid()(left)])])
    return cn.Model(inputs=[left, right], outputs=diff)


@pytest.mark.parametrize("build", [se_two_heads, siamese])
def test_graph_models_export_and_onnxruntime_agrees(build, rng, tmp_path):
    model = build().eval()
    xs = [rng.standard_normal((3, *shape)).astype(np.float32) for shape in model.input_shapes]
    path = tmp_path / "graph.onnx"
    cn.onnx.export(model, path)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    session = ort_session(path)
    names = [i.name for i in session.get_inputs()]
    theirs = session.run(None, dict(zip(names, xs, strict=True)))
    ours = model.forward(*xs)
    ours = ours if isinstance(ours, tuple) else (ours,)
    assert len(theirs) == len(ours)
    for mine, other in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, other, rtol=1e-4, atol=1e-5)


def test_a_shared_layer_writes_its_weights_once(tmp_path):
    proto = cn.onnx.to_onnx(siamese())
    names = [init.name for init in proto.graph.initializer]
    assert names == ["conv1.weight", "conv1.bias"]
    assert [i.name for i in proto.graph.input] == ["left", "right"]


def test_an_output_that_is_also_read_inside_keeps_both_uses(rng):
    x = cn.Input((1, 4, 4))
    a = cn.ReLU()(x)
    model = cn.Model(inputs=x, outputs=[a, cn.Sigmoid()(a), x])  # x itself is an output too
    proto = cn.onnx.to_onnx(model)
    session = ort_session(proto)
    xv = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    for mine, other in zip(model.forward(xv), session.run(None, {"input": xv}), strict=True):
        np.testing.assert_allclose(mine, other, rtol=1e-6)


def test_graph_weights_go_to_pytorch_and_back_by_name(tmp_path, rng):
    model = se_two_heads()
    path = tmp_path / "w.safetensors"
    cn.save_torch_weights(model, path)
    from safetensors.numpy import load_file

    saved = load_file(str(path))
    assert set(saved) == set(model.state_dict())
    assert "conv1.weight" in saved and "fc4.bias" in saved
    fresh = se_two_heads()
    cn.load_torch_weights(fresh, path)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    for mine, other in zip(model.forward(x), fresh.forward(x), strict=True):
        np.testing.assert_array_equal(mine, other)
