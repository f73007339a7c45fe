"""Semantic segmentation end to end: IoU arithmetic, the per-pixel loss against PyTorch, a tiny
segmenter overfitting real canvases, training runs on a folder of masks (metrics, resume,
refusals), evaluate and predict, the zoo's segmenters, pictures, and ONNX."""

import json
import re

import numpy as np
import pytest
from PIL import Image
from tiny_data import SEGMENT_CLASSES, TINY_SEGMENTER, StopAt, make_mask_folder

import convnet as cn
from convnet.cli import main
from convnet.io import checkpoint, zoo
from convnet.training import tasks
from convnet.training.metrics import SegmentationEvaluation, confusion_matrix
from convnet.training.trainer import TrainConfig, Trainer, TrainingError


# -- metrics -----------------------------------------------------------------------------------
def test_iou_of_a_hand_computed_case():
    labels = np.array([[0, 0, 0], [1, 1, 2], [255, 2, 2]])
    predicted = np.array([[0, 0, 1], [1, 2, 2], [0, 3, 2]])
    confusion = confusion_matrix(labels, predicted, 4, ignore_index=255)
    # rows true, columns predicted; the ignored pixel (predicted 0) is not counted
    assert confusion.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 1], [0, 0, 0, 0]]
    result = SegmentationEvaluation(0.0, confusion, ["bg", "a", "b", "c"], images=1)
    # bg: 2 / (3 + 2 - 2); a: 1 / (2 + 2 - 1); b: 2 / (3 + 3 - 2); c: 0 / (0 + 1 - 0)
    np.testing.assert_allclose(result.per_class_iou, [2 / 3, 1 / 3, 1 / 2, 0.0])
    assert result.mean_iou == pytest.approx((2 / 3 + 1 / 3 + 1 / 2 + 0) / 4)
    assert result.accuracy == pytest.approx(5 / 8)
    # a class neither labelled nor predicted has no IoU and stays out of the mean
    absent = SegmentationEvaluation(0.0, confusion_matrix(labels, predicted, 5, 255),
                                    ["bg", "a", "b", "c", "d"], images=1)
    assert np.isnan(absent.per_class_iou[4]) and absent.mean_iou == result.mean_iou
    as_dict = absent.to_dict()
    assert as_dict["per_class_iou"]["d"] is None and as_dict["pixels"] == 8
    text = absent.format()
    assert "mean IoU 0.3750, pixel accuracy 62.50% on 8 pixels of 1 images" in text
    assert re.search(r"\n +d +n/a +n/a +0 +0\n", text)


def test_iou_equals_intersection_over_union_of_pixel_sets(rng):
    labels = rng.integers(0, 5, (3, 9, 7))
    predicted = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, 5, labels.shape))
    result = SegmentationEvaluation(0.0, confusion_matrix(labels, predicted, 5), list("abcde"))
    for c in range(5):
        inter = np.logical_and(labels == c, predicted == c).sum()
        union = np.logical_or(labels == c, predicted == c).sum()
        assert result.per_class_iou[c] == pytest.approx(inter / union)


def test_balanced_weights_are_median_frequency():
    # shares 0.8, 0.1, 0.1, 0: the median of the present ones is 0.1
    assert tasks.balanced_weights([80, 10, 10, 0]) == pytest.approx([0.125, 1.0, 1.0, 0.0])


# -- the loss against PyTorch ------------------------------------------------------------------
def test_per_pixel_loss_and_evaluation_match_pytorch(rng):
    torch = pytest.importorskip("torch")
    weights = [0.2, 1.0, 3.0]
    task = tasks.make_task("segment", class_weight=weights, ignore_index=255)
    scores = rng.normal(size=(4, 3, 5, 6)).astype(np.float64)
    labels = rng.integers(0, 3, (4, 5, 6))
    labels[0, :2] = 255
    loss = task.loss()
    value = loss.forward(scores, labels)
    grad = loss.backward()
    s = torch.tensor(scores, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(s, torch.tensor(labels),
                                                 weight=torch.tensor(weights, dtype=torch.float64),
                                                 ignore_index=255)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad, s.grad.numpy(), rtol=1e-10, atol=1e-14)
    # the evaluation's loss over two batches is the loss over all of them at once
    tally = task.tally(["a", "b", "c"])
    tally.add(scores[:1], labels[:1])
    tally.add(scores[1:], labels[1:])
    assert tally.result().loss == pytest.approx(expected.item(), rel=1e-12)


# -- a tiny segmenter overfits a few real canvases ---------------------------------------------
def test_a_tiny_unet_overfits_four_canvases():
    data = cn.data.load_dataset("digits-seg", "train")
    x = np.ascontiguousarray(data.images[:4, :, 16:48, 16:48]).astype(np.float32) / 255
    y = np.ascontiguousarray(data.labels[:4, 16:48, 16:48])  # crops of both: still aligned
    cn.manual_seed(0)
    inp = cn.Input((1, 32, 32))
    e1 = cn.ReLU()(cn.Conv2d(1, 8, 3, padding=1)(inp))
    e2 = cn.ReLU()(cn.Conv2d(8, 16, 3, padding=1)(cn.MaxPool2d(2)(e1)))
    e3 = cn.ReLU()(cn.Conv2d(16, 16, 3, padding=1)(cn.MaxPool2d(2)(e2)))
    u2 = cn.ConvTranspose2d(16, 16, 2, stride=2)(e3)
    d2 = cn.ReLU()(cn.Conv2d(32, 16, 3, padding=1)(cn.Concat()([u2, e2])))
    u1 = cn.ConvTranspose2d(16, 8, 2, stride=2)(d2)
    d1 = cn.ReLU()(cn.Conv2d(16, 8, 3, padding=1)(cn.Concat()([u1, e1])))
    model = cn.Model(inp, cn.Conv2d(8, 11, 1)(d1))
    task = tasks.make_task("segment")
    loss_fn = task.loss()
    optimizer = cn.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(120):
        losses.append(loss_fn.forward(model.forward(x), y))
        model.backward(loss_fn.backward(), input_grad=False)
        optimizer.step()
        model.zero_grad()
    tally = task.tally(data.class_names)
    tally.add(model.forward(x), y)
    result = tally.result()
    assert losses[-1] < 0.1 < 2.0 < losses[0]
    assert result.mean_iou > 0.8 and result.accuracy > 0.98


# -- training runs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    make_mask_folder(root / "shapes")
    (root / "tiny.toml").write_text(TINY_SEGMENTER)
    return root


def settings(workspace, **overrides):
    values = {"model": str(workspace / "tiny.toml"), "dataset": str(workspace / "shapes"),
              "epochs": 8, "batch_size": 2, "lr": 0.05, "optimizer": "adam",
              "schedule": "constant", "seed": 2, "val_fraction": 0.25}
    return TrainConfig(**{**values, **overrides})


def quiet(config, out, **options):
    return Trainer(config, out, progress=False, log=lambda _: None, **options)


@pytest.fixture(scope="module")
def run(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    summary = quiet(settings(workspace), out).fit()
    return out, summary


def test_a_folder_of_masks_trains_a_segmenter_with_iou_per_epoch(run):
    out, summary = run
    assert summary["task"] == "segment" and summary["best_metric"] == "val_mean_iou"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 9))
    assert set(records[-1]["val_iou"]) == set(SEGMENT_CLASSES)
    assert records[-1]["val_mean_iou"] == pytest.approx(
        np.mean(list(records[-1]["val_iou"].values())))
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert summary["best_val_accuracy"] == max(r["val_mean_iou"] for r in records) > 0.7
    saved = json.loads((out / "config.json").read_text())
    assert saved["task"] == {"name": "segment", "class_weight": None, "ignore_index": 255}
    assert saved["class_names"] == list(SEGMENT_CLASSES)


def test_a_resumed_segmentation_run_ends_with_the_uninterrupted_weights(workspace, run,
                                                                      tmp_path):
    whole, _ = run
    assert quiet(settings(workspace), tmp_path / "split", callbacks=[StopAt(13)]).fit()["stopped"]
    quiet(settings(workspace), tmp_path / "split", resume=True).fit()
    expected, _, _, _ = checkpoint.read_checkpoint(whole / "checkpoints/last.safetensors")
    actual, _, _, _ = checkpoint.read_checkpoint(tmp_path / "split/checkpoints/last.safetensors")
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_balanced_class_weights_reach_the_loss_and_the_config(workspace, tmp_path):
    trainer = quiet(settings(workspace, class_weight="balanced"), tmp_path / "w")
    trainer.setup()
    counts = trainer.train_set.class_counts()
    assert trainer.loss_fn.weight.tolist() == pytest.approx(tasks.balanced_weights(counts))
    assert trainer.loss_fn.ignore_index == 255
    assert trainer.loss_fn.weight[0] < 1 < trainer.loss_fn.weight[2]  # background is common


@pytest.mark.parametrize("overrides, message", [
    ({"task": "classify"}, r"has a mask per image \(segmentation\); drop --task classify"),
    ({"class_weight": [1.0, 2.0]}, "--class-weight gives 2 weights but .* has 3 classes "
                                   r"\(background, square, bar\)"),
    ({"model": "unet-mini"}, "takes 64x64 images but those in .* are 16x16; masks are not "
                             "resized"),
])
def test_settings_that_cannot_work_are_refused_in_one_line(workspace, tmp_path, overrides,
                                                           message):
    with pytest.raises((TrainingError, cn.data.DataError), match=message):
        quiet(settings(workspace, **overrides), tmp_path / "x").setup()


def test_a_classifier_on_masks_and_a_segmenter_on_classes_are_told_apart(workspace, tmp_path):
    (tmp_path / "flat.toml").write_text(TINY_SEGMENTER.replace('kernel_size = 1\ninit',
                                                               'kernel_size = 16\ninit'))
    with pytest.raises(TrainingError, match=r"outputs 1x1 maps for 16x16 images; a segmenter "
                                            r"gives a score per input pixel"):
        quiet(settings(workspace, model=str(tmp_path / "flat.toml")), tmp_path / "a").setup()
    with pytest.raises(TrainingError, match="--task segment needs a mask per image, and "
                                            "mnist-5k has one class per image"):
        quiet(TrainConfig(model="lenet5", task="segment"), tmp_path / "b").setup()


# -- evaluate and predict ----------------------------------------------------------------------
def test_evaluate_prints_iou_per_class_and_json(run, workspace, capsys):
    out, _ = run
    assert main(["evaluate", str(out), "--dataset", str(workspace / "shapes"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["per_class_iou"]) == set(SEGMENT_CLASSES)
    assert result["pixels"] == 24 * (16 * 16 - 1)  # every pixel but the ignored one
    assert result["mean_iou"] == pytest.approx(np.mean(list(result["per_class_iou"].values())))
    assert main(["evaluate", str(out), "--dataset", str(workspace / "shapes")]) == 0
    text = capsys.readouterr().out
    assert "mean IoU" in text and "      class     IoU  accuracy" in text and " square " in text


def test_predict_writes_a_mask_that_reads_back_and_an_overlay(run, workspace, tmp_path, capsys):
    out, _ = run
    image = workspace / "shapes/images/000.png"
    assert main(["predict", str(out), str(image), "-o", str(tmp_path / "m.png")]) == 0
    printed = capsys.readouterr().out
    assert "000.png: 16x16 pixels: background" in printed and "m-overlay.png" in printed
    mask = Image.open(tmp_path / "m.png")
    assert mask.mode == "P"  # colours for the eye, class indices for programs
    loaded = checkpoint.load(out)
    x = loaded.preprocess(np.asarray(Image.open(image))[None, None])
    np.testing.assert_array_equal(np.asarray(mask), loaded.model.forward(x)[0].argmax(axis=0))
    overlay = np.asarray(Image.open(tmp_path / "m-overlay.png"))
    assert overlay.shape == (16, 16, 3)
    assert main(["predict", str(out), str(image), str(image), "-o", str(tmp_path / "m.png")]) == 1
    assert "names one file but 2 images were given" in capsys.readouterr().err
    assert main(["predict", str(out), str(image), "--json", "-o", str(tmp_path / "masks")]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["mask"].endswith("000-mask.png") and sum(result["classes"].values()) == 1


def test_the_report_shows_masks_and_iou_bars(run):
    out, _ = run
    from convnet.viz.report import write_report

    text = write_report(out).read_text()
    assert "Segmentation (validation)" in text and "IoU per class (validation)" in text
    assert "best validation mean IoU" in text and "Confusion matrix" not in text


# -- the zoo -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fcn-mini", "unet-mini"])
def test_zoo_segmenters_return_to_the_input_size_with_visible_arithmetic(name):
    assert zoo.MODELS[name].task == "segment"
    model = zoo.build_model(name, num_classes=5)
    summary = model.describe((1, 64, 64))
    assert tuple(summary.output_shape) == (5, 64, 64)
    rows = {row.name: row for row in summary.rows}
    if name == "unet-mini":  # each up-convolution meets the encoder map it is concatenated with
        for level, size in ((3, 16), (2, 32), (1, 64)):
            assert rows[f"up{level}"].output_shape[1:] == (size, size)
            assert rows[f"cat{level}"].output_shape[1:] == (size, size)
        assert "64 x 2*2*32 + 32 = 8,224" in rows["up3"].formula
    else:  # strided 4x4 convs halve exactly; scores at three scales are all sized for 5
        assert [rows[n].output_shape for n in ("down1", "down2", "down3")] == [
            (16, 32, 32), (32, 16, 16), (64, 8, 8)]
        assert [rows[n].output_shape[0] for n in ("score8", "score4", "score2")] == [5, 5, 5]
    from convnet.viz.probe import layer_outputs, stages

    x = np.zeros((1, 1, 64, 64), np.float32)
    outputs = layer_outputs(model, x)
    assert [o.name for o in outputs] == [n for n, _ in stages(model)]
    assert outputs[-1].output.shape == (1, 5, 64, 64)


# -- ONNX --------------------------------------------------------------------------------------
def test_an_onnx_segmenter_evaluates_and_predicts(run, workspace, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from exchange_helpers import assert_close, ort_run

    out, _ = run
    path = tmp_path / "seg.onnx"
    assert main(["export", str(out), "-o", str(path)]) == 0
    loaded = checkpoint.load(out)
    x = loaded.preprocess(np.asarray(Image.open(workspace / "shapes/images/001.png"))[None, None])
    assert_close(ort_run(path, x), loaded.model.forward(x))
    capsys.readouterr()
    # the imported file: evaluated and predicted as the run is (cn.onnx.load's chain import)
    assert main(["evaluate", str(path), "--dataset", str(workspace / "shapes"), "--json"]) == 0
    from_onnx = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(out), "--dataset", str(workspace / "shapes"), "--json"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert from_onnx["mean_iou"] == pytest.approx(from_run["mean_iou"], abs=1e-6)
    assert main(["predict", str(path), str(workspace / "shapes/images/001.png"), "-o",
                 str(tmp_path / "o.png")]) == 0
    assert (tmp_path / "o-overlay.png").is_file()


def test_an_exported_unet_imports_as_a_graph_and_evaluates_as_its_run(workspace, tmp_path,
                                                                       capsys):
    """unet-mini (ConvTranspose2d, Concat skips, an Upsample added to the scores) through ONNX
    and back: the imported graph scores the folder's pixels as the run does."""
    pytest.importorskip("onnxruntime")
    from exchange_helpers import assert_close, ort_run

    from convnet.io.modelfile import spec_to_toml

    spec = zoo.spec_for("unet-mini", num_classes=len(SEGMENT_CLASSES))
    spec["input_shape"] = [1, 16, 16]  # the folder's size: 16 -> 8 -> 4 -> 2 and back
    (tmp_path / "unet.toml").write_text(spec_to_toml(spec))
    out = tmp_path / "unet"
    quiet(settings(workspace, model=str(tmp_path / "unet.toml"), epochs=1), out).fit()
    path = tmp_path / "unet.onnx"
    assert main(["export", str(out), "-o", str(path)]) == 0
    imported = cn.onnx.load(path)
    assert isinstance(imported, cn.Model)
    kinds = {type(layer).__name__ for layer in imported.layers}
    assert {"ConvTranspose2d", "Concat", "Resize", "Add"} <= kinds
    loaded = checkpoint.load(out)
    x = loaded.preprocess(np.asarray(Image.open(workspace / "shapes/images/001.png"))[None, None])
    assert_close(ort_run(path, x), loaded.model.forward(x))
    assert_close(imported.forward(x), loaded.model.forward(x))
    capsys.readouterr()
    results = []
    for model in (path, out):
        assert main(["evaluate", str(model), "--dataset", str(workspace / "shapes"),
                     "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["mean_iou"] == pytest.approx(results[1]["mean_iou"], abs=1e-6)
    assert results[0]["per_class_iou"] == pytest.approx(results[1]["per_class_iou"], abs=1e-6)


# -- the explorer ------------------------------------------------------------------------------
def test_the_explorer_shows_a_segmenters_masks_and_iou(run):
    import warnings

    from convnet.web import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    def local_client(app):  # as the explorer's own page is: on 127.0.0.1, with its token
        return TestClient(app, base_url="http://127.0.0.1:8000",
                          headers={"X-Convnet-Token": app.state.token})

    out, summary = run
    with local_client(create_app(out, report=False)) as client:
        assert client.get("/api/model").json()["task"] == "segment"
        assert 'id="segment-panel"' in client.get("/").text
        items = client.get("/api/samples").json()["items"]
        assert "sprite" in items[0] and items[0]["label"] is None
        assert set(items[0]["class_name"].split("+")) <= {"square", "bar"}
        predicted = client.get("/api/predict/val-0").json()
        assert sum(t["probability"] for t in predicted["top_k"]) == pytest.approx(1)
        shown = client.get("/api/segment/val-0").json()
        for key in ("input", "truth", "predicted", "overlay"):
            assert shown[key].startswith("data:image/png;base64,")
        assert set(shown["image_iou"]["per_class"]) == set(SEGMENT_CLASSES)
        # over the samples (the run's validation split), with the best weights: the best epoch
        assert shown["samples_iou"]["mean_iou"] == pytest.approx(summary["best_val_accuracy"])
        refused = client.get("/api/explain/val-0")
        assert refused.status_code == 422 and "segmenter scores every pixel" in refused.text
    with local_client(create_app(model_name="lenet5", report=False)) as client:
        refused = client.get("/api/segment/val-0")
        assert refused.status_code == 422 and "one class per image, not a mask" in refused.text


def test_a_segmenter_or_task_segment_defaults_to_the_embedded_segmentation_data():
    from convnet.cli import build_parser
    from convnet.cli.train import config_from_args

    def config(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    assert config("--model", "unet-mini").dataset == "digits-seg"
    assert config("--model", "net.toml", "--task", "segment").dataset == "digits-seg"
    assert config("--model", "lenet5").dataset == "mnist-5k"
    assert config("--model", "unet-mini", "--class-weight", "balanced").class_weight == "balanced"
    assert config("--class-weight", "0.5,1,2").class_weight == [0.5, 1.0, 2.0]
    with pytest.raises(SystemExit):
        config("--class-weight", "heavy")
