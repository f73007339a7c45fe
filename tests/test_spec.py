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


def test_round_trip_of_the_resizing_pixel_padding_and_activation_layers():
    import json

    model = cn.Sequential(
        cn.ZeroPad2d((1, 0, 2, 1)), cn.Conv2d(3, 8, 3), cn.PReLU(8, init=0.1),
        cn.PixelShuffle(2), cn.Pad(1, "reflect"), cn.Pad((0, 1, -1, 0), value=0.5),
        cn.ReLU6(), cn.Hardsigmoid(), cn.Hardsigmoid(alpha=0.2, beta=0.5), cn.Hardswish(),
        cn.SiLU(), cn.ELU(0.5), cn.GELU(), cn.GELU("tanh"), cn.Hardtanh(-2, 2.5),
        cn.Upsample(scale_factor=(2, 1.5)), cn.Upsample(size=(12, 10), mode="bilinear",
                                                         align_corners=True),
        cn.Upsample(scale_factor=0.5, mode="bilinear", recompute_scale_factor=True),
        cn.Resize(size=(8, 8), mode="linear", coordinate_transformation_mode="asymmetric",
                  nearest_mode="floor"),
        cn.PixelUnshuffle(2), cn.DepthToSpace(2, "CRD"), cn.SpaceToDepth(2),
        cn.DepthToSpace(2), cn.LogSoftmax(), cn.Softmax(dim=-1), cn.PReLU())
    spec = to_spec(model, (3, 8, 8))
    rebuilt = build(json.loads(json.dumps(spec)))
    assert repr(rebuilt) == repr(model)
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    assert to_spec(rebuilt, (3, 8, 8)) == spec
    assert all(None not in entry.values() for entry in spec["layers"])  # TOML has no null
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    rebuilt.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(rebuilt.forward(x), model.forward(x))


def test_new_types_and_aliases_build_with_defaults():
    model = build(_spec({"type": "zeropad2d", "padding": 1}, {"type": "swish"},
                        {"type": "clip", "min_val": 0, "max_val": 6},
                        {"type": "pixel_shuffle", "upscale_factor": 1},
                        {"type": "upsample", "scale_factor": 2}, {"type": "prelu"},
                        {"type": "log_softmax", "dim": 1}, {"type": "softmax", "dim": 1}))
    assert [type(layer).__name__ for layer in model] == [
        "ZeroPad2d", "SiLU", "Hardtanh", "PixelShuffle", "Upsample", "PReLU", "LogSoftmax",
        "Softmax"]
    assert model.output_shape((3, 8, 8)) == (3, 20, 20)
    assert to_spec(model, (3, 8, 8))["layers"][-1] == {"type": "softmax"}  # dim 1: as before
    with pytest.raises(SpecError, match="unknown argument.*upscale; accepted: upscale_factor"):
        build(_spec({"type": "pixelshuffle", "upscale": 2}))
    with pytest.raises(SpecError, match="12 channels do not split into blocks of 3x3") as caught:
        build(_spec({"type": "conv", "out_channels": 12, "kernel_size": 1},
                    {"type": "pixelshuffle", "upscale_factor": 3}))
    assert caught.value.layer_index == 1
