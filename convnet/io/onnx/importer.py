"""ONNX -> convnet: a chain of supported operators, with residual Adds, becomes a Sequential.

The graph is walked from its one data input to its one output. Each node becomes a layer
whose weights come from initializers or Constant nodes (anything computed only from
constants is folded first). A tensor feeding two nodes starts a residual block: both
branches are followed to the Add that rejoins them, and become `Residual(body,
projection=...)`. Every operator and attribute value is checked against what convnet computes
exactly; anything else raises `OnnxImportError` naming the node, rather than giving a model
that silently differs from the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import onnx
from onnx import helper, numpy_helper

from convnet.core import rng
from convnet.core.arithmetic import same_padding, window_output
from convnet.core.errors import ShapeError
from convnet.io.onnx.export import META_CLASS_NAMES, META_NORMALIZATION
from convnet.nn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from convnet.nn.batchnorm import BatchNorm2d
from convnet.nn.containers import Residual, Sequential
from convnet.nn.conv import Conv2d
from convnet.nn.layer import Layer, Shape
from convnet.nn.linear import Dropout, Flatten, Linear
from convnet.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d

MIN_OPSET = 7  # Add/Gemm broadcasting and Dropout without is_test date from opset 7

# Operator -> what of it convnet imports. Error messages and the README quote these.
SUPPORTED_OPS: dict[str, str] = {
    "Conv": "2-D; kernel_shape, strides, dilations, group, pads (asymmetric too), auto_pad "
            "NOTSET/SAME_UPPER/SAME_LOWER/VALID; constant weight and bias",
    "MaxPool": "2-D; kernel_shape, strides, pads, auto_pad (any), ceil_mode (as extra "
               "bottom/right padding); padding at most half the kernel per side; dilations 1; "
               "no Indices output",
    "AveragePool": "2-D; kernel_shape, strides, pads, auto_pad (any), count_include_pad 0/1, "
                   "ceil_mode (as extra bottom/right padding when exact); padding at most half "
                   "the kernel per side; dilations 1",
    "GlobalAveragePool": "4-D input",
    "Relu": "any input",
    "LeakyRelu": "alpha",
    "Sigmoid": "any input",
    "Tanh": "any input",
    "Gemm": "data as A (N, in) with transA=0; constant B with transB 0 or 1; alpha; constant "
            "C of shape (), (1,), (out,) or (1, out); beta",
    "MatMul": "(N, in) data times a constant (in, out) matrix",
    "Add": "two branches from one tensor rejoining (residual connection), or a constant "
           "bias after MatMul, Gemm or Conv",
    "Flatten": "axis=1",
    "Reshape": "to 2-D (batch, features), e.g. shape [0, -1], [-1, F] or [N, -1]; the shape "
               "may be computed from the batch size by Shape, Gather, Unsqueeze, Squeeze, "
               "Concat, Slice and Cast (x.view(x.size(0), -1) in PyTorch)",
    "Squeeze": "axes [2, 3] of an (N, C, 1, 1) tensor",
    "ReduceMean": "axes [2, 3] of an (N, C, H, W) tensor (global average pooling), keepdims",
    "BatchNormalization": "4-D input, inference (training_mode=0, one output); epsilon, "
                          "momentum; constant scale, B, mean and var",
    "Dropout": "inference (no training_mode input, or a constant false one); ratio < 1; "
               "mask output unused",
    "Softmax": "over the channel axis: axis=1 (before opset 13 only on (N, K) or "
               "(N, K, 1, 1) input)",
    "Identity": "any input",
    "Constant": "value tensors; any node whose inputs are all constants is folded at import",
}
SUPPORTED_LIST = ", ".join(sorted(SUPPORTED_OPS))
# Operators that may compute a Reshape's target shape from the batch size (x.view(N, -1)).
SHAPE_OPS = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Identity")
BATCH = "batch"  # the symbolic batch size inside such computations
_NOT_FOLDED = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
               "Multinomial", "Bernoulli"}


class OnnxImportError(ValueError):
    """An ONNX graph, node, operator or attribute value convnet cannot import exactly."""

    def __init__(self, message: str, node: str | None = None, op_type: str | None = None):
        super().__init__(message)
        self.node = node
        self.op_type = op_type


@dataclass
class _Branch:
    layers: list
    end: str  # tensor where the branch stops
    shape: Shape
    merge: object | None  # the Add node it stops at (None at the graph output)


@dataclass
class _State:
    """What the walk learns besides the layers: flooring windows, node names."""

    floors: bool = False
    onnx_names: dict = field(default_factory=dict)  # id(layer) -> ONNX node name
    producer: dict = field(default_factory=dict)  # tensor -> layer that wrote it


def _label(node) -> str:
    return f"node '{node.name}'" if node.name else "an unnamed node"


def _attributes(node) -> dict:
    """Attribute values by name: strings decoded, float32 values as their shortest decimal."""
    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, float):
            value = _float32(value)
        values[attribute.name] = value
    return values


def _float32(value) -> float:
    """0.2 stored as float32 reads back as 0.2, not 0.20000000298023224."""
    return float(str(numpy.float32(value)))


class _Importer:
    def __init__(self, model: onnx.ModelProto, input_shape: Shape | None):
        self.model = model
        self.graph = model.graph
        self.opset = self._opset()
        self.consts: dict[str, numpy.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in self.graph.initializer}
        if self.graph.sparse_initializer:
            raise OnnxImportError("the graph holds sparse initializers; convert them to dense "
                                  "tensors first (onnx.numpy_helper)")
        self._fold_constants()
        self.input, self.input_shape, self.batch = self._data_input(input_shape)
        self.output = self._data_output()
        self.producers = {name: node for node in self.graph.node for name in node.output}
        self.shapes: dict[str, Shape] = {}  # per-sample shapes of the tensors walked so far
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            if all(name in self.consts for name in node.output if name):
                continue  # folded
            if node.op_type == "Shape":
                continue  # reads only the shape: not a branch of the data flow
            seen = set()
            for name in node.input:
                if name and name not in self.consts and name not in seen:
                    seen.add(name)
                    self.consumers.setdefault(name, []).append(node)
        self.state = _State()

    # -- the graph's boundaries ------------------------------------------------------------
    def _opset(self) -> int:
        version = None
        for entry in self.model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                version = entry.version
        if version is None:
            raise OnnxImportError("the model imports no opset of the standard ONNX domain")
        if version < MIN_OPSET:
            raise OnnxImportError(f"opset {version} is older than convnet reads (opset "
                                  f"{MIN_OPSET} or newer); upgrade the file with "
                                  f"onnx.version_converter.convert_version(model, 17)")
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise OnnxImportError(
                    f"{_label(node)} ({node.op_type}): operators of domain '{node.domain}' are "
                    f"not supported; convnet reads the standard ONNX operators "
                    f"{SUPPORTED_LIST}", node.name, node.op_type)
        return version

    def _fold_constants(self) -> None:
        """Constant nodes, and nodes computing only from constants, become constants."""
        from onnx.reference import ReferenceEvaluator

        for node in self.graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = self._constant_value(node)
                continue
            inputs = [name for name in node.input if name]
            if (not inputs or node.op_type in _NOT_FOLDED
                    or not all(name in self.consts for name in inputs)):
                continue
            try:
                evaluator = ReferenceEvaluator(node, opsets={"": self.opset})
                feeds = {name: self.consts[name] for name in inputs}
                values = evaluator.run(None, feeds)
            except Exception as error:  # an op the reference evaluator lacks, bad constants
                raise OnnxImportError(
                    f"{_label(node)} ({node.op_type}): computes from constants only, but "
                    f"could not be evaluated at import ({error})", node.name,
                    node.op_type) from error
            for name, value in zip(node.output, values, strict=False):
                if name:
                    self.consts[name] = numpy.asarray(value)

    def _constant_value(self, node) -> numpy.ndarray:
        attrs = _attributes(node)
        if "value" in attrs:
            return numpy_helper.to_array(attrs["value"])
        for key, dtype in (("value_float", numpy.float32), ("value_floats", numpy.float32),
                           ("value_int", numpy.int64), ("value_ints", numpy.int64)):
            if key in attrs:
                return numpy.asarray(attrs[key], dtype=dtype)
        raise OnnxImportError(f"{_label(node)} (Constant): only tensor, float and int values "
                              f"are supported, received attributes {sorted(attrs)}",
                              node.name, "Constant")

    def _data_input(self, override: Shape | None):
        inputs = [value for value in self.graph.input if value.name not in self.consts]
        if len(inputs) != 1:
            names = ", ".join(f"'{value.name}'" for value in inputs) or "none"
            raise OnnxImportError(f"the graph has {len(inputs)} data inputs ({names}); "
                                  f"convnet models take exactly one (N, C, H, W) image batch")
        value = inputs[0]
        tensor_type = value.type.tensor_type
        is_tensor = value.type.HasField("tensor_type")
        if not is_tensor or tensor_type.elem_type != onnx.TensorProto.FLOAT:
            kind = (onnx.TensorProto.DataType.Name(tensor_type.elem_type) if is_tensor
                    else "not a tensor")
            raise OnnxImportError(f"input '{value.name}' is {kind}; convnet imports float32 "
                                  f"(FLOAT) models")
        dims = [dim.dim_value if dim.HasField("dim_value") else None
                for dim in tensor_type.shape.dim]
        if len(dims) not in (2, 4):
            raise OnnxImportError(f"input '{value.name}' has rank {len(dims)}; convnet imports "
                                  f"(N, C, H, W) images or (N, features) vectors")
        per_sample = dims[1:]
        if override is not None:
            override = tuple(int(v) for v in override)
            if len(override) != len(per_sample) or any(
                    known not in (None, given) for known, given in zip(per_sample, override,
                                                                      strict=True)):
                raise OnnxImportError(f"input_shape {override} does not fit input "
                                      f"'{value.name}' of shape {_show_dims(dims)}")
            per_sample = list(override)
        if any(v is None or v < 1 for v in per_sample):
            raise OnnxImportError(
                f"input '{value.name}' has shape {_show_dims(dims)}; convnet needs fixed "
                f"channel and spatial sizes: pass input_shape=(C, H, W) to load()")
        return value.name, tuple(per_sample), dims[0]

    def _data_output(self) -> str:
        outputs = list(self.graph.output)
        if len(outputs) != 1:
            names = ", ".join(f"'{value.name}'" for value in outputs)
            raise OnnxImportError(f"the graph has {len(outputs)} outputs ({names}); convnet "
                                  f"models produce exactly one")
        return outputs[0].name

    # -- the walk -----------------------------------------------------------------------------
    def build(self) -> Sequential:
        layers: list[Layer] = []
        branch = self._chain(self.input, self.input_shape, layers)
        if branch.merge is not None:
            node = branch.merge
            raise OnnxImportError(f"{_label(node)} (Add): adds tensors that do not branch from "
                                  f"one tensor; convnet supports residual connections "
                                  f"y = f(x) + x or f(x) + g(x)", node.name, "Add")
        try:
            model = Sequential(*layers, strict=not self.state.floors,
                               input_shape=self.input_shape)
        except (ShapeError, ValueError) as error:  # the walk checked shapes: a bug if reached
            raise OnnxImportError(f"the imported layers do not fit together: {error}") from error
        model.onnx_names = {layer.name: self.state.onnx_names[id(layer)]
                            for layer in model.modules() if id(layer) in self.state.onnx_names}
        return model

    def _chain(self, tensor: str, shape: Shape, layers: list) -> _Branch:
        """Follow single-consumer nodes from `tensor`, appending layers, until the graph output
        or an Add that joins two branches."""
        while True:
            self.shapes[tensor] = shape
            users = self.consumers.get(tensor, [])
            if tensor == self.output:
                if users:
                    raise OnnxImportError(
                        f"the graph output '{tensor}' also feeds {_label(users[0])} "
                        f"({users[0].op_type}); convnet models have a single output")
                return _Branch(layers, tensor, shape, None)
            if not users:
                raise OnnxImportError(f"tensor '{tensor}' is never used and the walk from the "
                                      f"input cannot reach the graph output '{self.output}'")
            if len(users) == 1:
                node = users[0]
                if self._is_merge(node):
                    return _Branch(layers, tensor, shape, node)
                tensor, shape = self._convert(node, tensor, shape, layers)
            elif len(users) == 2:
                residual, tensor, shape = self._residual(tensor, shape, users)
                layers.append(residual)
            else:
                names = ", ".join(f"'{node.name}' ({node.op_type})" for node in users)
                raise OnnxImportError(f"tensor '{tensor}' feeds {len(users)} nodes ({names}); "
                                      f"convnet supports chains and two-branch residual blocks")

    def _is_merge(self, node) -> bool:
        if node.op_type != "Add":
            return False
        data = [name for name in node.input if name not in self.consts]
        if len(data) == 2 and data[0] == data[1]:
            raise OnnxImportError(f"{_label(node)} (Add): adds tensor '{data[0]}' to itself; "
                                  f"supported: {SUPPORTED_OPS['Add']}", node.name, "Add")
        return len(data) == 2

    def _residual(self, tensor: str, shape: Shape, users: list):
        branches = []
        for node in users:
            if self._is_merge(node):
                branches.append(_Branch([], tensor, shape, node))
                continue
            layers: list[Layer] = []
            start, start_shape = self._convert(node, tensor, shape, layers)
            branches.append(self._chain(start, start_shape, layers))
        first, second = branches
        merge = first.merge
        if merge is None or second.merge is None or merge is not second.merge:
            names = " and ".join(f"'{node.name}' ({node.op_type})" for node in users)
            raise OnnxImportError(
                f"tensor '{tensor}' feeds {names}, whose paths do not rejoin in one Add; "
                f"convnet supports residual connections y = f(x) + x or f(x) + g(x)")
        ends = list(merge.input)
        if sorted(ends) != sorted([first.end, second.end]):
            raise OnnxImportError(f"{_label(merge)} (Add): its inputs {ends} are not the ends of "
                                  f"the two branches from '{tensor}'", merge.name, "Add")
        # The longer branch is f(x); on a tie, the Add's first input (as convnet exports).
        body, shortcut = (first, second) if first.end == ends[0] else (second, first)
        if len(shortcut.layers) > len(body.layers):
            body, shortcut = shortcut, body
        if tuple(body.shape) != tuple(shortcut.shape):
            raise OnnxImportError(
                f"{_label(merge)} (Add): adds shapes {tuple(body.shape)} and "
                f"{tuple(shortcut.shape)} (per sample); convnet residual blocks add equal "
                f"shapes, without broadcasting", merge.name, "Add")
        projection = None
        if len(shortcut.layers) == 1:
            projection = shortcut.layers[0]
        elif shortcut.layers:
            projection = Sequential(*shortcut.layers)
        residual = Residual(*body.layers, projection=projection)
        self.state.onnx_names[id(residual)] = merge.name
        return residual, merge.output[0], body.shape

    # -- one node -------------------------------------------------------------------------------
    def _convert(self, node, x: str, shape: Shape, layers: list):
        """Append the layer(s) for `node` (reading data tensor x); returns its output, shape."""
        method = getattr(self, f"_op_{node.op_type}", None)
        if method is None:
            raise OnnxImportError(
                f"{_label(node)} ({node.op_type}): operator {node.op_type} is not supported; "
                f"convnet imports {SUPPORTED_LIST}", node.name, node.op_type)
        if list(node.input).index(x) != 0 and node.op_type != "Add":
            raise OnnxImportError(
                f"{_label(node)} ({node.op_type}): the data must be the first input, received "
                f"it as input {list(node.input).index(x)}; supported: "
                f"{SUPPORTED_OPS[node.op_type]}", node.name, node.op_type)
        for name in node.output[1:]:
            if name and (name in self.consumers or name == self.output):
                raise OnnxImportError(
                    f"{_label(node)} ({node.op_type}): its extra output '{name}' is used; "
                    f"convnet computes only the main output (supported: "
                    f"{SUPPORTED_OPS[node.op_type]})", node.name, node.op_type)
        attrs = _attributes(node)
        try:
            layer, out_shape = method(node, attrs, shape)
        except OnnxImportError:
            raise
        except (ShapeError, ValueError, TypeError) as error:
            raise OnnxImportError(f"{_label(node)} ({node.op_type}): {error}", node.name,
                                  node.op_type) from error
        out = node.output[0]
        if layer is None:  # Identity
            return out, out_shape
        if isinstance(layer, _Bias):  # a constant Add folded into the layer before it
            self._fold_bias(node, x, layer.values, layers)
            return out, out_shape
        extra = layer if isinstance(layer, list) else [layer]
        for item in extra:
            self.state.onnx_names[id(item)] = node.name
        layers.extend(extra)
        self.state.producer[out] = extra[-1]
        return out, out_shape

    def _refuse(self, node, problem: str):
        raise OnnxImportError(
            f"{_label(node)} ({node.op_type}): {problem}; supported: "
            f"{SUPPORTED_OPS[node.op_type]}", node.name, node.op_type)

    def _check_attributes(self, node, attrs: dict, known: set) -> None:
        unknown = sorted(set(attrs) - known)
        if unknown:
            self._refuse(node, f"attribute(s) {', '.join(unknown)} not understood")

    def _constant(self, node, index: int, what: str) -> numpy.ndarray:
        if index >= len(node.input) or not node.input[index]:
            self._refuse(node, f"{what} (input {index}) is missing")
        name = node.input[index]
        if name not in self.consts:
            self._refuse(node, f"{what} '{name}' must be a constant (an initializer or a "
                               f"Constant node): convnet holds weights as parameters")
        return self.consts[name]

    def _optional_constant(self, node, index: int, what: str):
        if index >= len(node.input) or not node.input[index]:
            return None
        return self._constant(node, index, what)

    # -- windows --------------------------------------------------------------------------------
    def _window(self, node, attrs: dict, shape: Shape, kernel, dilation):
        """Strides and explicit (top, bottom, left, right) padding; 'same' for SAME_UPPER."""
        if len(shape) != 3:
            self._refuse(node, f"input of per-sample shape {shape}; expected (C, H, W)")
        if len(kernel) != 2:
            self._refuse(node, f"a {len(kernel)}-D kernel {list(kernel)}; only 2-D windows")
        strides = tuple(attrs.get("strides", (1, 1)))
        if len(strides) != 2 or min(strides) < 1:
            self._refuse(node, f"strides {list(strides)}")
        auto_pad = attrs.get("auto_pad", "NOTSET")
        hw = shape[1:]
        if auto_pad == "NOTSET":
            pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
            if len(pads) != 4 or min(pads) < 0:
                self._refuse(node, f"pads {list(pads)}; expected 4 non-negative values")
            top, left, bottom, right = pads
        elif auto_pad == "VALID":
            top = left = bottom = right = 0
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            (top, bottom), (left, right) = (
                same_padding(hw[axis], kernel[axis], strides[axis], dilation[axis])
                for axis in range(2))
            if auto_pad == "SAME_LOWER":  # the extra pixel goes before
                top, bottom, left, right = bottom, top, right, left
        else:
            self._refuse(node, f"auto_pad '{auto_pad}'")
        return strides, (top, bottom, left, right), auto_pad

    def _track(self, node, layer, shape: Shape) -> Shape:
        """Output shape of a window layer, flooring like ONNX; notes when pixels are dropped."""
        geometry = window_output(shape[1:], layer.kernel_size, layer.stride, layer.padding,
                                 layer.dilation, strict=False, layer=node.name or "layer")
        if geometry.dropped != (0, 0):
            self.state.floors = True
        channels = layer.out_channels if isinstance(layer, Conv2d) else shape[0]
        return (channels, *geometry.out_hw)

    def _op_Conv(self, node, attrs, shape):
        self._check_attributes(node, attrs, {"auto_pad", "dilations", "group", "kernel_shape",
                                             "pads", "strides"})
        weight = self._constant(node, 1, "weight W")
        bias = self._optional_constant(node, 2, "bias B")
        if weight.ndim != 4:
            self._refuse(node, f"a weight of shape {weight.shape}; only 2-D convolution "
                               f"(K, C/group, KH, KW)")
        kernel = tuple(attrs.get("kernel_shape", weight.shape[2:]))
        if kernel != tuple(weight.shape[2:]):
            self._refuse(node, f"kernel_shape {list(kernel)} differs from the weight's "
                               f"{list(weight.shape[2:])}")
        dilation = tuple(attrs.get("dilations", (1, 1)))
        if len(dilation) != 2 or min(dilation) < 1:
            self._refuse(node, f"dilations {list(dilation)}")
        strides, pads, auto_pad = self._window(node, attrs, shape, kernel, dilation)
        groups = int(attrs.get("group", 1))
        channels = shape[0]
        out_channels = weight.shape[0]
        if groups < 1 or channels % groups or out_channels % groups or (
                weight.shape[1] * groups != channels):
            self._refuse(node, f"group={groups} with {channels} input channels and a weight "
                               f"of shape {weight.shape}")
        if bias is not None and bias.shape != (out_channels,):
            self._refuse(node, f"bias of shape {bias.shape}; expected ({out_channels},)")
        padding = "same" if auto_pad == "SAME_UPPER" else _padding_argument(pads)
        layer = Conv2d(channels, out_channels, kernel, stride=strides, padding=padding,
                       dilation=dilation, groups=groups, bias=bias is not None)
        layer.weight.data[...] = weight
        if bias is not None:
            layer.bias.data[...] = bias
        return layer, self._track(node, layer, shape)

    def _pool_padding(self, node, attrs, shape, kernel, strides, pads):
        """pads plus, for ceil_mode, the bottom/right padding that gives the extra window."""
        top, bottom, left, right = pads
        extra = [0, 0]
        if attrs.get("ceil_mode", 0):
            for axis, (before, after) in enumerate(((top, bottom), (left, right))):
                extra[axis] = _ceil_extra(shape[1 + axis], kernel[axis], strides[axis],
                                          before, after)
        bottom, right = bottom + extra[0], right + extra[1]
        limits = (kernel[0] // 2, kernel[1] // 2)
        if max(top, bottom) > limits[0] or max(left, right) > limits[1]:
            with_extra = " (with ceil_mode's extra bottom/right padding)" if any(extra) else ""
            self._refuse(node, f"padding top {top}, bottom {bottom}, left {left}, right {right}"
                               f"{with_extra} exceeds half the kernel {list(kernel)}: convnet "
                               f"pools pad at most {limits[0]} rows and {limits[1]} columns "
                               f"per side")
        return (top, bottom, left, right)

    def _pool(self, node, attrs, shape, known):
        """kernel, strides, the file's pads and the pads convnet uses (ceil_mode included)."""
        self._check_attributes(node, attrs, known)
        if "kernel_shape" not in attrs:
            self._refuse(node, "kernel_shape is missing")
        kernel = tuple(attrs["kernel_shape"])
        dilation = tuple(attrs.get("dilations", (1, 1)))
        if any(d != 1 for d in dilation):
            self._refuse(node, f"dilations {list(dilation)}: convnet pools have no dilation")
        strides, pads, _ = self._window(node, attrs, shape, kernel, (1, 1))
        padded = self._pool_padding(node, attrs, shape, kernel, strides, pads)
        return kernel, strides, pads, padded

    def _op_MaxPool(self, node, attrs, shape):
        known = {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order",
                 "strides"}
        kernel, strides, _, padded = self._pool(node, attrs, shape, known)
        layer = MaxPool2d(kernel, stride=strides, padding=_padding_argument(padded))
        return layer, self._track(node, layer, shape)

    def _op_AveragePool(self, node, attrs, shape):
        known = {"auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape",
                 "pads", "strides"}
        kernel, strides, pads, padded = self._pool(node, attrs, shape, known)
        include_pad = bool(attrs.get("count_include_pad", 0))
        if include_pad and padded != pads:  # ceil_mode added windows over the edge
            if any(pads):
                self._refuse(node, f"ceil_mode=1 with count_include_pad=1 and pads "
                                   f"(top, bottom, left, right) {list(pads)}: windows hanging "
                                   f"over the bottom/right edge divide by a count convnet "
                                   f"cannot express")
            # Without real padding ONNX divides each window by its count of input pixels.
            include_pad = False
        layer = AvgPool2d(kernel, stride=strides, padding=_padding_argument(padded),
                          count_include_pad=include_pad)
        return layer, self._track(node, layer, shape)

    def _op_GlobalAveragePool(self, node, attrs, shape):
        self._check_attributes(node, attrs, set())
        if len(shape) != 3:
            self._refuse(node, f"input of per-sample shape {shape}; expected (C, H, W)")
        return GlobalAvgPool2d(), (shape[0], 1, 1)

    def _op_ReduceMean(self, node, attrs, shape):
        self._check_attributes(node, attrs, {"axes", "keepdims", "noop_with_empty_axes"})
        axes = attrs.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self._constant(node, 1, "axes")
        rank = len(shape) + 1
        normalized = sorted(int(a) % rank for a in axes) if axes is not None else None
        if normalized != [2, 3] or rank != 4:
            self._refuse(node, f"axes {None if axes is None else list(axes)} on a rank-{rank} "
                               f"input")
        if attrs.get("keepdims", 1):
            return GlobalAvgPool2d(), (shape[0], 1, 1)
        return [GlobalAvgPool2d(), Flatten()], (shape[0],)

    # -- elementwise ----------------------------------------------------------------------------
    def _op_Relu(self, node, attrs, shape):
        self._check_attributes(node, attrs, set())
        return ReLU(), shape

    def _op_LeakyRelu(self, node, attrs, shape):
        self._check_attributes(node, attrs, {"alpha"})
        return LeakyReLU(float(attrs.get("alpha", 0.01))), shape

    def _op_Sigmoid(self, node, attrs, shape):
        self._check_attributes(node, attrs, set())
        return Sigmoid(), shape

    def _op_Tanh(self, node, attrs, shape):
        self._check_attributes(node, attrs, set())
        return Tanh(), shape

    def _op_Identity(self, node, attrs, shape):
        self._check_attributes(node, attrs, set())
        return None, shape

    def _op_Softmax(self, node, attrs, shape):
        self._check_attributes(node, attrs, {"axis"})
        rank = len(shape) + 1
        if self.opset >= 13:
            axis = int(attrs.get("axis", -1)) % rank
            if axis != 1:
                self._refuse(node, f"axis {attrs.get('axis', -1)} on a rank-{rank} input "
                                   f"(the softmax would not run over the channel axis)")
        else:  # coerced to 2-D at axis: per channel only when nothing follows the channels
            axis = int(attrs.get("axis", 1)) % rank
            if axis != 1 or math.prod(shape[1:]) != 1:
                self._refuse(node, f"axis {attrs.get('axis', 1)} on per-sample shape {shape} "
                                   f"at opset {self.opset} (softmax over the flattened "
                                   f"trailing axes)")
        return Softmax(), shape

    # -- fully connected --------------------------------------------------------------------------
    def _op_Gemm(self, node, attrs, shape):
        self._check_attributes(node, attrs, {"alpha", "beta", "broadcast", "transA", "transB"})
        if attrs.get("transA", 0):
            self._refuse(node, "transA=1 (the data would be transposed (in, N))")
        if len(shape) != 1:
            self._refuse(node, f"input of per-sample shape {shape}; Gemm needs (N, in) data "
                               f"(add a Flatten before it)")
        b = self._constant(node, 1, "matrix B")
        if b.ndim != 2:
            self._refuse(node, f"B of shape {b.shape}; expected a matrix")
        weight = b if attrs.get("transB", 0) else b.T  # (out, in)
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        c = self._optional_constant(node, 2, "bias C")
        bias = None
        if c is not None and beta != 0:
            bias = _bias_vector(c, weight.shape[0])
            if bias is None:
                self._refuse(node, f"C of shape {c.shape} with {weight.shape[0]} outputs")
            bias = beta * bias
        return self._linear(node, weight * alpha, bias, shape)

    def _op_MatMul(self, node, attrs, shape):
        self._check_attributes(node, attrs, set())
        b = self._constant(node, 1, "matrix B")
        if len(shape) != 1 or b.ndim != 2:
            self._refuse(node, f"per-sample input {shape} times B of shape {b.shape}; "
                               f"expected (N, in) data times an (in, out) matrix")
        return self._linear(node, b.T, None, shape)

    def _linear(self, node, weight, bias, shape):
        out_features, in_features = weight.shape
        if in_features != shape[0]:
            self._refuse(node, f"a weight for {in_features} inputs, but {shape[0]} features "
                               f"reach it")
        layer = Linear(in_features, out_features, bias=bias is not None)
        layer.weight.data[...] = weight
        if bias is not None:
            layer.bias.data[...] = bias
        return layer, (out_features,)

    def _op_Add(self, node, attrs, shape):
        """Reached only for an Add with one constant input: a bias."""
        self._check_attributes(node, attrs, {"axis", "broadcast"})
        constants = [name for name in node.input if name in self.consts]
        return _Bias(self.consts[constants[0]]), shape

    def _fold_bias(self, node, x: str, values, layers: list) -> None:
        layer = self.state.producer.get(x)
        if layer is None or not layers or layers[-1] is not layer or not isinstance(
                layer, (Linear, Conv2d)):
            self._refuse(node, f"adding a constant of shape {values.shape} to '{x}', which "
                               f"no MatMul, Gemm or Conv wrote just before")
        count = layer.out_features if isinstance(layer, Linear) else layer.out_channels
        bias = _bias_vector(values, count, spatial=isinstance(layer, Conv2d))
        if bias is None:
            self._refuse(node, f"a constant of shape {values.shape} that is not one value per "
                               f"output ({count}) of the layer before it")
        if layer.bias is not None:
            layer.bias.data[...] += bias
        else:
            replacement = _with_bias(layer, bias)
            layers[-1] = replacement
            self.state.onnx_names[id(replacement)] = self.state.onnx_names.pop(id(layer))
            self.state.producer[node.output[0]] = replacement
            return
        self.state.producer[node.output[0]] = layer

    # -- shape ----------------------------------------------------------------------------------
    def _op_Flatten(self, node, attrs, shape):
        self._check_attributes(node, attrs, {"axis"})
        rank = len(shape) + 1
        axis = int(attrs.get("axis", 1))
        if not -rank <= axis < rank or axis % rank != 1:
            self._refuse(node, f"axis={axis} (flattening the batch axis in)")
        return Flatten(), (math.prod(shape),)

    def _op_Reshape(self, node, attrs, shape):
        self._check_attributes(node, attrs, {"allowzero"})
        try:
            target = list(numpy.atleast_1d(self._shape_value(node, node.input[1])))
        except (IndexError, KeyError, TypeError, ValueError) as error:
            if isinstance(error, OnnxImportError):
                raise
            self._refuse(node, f"its target shape could not be computed ({error})")
        features = math.prod(shape)
        if len(target) == 2:
            first, second = target
            copies_batch = first == 0 and not attrs.get("allowzero", 0)
            keeps_batch = copies_batch or first in (-1, BATCH) or first == self.batch
            if second == 0 and not attrs.get("allowzero", 0):
                second = shape[0]  # 0 copies the input's dimension 1
            if second == -1 and first != -1:
                second = features
            if keeps_batch and second == features:
                return Flatten(), (features,)
        shown = "[" + ", ".join(str(v) for v in target) + "]"
        self._refuse(node, f"target shape {shown} for per-sample input {shape}")

    def _shape_value(self, user, name: str) -> numpy.ndarray:
        """A constant, or a 1-D shape computed from tensor shapes (batch entries are BATCH):
        x.view(x.size(0), -1) exports as Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
        if name in self.consts:
            return numpy.asarray(self.consts[name]).astype(object)
        node = self.producers.get(name)
        if node is None or node.op_type not in SHAPE_OPS:
            self._refuse(user, f"input '{name}' is neither a constant nor computed by "
                               f"{', '.join(SHAPE_OPS)} from tensor shapes")
        attrs = _attributes(node)
        if node.op_type == "Shape":
            source = node.input[0]
            if source not in self.shapes:
                self._refuse(user, f"its target shape reads the shape of '{source}', which the "
                                   f"walk from the input has not reached")
            full = numpy.array([BATCH, *self.shapes[source]], dtype=object)
            return full[attrs.get("start", 0):attrs.get("end", len(full))]
        values = [self._shape_value(user, item) if item else None for item in node.input]
        if node.op_type in ("Identity", "Cast"):
            return values[0]
        if node.op_type == "Gather":
            return numpy.take(values[0], values[1].astype(int), axis=attrs.get("axis", 0))
        if node.op_type == "Concat":
            return numpy.concatenate([numpy.atleast_1d(v) for v in values],
                                     axis=attrs.get("axis", 0))
        if node.op_type == "Unsqueeze":
            axes = attrs.get("axes") if len(values) < 2 else values[1].astype(int)
            result = values[0]
            for axis in sorted(int(a) for a in axes):
                result = numpy.expand_dims(result, axis)
            return result
        if node.op_type == "Squeeze":
            axes = attrs.get("axes") if len(values) < 2 else values[1].astype(int)
            return numpy.squeeze(values[0], axis=None if axes is None else tuple(
                int(a) for a in axes))
        # Slice of a 1-D shape: starts, ends, axes, steps as inputs (opset 10 on) or attributes
        if len(values) >= 3:
            parts = [values[1], values[2], *(values[3:5] + [None, None])[:2]]
        else:
            parts = [attrs.get("starts"), attrs.get("ends"), attrs.get("axes"), None]
        starts, ends, axes, steps = (None if part is None else [int(v) for v in part]
                                     for part in parts)
        if len(starts) != 1 or axes not in (None, [0], [-1]):
            self._refuse(user, f"slices a shape along axes {axes}; only 1-D shapes")
        return values[0][slice(starts[0], ends[0], 1 if steps is None else steps[0])]

    def _op_Squeeze(self, node, attrs, shape):
        self._check_attributes(node, attrs, {"axes"})
        axes = attrs.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self._constant(node, 1, "axes")
        rank = len(shape) + 1
        if axes is None or rank != 4 or sorted(int(a) % rank for a in axes) != [2, 3] or (
                shape[1:] != (1, 1)):
            self._refuse(node, f"axes {None if axes is None else list(axes)} on per-sample "
                               f"shape {shape}")
        return Flatten(), (shape[0],)

    # -- normalisation and regularisation ----------------------------------------------------
    def _op_BatchNormalization(self, node, attrs, shape):
        self._check_attributes(node, attrs, {"epsilon", "momentum", "spatial", "training_mode"})
        if attrs.get("training_mode", 0):
            self._refuse(node, "training_mode=1")
        if not attrs.get("spatial", 1):
            self._refuse(node, "spatial=0")
        if len(shape) != 3:
            self._refuse(node, f"input of per-sample shape {shape}; convnet has BatchNorm2d "
                               f"for (N, C, H, W)")
        channels = shape[0]
        arrays = [self._constant(node, index, what) for index, what in
                  ((1, "scale"), (2, "B"), (3, "mean"), (4, "var"))]
        for array, what in zip(arrays, ("scale", "B", "mean", "var"), strict=True):
            if array.shape != (channels,):
                self._refuse(node, f"{what} of shape {array.shape}; expected ({channels},)")
        momentum = 1.0 - float(attrs.get("momentum", 0.9))
        layer = BatchNorm2d(channels, eps=float(attrs.get("epsilon", 1e-5)),
                            momentum=min(max(momentum, 0.0), 1.0))
        scale, shift, mean, var = arrays
        layer.weight.data[...] = scale
        layer.bias.data[...] = shift
        layer.running_mean[...] = mean
        layer.running_var[...] = var
        return layer, shape

    def _op_Dropout(self, node, attrs, shape):
        self._check_attributes(node, attrs, {"ratio", "seed", "is_test"})
        ratio = float(attrs.get("ratio", 0.5))
        given = self._optional_constant(node, 1, "ratio")
        if given is not None:
            ratio = _float32(given)
        training = self._optional_constant(node, 2, "training_mode")
        if training is not None and bool(training):
            self._refuse(node, "training_mode true (dropout would be applied)")
        if not 0 <= ratio < 1:
            self._refuse(node, f"ratio {ratio}")
        return Dropout(ratio), shape


@dataclass
class _Bias:
    values: numpy.ndarray


def _padding_argument(pads):
    """(top, bottom, left, right) -> the simplest convnet padding argument."""
    top, bottom, left, right = (int(v) for v in pads)
    if top == bottom and left == right:
        return top if top == left else (top, left)
    return (top, bottom, left, right)


def _ceil_extra(n: int, kernel: int, stride: int, before: int, after: int) -> int:
    """Bottom/right padding that makes floor division give ONNX's (and PyTorch's) ceil_mode
    output: one more window, unless it would start in the right padding."""
    span = n + before + after - kernel
    if span < 0:
        return 0  # the window does not fit at all: let the shape check explain
    floor_out = span // stride + 1
    ceil_out = -(-span // stride) + 1
    if ceil_out > floor_out and (ceil_out - 1) * stride >= n + before:
        ceil_out -= 1
    return max((ceil_out - 1) * stride + kernel - (n + before + after), 0)


def _bias_vector(values: numpy.ndarray, count: int, spatial: bool = False):
    """A (count,) bias from a constant that adds one value per output, else None."""
    values = numpy.asarray(values)
    shapes = [(), (1,), (count,), (1, count)]
    if spatial:
        shapes = [(), (1,), (count, 1, 1), (1, count, 1, 1)]
    if values.shape not in shapes:
        return None
    return numpy.broadcast_to(values.reshape(-1), (count,)).astype(numpy.float32)


def _with_bias(layer, bias):
    if isinstance(layer, Linear):
        replacement = Linear(layer.in_features, layer.out_features, bias=True)
    else:
        replacement = Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                             stride=layer.stride, padding=layer.padding,
                             dilation=layer.dilation, groups=layer.groups, bias=True)
    replacement.weight.data[...] = layer.weight.data
    replacement.bias.data[...] = bias
    return replacement


def _show_dims(dims) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _metadata(onnx_model: onnx.ModelProto) -> dict:
    return {prop.key: prop.value for prop in onnx_model.metadata_props}


def _json(metadata: dict, key: str):
    if key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as error:
        raise OnnxImportError(f"metadata '{key}' is not valid JSON: {error}") from error


def from_onnx(onnx_model: onnx.ModelProto, input_shape: Shape | None = None) -> Sequential:
    """A convnet Sequential (in eval mode) computing what `onnx_model` computes.

    Attached attributes: `class_names` and `normalization` (from the metadata, or None),
    `onnx_names` (display name -> ONNX node name) and `metadata` (all metadata_props).
    """
    state = rng.get_state()  # building layers draws initial weights; keep the stream
    try:
        model = _Importer(onnx_model, input_shape).build()
    finally:
        rng.set_state(state)
    metadata = _metadata(onnx_model)
    model.metadata = metadata
    model.class_names = _json(metadata, META_CLASS_NAMES)
    model.normalization = _json(metadata, META_NORMALIZATION)
    return model.eval()


def load(path, input_shape: Shape | None = None) -> Sequential:
    """Read an ONNX file as a convnet Sequential; see `from_onnx`.

        model = cn.onnx.load("resnet8.onnx")
        scores = model.forward(images)  # (N, C, H, W) float32
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load: no ONNX file at {path}")
    try:
        onnx_model = onnx.load_model(str(path))
    except Exception as error:  # protobuf's DecodeError and friends
        raise OnnxImportError(f"{path} is not a readable ONNX file: {error}") from error
    return from_onnx(onnx_model, input_shape)
