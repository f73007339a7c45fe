"""The model summary as data and as a table: shapes, parameter formulas, receptive fields,
multiply-adds and activation memory, with totals; every expected number worked out here."""

import numpy as np
import pytest

import convnet as cn


def _lecture_model():
    return cn.Sequential(cn.Conv2d(3, 10, 5, stride=1, padding=2), cn.ReLU(), cn.MaxPool2d(2),
                         cn.Flatten(), cn.Linear(10 * 16 * 16, 10))


def test_lecture_model_rows():
    summary = _lecture_model().describe((3, 32, 32))
    rows = {row.name: row for row in summary.rows}
    assert [row.name for row in summary.rows] == ["conv1", "relu1", "pool1", "flatten1", "fc1"]
    conv, pool, fc = rows["conv1"], rows["pool1"], rows["fc1"]
    assert conv.output_shape == (10, 32, 32)
    assert conv.params == 10 * (5 * 5 * 3 + 1)
    assert conv.formula == "10 x (5*5*3 + 1) = 760"
    assert conv.macs == 10 * (5 * 5 * 3) * 32 * 32  # one multiply-add per weight per position
    assert conv.activation_bytes == 10 * 32 * 32 * 4
    assert conv.receptive_field == (5, 5) and conv.jump == (1, 1)
    assert conv.window == {"input_hw": [32, 32], "kernel": [5, 5], "stride": [1, 1],
                           "dilation": [1, 1], "padding": [2, 2, 2, 2],
                           "output_hw": [32, 32], "dropped": [0, 0]}
    assert rows["relu1"].params == 0 and rows["relu1"].macs == 0
    assert pool.output_shape == (10, 16, 16)
    assert pool.receptive_field == (6, 6) and pool.jump == (2, 2)
    assert rows["flatten1"].output_shape == (2560,)
    assert fc.output_shape == (10,)
    assert fc.params == 2560 * 10 + 10
    assert fc.formula == "2560*10 + 10 = 25,610"
    assert fc.macs == 2560 * 10


def test_totals_are_the_sums_of_the_rows():
    model = _lecture_model()
    summary = model.describe((3, 32, 32))
    assert summary.total_params == 760 + 25610 == model.num_parameters()
    assert summary.total_macs == 10 * 75 * 32 * 32 + 25600
    assert summary.activation_bytes == 4 * (10240 + 10240 + 2560 + 2560 + 10)
    assert summary.output_shape == (10,)
    data = summary.to_dict()
    assert data["total_params"] == 26370
    assert data["param_bytes"] == 26370 * 4
    assert data["activation_bytes_per_sample"] == summary.activation_bytes
    assert data["input_shape"] == [3, 32, 32] and data["output_shape"] == [10]
    assert [layer["name"] for layer in data["layers"]] == [
        "conv1", "relu1", "pool1", "flatten1", "fc1"]


def test_a_float64_model_counts_eight_bytes_a_value(capsys):
    model = _lecture_model().astype(np.float64)
    summary = model.describe((3, 32, 32))
    assert summary.activation_bytes == 8 * (10240 + 10240 + 2560 + 2560 + 10)
    assert summary.to_dict()["param_bytes"] == 26370 * 8
    assert summary.to_dict()["dtype"] == "float64"
    assert "Total params: 26,370 (206.0 KiB as float64)" in str(summary).splitlines()


def test_table_text(capsys):
    _lecture_model().summary((3, 32, 32))
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == "Input shape: (3, 32, 32)  (C, H, W per sample)"
    conv_line = next(line for line in lines if line.startswith("conv1 (Conv2d)"))
    for cell in ("(10, 32, 32)", "10 x (5*5*3 + 1) = 760", "5x5 jump 1", "768,000",
                 "40.0 KiB"):
        assert cell in conv_line
    pool_line = next(line for line in lines if line.startswith("pool1 (MaxPool2d)"))
    assert "6x6 jump 2" in pool_line
    assert "Total params: 26,370 (103.0 KiB as float32)" in lines
    assert "Mult-adds per sample: 793,600" in lines
    assert "Output shape: (10,)" in lines


def test_two_3x3_convs_see_5x5():
    summary = cn.Sequential(cn.Conv2d(1, 1, 3, padding=1), cn.Conv2d(1, 1, 3, padding=1)
                            ).describe((1, 8, 8))
    assert [(row.receptive_field, row.jump) for row in summary.rows] == [
        ((3, 3), (1, 1)), ((5, 5), (1, 1))]


def test_three_3x3_convs_see_7x7_and_strides_multiply_the_jump():
    model = cn.Sequential(cn.Conv2d(1, 1, 3, stride=2, padding=1), cn.MaxPool2d(2),
                          cn.Conv2d(1, 1, (3, 1), padding=(1, 0)))
    rows = model.describe((1, 15, 15)).rows
    assert (rows[0].receptive_field, rows[0].jump) == ((3, 3), (2, 2))
    assert (rows[1].receptive_field, rows[1].jump) == ((5, 5), (4, 4))  # 3 + (2-1)*2
    assert (rows[2].receptive_field, rows[2].jump) == ((13, 5), (4, 4))  # 5 + (3-1)*4


def test_dilated_conv_receptive_field():
    rows = cn.Sequential(cn.Conv2d(1, 1, 3, dilation=2)).describe((1, 9, 9)).rows
    assert rows[0].receptive_field == (5, 5)
    assert rows[0].output_shape == (1, 5, 5)


def test_grouped_conv_parameters_and_macs():
    model = cn.Sequential(cn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False))
    row = model.describe((8, 6, 6)).rows[0]
    assert row.params == 16 * 2 * 3 * 3
    assert row.formula == "16 x 3*3*2 = 288"
    assert row.macs == 16 * 2 * 9 * 36


def test_batchnorm_row():
    row = cn.Sequential(cn.BatchNorm2d(4)).describe((4, 5, 5)).rows[0]
    assert row.params == 8 and row.formula == "2 x 4 = 8"
    assert row.macs == 2 * 4 * 25


def test_residual_network_summary():
    model = cn.Sequential(
        cn.Conv2d(3, 8, 3, padding=1), cn.ReLU(),
        cn.Residual(cn.Conv2d(8, 8, 3, padding=1), cn.ReLU(), cn.Conv2d(8, 8, 3, padding=1)),
        cn.Residual(cn.Conv2d(8, 16, 3, stride=2, padding=1),
                    projection=cn.Conv2d(8, 16, 1, stride=2)),
        cn.GlobalAvgPool2d(), cn.Flatten(), cn.Linear(16, 10),
    )
    summary = model.describe((3, 9, 9))
    names = [(row.name, row.depth) for row in summary.rows]
    assert names == [
        ("conv1", 0), ("relu1", 0), ("res1", 0), ("conv2", 1), ("relu2", 1), ("conv3", 1),
        ("res2", 0), ("conv4", 1), ("conv5", 1), ("gap1", 0), ("flatten1", 0), ("fc1", 0)]
    rows = {row.name: row for row in summary.rows}
    assert rows["res1"].params == 0 and rows["res1"].output_shape == (8, 9, 9)
    assert rows["res1"].receptive_field == (7, 7)  # conv1, conv2, conv3: 3 + 2 + 2
    assert rows["res2"].output_shape == (16, 5, 5)
    assert rows["conv4"].receptive_field == (9, 9) and rows["conv4"].jump == (2, 2)
    assert rows["conv5"].receptive_field == (7, 7) and rows["conv5"].jump == (2, 2)
    assert rows["conv5"].formula == "16 x (1*1*8 + 1) = 144"
    assert rows["gap1"].output_shape == (16, 1, 1)
    assert summary.total_params == model.num_parameters()
    assert summary.total_macs == sum(
        rows[name].macs for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1"))
    assert "  conv2 (Conv2d)" in str(summary)  # nested rows are indented


def test_summary_uses_the_built_input_shape_and_needs_one():
    model = cn.Sequential(cn.Conv2d(1, 2, 3), input_shape=(1, 5, 5))
    assert model.describe().output_shape == (2, 3, 3)
    with pytest.raises(ValueError, match="summary needs the per-sample input shape"):
        cn.Sequential(cn.ReLU()).describe()


def test_summary_refuses_what_does_not_fit():
    with pytest.raises(cn.ShapeError, match="conv1: input 7x7, filter 3, stride 3"):
        cn.Sequential(cn.Conv2d(3, 10, 3, stride=3)).summary((3, 7, 7))


def test_summarize_function_matches_describe():
    model = _lecture_model()
    assert cn.summarize(model, (3, 32, 32)).to_dict() == model.describe((3, 32, 32)).to_dict()


def test_summary_shapes_agree_with_forward(rng):
    model = _lecture_model()
    rows = model.describe((3, 32, 32)).rows
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    for layer, row in zip(model.layers, rows, strict=True):
        x = layer.forward(x)
        assert x.shape[1:] == row.output_shape, row.name


def test_weight_sharing_in_numbers_for_lenet5_conv1():
    # Lecture 5: a conv layer shares one filter across every position. LeNet-5's conv1 turns
    # 1x28x28 into 6x28x28 with 6 filters of 5*5*1 + 1 = 26 parameters.
    from convnet.io import zoo

    summary = zoo.build_model("lenet5").describe((1, 28, 28))
    rows = {row.name: row for row in summary.rows}
    sharing = rows["conv1"].sharing
    assert sharing["conv"] == {"params": 156, "text": "6 x 26 = 156"}
    # No sharing: a filter of its own at each of the 28*28 positions of each of the 6 maps.
    assert sharing["locally_connected"] == {"params": 28 * 28 * 6 * 26,
                                            "text": "28*28*6 x 26 = 122,304"}
    # Fully connected: every one of 784 inputs to every one of 4,704 outputs, plus biases.
    assert sharing["fully_connected"]["params"] == 784 * 4704 + 4704
    assert sharing["fully_connected"]["text"] == "784 x 4,704 + 4,704 = 3,692,640"
    assert rows["conv2"].sharing["locally_connected"]["params"] == 10 * 10 * 16 * 151
    assert rows["pool1"].sharing is None and rows["fc1"].sharing is None
    assert sharing["conv"]["params"] == rows["conv1"].params
    assert summary.to_dict()["layers"][0]["sharing"]["conv"]["text"] == "6 x 26 = 156"
    table = str(summary).splitlines()
    at = table.index("Weight sharing: each conv layer's parameters beside layers giving its "
                     "output volume without sharing")
    assert table[at + 2].split() == ["conv1", "6", "x", "26", "=", "156", "28*28*6", "x", "26",
                                     "=", "122,304", "784", "x", "4,704", "+", "4,704", "=",
                                     "3,692,640"]


def test_weight_sharing_of_a_grouped_conv_without_bias():
    row = cn.Sequential(cn.Conv2d(4, 8, 3, groups=2, bias=False)).describe((4, 6, 6)).rows[0]
    assert row.sharing["per_filter"] == 3 * 3 * 2
    assert row.sharing["conv"]["params"] == row.params == 8 * 18
    assert row.sharing["fully_connected"]["text"] == "144 x 128 = 18,432"


def test_vector_rows_see_the_whole_image():
    lines = str(_lecture_model().describe((3, 32, 32))).splitlines()
    fc = next(line for line in lines if line.startswith("fc1 (Linear)"))
    assert "whole image" in fc and "jump" not in fc
    conv = next(line for line in lines if line.startswith("conv1 (Conv2d)"))
    assert "5x5 jump 1" in conv
