"""A classifier's head swapped for a fresh one: fine-tuning a trained model on new classes.

    model = replace_head(model, 5)   # the last Linear (or 1x1-conv classifier) -> 5 outputs

The head is the Linear or Conv2d that computes the first output's scores, found by walking
back from the first output over layers that keep the class axis as it is (softmax, dropout,
flatten, a global pooling, reshapes to (N, -1)). A trailing Softmax or LogSoftmax is dropped:
the trainer's cross-entropy wants raw scores, and evaluate/predict apply their own softmax.
Everything else keeps its layer objects and weights; a graph model is called anew on fresh
inputs (its other outputs kept), a Sequential gets a new list.
"""

from __future__ import annotations

from convnet.core.errors import ShapeError
from convnet.nn.activations import LogSoftmax, Softmax
from convnet.nn.containers import Sequential
from convnet.nn.conv import Conv2d
from convnet.nn.graph import Model
from convnet.nn.layer import Layer
from convnet.nn.linear import Dropout, Flatten, Linear
from convnet.nn.pooling import GlobalAvgPool2d
from convnet.nn.reshape import Reshape
from convnet.nn.symbolic import Input

PASS_THROUGH = (Dropout, Flatten, GlobalAvgPool2d)


def _keeps_classes(layer: Layer) -> bool:
    if isinstance(layer, PASS_THROUGH):
        return True
    return isinstance(layer, Reshape) and layer.shape == (-1,)


def fresh_head(layer: Layer, num_classes: int) -> Layer:
    """A new layer like `layer` (Linear or Conv2d) with `num_classes` outputs, freshly drawn."""
    if isinstance(layer, Linear):
        return Linear(layer.in_features, num_classes, bias=True)
    return Conv2d(layer.in_channels, num_classes, layer.kernel_size, stride=layer.stride,
                  padding=layer.padding, dilation=layer.dilation, bias=True)


def replace_head(model: Layer, num_classes: int) -> Layer:
    """`model` with its classifier replaced by a fresh one of `num_classes` outputs."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"replace_head: num_classes must be a positive int, received "
                         f"{num_classes!r}")
    if isinstance(model, Model):
        return _replace_in_graph(model, num_classes)
    if isinstance(model, Sequential):
        layers = list(model.layers)
        while layers and isinstance(layers[-1], (Softmax, LogSoftmax)):
            layers.pop()
        for index in range(len(layers) - 1, -1, -1):
            if isinstance(layers[index], (Linear, Conv2d)):
                layers[index] = fresh_head(layers[index], num_classes)
                return Sequential(*layers, strict=model.strict)
            if not _keeps_classes(layers[index]):
                break
    raise ShapeError("replace_head: found no Linear or Conv2d classifier computing the "
                     "model's first output (walking back over softmax, dropout, flatten and "
                     "global pooling)")


def _replace_in_graph(model: Model, num_classes: int) -> Model:
    slot = model.output_slots[0]
    writer = {s: step for step in model.steps for s in step.outputs}
    new_first = slot
    step = writer.get(slot)
    while step is not None and isinstance(step.layer, (Softmax, LogSoftmax)):
        new_first = step.inputs[0]
        step = writer.get(new_first)
    while step is not None and _keeps_classes(step.layer) and len(step.inputs) == 1:
        step = writer.get(step.inputs[0])
    if step is None or not isinstance(step.layer, (Linear, Conv2d)):
        raise ShapeError(f"replace_head: found no Linear or Conv2d classifier computing the "
                         f"first output '{model.slot_names[slot]}' (walking back over softmax, "
                         f"dropout, flatten and global pooling)")
    if sum(s.layer is step.layer for s in model.steps) > 1:
        raise ShapeError(f"replace_head: the classifier {step.layer.name} is called more "
                         f"than once; it cannot be swapped for one of them alone")
    old, new = step.layer, fresh_head(step.layer, num_classes)
    new.named(old.name)
    tensors = {}
    inputs = []
    for input_slot, shape in zip(model.input_slots, model.input_shapes, strict=True):
        tensor = Input(shape, name=model.slot_names[input_slot])
        tensors[input_slot] = tensor
        inputs.append(tensor)
    for each in model.steps:
        given = [tensors[s] for s in each.inputs]
        layer = new if each.layer is old else each.layer
        out = layer(given if layer.multi_input else given[0])
        for s, tensor in zip(each.outputs, out if isinstance(out, tuple) else (out,),
                             strict=True):
            tensors[s] = tensor
    outputs = [tensors[new_first]] + [tensors[s] for s in model.output_slots[1:]]
    rebuilt = Model(inputs, outputs, strict=model.strict)
    for attribute in ("output_names", "onnx_names", "metadata"):
        if hasattr(model, attribute):
            setattr(rebuilt, attribute, getattr(model, attribute))
    return rebuilt
