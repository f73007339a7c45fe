import numpy as np
import pytest

import convnet as cn
from convnet.io import zoo


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_every_zoo_model_builds_runs_and_learns_one_step(name):
    entry = zoo.MODELS[name]
    model = zoo.build_model(name)
    assert entry.description and "\n" not in entry.description
    x = np.random.default_rng(0).standard_normal((2, *entry.input_shape)).astype(np.float32)
    scores = model.forward(x)
    loss_fn = cn.CrossEntropyLoss()
    if entry.task == "segment":  # 11 scores per pixel (digits-seg's classes), a label per pixel
        assert scores.shape == (2, 11, *entry.input_shape[1:])
        loss_fn.forward(scores, np.random.default_rng(1).integers(0, 11, (2, 64, 64)))
    else:
        assert scores.shape == (2, 10)
        loss_fn.forward(scores, np.array([1, 2]))
    dx = model.backward(loss_fn.backward())
    assert dx.shape == x.shape
    assert all(np.isfinite(p.grad).all() for p in model.parameters())
    assert any(np.abs(p.grad).sum() > 0 for p in model.parameters())


def test_zoo_shapes_follow_the_references():
    # ConvNetJS CIFAR-10: three conv5x5 pad 2 + pool 2/2 blocks leave 20 x 4 x 4 for the FC.
    assert zoo.build_model("convnetjs").layers[-1].in_features == 20 * 4 * 4
    # ConvNetJS MNIST: 24 -> pool 2 -> 12 -> pool 3 -> 4; 16 x 4 x 4 features.
    assert zoo.build_model("convnetjs-mnist").layers[-1].in_features == 16 * 4 * 4
    # LeNet-5: 400 -> 120 -> 84 -> 10; Tiny VGG: 64 -> 62 -> 60 -> 30 -> 28 -> 26 -> 13.
    lenet = zoo.build_model("lenet5")
    assert [layer.in_features for layer in lenet.layers if isinstance(layer, cn.Linear)] == [
        400, 120, 84]
    assert zoo.build_model("tinyvgg").layers[-1].in_features == 10 * 13 * 13
    assert zoo.build_model("vggish").layers[-1].in_features == 2048


def test_classifier_and_input_depth_adapt():
    model = zoo.build_model("lenet5", num_classes=3, in_channels=3)
    assert model.output_shape((3, 28, 28)) == (3,)
    with pytest.raises(KeyError, match="unknown model 'lenet6'.*lenet5"):
        zoo.build_model("lenet6")
