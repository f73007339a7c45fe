"""The table of ONNX emitters: which function writes a layer class as ONNX nodes.

export.py fills it for the core layers and export_layers.py for the resizing, padding,
transposed-convolution and further activation layers; both register with `emits`, and export
looks a layer's class (or its nearest base) up in EMITTERS.
"""

from __future__ import annotations

from dataclasses import dataclass

from convnet.nn.layer import Layer

# layer class -> emitter(graph, layer, inputs, shapes, prefix) -> output tensor name(s);
# `inputs` are tensor names, `shapes` their per-sample shapes (one each for a merge).
EMITTERS: dict[type, object] = {}


def emits(*classes):
    """Register the function that writes a layer class as ONNX nodes."""
    def register(function):
        for cls in classes:
            EMITTERS[cls] = function
        return function
    return register


@dataclass
class Partial:
    """Stands for a layer in node naming when it takes several nodes."""

    name: str
    layer: Layer

    def __repr__(self) -> str:
        return repr(self.layer)
