"""The table of translators: one small function per ONNX operator, registered by op type and
operator version, each turning one node into convnet layers called on symbolic tensors.

    @translates("Relu", doc="any input")
    def relu(ctx):
        return [ctx.call(ReLU(), ctx.tensor(0))]

A translator reads its node through `Context` (`ctx.tensor(i)` for an activation input,
`ctx.const(i)` for a weight, `ctx.attrs`), calls layers with `ctx.call`, and returns one entry
per node output: a symbolic tensor, a known value (an array), or None for an output it does not
compute. `ctx.refuse(...)` stops the import with the node, the operator and what is supported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy

from convnet.io.onnx.errors import OnnxImportError, label
from convnet.io.onnx.loader import MAX_ELEMENTS
from convnet.io.onnx.shapes import Dim, concrete, is_symbolic
from convnet.nn.constant import Constant


@dataclass
class Translator:
    function: object
    since: int  # operator versions (the schema's since_version) this function reads
    until: int
    attrs: frozenset
    doc: str


REGISTRY: dict[str, list[Translator]] = {}
# Operator -> what of it convnet imports (error messages and the README quote these).
SUPPORTED_OPS: dict[str, str] = {}


def translates(*ops, since: int = 1, until: int = 10**6, attrs=(), doc: str = ""):
    """Register a translator for operators `ops` at operator versions since..until."""
    def register(function):
        for op in ops:
            REGISTRY.setdefault(op, []).append(
                Translator(function, since, until, frozenset(attrs), doc))
            if doc:
                text = SUPPORTED_OPS.get(op)
                SUPPORTED_OPS[op] = doc if text is None or doc in text else f"{text}; {doc}"
        return function
    return register


def supported_list() -> str:
    return ", ".join(sorted(SUPPORTED_OPS))


class Context:
    """One node being translated: its inputs, attributes and the importer's state."""

    def __init__(self, importer, node, attrs: dict, version: int):
        self.importer = importer
        self.node = node
        self.attrs = attrs
        self.version = version  # the operator's version (schema since_version)
        self.opset = importer.opset

    # -- inputs ------------------------------------------------------------------------------
    def has(self, index: int) -> bool:
        return index < len(self.node.input) and bool(self.node.input[index])

    def name(self, index: int) -> str:
        return self.node.input[index]

    def value(self, index: int):
        """The known value (constant or shape value) of input `index`, None otherwise."""
        if not self.has(index):
            return None
        return self.importer.values.get(self.node.input[index])

    def is_tensor(self, index: int) -> bool:
        return self.has(index) and self.node.input[index] in self.importer.tensors

    def tensor(self, index: int):
        """The symbolic tensor of activation input `index`."""
        if not self.has(index):
            self.refuse(f"input {index} is missing")
        name = self.node.input[index]
        tensor = self.importer.tensors.get(name)
        if tensor is None:
            self.refuse(f"input {index} ('{name}') is a constant here; it must be computed from "
                        f"the graph's inputs")
        return tensor

    def const(self, index: int, what: str) -> numpy.ndarray:
        """A numeric constant input (a weight); refused when it is computed from the data."""
        if not self.has(index):
            self.refuse(f"{what} (input {index}) is missing")
        value = self.value(index)
        if value is None:
            self.refuse(f"{what} '{self.name(index)}' must be a constant (an initializer or a "
                        f"Constant node): convnet holds weights as parameters")
        if is_symbolic(value):
            known = concrete(value)
            if known is None:
                self.refuse(f"{what} '{self.name(index)}' depends on the batch size")
            return known
        return numpy.asarray(value)

    def optional_const(self, index: int, what: str):
        return self.const(index, what) if self.has(index) else None

    def shape(self, index: int) -> tuple:
        """The per-sample shape of activation input `index`."""
        return tuple(self.tensor(index).shape)

    def operand(self, index: int, like):
        """Input `index` as a symbolic tensor of the same rank as `like`: an activation as it
        is, a constant as a Constant layer (its leading axes of size 1 stand for the batch)."""
        if self.is_tensor(index):
            return self.tensor(index)
        value = self.const(index, f"input {index}")
        return self.constant_tensor(value, like, index)

    def constant_tensor(self, value, like, index: int | None = None):
        rank = len(like.shape) + 1
        array = numpy.asarray(value, dtype=numpy.float32)
        where = f"constant '{self.name(index)}'" if index is not None else "a constant"
        if array.ndim > rank:
            self.refuse(f"{where} of shape {array.shape} has more axes than the data "
                        f"(N, {', '.join(map(str, like.shape))})")
        array = array.reshape((1,) * (rank - array.ndim) + array.shape)
        if array.shape[0] != 1:
            self.refuse(f"{where} of shape {array.shape} varies along the batch axis")
        layer = Constant(array[0], trainable=array.size > 1)
        return self.call(layer, like)

    # -- outputs -------------------------------------------------------------------------------
    def call(self, layer, inputs):
        """layer(inputs) on symbolic tensors, noting which ONNX node the layer comes from."""
        self.importer.origin[id(layer)] = self.node.name or self.node.output[0]
        out = layer(inputs)
        for tensor in out if isinstance(out, tuple) else (out,):
            if math.prod(tensor.shape) > MAX_ELEMENTS:
                self.refuse(f"its output would hold {math.prod(tensor.shape):,} values per "
                            f"sample (shape {tensor.shape}), more than the {MAX_ELEMENTS:,} "
                            f"convnet computes; pass a smaller input_shape")
        return out

    def refuse(self, problem: str):
        node = self.node
        supported = SUPPORTED_OPS.get(node.op_type)
        tail = f"; supported: {supported}" if supported else ""
        raise OnnxImportError(f"{label(node)} ({node.op_type}): {problem}{tail}", node.name,
                              node.op_type)

    def attr_ints(self, name: str, default=None):
        value = self.attrs.get(name, default)
        return None if value is None else [int(v) for v in value]

    def axis(self, axis: int, rank: int) -> int:
        """A full-array axis (batch counted) in 0..rank-1, refusing one out of range."""
        if not -rank <= axis < rank:
            self.refuse(f"axis {axis} is outside an input of {rank} dimensions")
        return axis % rank


def batch_dim(value) -> bool:
    return isinstance(value, Dim) and value.is_batch
