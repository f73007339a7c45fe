import pytest

from convnet.io import modelfile

GOOD = """\
name = "tiny"
input_shape = [1, 28, 28]

[[layers]]
type = "conv"
out_channels = 8
kernel_size = 5
padding = 2

[[layers]]
type = "relu"

[[layers]]
type = "maxpool"
kernel_size = 2

[[layers]]
type = "residual"
body = [
  { type = "conv", out_channels = 8, kernel_size = 3, padding = 1 },
  { type = "relu" },
]

[[layers]]
type = "flatten"

[[layers]]
type = "linear"
out_features = 10
"""


def test_a_valid_file_builds(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(GOOD)
    model = modelfile.load(path)
    assert model.output_shape((1, 28, 28)) == (10,)
    assert model.layers[-1].in_features == 8 * 14 * 14


def test_errors_point_at_the_file_line_and_layer(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("kernel_size = 2", "kernel_size = 3"))
    with pytest.raises(modelfile.ModelFileError) as caught:
        modelfile.load(path)
    message = str(caught.value)
    header_line = GOOD.splitlines().index("type = \"maxpool\"")  # 0-based line of the type
    assert message.startswith(f"{path}:{header_line}: layer 3 (maxpool): pool1: input 28x28")
    assert "(28 - 3 + 2*0)/3 + 1 = 9.33" in message


def test_linear_mismatch_and_bad_toml_are_explained(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(GOOD.replace("out_features = 10", "in_features = 99\nout_features = 10"))
    with pytest.raises(modelfile.ModelFileError, match="in_features=99 but 1568 features"):
        modelfile.load(path)
    path.write_text("input_shape = [1, 28\n")
    with pytest.raises(modelfile.ModelFileError, match="not valid TOML"):
        modelfile.load(path)
    path.write_text('inputshape = [1, 28, 28]\n')
    with pytest.raises(modelfile.ModelFileError, match="unknown top-level key.*inputshape"):
        modelfile.load(path)
