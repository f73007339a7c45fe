"""convnet -> ONNX -> onnxruntime: every layer type, random stacks, the zoo, the CLI command."""

import argparse
import json
import re
import sys
import types

import numpy as np
import onnx
import pytest
from exchange_helpers import (
    assert_close,
    build_zoo_model,
    ort_run,
    random_models,
    randomize_batchnorm,
    real_like,
    zoo_names,
)
from hypothesis import HealthCheck, given, settings

import convnet as cn
import convnet.io.onnx
from convnet.cli import onnx as commands

pytest.importorskip("onnxruntime")


def _models():
    """(id, model, input_shape): each layer type and the variants of its arguments."""
    c = 3
    return [
        ("conv", cn.Sequential(cn.Conv2d(c, 4, 3)), (c, 8, 8)),
        ("conv-stride-pad", cn.Sequential(cn.Conv2d(c, 4, (3, 5), stride=2, padding=(1, 2))),
         (c, 9, 11)),
        ("conv-dilation", cn.Sequential(cn.Conv2d(c, 4, 3, dilation=(2, 3), padding=2)),
         (c, 10, 12)),
        ("conv-groups", cn.Sequential(cn.Conv2d(4, 6, 3, groups=2, bias=False)), (4, 7, 7)),
        ("conv-depthwise", cn.Sequential(cn.Conv2d(4, 4, 3, groups=4, padding=1)), (4, 6, 6)),
        ("conv-same", cn.Sequential(cn.Conv2d(c, 4, 3, padding="same")), (c, 7, 7)),
        # 'same' with stride 2 on an even size pads 0 before and 1 after: asymmetric
        ("conv-same-stride", cn.Sequential(cn.Conv2d(c, 4, 4, stride=2, padding="same")),
         (c, 8, 9)),
        ("conv-sides", cn.Sequential(cn.Conv2d(c, 4, 3, padding=(0, 2, 1, 0))), (c, 6, 6)),
        ("conv-valid-floor", cn.Sequential(cn.Conv2d(c, 4, 3, stride=2), strict=False),
         (c, 8, 8)),
        ("maxpool", cn.Sequential(cn.MaxPool2d(2)), (c, 8, 8)),
        ("maxpool-pad", cn.Sequential(cn.MaxPool2d(3, stride=2, padding=1)), (c, 9, 9)),
        ("maxpool-sides", cn.Sequential(cn.MaxPool2d((2, 3), padding=(1, 0, 0, 1))), (c, 7, 8)),
        ("avgpool", cn.Sequential(cn.AvgPool2d(2)), (c, 6, 6)),
        ("avgpool-include-pad", cn.Sequential(cn.AvgPool2d(3, 2, 1)), (c, 9, 9)),
        ("avgpool-exclude-pad",
         cn.Sequential(cn.AvgPool2d(3, 2, 1, count_include_pad=False)), (c, 9, 9)),
        ("avgpool-same", cn.Sequential(cn.AvgPool2d(2, 2, "same", count_include_pad=False)),
         (c, 7, 7)),
        ("gap", cn.Sequential(cn.GlobalAvgPool2d()), (c, 5, 7)),
        ("relu", cn.Sequential(cn.ReLU()), (c, 4, 4)),
        ("leaky-relu", cn.Sequential(cn.LeakyReLU(0.2)), (c, 4, 4)),
        ("sigmoid", cn.Sequential(cn.Sigmoid()), (c, 4, 4)),
        ("tanh", cn.Sequential(cn.Tanh()), (c, 4, 4)),
        ("softmax-4d", cn.Sequential(cn.Softmax()), (c, 4, 4)),
        ("flatten-linear-softmax",
         cn.Sequential(cn.Flatten(), cn.Linear(c * 16, 5), cn.Softmax()), (c, 4, 4)),
        ("linear-no-bias", cn.Sequential(cn.Flatten(), cn.Linear(c * 16, 5, bias=False)),
         (c, 4, 4)),
        ("dropout", cn.Sequential(cn.Conv2d(c, 4, 1), cn.Dropout(0.5)), (c, 4, 4)),
        ("batchnorm", cn.Sequential(cn.Conv2d(c, 4, 3), cn.BatchNorm2d(4, eps=1e-3)),
         (c, 6, 6)),
        ("batchnorm-no-affine", cn.Sequential(cn.BatchNorm2d(c, affine=False)), (c, 5, 5)),
        ("residual", cn.Sequential(cn.Residual(cn.Conv2d(c, c, 3, padding=1), cn.ReLU(),
                                               cn.Conv2d(c, c, 3, padding=1)), cn.ReLU()),
         (c, 6, 6)),
        ("residual-projection",
         cn.Sequential(cn.Residual(cn.Conv2d(c, 8, 3, stride=2, padding=1), cn.BatchNorm2d(8),
                                   projection=cn.Conv2d(c, 8, 1, stride=2))), (c, 9, 9)),
        ("residual-nested",
         cn.Sequential(cn.Residual(cn.Conv2d(c, c, 1),
                                   cn.Residual(cn.Conv2d(c, c, 3, padding=1), cn.Tanh()))),
         (c, 5, 5)),
        ("nested-sequential",
         cn.Sequential(cn.Sequential(cn.Conv2d(c, 4, 3), cn.ReLU()), cn.MaxPool2d(2)),
         (c, 6, 6)),
        ("mlp", cn.Sequential(cn.Linear(6, 4), cn.ReLU(), cn.Linear(4, 2)), (6,)),
        ("empty", cn.Sequential(), (c, 3, 3)),
        # the decoders of segmenters: transposed convolutions and resizing
        ("convtranspose", cn.Sequential(cn.ConvTranspose2d(c, 4, 2, stride=2)), (c, 5, 6)),
        ("convtranspose-pad-output-padding",
         cn.Sequential(cn.ConvTranspose2d(c, 4, (3, 5), stride=(2, 3), padding=(1, 2),
                                          output_padding=(1, 2))), (c, 5, 4)),
        ("convtranspose-groups-dilation",
         cn.Sequential(cn.ConvTranspose2d(4, 6, 3, groups=2, dilation=2, bias=False)),
         (4, 4, 5)),
        ("upsample-nearest", cn.Sequential(cn.Upsample(scale_factor=2)), (c, 3, 5)),
        ("upsample-bilinear", cn.Sequential(cn.Upsample(scale_factor=2, mode="bilinear")),
         (c, 4, 3)),
        ("upsample-align-corners",
         cn.Sequential(cn.Upsample(scale_factor=(3, 2), mode="bilinear", align_corners=True)),
         (c, 3, 4)),
        ("upsample-size", cn.Sequential(cn.Upsample(size=(7, 9), mode="bilinear")), (c, 3, 4)),
        ("upsample-recompute",
         cn.Sequential(cn.Upsample(scale_factor=1.7, mode="bilinear",
                                   recompute_scale_factor=True)), (c, 5, 6)),
        ("resize-asymmetric-ceil",
         cn.Sequential(cn.Resize(scales=(2.5, 1.5), coordinate_transformation_mode="asymmetric",
                                 nearest_mode="round_prefer_ceil")), (c, 4, 4)),
        ("resize-down-linear", cn.Sequential(cn.Resize(size=(3, 2), mode="linear")), (c, 7, 5)),
    ]


def _check_export(model, shape, path, rng):
    model.eval()
    randomize_batchnorm(model, rng)
    onnx_model = cn.onnx.export(model, path, input_shape=shape)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    for x in (rng.normal(size=(3, *shape)).astype(np.float32),
              real_like(rng, 2, shape) if len(shape) == 3 else rng.random((2, *shape),
                                                                          dtype=np.float32)):
        assert_close(ort_run(path, x), model.forward(x))
    return onnx_model


@pytest.mark.parametrize("name, model, shape", _models(), ids=[m[0] for m in _models()])
def test_each_layer_type_matches_onnxruntime(name, model, shape, tmp_path, rng):
    _check_export(model, shape, tmp_path / f"{name}.onnx", rng)


def test_names_follow_the_model(tmp_path, rng):
    model = cn.Sequential(
        cn.Conv2d(3, 8, 3, padding=1), cn.BatchNorm2d(8), cn.ReLU(),
        cn.Residual(cn.Conv2d(8, 8, 3, padding=1), projection=cn.Conv2d(8, 8, 1)),
        cn.MaxPool2d(2), cn.Dropout(0.2), cn.Flatten(), cn.Linear(8 * 16, 10))
    onnx_model = _check_export(model, (3, 8, 8), tmp_path / "named.onnx", rng)
    nodes = [(node.name, node.op_type) for node in onnx_model.graph.node]
    assert nodes == [("conv1", "Conv"), ("bn1", "BatchNormalization"), ("relu1", "Relu"),
                     ("conv2", "Conv"), ("conv3", "Conv"), ("res1", "Add"),
                     ("pool1", "MaxPool"), ("dropout1", "Dropout"), ("flatten1", "Flatten"),
                     ("fc1", "Gemm")]
    initializers = {init.name for init in onnx_model.graph.initializer}
    state = {key for key in model.state_dict() if not key.endswith("num_batches_tracked")}
    assert state <= initializers
    assert "3.body.0.weight" in initializers and "3.projection.weight" in initializers
    assert onnx_model.graph.node[0].doc_string == repr(model[0])


def test_batch_axis_is_dynamic_and_metadata_is_carried(tmp_path, rng):
    model = cn.Sequential(cn.Conv2d(1, 2, 3), cn.Flatten(), cn.Linear(2 * 4 * 4, 3))
    path = tmp_path / "meta.onnx"
    cn.onnx.export(model, path, (1, 6, 6), class_names=["cat", "dog", "emu"],
                   normalization={"mean": [0.5], "std": [0.25]})
    onnx_model = onnx.load(str(path))
    assert onnx_model.opset_import[0].version >= 17
    dims = onnx_model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 6, 6]
    props = {p.key: p.value for p in onnx_model.metadata_props}
    assert json.loads(props["convnet.class_names"]) == ["cat", "dog", "emu"]
    assert json.loads(props["convnet.normalization"]) == {"mean": [0.5], "std": [0.25]}
    assert json.loads(props["convnet.input_shape"]) == [1, 6, 6]
    for batch in (1, 7):
        x = rng.normal(size=(batch, 1, 6, 6)).astype(np.float32)
        assert ort_run(path, x).shape == (batch, 3)


def test_input_shape_defaults_to_the_built_shape_and_opset_is_chosen(rng):
    model = cn.Sequential(cn.Conv2d(2, 2, 3), cn.Softmax(), input_shape=(2, 5, 5))
    onnx_model = cn.onnx.to_onnx(model, opset=21)
    assert onnx_model.opset_import[0].version == 21
    x = rng.normal(size=(2, 2, 5, 5)).astype(np.float32)
    assert_close(ort_run(onnx_model, x), model.forward(x))


def test_float64_models_export_as_float32(rng):
    model = cn.Sequential(cn.Conv2d(2, 3, 3), cn.BatchNorm2d(3), cn.Flatten(),
                          cn.Linear(3 * 9, 2)).astype(np.float64).eval()
    onnx_model = cn.onnx.to_onnx(model, (2, 5, 5))
    assert {init.data_type for init in onnx_model.graph.initializer} == {onnx.TensorProto.FLOAT}
    x = rng.normal(size=(2, 2, 5, 5))
    assert_close(ort_run(onnx_model, x.astype(np.float32)), model.forward(x))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=random_models())
def test_random_layer_stacks_match_onnxruntime(case):
    model, shape = case
    rng = np.random.default_rng(7)
    model.eval()
    randomize_batchnorm(model, rng)
    onnx_model = cn.onnx.to_onnx(model, shape)
    for x in (rng.normal(size=(2, *shape)).astype(np.float32), real_like(rng, 2, shape)):
        assert_close(ort_run(onnx_model, x), model.forward(x))


@pytest.mark.skipif(not zoo_names(), reason="convnet.io.zoo is not there yet")
@pytest.mark.parametrize("name", zoo_names())
def test_zoo_model_round_trips_through_onnx(name, tmp_path, rng):
    model, shape = build_zoo_model(name)
    path = tmp_path / f"{name}.onnx"
    _check_export(model, shape, path, rng)
    imported = cn.onnx.load(path)
    x = real_like(rng, 2, shape)
    assert_close(imported.forward(x), model.forward(x))
    assert imported.num_parameters() == model.num_parameters()


# -- refusals --------------------------------------------------------------------------------
class Doubler(cn.Layer):
    kind = "double"

    def forward(self, x):
        return 2 * x


@pytest.mark.parametrize("call, fragment", [
    (lambda: cn.onnx.to_onnx(cn.Sequential(cn.ReLU())), "needs the per-sample input shape"),
    (lambda: cn.onnx.to_onnx(cn.Sequential(cn.ReLU(), Doubler()), (1, 2, 2)),
     "double1 (Doubler): cannot export this layer type to ONNX; exportable layers are Abs, "
     "Add, AvgPool2d, BatchNorm2d, Concat, Constant, Conv2d"),
    (lambda: cn.onnx.to_onnx(cn.Sequential(cn.Flatten(), cn.Linear(4, 3)), (1, 2, 2),
                             class_names=["a", "b"]),
     "class_names has 2 names but the model outputs 3 scores"),
    (lambda: cn.onnx.to_onnx(cn.Sequential(cn.ReLU()), (3, 2, 2),
                             normalization={"mean": [0.5, 0.5], "std": [1, 1]}),
     "normalization mean has 2 values; give 1 or one per input channel (3)"),
    (lambda: cn.onnx.to_onnx(cn.Sequential(cn.ReLU()), (1, 2, 2),
                             normalization={"mean": [0.5]}),
     "normalization must give 'mean' and 'std'"),
    (lambda: cn.onnx.to_onnx(cn.Sequential(cn.ReLU()), (1, 2, 2), opset=11),
     "opset must be an int >= 13"),
    (lambda: cn.onnx.to_onnx(cn.Sequential(cn.Conv2d(1, 1, 3, stride=2)), (1, 6, 6)),
     "not an integer"),
    (lambda: cn.onnx.to_onnx("model.toml", (1, 2, 2)), "expected a convnet model"),
])
def test_export_refuses_with_a_helpful_message(call, fragment):
    with pytest.raises((TypeError, ValueError), match=re.escape(fragment)):
        call()


# -- the CLI command -------------------------------------------------------------------------
def _parser():
    parser = argparse.ArgumentParser(prog="convnet")
    commands.register(parser.add_subparsers(dest="command"))
    return parser


def _fake_checkpoint(monkeypatch, loaded):
    """Stand in for convnet.io.checkpoint where a test needs only its contract."""
    from convnet.io import checkpoint as real

    fake = types.ModuleType("convnet.io.checkpoint")
    # Its names and errors stay (the output checks ask what a run folder holds).
    fake.__dict__.update({k: v for k, v in vars(real).items() if k.isupper() or
                          k.endswith("Error")})
    fake.load = lambda source: loaded
    fake.saved = []
    fake.save_model = lambda folder, model, input_shape, class_names=None, normalization=None: (
        fake.saved.append((folder, model, input_shape, class_names, normalization)))
    monkeypatch.setitem(sys.modules, "convnet.io.checkpoint", fake)
    return fake


def test_export_command_writes_a_file_from_a_checkpoint(tmp_path, monkeypatch, capsys, rng):
    model = cn.Sequential(cn.Conv2d(1, 2, 3), cn.ReLU(), cn.Flatten(), cn.Linear(2 * 9, 2))
    loaded = types.SimpleNamespace(model=model, input_shape=(1, 5, 5), class_names=["no", "yes"],
                                   normalization={"mean": [0.1], "std": [0.3]})
    _fake_checkpoint(monkeypatch, loaded)
    out = tmp_path / "model.onnx"
    args = _parser().parse_args(["export", "runs/demo", "-o", str(out)])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    x = rng.normal(size=(2, 1, 5, 5)).astype(np.float32)
    assert_close(ort_run(out, x), model.forward(x))
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["convnet.class_names"]) == ["no", "yes"]


def test_export_command_reports_errors_with_exit_status_1(tmp_path, monkeypatch, capsys):
    loaded = types.SimpleNamespace(model=cn.Sequential(Doubler()), input_shape=(1, 2, 2),
                                   class_names=None, normalization=None)
    _fake_checkpoint(monkeypatch, loaded)
    args = _parser().parse_args(["export", "runs/demo", "-o", str(tmp_path / "m.onnx")])
    assert args.func(args) == 1
    assert "convnet export: error: double1 (Doubler): cannot export" in capsys.readouterr().err


def test_commands_carry_examples_in_their_help():
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "convnet export runs/resnet8 -o resnet8.onnx" in subparsers.choices["export"].epilog
    assert "convnet import resnet8.onnx -o" in subparsers.choices["import"].epilog
