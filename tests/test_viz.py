"""convnet.viz: the pictures' arrays against values worked out independently, saliency against
centred differences, Grad-CAM against the closed form of a linear head, and the CLI and report
on a real (tiny) run folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_web_support import make_run

import convnet as cn
from convnet.cli import main
from convnet.viz import (
    activation_grid,
    class_gradient,
    curves_figure,
    filter_grid,
    filter_strengths,
    filter_tiles,
    grad_cam,
    layer_outputs,
    read_metrics,
    rescale,
    saliency_map,
    tile_grid,
    top_activating,
    worst_mistakes,
)
from convnet.viz.confusion import confusion_figure
from convnet.viz.filters import filters_figure
from convnet.viz.mistakes import mistakes_figure
from convnet.viz.report import ReportCallback

EPS = 1e-6


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("viz"))


def small_model(dtype=np.float64):
    """Odd sizes, a non-square kernel, stride 2 and a smooth nonlinearity (no ReLU kinks)."""
    cn.manual_seed(3)
    model = cn.Sequential(cn.Conv2d(2, 3, (3, 2), stride=2, padding=1), cn.Tanh(),
                          cn.Conv2d(3, 4, 3, padding=1), cn.Tanh(), cn.Flatten(),
                          cn.Linear(4 * 4 * 4, 5), input_shape=(2, 7, 6))
    return model.astype(dtype)


# -- images --------------------------------------------------------------------------------

def test_rescale_maps_to_unit_range_and_constant_to_mid_gray():
    values = np.array([[2.0, 4.0], [3.0, 6.0]])
    np.testing.assert_allclose(rescale(values), [[0, 0.5], [0.25, 1.0]])
    flat = rescale(np.full((3, 3), 7.0))
    assert not np.isnan(flat).any()
    np.testing.assert_array_equal(flat, 0.5)


def test_tile_grid_places_tiles_row_by_row_with_padding():
    tiles = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    grid = tile_grid(tiles, columns=3, pad=1, fill=-1)
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2)
    np.testing.assert_array_equal(grid[0:2, 4:7], tiles[1])
    np.testing.assert_array_equal(grid[3:5, 4:7], tiles[4])
    assert (grid[3:5, 8:] == -1).all()  # the sixth slot stays empty


# -- filters -------------------------------------------------------------------------------

def test_filter_tiles_scale_each_filter_by_its_own_range():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 2, 3, 3))
    weight[1] *= 100  # a strong filter must not wash out the others
    tiles = filter_tiles(weight, rgb=False)
    assert tiles.shape == (4, 2, 3, 3)
    for k in range(4):
        expected = (weight[k] - weight[k].min()) / (weight[k].max() - weight[k].min())
        np.testing.assert_allclose(tiles[k], expected, atol=1e-6)


def test_constant_filter_gives_mid_gray_not_nan():
    weight = np.zeros((3, 1, 5, 5))
    weight[1] = 0.25  # constant
    weight[2, 0, 2, 2] = 1.0
    tiles = filter_tiles(weight)
    assert not np.isnan(tiles).any()
    np.testing.assert_array_equal(tiles[0], 0.5)
    np.testing.assert_array_equal(tiles[1], 0.5)
    assert tiles[2].max() == 1.0 and tiles[2].min() == 0.0


def test_rgb_tiles_are_channels_last_and_need_three_channels():
    weight = np.random.default_rng(1).standard_normal((6, 3, 5, 5))
    tiles = filter_tiles(weight)  # 3 channels: colour by default
    assert tiles.shape == (6, 5, 5, 3)
    np.testing.assert_allclose(tiles[2, :, :, 1], filter_tiles(weight, rgb=False)[2, 1])
    with pytest.raises(ValueError, match="colour tiles need 3 input channels, the filters "
                                         "have 2"):
        filter_tiles(weight[:, :2], rgb=True)


def test_filter_grid_shapes():
    rng = np.random.default_rng(2)
    colour = filter_grid(rng.standard_normal((16, 3, 5, 5)))
    assert colour.shape == (4 * 5 + 3, 4 * 5 + 3, 3)
    gray = filter_grid(rng.standard_normal((6, 1, 5, 5)))  # one channel: a near-square grid
    assert gray.shape == (2 * 5 + 1, 3 * 5 + 2)
    channels = filter_grid(rng.standard_normal((4, 6, 3, 3)), max_channels=4, scale=2)
    assert channels.ndim == 2 and channels.shape[1] % 2 == 0
    assert 0 <= channels.min() and channels.max() <= 1


def test_filters_figure_uses_colour_for_a_first_layer_on_rgb_input():
    model = cn.Sequential(cn.Conv2d(3, 8, 5, padding=2), cn.ReLU(), cn.Conv2d(8, 4, 3))
    fig = filters_figure(model)
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape[-1] == 3
    fig = filters_figure(model, "conv2")
    assert fig.axes[0].get_images()[0].get_array().ndim == 2
    with pytest.raises(ValueError, match="relu1 is a ReLU, not a Conv2d"):
        filters_figure(model, "relu1")


# -- activations -----------------------------------------------------------------------------

def test_layer_outputs_match_each_layer_output_shape_and_the_full_forward():
    model = small_model()
    model.train()
    x = np.random.default_rng(4).standard_normal((2, 2, 7, 6))
    outputs = layer_outputs(model, x)
    assert [o.name for o in outputs] == [layer.name for layer in model.layers]
    shape = (2, 7, 6)
    for out, layer in zip(outputs, model.layers, strict=True):
        shape = layer.output_shape(shape)
        assert out.output.shape == (2, *shape)
    with cn.no_grad():
        expected = model.eval().forward(x)
    np.testing.assert_allclose(outputs[-1].output, expected)
    model.train()
    layer_outputs(model, x)
    assert all(module.training for module in model.modules())  # mode restored
    assert [o.name for o in layer_outputs(model, x, upto="tanh1")][-1] == "tanh1"
    with pytest.raises(KeyError, match="the model has no layer 'conv9'"):
        layer_outputs(model, x, upto="conv9")


def test_activation_grid_shares_one_scale_per_layer_unless_asked():
    maps = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0), np.array([[0, 4], [4, 0.]])])
    shared = activation_grid(maps, columns=3, pad=0)
    np.testing.assert_allclose(shared[:, 0:2], 0.25)
    np.testing.assert_allclose(shared[:, 2:4], 0.75)
    own = activation_grid(maps, columns=3, pad=0, per_map=True)
    np.testing.assert_allclose(own[:, 0:2], 0.5)  # constant map: mid-gray
    np.testing.assert_allclose(own[:, 4:6], [[0, 1], [1, 0]])


# -- saliency and Grad-CAM ---------------------------------------------------------------------

def test_class_gradient_matches_centred_differences():
    model = small_model()
    x = np.random.default_rng(5).standard_normal((1, 2, 7, 6))
    gradient = class_gradient(model, x, 3)

    def score():
        with cn.no_grad():
            return float(model.eval().forward(x)[0, 3])

    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + EPS
        plus = score()
        x[index] = old - EPS
        minus = score()
        x[index] = old
        numeric[index] = (plus - minus) / (2 * EPS)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(saliency_map(model, x, 3), np.abs(numeric).max(axis=1)[0],
                               rtol=1e-6, atol=1e-8)


def test_saliency_leaves_parameter_gradients_and_modes_alone():
    model = small_model()
    for param in model.parameters():
        param.grad[...] = 0.5
    model.train()
    saliency_map(model, np.ones((1, 2, 7, 6)), 0)
    grad_cam(model, np.ones((1, 2, 7, 6)), 0)
    assert all((param.grad == 0.5).all() for param in model.parameters())
    assert all(module.training for module in model.modules())


def test_saliency_refuses_bad_class_and_no_grad():
    model = small_model()
    x = np.ones((1, 2, 7, 6))
    with pytest.raises(ValueError, match=r"class_index must be in \[0, 4\], received 5"):
        saliency_map(model, x, 5)
    with cn.no_grad(), pytest.raises(RuntimeError, match="outside no_grad"):
        saliency_map(model, x, 0)


def test_grad_cam_equals_the_closed_form_for_a_linear_head():
    model = small_model()
    x = np.random.default_rng(6).standard_normal((1, 2, 7, 6))
    cam = grad_cam(model, x, 2, "tanh2")
    activation = layer_outputs(model, x, upto="tanh2")[-1].output[0]  # 4, 4, 4
    weight = model.layers[-1].weight.data[2].reshape(4, 4, 4)  # d score / d activation
    expected = np.maximum(np.tensordot(weight.mean(axis=(1, 2)), activation, axes=1), 0)
    assert cam.cam.shape == (4, 4)
    assert (cam.cam >= 0).all()
    np.testing.assert_allclose(cam.cam, expected, rtol=1e-10, atol=1e-12)
    assert grad_cam(model, x, 2).layer == "tanh2"  # the last conv, after its nonlinearity
    big = cam.on_input((7, 6))
    assert big.shape == (7, 6) and big.min() >= 0 and big.max() <= 1


def test_grad_cam_refuses_layers_without_maps():
    model = small_model()
    with pytest.raises(ValueError, match="flatten1 outputs shape"):
        grad_cam(model, np.ones((1, 2, 7, 6)), 0, "flatten1")


# -- top images, mistakes, confusion ----------------------------------------------------------

def test_top_activating_ranks_by_the_peak_of_the_filter_map():
    model = small_model()
    x = np.random.default_rng(7).standard_normal((9, 2, 7, 6))
    strengths = filter_strengths(model, x, "conv2", batch_size=4)
    maps = layer_outputs(model, x, upto="conv2")[-1].output
    np.testing.assert_allclose(strengths, maps.max(axis=(2, 3)))
    indices, values = top_activating(strengths, 1, k=3)
    np.testing.assert_array_equal(indices, np.argsort(-maps[:, 1].max(axis=(1, 2)))[:3])
    assert list(values) == sorted(values, reverse=True)
    with pytest.raises(ValueError, match=r"filter_index must be in \[0, 3\]"):
        top_activating(strengths, 4)


def test_worst_mistakes_are_wrong_and_most_confident_first():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.05, 0.95], [0.7, 0.3]])
    labels = np.array([0, 0, 0, 1, 1])
    worst = worst_mistakes(probabilities, labels, k=5)
    assert [m.index for m in worst] == [1, 4, 2]
    assert worst[0].predicted == 1 and worst[0].label == 0
    assert math.isclose(worst[0].confidence, 0.8) and math.isclose(worst[0].true_probability, 0.2)
    fig = mistakes_figure(np.zeros((5, 1, 4, 4), np.uint8), worst, ["a", "b"])
    assert "0.8" not in fig.axes[0].get_title() and "80%" in fig.axes[0].get_title()


def test_confusion_figure_checks_the_matrix_shape():
    fig = confusion_figure(np.array([[3, 1], [0, 4]]), ["cat", "dog"])
    assert "accuracy 87.5%" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="expected a 3x3 matrix for 3 classes"):
        confusion_figure(np.eye(2), ["a", "b", "c"])


# -- curves ------------------------------------------------------------------------------------

def test_curves_from_a_metrics_file(tmp_path):
    records = [{"epoch": e, "step": 10 * e, "train_loss": 2.0 / e, "train_accuracy": 0.2 * e,
                "val_loss": 2.5 / e, "val_accuracy": 0.15 * e, "lr": 0.1 / e}
               for e in (1, 2, 3)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"epoch": 4, "tr')
    assert read_metrics(tmp_path) == records  # the half-written last line is skipped
    fig = curves_figure(records)
    loss_ax, acc_ax, lr_ax = fig.axes
    train_loss = loss_ax.get_lines()[0]
    np.testing.assert_allclose(train_loss.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(train_loss.get_ydata(), [2.0, 1.0, 2.0 / 3])
    np.testing.assert_allclose(acc_ax.get_lines()[1].get_ydata(), [0.15, 0.3, 0.45])
    np.testing.assert_allclose(lr_ax.get_lines()[0].get_ydata(), [0.1, 0.05, 0.1 / 3])
    path.write_text(json.dumps(records[0]) + "\nnot json\n" + json.dumps(records[1]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON record"):
        read_metrics(path)


# -- a real run: report and CLI ---------------------------------------------------------------

def test_report_callback_writes_a_self_contained_report(tmp_path):
    run = make_run(tmp_path, epochs=1, callbacks=[ReportCallback(samples=1, mistakes=4)])
    text = (run / "report.html").read_text()
    for heading in ("Model", "Training curves", "Filters of conv1", "Activation maps",
                    "Confusion matrix", "Worst mistakes"):
        assert f"<h2>{heading}" in text
    assert text.count("data:image/png;base64,") == 5  # curves, filters, 1 sample, matrix, mistakes
    assert "http://" not in text and "https://" not in text and "<script" not in text


@pytest.mark.parametrize("what", ["filters", "activations", "curves", "confusion", "mistakes",
                                  "saliency", "top"])
def test_visualize_writes_a_png(run_folder, tmp_path, what, capsys):
    out = tmp_path / f"{what}.png"
    assert main(["visualize", str(run_folder), what, "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.strip() == str(out)


def test_visualize_an_uploaded_image_and_errors(run_folder, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "bar.png"
    Image.fromarray(np.full((30, 20, 3), 200, np.uint8)).save(image)
    out = tmp_path / "maps.png"
    assert main(["visualize", str(run_folder), "activations", "--image", str(image),
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "resized from 30x20 to 12x12" in err and "RGB converted to 1 gray channel" in err
    assert main(["visualize", str(run_folder), "filters", "--layer", "fc1"]) == 1
    assert "fc1 is a Linear, not a Conv2d" in capsys.readouterr().err
    assert main(["visualize", str(run_folder), "saliency", "--class", "diagonal"]) == 1
    assert "--class 'diagonal' is neither a class name nor an index; classes: horizontal, " \
        "vertical" in capsys.readouterr().err
    assert main(["visualize", "lenet5", "curves"]) == 1
    assert "curves need a run folder" in capsys.readouterr().err


def test_report_command(run_folder, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(run_folder), "-o", str(out), "--samples", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().startswith("<!DOCTYPE html>")
