"""Graph models through the product: the CLI trains, resumes, evaluates, predicts, summarizes,
reports and exports a graph model file, as it does a chain."""

import json

import numpy as np
import pytest
from tiny_data import GRAPH_MODEL, make_angles_folder

import convnet as cn
from convnet.cli import main
from convnet.io import checkpoint


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph")
    make_angles_folder(root / "images", per_class=24, size=12, offsets=(2, 10))
    (root / "graph.toml").write_text(GRAPH_MODEL)
    return root


def test_summary_of_a_graph_model_file(workspace, capsys):
    assert main(["summary", str(workspace / "graph.toml")]) == 0
    table = capsys.readouterr().out
    assert "Connected to" in table and "wide, narrow" in table
    assert main(["summary", str(workspace / "graph.toml"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in data["outputs"]] == ["scores", "gated"]
    rows = {row["name"]: row for row in data["layers"]}
    assert rows["gated"]["connected_to"] == ["relu1", "gate"]


def test_train_resume_evaluate_predict_report_export_a_graph(workspace, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", str(workspace / "graph.toml"), "--dataset",
            str(workspace / "images"), "--batch-size", "8", "--out", str(out), "--no-progress",
            "--val-fraction", "0.25", "--lr", "0.1"]
    assert main([*argv, "--epochs", "2"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "8"]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 9))
    assert max(r["val_accuracy"] for r in records) >= 0.6  # three classes: chance is 1/3
    loaded = checkpoint.load(out)
    assert isinstance(loaded.model, cn.Model) and loaded.class_names == [
        "diagonal", "horizontal", "vertical"]
    assert main(["evaluate", str(out), "--split", "train", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 72 and result["accuracy"] >= 0.5
    image = next((workspace / "images" / "vertical").iterdir())
    assert main(["predict", str(out), str(image), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["top"]) >= 1
    assert (out / "report.html").is_file()  # the report draws a graph's activation maps
    onnx_path = tmp_path / "graph.onnx"
    assert main(["export", str(out), "-o", str(onnx_path)]) == 0
    pytest.importorskip("onnxruntime")
    from exchange_helpers import ort_session

    session = ort_session(onnx_path)
    x = np.random.default_rng(0).standard_normal((2, 1, 12, 12)).astype(np.float32)
    theirs = session.run(None, {"input": x})
    ours = loaded.model.forward(x)
    for mine, other in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, other, rtol=1e-4, atol=1e-5)
