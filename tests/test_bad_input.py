"""Bad input gets a clear ValueError/TypeError that names the layer and the argument, never
a bare traceback from inside NumPy."""

import numpy as np
import pytest

import convnet as cn

# -- inputs -------------------------------------------------------------------------------

# Test id -> (the display name a lone layer carries, a factory).
LAYERS_4D = {
    "conv": ("conv", lambda: cn.Conv2d(3, 4, 3, padding=1)),
    "maxpool": ("pool", lambda: cn.MaxPool2d(2)),
    "avgpool": ("pool", lambda: cn.AvgPool2d(2)),
    "gap": ("gap", cn.GlobalAvgPool2d),
    "bn": ("bn", lambda: cn.BatchNorm2d(3)),
}
ALL_LAYERS = {
    **LAYERS_4D,
    "relu": ("relu", cn.ReLU), "lrelu": ("lrelu", cn.LeakyReLU),
    "sigmoid": ("sigmoid", cn.Sigmoid), "tanh": ("tanh", cn.Tanh),
    "softmax": ("softmax", cn.Softmax), "flatten": ("flatten", cn.Flatten),
    "dropout": ("dropout", lambda: cn.Dropout(0.5)), "fc": ("fc", lambda: cn.Linear(12, 2)),
}


@pytest.mark.parametrize("kind", sorted(LAYERS_4D))
def test_wrong_rank_names_the_layer_and_the_layout(kind):
    name, make = LAYERS_4D[kind]
    layer = make()
    with pytest.raises(ValueError) as info:
        layer.forward(np.zeros((3, 4, 4), np.float32))
    message = str(info.value)
    assert message.startswith(f"{name} ({type(layer).__name__}): expected a 4-D array "
                              f"(N, C, H, W), received shape (3, 4, 4)")
    assert message.endswith("(add a batch axis: x[None])")


def test_linear_on_an_image_batch_suggests_flatten():
    with pytest.raises(ValueError, match=r"fc \(Linear\): expected a 2-D array \(N, features\), "
                                         r"received shape \(2, 3, 2, 2\) \(add cn.Flatten\(\)"):
        cn.Linear(12, 2).forward(np.zeros((2, 3, 2, 2), np.float32))


@pytest.mark.parametrize("kind", sorted(ALL_LAYERS))
def test_integer_arrays_are_refused(kind):
    name, make = ALL_LAYERS[kind]
    layer = make()
    shape = (2, 12) if kind == "fc" else (2, 3, 2, 2)
    with pytest.raises(TypeError) as info:
        layer.forward(np.ones(shape, np.int64))
    assert str(info.value) == (
        f"{name} ({type(layer).__name__}): expected a floating-point array (float32), received "
        f"dtype int64; convert with x.astype(numpy.float32)")


@pytest.mark.parametrize("kind", sorted(ALL_LAYERS))
def test_empty_arrays_are_refused(kind):
    name, make = ALL_LAYERS[kind]
    layer = make()
    shape = (0, 12) if kind == "fc" else (0, 3, 2, 2)
    with pytest.raises(ValueError) as info:
        layer.forward(np.ones(shape, np.float32))
    assert str(info.value) == (
        f"{name} ({type(layer).__name__}): received an empty array of shape {shape}")


@pytest.mark.parametrize("shape", [(2, 3, 0, 4), (2, 3, 4, 0)])
def test_zero_size_spatial_dimensions(shape):
    with pytest.raises(ValueError, match=r"conv1 \(Conv2d\): received an empty array"):
        cn.Sequential(cn.Conv2d(3, 4, 1)).forward(np.ones(shape, np.float32))


@pytest.mark.parametrize("input_shape", [(3, 0, 5), (3, -1, 5), (0, 8, 8)])
def test_build_refuses_non_positive_sizes(input_shape):
    with pytest.raises(ValueError, match="input_shape must be positive sizes such as"):
        cn.Sequential(cn.Conv2d(3, 4, 1)).build(input_shape)


def test_float64_into_a_float32_model():
    model = cn.Sequential(cn.Conv2d(3, 4, 3), cn.Flatten(), cn.Linear(4, 2))
    with pytest.raises(TypeError) as info:
        model.forward(np.zeros((1, 3, 3, 3)))
    assert str(info.value) == (
        "conv1 (Conv2d): expected float32 input to match the layer's weights, received float64; "
        "convert with x.astype(numpy.float32) or the model with model.astype(numpy.float64)")
    with pytest.raises(TypeError, match=r"fc \(Linear\): expected float32 input"):
        cn.Linear(4, 2).forward(np.zeros((1, 4)))
    with pytest.raises(TypeError, match=r"bn \(BatchNorm2d\): expected float32 input"):
        cn.BatchNorm2d(3).forward(np.zeros((2, 3, 2, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_by_sequential(bad):
    x = np.zeros((2, 3, 4, 4), np.float32)
    x[1, 2, 3, 0] = bad
    x[0, 0, 0, 0] = bad
    with pytest.raises(ValueError) as info:
        cn.Sequential(cn.Conv2d(3, 4, 3)).forward(x)
    assert str(info.value) == (
        "Sequential: the input holds 2 NaN or infinite value(s) (shape (2, 3, 4, 4)); clean or "
        "re-normalise the data before the model")


def test_channel_mismatch_at_forward():
    with pytest.raises(ValueError) as info:
        cn.Conv2d(3, 4, 3).forward(np.zeros((1, 1, 5, 5), np.float32))
    assert str(info.value) == (
        "conv (Conv2d): expected 3 input channels, received 1 (input shape (1, 1, 5, 5))")


def test_linear_feature_mismatch_at_forward():
    with pytest.raises(ValueError) as info:
        cn.Linear(12, 2).forward(np.zeros((2, 10), np.float32))
    assert str(info.value) == (
        "fc (Linear): expected 12 input features, received 10 (input shape (2, 10))")


@pytest.mark.parametrize("x", [[[1.0, 2.0]], 3.0, "image"])
def test_non_arrays_are_refused(x):
    with pytest.raises(TypeError, match="expected an array, received"):
        cn.Sequential(cn.Linear(2, 2)).forward(x)
    with pytest.raises(TypeError, match=r"fc \(Linear\): expected an array, received"):
        cn.Linear(2, 2).forward(x)


# -- hyperparameters ------------------------------------------------------------------------

@pytest.mark.parametrize("make, error, message", [
    (lambda: cn.Conv2d(0, 4, 3), ValueError, "Conv2d: in_channels must be an int >= 1, received 0"),
    (lambda: cn.Conv2d(3, -2, 3), ValueError,
     "Conv2d: out_channels must be an int >= 1, received -2"),
    (lambda: cn.Conv2d(3.0, 4, 3), ValueError,
     "Conv2d: in_channels must be an int >= 1, received 3.0"),
    (lambda: cn.Conv2d(3, 4, 0), ValueError, "Conv2d: kernel_size must be >= 1, received (0, 0)"),
    (lambda: cn.Conv2d(3, 4, (3, -1)), ValueError,
     "Conv2d: kernel_size must be >= 1, received (3, -1)"),
    (lambda: cn.Conv2d(3, 4, 2.5), TypeError,
     "Conv2d: kernel_size must be an int or an (h, w) pair, received 2.5"),
    (lambda: cn.Conv2d(3, 4, 3, stride=0), ValueError,
     "Conv2d: stride must be >= 1, received (0, 0)"),
    (lambda: cn.Conv2d(3, 4, 3, dilation=-1), ValueError,
     "Conv2d: dilation must be >= 1, received (-1, -1)"),
    (lambda: cn.Conv2d(3, 4, 3, padding=-1), ValueError,
     "Conv2d: padding must be >= 0, received -1"),
    (lambda: cn.Conv2d(3, 4, 3, padding="full"), ValueError,
     "Conv2d: padding must be an int, an (h, w) pair, 'same' or 'valid', received 'full'"),
    (lambda: cn.Conv2d(3, 4, 3, groups=2), ValueError,
     "Conv2d: groups=2 must divide both in_channels=3 and out_channels=4"),
    (lambda: cn.Conv2d(4, 6, 3, groups=4), ValueError,
     "Conv2d: groups=4 must divide both in_channels=4 and out_channels=6"),
    (lambda: cn.Conv2d(3, 3, 3, groups=0), ValueError,
     "Conv2d: groups must be an int >= 1, received 0"),
    (lambda: cn.MaxPool2d(0), ValueError, "MaxPool2d: kernel_size must be >= 1, received (0, 0)"),
    (lambda: cn.MaxPool2d(2, stride=-1), ValueError,
     "MaxPool2d: stride must be >= 1, received (-1, -1)"),
    (lambda: cn.MaxPool2d(2, padding=2), ValueError,
     "MaxPool2d: padding (2, 2) is more than half the kernel (2, 2); a window could then see "
     "only padding"),
    (lambda: cn.AvgPool2d(3, padding=-1), ValueError,
     "AvgPool2d: padding must be >= 0, received -1"),
    (lambda: cn.Linear(0, 10), ValueError, "Linear: in_features must be an int >= 1, received 0"),
    (lambda: cn.Linear(10, -1), ValueError,
     "Linear: out_features must be an int >= 1, received -1"),
    (lambda: cn.BatchNorm2d(0), ValueError,
     "BatchNorm2d: num_features must be an int >= 1, received 0"),
    (lambda: cn.BatchNorm2d(4, eps=0), ValueError, "BatchNorm2d: eps must be > 0, received 0"),
    (lambda: cn.BatchNorm2d(4, momentum=1.5), ValueError,
     "BatchNorm2d: momentum must be in [0, 1], received 1.5"),
    (lambda: cn.Dropout(1.0), ValueError,
     "Dropout: p must be a probability in [0, 1), received 1.0"),
    (lambda: cn.Dropout(-0.1), ValueError,
     "Dropout: p must be a probability in [0, 1), received -0.1"),
    (lambda: cn.LeakyReLU("0.1"), TypeError,
     "LeakyReLU: negative_slope must be a number, received '0.1'"),
    (lambda: cn.SVMLoss(margin=0), ValueError, "SVMLoss: margin must be > 0, received 0"),
    (lambda: cn.manual_seed(-1), ValueError,
     "manual_seed: seed must be a non-negative int, received -1"),
])
def test_bad_hyperparameters(make, error, message):
    with pytest.raises(error) as info:
        make()
    assert str(info.value) == message


def test_non_layers_in_sequential():
    with pytest.raises(TypeError) as info:
        cn.Sequential(cn.Conv2d(3, 4, 3), cn.ReLU)
    assert str(info.value) == (
        "Sequential: argument 1 is type, not a layer; pass layer instances such as cn.ReLU() "
        "(note the parentheses)")
    with pytest.raises(TypeError, match="Sequential: argument 0 is int, not a layer"):
        cn.Sequential(3)


def test_bad_residuals():
    with pytest.raises(ValueError, match="Residual: needs at least one layer for f"):
        cn.Residual()
    with pytest.raises(TypeError, match="Residual: projection must be a layer such as"):
        cn.Residual(cn.ReLU(), projection="conv")
    with pytest.raises(TypeError, match="Residual: argument 0 is function, not a layer"):
        cn.Residual(lambda x: x)


# -- losses ---------------------------------------------------------------------------------

@pytest.mark.parametrize("loss_type", [cn.CrossEntropyLoss, cn.SVMLoss])
@pytest.mark.parametrize("scores, labels, error, fragment", [
    (np.zeros((2, 3), np.float32), [0, 3], ValueError,
     "labels must lie in [0, 2], received values from 0 to 3"),
    (np.zeros((2, 3), np.float32), [-1, 0], ValueError,
     "labels must lie in [0, 2], received values from -1 to 0"),
    (np.zeros((2, 3), np.float32), [0.0, 1.0], TypeError,
     "expected integer class labels, received dtype float64"),
    (np.zeros((2, 3), np.float32), [0], ValueError,
     "expected labels of shape (2,) to match scores (2, 3), received (1,)"),
    (np.zeros((2, 3), np.float32), [[0, 1]], ValueError,
     "expected labels of shape (2,) to match scores (2, 3), received (1, 2)"),
    (np.zeros((2, 3), np.int64), [0, 1], TypeError,
     "expected floating-point scores, received dtype int64"),
    (np.zeros((0, 3), np.float32), [], ValueError,
     "expected at least one sample and one class, received scores of shape (0, 3)"),
    (np.zeros((2, 0), np.float32), [0, 0], ValueError,
     "expected at least one sample and one class, received scores of shape (2, 0)"),
])
def test_bad_loss_inputs(loss_type, scores, labels, error, fragment):
    with pytest.raises(error) as info:
        loss_type().forward(scores, labels)
    assert str(info.value) == f"{loss_type.__name__}: {fragment}"


@pytest.mark.parametrize("loss_type, fragment", [
    (cn.SVMLoss, "expected scores of shape (N, classes), received (2, 3, 1)"),
    # dense prediction: one label per position
    (cn.CrossEntropyLoss, "expected labels of shape (2, 1) to match scores (2, 3, 1), "
                          "received (2,)")])
def test_scores_with_trailing_axes(loss_type, fragment):
    with pytest.raises(ValueError) as info:
        loss_type().forward(np.zeros((2, 3, 1), np.float32), [0, 1])
    assert str(info.value) == f"{loss_type.__name__}: {fragment}"
