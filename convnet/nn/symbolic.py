"""Symbolic tensors: how a graph model is written down before any data flows (Keras' functional
API with PyTorch's layers).

    x = cn.Input((3, 32, 32))              # a symbolic tensor: a per-sample shape, no data
    y = cn.Conv2d(3, 16, 3, padding=1)(x)  # checks the arithmetic here, at the user's line
    model = cn.Model(inputs=x, outputs=y)

Calling a layer on symbolic tensors records a `Node` (the layer and the tensors it reads and
writes) and returns the symbolic outputs, with their shapes computed by the layer's own
`output_shape`: a window that does not fit or a merge of tensors that disagree raises the
strict ShapeError at that call. Each tensor also carries its receptive field on the input and
the largest downsampling (jump) on any path to it, which merge errors use to suggest a fix.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from dataclasses import dataclass, field

from convnet.core.arithmetic import ReceptiveField

Shape = tuple[int, ...]

# Creation order of nodes: a node is always created after the nodes that make its inputs, so
# sorting by it is a topological order.
_serial = itertools.count()


@dataclass(eq=False)
class Names:
    """The display names handed out in one graph (conv1, relu2, ...): shared by every tensor
    built from the same inputs, merged when two graphs meet."""

    counts: Counter = field(default_factory=Counter)
    named: set = field(default_factory=set)  # id() of layers already named here
    taken: set = field(default_factory=set)
    calls: Counter = field(default_factory=Counter)  # id(layer) -> calls so far
    merged_into: Names | None = None

    def root(self) -> Names:
        names = self
        while names.merged_into is not None:
            names = names.merged_into
        return names

    def merge(self, other: Names) -> Names:
        mine, theirs = self.root(), other.root()
        if mine is not theirs:
            mine.counts.update(theirs.counts)
            mine.named |= theirs.named
            mine.taken |= theirs.taken
            mine.calls.update(theirs.calls)
            theirs.merged_into = mine
        return mine

    def name(self, layer) -> None:
        """Give `layer` and its sub-layers unique names in order of first use, unless the user
        named them (`layer.named("stem")`)."""
        for module in layer.modules():
            if id(module) in self.named:
                continue
            self.named.add(id(module))
            if getattr(module, "user_named", False):
                self.taken.add(module.name)
                continue
            while True:
                self.counts[module.kind] += 1
                candidate = f"{module.kind}{self.counts[module.kind]}"
                if candidate not in self.taken:
                    break
            module.name = candidate
            self.taken.add(candidate)
            if hasattr(module, "_geometry_cache"):
                del module._geometry_cache  # messages carry the name: recompute with it


@dataclass(eq=False)
class Node:
    """One call of a layer: it reads `inputs` and writes `outputs` (symbolic tensors)."""

    layer: object  # None for a model input
    inputs: list
    outputs: list = field(default_factory=list)
    call: int = 1  # the layer's first, second... call (a shared layer is called again)
    serial: int = field(default_factory=lambda: next(_serial))

    @property
    def name(self) -> str:
        return self.outputs[0].name if self.outputs else "?"


@dataclass(eq=False)
class SymbolicTensor:
    """A placeholder for the array a node will produce: per-sample shape, no data."""

    shape: Shape
    node: Node
    index: int  # which output of its node
    names: Names
    field: ReceptiveField = field(default_factory=ReceptiveField)
    max_jump: tuple = (1, 1)  # the largest jump on any path from the input to here
    input_name: str | None = None  # for model inputs

    @property
    def name(self) -> str:
        """The producing layer's name, with ':i' for the i-th output of a multi-output layer."""
        if self.node.layer is None:
            return self.input_name
        base = self.node.layer.name
        if self.node.call > 1:
            base += f"#{self.node.call}"  # conv1#2: the second call of conv1
        return base if len(self.node.outputs) == 1 else f"{base}:{self.index}"

    def __repr__(self) -> str:
        return f"<symbolic tensor {self.name}: {self.shape}>"


def is_symbolic(value) -> bool:
    """A symbolic tensor, or a list/tuple holding one."""
    if isinstance(value, SymbolicTensor):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, SymbolicTensor) for v in value)


def Input(shape, name: str | None = None) -> SymbolicTensor:  # noqa: N802 - Keras' name
    """A model input: the per-sample shape, (C, H, W) for images (no batch axis)."""
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise TypeError(f"Input: shape must be a tuple of sizes such as (3, 32, 32), received "
                        f"{shape!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"Input: shape must be positive sizes such as (3, 32, 32) (per sample, "
                         f"no batch axis), received {shape}")
    names = Names()
    label = name if name is not None else "input"
    node = Node(None, [])
    tensor = SymbolicTensor(shape, node, 0, names, input_name=label)
    node.outputs.append(tensor)
    return tensor


def apply(layer, inputs):
    """Call `layer` on symbolic tensors: record the node, check the arithmetic, return the
    symbolic output (a tuple of them for a layer with several outputs)."""
    many = getattr(layer, "multi_input", False)
    label = f"{type(layer).__name__}"
    if many:
        if isinstance(inputs, SymbolicTensor) or not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{label}: expected a list of tensors such as [a, b], received "
                            f"{_kind(inputs)}")
        tensors = list(inputs)
    else:
        if isinstance(inputs, (list, tuple)):
            raise TypeError(f"{label}: takes one tensor, received a list of {len(inputs)}; "
                            f"merge them first (cn.Concat(axis=1), cn.Add(), cn.Mul())")
        tensors = [inputs]
    for position, tensor in enumerate(tensors):
        if not isinstance(tensor, SymbolicTensor):
            raise TypeError(f"{label}: input {position} is {_kind(tensor)}, not a tensor from "
                            f"cn.Input(...) or a layer called on one")
    names = tensors[0].names.root()
    for tensor in tensors[1:]:
        names = names.merge(tensor.names)
    names.name(layer)
    shapes = [t.shape for t in tensors]
    if many:
        layer.check_merge(tensors)  # a merge names its inputs' producers in its errors
        out_shapes = layer.output_shape(shapes)
    else:
        out_shapes = layer.output_shape(shapes[0])
    single = not getattr(layer, "multi_output", False)
    if single:
        out_shapes = [out_shapes]
    names.calls[id(layer)] += 1
    node = Node(layer, tensors, call=names.calls[id(layer)])
    field_after = field_through(layer, [t.field for t in tensors], shapes)
    max_jump = tuple(max([field_after.jump[i]] + [t.max_jump[i] for t in tensors])
                     for i in range(2))
    for index, shape in enumerate(out_shapes):
        node.outputs.append(SymbolicTensor(tuple(shape), node, index, names, field_after,
                                           max_jump))
    return node.outputs[0] if single else tuple(node.outputs)


def field_through(layer, fields, shapes):
    """The receptive field after `layer`: through its window for one input; for a merge, the
    widest field of its inputs (every path counts), placed on the grid of the input with the
    largest maps (a (C, 1, 1) gate broadcast over (C, H, W) keeps the maps' jump, not its own)."""
    if len(fields) > 1:
        def area(shape):
            return shape[1] * shape[2] if len(shape) == 3 else 0

        grid = max(range(len(fields)), key=lambda i: area(shapes[i]))
        size = tuple(max(f.size[axis] for f in fields) for axis in range(2))
        return dataclasses.replace(fields[grid], size=size)
    if len(shapes[0]) != 3:
        return fields[0]
    return layer.receptive_field(fields[0], shapes[0])


def _kind(value) -> str:
    return type(value).__name__
