"""Looking at a model from outside: its layers by name, each layer's output, evaluation mode.

`layer_outputs` runs a Sequential's top-level layers one at a time (or a graph model's nodes
in order) and keeps every output, which is all the activation maps need; `activation_at` and
`activation_and_gradient` give one stage's output and its gradient for the top-activating
search and Grad-CAM.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from convnet.nn.containers import Sequential
from convnet.nn.conv import Conv2d
from convnet.nn.graph import Model, first_output, first_output_gradient
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


def stages(model: Layer) -> list[tuple[str, Layer]]:
    """The calls a picture can stop at, in order, by display name: a Sequential's top-level
    layers, a graph model's nodes (named by the tensor each writes: conv1, conv1#2, split1:0)."""
    if isinstance(model, Model):
        return [(model.slot_names[step.outputs[0]], step.layer) for step in model.steps]
    if isinstance(model, Sequential):
        return [(layer.name, layer) for layer in model.layers]
    raise TypeError(f"expected a Sequential or a graph Model, received {type(model).__name__}")


def top_level(model: Layer) -> list[Layer]:
    return [layer for _, layer in stages(model)]


def layer_index(model: Layer, name: str) -> int:
    """Position of a top-level layer (a graph's node) by display name (conv1, pool2, ...)."""
    names = [stage for stage, _ in stages(model)]
    if name in names:
        return names.index(name)
    nested = any(module.name == name for module in model.modules())
    where = (f"{name} sits inside a container; choose a top-level layer" if nested
             else f"the model has no layer {name!r}")
    raise KeyError(f"{where}: {', '.join(names)}")


def stage_shapes(model: Layer, input_shape) -> list[tuple[int, ...]]:
    """The per-sample output shape of each stage, for `input_shape`."""
    if isinstance(model, Model):
        plan = model.plan([tuple(input_shape)])
        return [plan[step.outputs[0]] for step in model.steps]
    shapes, shape = [], tuple(input_shape)
    for layer in top_level(model):
        shape = layer.output_shape(shape)
        shapes.append(shape)
    return shapes


def activation_at(model: Layer, x, name: str):
    """The output of stage `name` for input x, without caches (forward stops there in a
    chain; a graph runs whole and keeps that tensor)."""
    index = layer_index(model, name)
    with no_grad():
        if isinstance(model, Model):
            slot = model.steps[index].outputs[0]
            model.forward(x, keep={slot})
            return model.kept.pop(slot)
        for layer in top_level(model)[:index + 1]:
            x = layer.forward(x)
        return x


def activation_and_gradient(model: Layer, x, name: str, output_gradient):
    """(activation, d objective / d activation) at stage `name`, where `output_gradient`
    maps the first output (the scores) to the objective's gradient with respect to it."""
    index = layer_index(model, name)
    if isinstance(model, Model):
        slot = model.steps[index].outputs[0]
        scores = first_output(model.forward(x, keep={slot}))
        model.backward(first_output_gradient(model, output_gradient(scores)), input_grad=False,
                       watch=slot)
        return model.kept.pop(slot), model.watched
    layers = top_level(model)
    with no_grad():
        for layer in layers[:index + 1]:
            x = layer.forward(x)
    activation = out = x
    for layer in layers[index + 1:]:
        out = layer.forward(out)
    grad = output_gradient(out)
    for layer in reversed(layers[index + 1:]):
        grad = layer.backward(grad)
    return activation, grad


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


def layer_outputs(model: Layer, x, upto: str | None = None) -> list[LayerOutput]:
    """Every stage's output for input x (N, C, H, W), in evaluation mode, no caches.

    With `upto`, stops after that stage (its output is the last one returned).
    """
    if upto is not None:
        layer_index(model, upto)  # raises the KeyError that lists the choices
    outputs = []
    with evaluating(model), no_grad():
        if isinstance(model, Model):
            slots = {step.outputs[0] for step in model.steps}
            model.forward(x, keep=slots)
            for name, layer in stages(model):
                slot = model.steps[len(outputs)].outputs[0]
                outputs.append(LayerOutput(name, type(layer).__name__, model.kept[slot]))
                if name == upto:
                    break
            model.kept = {}
            return outputs
        for layer in top_level(model):
            x = layer.forward(x)
            outputs.append(LayerOutput(layer.name, type(layer).__name__, x))
            if layer.name == upto:
                break
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
            scores = first_output(model.forward(preprocess(images[start:start + batch_size])))
            chunks.append(np.exp(log_softmax(np.asarray(scores, dtype=np.float64))))
    if not chunks:
        return np.zeros((0, 0))
    return np.concatenate(chunks)


@dataclass
class Stage:
    """One stage of a model as a graph: its layer, the tensors it reads (by stage name, or the
    model input's name) and the stages that read its output."""

    name: str
    layer: Layer
    inputs: list[str]
    readers: list[str]
    index: int


def stage_graph(model: Layer) -> list[Stage]:
    """Every stage with its inputs and readers: a chain's top-level layers one after another,
    a graph model's nodes as wired."""
    if isinstance(model, Model):
        found = [Stage(model.slot_names[step.outputs[0]], step.layer,
                       [model.slot_names[s] for s in step.inputs], [], index)
                 for index, step in enumerate(model.steps)]
        producer = {}
        for stage, step in zip(found, model.steps, strict=True):
            for slot in step.outputs:
                producer[model.slot_names[slot]] = stage
        for stage in found:
            for name in stage.inputs:
                if name in producer and stage.name not in producer[name].readers:
                    producer[name].readers.append(stage.name)
        return found
    found, previous = [], "input"
    for index, (name, layer) in enumerate(stages(model)):
        found.append(Stage(name, layer, [previous], [], index))
        if index:
            found[index - 1].readers.append(name)
        previous = name
    return found


def input_names(model: Layer) -> list[str]:
    """The names of a model's inputs ('input' for a chain)."""
    if isinstance(model, Model):
        return [model.slot_names[s] for s in model.input_slots]
    return ["input"]


def stage_outputs(model: Layer, x) -> dict[str, np.ndarray]:
    """Every stage's output for input x by stage name, and the model's inputs by theirs, in
    evaluation mode without caches (one forward pass)."""
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    found = dict(zip(input_names(model), xs, strict=True))
    with evaluating(model), no_grad():
        if isinstance(model, Model):
            model.forward(*xs, keep={slot for step in model.steps for slot in step.outputs})
            for slot, array in model.kept.items():
                found[model.slot_names[slot]] = array
            model.kept = {}
            return found
        value = xs[0]
        for name, layer in stages(model):
            value = layer.forward(value)
            found[name] = value
    return found


def stage_fields(model: Layer, input_shape) -> dict[str, tuple]:
    """(ReceptiveField, per-sample output shape) of every stage on the (first) input: through
    every path, the widest where paths meet (as the graph summary)."""
    from convnet.core.arithmetic import ReceptiveField
    from convnet.nn.symbolic import field_through

    if isinstance(model, Model):
        shapes = model.plan(list(model.input_shapes) if model.multi_input
                            else [tuple(input_shape)])
        fields = [None] * model.slots
        for slot in model.input_slots:
            fields[slot] = ReceptiveField()
        result = {}
        for step in model.steps:
            after = field_through(step.layer, [fields[s] for s in step.inputs],
                                  [shapes[s] for s in step.inputs])
            for slot in step.outputs:
                fields[slot] = after
            result[model.slot_names[step.outputs[0]]] = (after, shapes[step.outputs[0]])
        return result
    result, field, shape = {}, ReceptiveField(), tuple(input_shape)
    for name, layer in stages(model):
        if len(shape) == 3:
            field = layer.receptive_field(field, shape)
        shape = layer.output_shape(shape)
        result[name] = (field, shape)
    return result
