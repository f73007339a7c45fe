"""cn.gradcheck and `convnet gradcheck`: every layer's backward against centred differences,
for chains and graphs, and a deliberately wrong backward caught with the layer's name."""

from __future__ import annotations

import json

import numpy as np
import pytest

import convnet as cn
from convnet.cli import main
from convnet.nn.gradcheck import relative_error, verdict_for


class WrongReLU(cn.ReLU):
    """A ReLU whose backward forgets the mask: the bug a gradient check exists for."""

    def backward(self, dy):
        self._take_cache()
        return dy


def inputs(shape, n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape))


def test_lenet_like_chain_passes_and_every_layer_has_rows():
    model = cn.Sequential(cn.Conv2d(1, 3, 3, padding=1), cn.ReLU(), cn.MaxPool2d(2),
                          cn.Conv2d(3, 4, 3, stride=2), cn.BatchNorm2d(4), cn.ReLU(),
                          cn.Flatten(), cn.Dropout(0.3), cn.Linear(16, 5))
    report = cn.gradcheck(model, inputs((1, 10, 10)), np.array([1, 4]))
    assert report.ok and "all" in report.verdict
    assert report.worst < 1e-6
    # conv2's bias is followed by batch norm in training mode, which subtracts the batch mean:
    # its gradient is exactly zero, reported as such and left out of the largest error (its
    # relative error compares two round-off residues: 4.6e-4 on one machine, 1e-9 on another)
    zero = [row for row in report.rows if row.verdict == "ok (zero)"]
    assert [row.array for row in zero] == ["conv2.bias"]
    assert "1 zero as far as differences can tell" in report.verdict
    names = {row.layer for row in report.layers}
    assert names == {"conv1", "relu1", "pool1", "conv2", "bn1", "relu2", "flatten1",
                     "dropout1", "fc1"}
    arrays = {(row.layer, row.array) for row in report.layers}
    assert ("conv1", "weight") in arrays and ("bn1", "bias") in arrays
    assert {row.array for row in report.model} >= {"input", "conv1.weight", "fc1.bias"}
    assert report.loss == "cross-entropy on the scores"
    # The model itself is untouched: still float32, its gradients still zero.
    assert model.layers[0].weight.data.dtype == np.float32
    assert not model.layers[0].weight.grad.any()


def test_a_wrong_backward_is_named():
    model = cn.Sequential(cn.Conv2d(1, 3, 3), WrongReLU(), cn.Flatten(), cn.Linear(3 * 4 * 4, 3))
    report = cn.gradcheck(model, inputs((1, 6, 6)), np.array([0, 2]))
    assert not report.ok
    wrong = [(row.layer, row.array) for row in report.rows if row.verdict == "WRONG"]
    assert ("relu1", "input") in wrong
    assert ("model", "conv1.weight") in wrong  # the error reaches the layers before it
    assert report.verdict.startswith("WRONG:") and "relu1 input" in report.verdict
    assert "WRONG" in str(report).splitlines()[-1]


def test_graph_model_with_branches_merges_and_a_shared_layer():
    x = cn.Input((2, 6, 6))
    shared = cn.Conv2d(2, 2, 3, padding=1)
    a = cn.ReLU()(shared(x))
    b = cn.Conv2d(2, 3, 1)(x)
    c = shared(a)  # the same weights again
    merged = cn.Concat(axis=1)([a, b, c])
    gate = cn.Mul()([merged, cn.Sigmoid()(cn.GlobalAvgPool2d()(merged))])
    out = cn.Linear(7, 3)(cn.Flatten()(cn.GlobalAvgPool2d()(cn.Add()([gate, merged]))))
    model = cn.Model(x, out)
    report = cn.gradcheck(model, inputs((2, 6, 6)), np.array([0, 2]))
    assert report.ok, str(report)
    concat = [row for row in report.layers if row.type == "Concat"]
    assert [row.array for row in concat] == ["input 0", "input 1", "input 2"]
    assert any(row.layer == "conv1#2" for row in report.layers)  # the second call, checked
    data = report.to_dict()
    assert data["ok"] is True and json.dumps(data)


def test_without_labels_the_output_itself_is_checked():
    model = cn.Sequential(cn.Conv2d(1, 2, 3), cn.Tanh())
    report = cn.gradcheck(model, inputs((1, 5, 5)), layers=False)
    assert report.loss == "sum(output * g)" and report.ok and not report.layers


def test_relative_error_and_verdicts():
    assert relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert relative_error([0.0], [0.0]) == 0.0
    assert relative_error([1.0, 0.0], [0.0, 0.0]) == 1.0
    assert verdict_for(1e-9) == "ok" and verdict_for(1e-4) == "doubtful"
    assert verdict_for(0.5) == "WRONG" and verdict_for(float("nan")) == "WRONG"


def test_cli_gradcheck_on_a_model_file(tmp_path, capsys):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\ninput_shape = [1, 8, 8]\n'
                    '[[layers]]\ntype = "conv"\nout_channels = 2\nkernel_size = 3\n'
                    '[[layers]]\ntype = "relu"\n[[layers]]\ntype = "maxpool"\nkernel_size = 2\n'
                    '[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "linear"\n'
                    'out_features = 4\n')
    assert main(["gradcheck", str(path), "--samples", "3", "--coords", "4"]) == 0
    out = capsys.readouterr().out
    assert "3 sample(s), up to 4 coordinates per array" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert out.strip().splitlines()[-1].startswith("verdict: all ")
    assert main(["gradcheck", "lenet5", "--json", "--no-layers"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["layers"] == [] and data["samples"] == 2
    assert {row["array"] for row in data["model"]} >= {"input", "conv1.weight", "fc3.bias"}


def test_cli_gradcheck_fails_with_status_1_on_a_wrong_gradient(monkeypatch, capsys):
    from convnet.cli import inspect

    def wrong_model(target):
        model = cn.Sequential(cn.Conv2d(1, 2, 3), WrongReLU(), cn.Flatten(), cn.Linear(8, 2))
        return model, (1, 4, 4)

    monkeypatch.setattr(inspect, "resolve_model", wrong_model)
    assert main(["gradcheck", "whatever"]) == 1
    assert "WRONG" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--samples", "0"], ["--coords", "0"]])
def test_cli_gradcheck_refuses_bad_counts(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gradcheck", "lenet5", *bad])
    assert exit_info.value.code == 2
