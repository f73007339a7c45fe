"""Containers: Sequential (a stack of layers) and Residual (y = x + f(x))."""

from __future__ import annotations

from collections import Counter

import numpy

from convnet.core.errors import ShapeError
from convnet.core.thread_choice import run_chosen
from convnet.nn import batchnorm, inference
from convnet.nn.layer import Layer, Shape, check_finite_input, check_input
from convnet.nn.pooling import pools_first
from convnet.nn.summary import summarize
from convnet.nn.window import WindowLayer


def _as_layers(layers, owner: str) -> list[Layer]:
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    for index, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"{owner}: argument {index} is {type(layer).__name__}, not a layer; pass layer "
                f"instances such as cn.ReLU() (note the parentheses)"
            )
    return list(layers)


class Sequential(Layer):
    """Layers applied in order; backward runs them in reverse.

    strict=True (the default) refuses any conv or pool whose window does not fit exactly;
    strict=False floors like PyTorch, and the summary shows the border pixels dropped.
    Give `input_shape` (C, H, W) to validate every layer before any data flows.
    """

    kind = "seq"

    def __init__(self, *layers: Layer, strict: bool = True, input_shape: Shape | None = None):
        super().__init__()
        self.layers = _as_layers(layers, "Sequential")
        self.strict = bool(strict)
        self.input_shape: Shape | None = None
        for module in self.modules():
            if isinstance(module, WindowLayer) and module.strict is None and not self.strict:
                module.strict = False
        self._name_layers()
        if input_shape is not None:
            self.build(input_shape)

    def _name_layers(self) -> None:
        """Display names like conv1, relu1, pool2, fc1, in order, for messages and summaries."""
        counts: Counter[str] = Counter()
        for module in list(self.modules())[1:]:
            counts[module.kind] += 1
            if module.user_named:
                continue
            module.name = f"{module.kind}{counts[module.kind]}"
            if hasattr(module, "_geometry_cache"):
                del module._geometry_cache  # messages carry the name: recompute with it

    def children(self):
        return [(str(index), layer) for index, layer in enumerate(self.layers)]

    def summary_children(self):
        return ("chain", self.layers)

    def receptive_field(self, field, input_shape: Shape):
        """The field after the last layer: each layer's in turn (windows only see C, H, W)."""
        shape = tuple(input_shape)
        for layer in self.layers:
            if len(shape) == 3:
                field = layer.receptive_field(field, shape)
            shape = layer.output_shape(shape)
        return field

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def build(self, input_shape: Shape) -> Shape:
        """Validate every layer for a per-sample input shape (C, H, W); returns the output shape."""
        input_shape = tuple(int(v) for v in input_shape)
        if not input_shape or any(v < 1 for v in input_shape):
            raise ValueError(f"input_shape must be positive sizes such as (3, 32, 32), "
                             f"received {input_shape}")
        output = self.output_shape(input_shape)
        self.input_shape = input_shape
        return output

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def forward(self, x):
        if not self.layers:
            return x
        if type(x) is numpy.ndarray and (self.input_shape is None
                                         or x.shape[1:] == self.input_shape):
            outputs = inference.answer(self, (x,))  # (a plan run before: checks passed)
            if outputs is not None:
                return outputs[0]
        check_finite_input(x, "Sequential")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            check_input(self.layers[0], x, len(self.input_shape) + 1)
            raise ValueError(
                f"Sequential: built for samples of shape {self.input_shape}, received a batch "
                f"of shape {tuple(x.shape)}; resize the input or rebuild the model"
            )
        if inference.applies(self, (x,)):
            outputs = inference.run(self, [x])
            if outputs is not None:
                return outputs[0]
        return run_chosen(self.__dict__, "_forward_choice", self._forward_layers, x)

    def _forward_layers(self, x):
        order = self._run_order()
        index = 0
        while index < len(order):
            layer = order[index]
            following = order[index + 1] if index + 1 < len(order) else None
            if following is not None and batchnorm.takes_in(layer, following):
                x = layer.forward_activated(x, following)  # batch norm and its activation
                index += 2
            else:
                x = layer.forward(x)
                index += 1
        return x

    def _run_order(self) -> list[Layer]:
        """The layers in the order forward runs them (and backward, reversed): the layers'
        own, but a max pool right after a ReLU before it (`pools_first`)."""
        layers, order, index = self.layers, [], 0
        while index < len(layers):
            layer = layers[index]
            following = layers[index + 1] if index + 1 < len(layers) else None
            if following is not None and batchnorm.takes_in(layer, following):
                order += [layer, following]  # (the pair forward runs as one)
                index += 2
            elif following is not None and pools_first(layer, following):
                order += [following, layer]
                index += 2
            else:
                order.append(layer)
                index += 1
        return order

    def backward(self, dy, input_grad: bool = True):
        """Each layer's backward in reverse order; returns the gradient with respect to the input.

        input_grad=False skips that gradient, which training never uses (PyTorch skips it too,
        as the data does not require grad): the first layer then only fills its parameters'
        gradients, and None is returned.
        """
        if not self.layers:
            return dy if input_grad else None
        return run_chosen(self.__dict__, "_backward_choice", self._backward_layers, dy,
                          input_grad)

    def _backward_layers(self, dy, input_grad: bool):
        order = self._run_order()
        index = len(order) - 1
        while index > 0:
            layer, below = order[index], order[index - 1]
            if below.takes_backward_of(layer, dy):  # (a ReLU's mask taken into a conv's)
                if index == 1:
                    return below.backward_activated(dy, layer, input_grad)
                dy = below.backward_activated(dy, layer)
                index -= 2
                continue
            dy = layer.backward(dy)
            index -= 1
        if input_grad:
            return order[0].backward(dy)
        order[0].backward_parameters(dy)
        return None

    def backward_parameters(self, dy) -> None:
        self.backward(dy, input_grad=False)

    def summary(self, input_shape: Shape | None = None) -> None:
        """Print the Keras-like table: shapes, parameter formulas, receptive fields, cost."""
        print(self.describe(input_shape))

    def describe(self, input_shape: Shape | None = None):
        """The summary as data (`Summary`, with `.rows` and `.to_dict()`)."""
        shape = input_shape if input_shape is not None else self.input_shape
        if shape is None:
            raise ValueError("summary needs the per-sample input shape, e.g. summary((3, 32, 32))")
        return summarize(self, tuple(shape))

    def __repr__(self) -> str:
        lines = [f"  ({index}) {layer!r}".replace("\n", "\n  ")
                 for index, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"


class Residual(Layer):
    """y = f(x) + x, or f(x) + projection(x) when f changes the shape (a 1x1 conv, say).

    Residual(cn.Conv2d(16, 16, 3, padding=1), cn.ReLU(), cn.Conv2d(16, 16, 3, padding=1))
    Residual(..., projection=cn.Conv2d(16, 32, 1, stride=2)) when f halves size, doubles depth.
    """

    kind = "res"

    def __init__(self, *layers: Layer, projection: Layer | None = None):
        super().__init__()
        body = _as_layers(layers, "Residual")
        if not body:
            raise ValueError("Residual: needs at least one layer for f(x)")
        if len(body) == 1 and isinstance(body[0], Sequential):
            self.body = body[0]
        else:
            self.body = Sequential(*body)
        if projection is not None and not isinstance(projection, Layer):
            raise TypeError(f"Residual: projection must be a layer such as cn.Conv2d(16, 32, 1), "
                            f"received {type(projection).__name__}")
        self.projection = projection

    def children(self):
        kids = [("body", self.body)]
        if self.projection is not None:
            kids.append(("projection", self.projection))
        return kids

    def output_shape(self, input_shape: Shape) -> Shape:
        out = self.body.output_shape(input_shape)
        shortcut = self.projection.output_shape(input_shape) if self.projection else input_shape
        if tuple(out) != tuple(shortcut):
            fix = ("pass projection=cn.Conv2d(in, out, 1, stride=s) so that x matches f(x)"
                   if self.projection is None else "make the projection produce f(x)'s shape")
            raise ShapeError(
                f"{self.name} (Residual): f(x) has shape {tuple(out)} but the shortcut has "
                f"{tuple(shortcut)}; {fix}"
            )
        return tuple(out)

    def forward(self, x):
        out = self.body.forward(x)
        shortcut = self.projection.forward(x) if self.projection is not None else x
        if out.shape != shortcut.shape:
            self.output_shape(tuple(x.shape[1:]))  # raises the explanatory ShapeError
        return out + shortcut

    def backward(self, dy):
        dx = self.body.backward(dy)
        if self.projection is not None:
            return dx + self.projection.backward(dy)
        return dx + dy

    def summary_children(self):
        return ("nested", [layer for _, layer in self.children()])

    def summary_description(self) -> str:
        return "y = f(x) + x"

    def receptive_field(self, field, input_shape: Shape):
        return self.body.receptive_field(field, input_shape)

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        return 0  # the body and projection rows carry their own cost

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.body.layers)
        proj = f", projection={self.projection!r}" if self.projection is not None else ""
        return f"Residual({inner}{proj})"
