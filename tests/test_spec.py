import numpy as np
import pytest

import convnet as cn
from convnet.io.spec import SpecError, build, to_spec


def _spec(*layers, input_shape=(3, 8, 8), strict=True):
    return {"input_shape": list(input_shape), "strict": strict, "layers": list(layers)}


def test_channels_and_features_are_taken_from_the_input():
    model = build(_spec({"type": "conv", "out_channels": 4, "kernel_size": 3, "padding": 1},
                        {"type": "relu"}, {"type": "maxpool", "kernel_size": 2},
                        {"type": "flatten"}, {"type": "linear", "out_features": 5}))
    conv, linear = model.layers[0], model.layers[4]
    assert conv.in_channels == 3
    assert linear.in_features == 4 * 4 * 4
    assert model.output_shape((3, 8, 8)) == (5,)


def test_round_trip_rebuilds_the_same_architecture_and_keys():
    model = cn.Sequential(
        cn.Conv2d(3, 6, (3, 5), stride=(1, 2), padding="same", dilation=1, groups=3, bias=False),
        cn.BatchNorm2d(6), cn.LeakyReLU(0.2),
        cn.Residual(cn.Conv2d(6, 6, 3, padding=1), cn.ReLU(),
                    projection=None),
        cn.AvgPool2d(2, count_include_pad=False), cn.Dropout(0.3), cn.Flatten(),
        cn.Linear(6 * 4 * 2, 3), cn.Softmax())
    spec = to_spec(model, (3, 8, 8))
    rebuilt = build(spec)
    assert repr(rebuilt) == repr(model)
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    assert to_spec(rebuilt, (3, 8, 8)) == spec


def test_errors_name_the_layer_index_and_the_engine_message():
    with pytest.raises(SpecError) as caught:
        build(_spec({"type": "conv", "out_channels": 4, "kernel_size": 3},
                    {"type": "conv", "out_channels": 4, "kernel_size": 3, "stride": 3},
                    input_shape=(1, 9, 9)))
    assert caught.value.layer_index == 1
    assert "conv2: input 7x7, filter 3, stride 3" in str(caught.value)


def test_unknown_type_and_argument_are_refused_with_the_accepted_ones():
    with pytest.raises(SpecError, match="unknown layer type 'convolution'"):
        build(_spec({"type": "convolution"}))
    with pytest.raises(SpecError, match="unknown argument.*filters.*accepted: in_channels"):
        build(_spec({"type": "conv", "filters": 3, "kernel_size": 3}))
    with pytest.raises(SpecError, match="out_channels is required"):
        build(_spec({"type": "conv", "kernel_size": 3}))


def test_strict_false_floors_like_pytorch():
    model = build(_spec({"type": "conv", "out_channels": 2, "kernel_size": 3, "stride": 3},
                        input_shape=(1, 7, 7), strict=False))
    assert model.output_shape((1, 7, 7)) == (2, 2, 2)
    out = model.forward(np.zeros((1, 1, 7, 7), np.float32))
    assert out.shape == (1, 2, 2, 2)
