"""Graph models as data: specs with names, inputs and outputs; TOML model files; round trips;
errors with file:line; deep and long specs in linear time."""

import time

import numpy as np
import pytest

import convnet as cn
from convnet.io import modelfile
from convnet.io.spec import MAX_NESTING, SpecError, build, to_spec

INCEPTION_TOML = """
name = "inception-block"
input_shape = [3, 16, 16]

[[layers]]
type = "conv"
name = "b1"
out_channels = 4
kernel_size = 1
inputs = ["input"]

[[layers]]
type = "conv"
name = "b3_reduce"
out_channels = 2
kernel_size = 1
inputs = ["input"]

[[layers]]
type = "relu"

[[layers]]
type = "conv"
name = "b3"
out_channels = 4
kernel_size = 3
padding = 1

[[layers]]
type = "maxpool"
name = "pool"
kernel_size = 3
stride = 1
padding = 1
inputs = ["input"]

[[layers]]
type = "concat"
name = "mixed"
inputs = ["b1", "b3", "pool"]

[[layers]]
type = "gap"

[[layers]]
type = "flatten"

[[layers]]
type = "linear"
out_features = 10
name = "head"
"""


def test_a_toml_graph_builds_the_model_it_describes(tmp_path):
    path = tmp_path / "inception.toml"
    path.write_text(INCEPTION_TOML)
    model = modelfile.load(path)
    assert isinstance(model, cn.Model)
    rows = {row.name: row for row in model.describe().rows}
    assert rows["mixed"].output_shape == (11, 16, 16)  # 4 + 4 + 3 channels
    assert rows["mixed"].connected_to == ["b1", "b3", "pool"]
    assert rows["b3"].connected_to == ["relu1"]
    assert model.output_shapes() == [(10,)]


def test_graph_spec_round_trips_with_the_same_outputs(rng):
    x = cn.Input((2, 8, 8))
    conv = cn.Conv2d(2, 2, 3, padding=1)
    a = conv(x)
    b = conv(cn.ReLU()(a))                       # the same weights, called again
    gate = cn.Sigmoid()(cn.GlobalAvgPool2d()(b))
    y = cn.Concat(axis=1)([cn.Mul()([b, gate]), x])
    head = cn.Linear(4 * 64, 3)(cn.Flatten()(y))
    model = cn.Model(inputs=x, outputs=[head, y])
    spec = to_spec(model)
    rebuilt = build(spec)
    rebuilt.load_state_dict(model.state_dict())
    images = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    for ours, theirs in zip(model.forward(images), rebuilt.forward(images), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert to_spec(rebuilt) == spec
    assert [entry["type"] for entry in spec["layers"]].count("reuse") == 1


def test_two_inputs_in_a_spec():
    spec = {"inputs": [{"name": "left", "shape": [1, 6, 6]},
                       {"name": "right", "shape": [1, 6, 6]}],
            "layers": [{"type": "sub", "inputs": ["left", "right"]}, {"type": "relu"}]}
    model = build(spec)
    assert model.input_shapes == [(1, 6, 6), (1, 6, 6)]
    out = model.forward(np.ones((1, 1, 6, 6), np.float32), np.zeros((1, 1, 6, 6), np.float32))
    assert out.shape == (1, 1, 6, 6) and float(out.sum()) == 36
    assert build(to_spec(model)).input_shapes == model.input_shapes


def test_model_file_errors_name_the_line_and_the_layer(tmp_path):
    text = INCEPTION_TOML.replace('inputs = ["b1", "b3", "pool"]', 'inputs = ["b1", "b9"]')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(modelfile.ModelFileError) as error:
        modelfile.load_spec(path)
    line = text.splitlines().index("type = \"concat\"")  # the [[layers]] header is just above
    assert str(error.value).startswith(f"{path}:{line}: layer 6 (concat): inputs names 'b9'")


def test_a_merge_that_does_not_fit_in_a_model_file_names_both_producers(tmp_path):
    text = INCEPTION_TOML.replace("kernel_size = 3\npadding = 1\n\n[[layers]]\ntype = \"maxpool\"",
                                  "kernel_size = 3\n\n[[layers]]\ntype = \"maxpool\"")
    path = tmp_path / "sizes.toml"
    path.write_text(text)
    with pytest.raises(modelfile.ModelFileError, match=r"layer 6 \(concat\): mixed \(Concat\): "
                                                       r"spatial sizes differ: b1 16x16, b3 14x14"):
        modelfile.load_spec(path)


def test_outputs_must_name_tensors_that_exist():
    spec = {"input_shape": [1, 4, 4], "layers": [{"type": "relu", "name": "r"}],
            "outputs": ["r", "nothing"]}
    with pytest.raises(SpecError, match="outputs names 'nothing', which no layer makes"):
        build(spec)


def test_a_plain_chain_spec_still_builds_a_sequential_with_the_same_state_dict_keys():
    spec = {"input_shape": [1, 8, 8], "layers": [
        {"type": "conv", "out_channels": 2, "kernel_size": 3}, {"type": "relu"},
        {"type": "flatten"}, {"type": "linear", "out_features": 3}]}
    model = build(spec)
    assert isinstance(model, cn.Sequential)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]


def nested_residuals(depth: int) -> dict:
    entry = {"type": "relu"}
    for _ in range(depth):
        entry = {"type": "residual", "body": [entry]}
    return {"input_shape": [1, 4, 4], "layers": [entry, {"type": "flatten"}]}


def test_nested_residual_blocks_build_and_summarize_quickly():
    started = time.perf_counter()
    model = build(nested_residuals(50))
    rows = model.describe().rows
    took = time.perf_counter() - started
    assert len(rows) == 50 + 2  # a row per residual block (bodies inline), relu, flatten
    assert took < 10, f"50 nested residual blocks took {took:.1f} s"  # was exponential


def test_nesting_beyond_the_cap_is_refused_with_a_message():
    with pytest.raises(SpecError, match=f"at most {MAX_NESTING} levels"):
        build(nested_residuals(MAX_NESTING + 5))


def test_ten_thousand_layers_build_and_summarize_in_linear_time():
    spec = {"input_shape": [1, 2, 2], "layers": [{"type": "relu"}] * 10_000}
    started = time.perf_counter()
    model = build(spec)
    summary = model.describe()
    took = time.perf_counter() - started
    assert len(summary.rows) == 10_000 and model[-1].name == "relu10000"
    assert took < 30, f"10,000 layers took {took:.1f} s"  # was 427 s


def test_an_error_deep_in_a_residual_body_names_the_layer_as_the_summary_does():
    spec = {"input_shape": [1, 7, 7], "layers": [
        {"type": "conv", "out_channels": 1, "kernel_size": 1},
        {"type": "residual", "body": [{"type": "conv", "out_channels": 1, "kernel_size": 1},
                                      {"type": "conv", "out_channels": 1, "kernel_size": 3,
                                       "stride": 3}]}]}
    with pytest.raises(SpecError, match=r"conv3: input 7x7, filter 3, stride 3") as error:
        build(spec)
    assert error.value.layer_index == 1
