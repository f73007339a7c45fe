"""Looking at a model from outside: its layers by name, each layer's output, evaluation mode.

`layer_outputs` runs a Sequential's top-level layers one at a time and keeps every output,
which is all the activation maps, Grad-CAM and the top-activating search need.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from convnet.nn.containers import Sequential
from convnet.nn.conv import Conv2d
from convnet.nn.layer import Layer, no_grad


@contextlib.contextmanager
def evaluating(model: Layer):
    """Evaluation mode (batch norm uses running statistics, dropout is off) for the block;
    the model's previous mode is restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def top_level(model: Sequential) -> list[Layer]:
    if not isinstance(model, Sequential):
        raise TypeError(f"expected a Sequential model, received {type(model).__name__}")
    return list(model.layers)


def layer_index(model: Sequential, name: str) -> int:
    """Position of a top-level layer by display name (conv1, pool2, ...)."""
    names = [layer.name for layer in top_level(model)]
    if name in names:
        return names.index(name)
    nested = any(module.name == name for module in model.modules())
    where = (f"{name} sits inside a container; choose a top-level layer" if nested
             else f"the model has no layer {name!r}")
    raise KeyError(f"{where}: {', '.join(names)}")


def find_layer(model: Sequential, name: str) -> Layer:
    """Any layer by display name, nested ones included."""
    for module in list(model.modules())[1:]:
        if module.name == name:
            return module
    names = [module.name for module in list(model.modules())[1:]]
    raise KeyError(f"the model has no layer {name!r}; its layers are {', '.join(names)}")


def conv_layers(model: Sequential) -> list[Conv2d]:
    """Every Conv2d in the model, nested ones included, in order."""
    return [module for module in model.modules() if isinstance(module, Conv2d)]


@dataclass
class LayerOutput:
    name: str
    type: str
    output: np.ndarray  # (N, C, H, W) for conv/pool/activations on volumes, (N, F) after Flatten


def layer_outputs(model: Sequential, x, upto: str | None = None) -> list[LayerOutput]:
    """Every top-level layer's output for input x (N, C, H, W), in evaluation mode, no caches.

    With `upto`, stops after that layer (its output is the last one returned).
    """
    outputs = []
    with evaluating(model), no_grad():
        for layer in top_level(model):
            x = layer.forward(x)
            outputs.append(LayerOutput(layer.name, type(layer).__name__, x))
            if layer.name == upto:
                break
    if upto is not None and outputs[-1].name != upto:
        layer_index(model, upto)  # raises the KeyError that lists the choices
    return outputs


def class_probabilities(model: Sequential, preprocess, images, batch_size: int = 128
                        ) -> np.ndarray:
    """Softmax probabilities (N, K) for uint8 images (N, C, H, W), batch by batch.

    preprocess: uint8 batch -> float32 input (LoadedModel.preprocess or Normalization.apply).
    """
    from convnet.nn.losses import log_softmax

    chunks = []
    with evaluating(model), no_grad():
        for start in range(0, len(images), batch_size):
            scores = model.forward(preprocess(images[start:start + batch_size]))
            chunks.append(np.exp(log_softmax(np.asarray(scores, dtype=np.float64))))
    if not chunks:
        return np.zeros((0, 0))
    return np.concatenate(chunks)
