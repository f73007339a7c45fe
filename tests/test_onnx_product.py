"""An imported ONNX graph through the product: convnet import (class names, normalization),
summary of the file and of the run, evaluate, predict, and fine-tuning with a new head."""

import json

import numpy as np
import pytest
from tiny_data import make_angles_folder, make_bars_folder

import convnet as cn
from convnet.cli import main
from convnet.core.errors import ShapeError
from convnet.io import checkpoint
from convnet.nn.head import replace_head

pytest.importorskip("onnxruntime")


def two_output_model():
    """A classifier of 12x12 grey images with a second output (its feature map)."""
    x = cn.Input((1, 12, 12))
    maps = cn.ReLU()(cn.Conv2d(1, 4, 3, padding=1)(x))
    pooled = cn.Flatten()(cn.GlobalAvgPool2d()(maps))
    scores = cn.Softmax()(cn.Linear(4, 3)(cn.Dropout(0.1)(pooled)))
    return cn.Model(x, [scores, maps]).eval()


@pytest.fixture
def imported_run(tmp_path, capsys):
    path = tmp_path / "two.onnx"
    cn.onnx.export(two_output_model(), path)
    run = tmp_path / "run"
    assert main(["import", str(path), "-o", str(run), "--classes", "a,b,c",
                 "--mean", "0.2", "--std", "0.5"]) == 0
    assert "; outputs softmax1 (3,), relu1 (4, 12, 12) ->" in capsys.readouterr().out
    return path, run


def test_import_writes_a_graph_run_with_names(imported_run, capsys):
    path, run = imported_run
    loaded = checkpoint.load(run)
    assert isinstance(loaded.model, cn.Model) and len(loaded.model.output_slots) == 2
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.normalization == {"mean": [0.2], "std": [0.5]}  # one channel
    x = np.random.default_rng(0).normal(size=(2, 1, 12, 12)).astype(np.float32)
    ours = loaded.model.forward(x)
    direct = cn.onnx.load(path).forward(x)
    for a, b in zip(ours, direct, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_summary_of_the_file_and_of_the_run(imported_run, capsys):
    path, run = imported_run
    capsys.readouterr()
    assert main(["summary", str(path)]) == 0
    text = capsys.readouterr().out
    assert "Connected to" in text and "Outputs:" in text
    assert main(["summary", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [o["shape"] for o in data["outputs"]] == [[3], [4, 12, 12]]
    assert main(["summary", str(path), "--input-shape", "1", "20", "16"]) == 0
    assert "(4, 20, 16)" in capsys.readouterr().out


def test_a_wrong_class_count_is_refused(tmp_path, capsys):
    path = tmp_path / "two.onnx"
    cn.onnx.export(two_output_model(), path)
    assert main(["import", str(path), "-o", str(tmp_path / "r"), "--classes", "a,b"]) == 1
    assert "2 class names for a first output of per-sample shape (3,)" in capsys.readouterr().err


def test_evaluate_predict_and_fine_tune_with_a_new_head(imported_run, tmp_path, capsys):
    _, run = imported_run
    three = make_angles_folder(tmp_path / "angles", per_class=6, size=12, offsets=(1, 11))
    assert main(["evaluate", str(run), "--dataset", str(three), "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1
    folder = make_bars_folder(tmp_path / "bars", per_class=12)
    image = next((folder / "vertical").glob("*.png"))
    assert main(["predict", str(run), str(image), "--json"]) == 0
    assert "a" in capsys.readouterr().out
    tuned = tmp_path / "tuned"
    assert main(["train", "--model", str(run), "--replace-head", "2", "--dataset", str(folder),
                 "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--out", str(tuned),
                 "--no-progress"]) == 0
    loaded = checkpoint.load(tuned)
    assert loaded.class_names == ["horizontal", "vertical"]
    assert loaded.model.output_shapes() == [(2,), (4, 12, 12)]
    assert loaded.normalization["mean"] == [0.2]  # the imported model's, not refitted
    assert main(["train", "--model", str(run), "--replace-head", "3", "--dataset", str(folder),
                 "--epochs", "1", "--out", str(tmp_path / "bad"), "--no-progress"]) == 1
    assert "--replace-head 3, but" in capsys.readouterr().err


def test_replace_head_keeps_the_body_and_other_outputs():
    model = two_output_model()
    tuned = replace_head(model, 5)
    assert tuned.output_shapes() == [(5,), (4, 12, 12)]
    assert not any(isinstance(layer, cn.Softmax) for layer in tuned.layers)
    body = [layer for layer in model.layers if isinstance(layer, cn.Conv2d)][0]
    assert any(layer is body for layer in tuned.layers)
    chain = cn.Sequential(cn.Conv2d(1, 2, 3), cn.Flatten(), cn.Linear(2 * 10 * 10, 4),
                          cn.Softmax())
    assert replace_head(chain, 2).output_shape((1, 12, 12)) == (2,)
    with pytest.raises(ShapeError, match="found no Linear or Conv2d classifier"):
        replace_head(cn.Sequential(cn.Conv2d(1, 2, 3), cn.ReLU()), 2)


def test_activation_maps_of_a_deep_imported_model_show_a_spread_of_layers():
    """An imported MobileNet has hundreds of layers: the report's activation figure draws at
    most max_layers rows (it once took minutes to save)."""
    pytest.importorskip("matplotlib")
    from convnet.viz.activations import activations_figure

    model = cn.Sequential(cn.Conv2d(1, 2, 3, padding=1), *[cn.ReLU() for _ in range(99)])
    x = np.random.default_rng(0).normal(size=(1, 1, 6, 6)).astype(np.float32)
    figure = activations_figure(model, x, max_layers=10)
    assert len(figure.axes) == 10
    titles = " ".join(ax.get_title(loc="left") for ax in figure.axes)
    assert "conv1" in titles and "relu99" in titles
