"""convnet -> ONNX: one node per layer, named like the layer (conv1, relu1, ...).

Initializers keep the state-dict names ('0.weight', '3.body.1.running_mean'), so a file opened
in Netron reads like the model's summary. Windows are written with explicit pads resolved
for the export input shape ('same' included), the batch axis is left dynamic, and the input
shape, class names and normalization travel as metadata_props.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import onnx
from onnx import TensorProto, helper, numpy_helper

from convnet.core.backend import to_numpy
from convnet.core.files import atomic_write
from convnet.io.onnx.emitters import EMITTERS, Partial, emits
from convnet.nn.activations import (
    Hardsigmoid,
    Hardtanh,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from convnet.nn.batchnorm import BatchNorm2d
from convnet.nn.constant import Constant
from convnet.nn.containers import Residual, Sequential
from convnet.nn.conv import Conv2d
from convnet.nn.graph import Model
from convnet.nn.layer import Layer, Shape
from convnet.nn.linear import Dropout, Flatten, Linear
from convnet.nn.matmul import MatMul
from convnet.nn.merge import Add, Concat, Div, Mul, Sub
from convnet.nn.normalization import LayerNorm, LocalResponseNorm
from convnet.nn.pointwise import Abs, Erf, Exp, Log, Neg, Pow, Reciprocal, Sqrt
from convnet.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from convnet.nn.reduce import ReduceMax, ReduceMean, ReduceSum
from convnet.nn.reshape import Permute, Reshape
from convnet.nn.slice import Slice
from convnet.nn.split import Split

OPSET = 17  # BatchNormalization-15, Softmax-13 (per-axis) and Dropout-13 are all available
MIN_OPSET = 13  # Softmax(axis=1) on 4-D input means per-channel only from opset 13 on
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH = "batch"  # the symbolic batch dimension of input and output

# metadata_props keys (values are JSON)
META_INPUT_SHAPE = "convnet.input_shape"
META_CLASS_NAMES = "convnet.class_names"
META_NORMALIZATION = "convnet.normalization"

@dataclass
class _GraphBuilder:
    """Nodes and initializers in the order they are emitted; tensor names kept unique."""

    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    taken: set = field(default_factory=lambda: {INPUT_NAME, OUTPUT_NAME})
    # id(array) -> (initializer name, the array): a layer called twice writes its weights once
    written: dict = field(default_factory=dict)
    opset: int = OPSET

    def unique(self, name: str) -> str:
        candidate, index = name, 1
        while candidate in self.taken:
            index += 1
            candidate = f"{name}_{index}"
        self.taken.add(candidate)
        return candidate

    def constant(self, name: str, array, dtype=numpy.float32) -> str:
        name = self.unique(name)
        values = numpy.array(to_numpy(array), dtype=dtype, order="C")  # keeps 0-d arrays 0-d
        self.initializers.append(numpy_helper.from_array(values, name))
        return name

    def weight(self, name: str, array) -> str:
        """A layer's own array (weight, bias, running statistics), written once however many
        times the layer is called."""
        if id(array) not in self.written:
            self.written[id(array)] = (self.constant(name, array), array)
        return self.written[id(array)][0]

    def ints(self, name: str, values) -> str:
        """An int64 initializer (shapes, axes, starts and ends)."""
        return self.constant(name, numpy.asarray(values, dtype=numpy.int64), numpy.int64)

    def node(self, op: str, inputs: list[str], layer: Layer, outputs: int = 1,
             **attributes) -> str | list[str]:
        """One node named after the layer, whose output tensor carries the same name (name:i
        for each of several outputs)."""
        name = self.unique(layer.name)
        names = [name] if outputs == 1 else [self.unique(f"{name}:{i}") for i in range(outputs)]
        node = helper.make_node(op, inputs, names, name=name, doc_string=repr(layer),
                                **attributes)
        self.nodes.append(node)
        return names[0] if outputs == 1 else names


def _onnx_pads(padding) -> list[int]:
    """convnet Padding (top, bottom, left, right) -> ONNX [top, left, bottom, right]."""
    return [padding.top, padding.left, padding.bottom, padding.right]


def _emit(graph: _GraphBuilder, layer: Layer, xs: list[str], shapes: list, prefix: str):
    """Append the nodes of `layer` reading tensors xs; returns its output tensor name (a list
    of names for a layer with several outputs)."""
    for cls in type(layer).__mro__:
        if cls in EMITTERS:
            return EMITTERS[cls](graph, layer, xs, shapes, prefix)
    exportable = sorted({cls.__name__ for cls in EMITTERS})
    raise TypeError(
        f"{layer.name} ({type(layer).__name__}): cannot export this layer type to ONNX; "
        f"exportable layers are {', '.join(exportable)}"
    )


@emits(Sequential)
def _sequential(graph, layer, xs, shapes, prefix):
    x, shape = xs[0], shapes[0]
    for index, child in enumerate(layer.layers):
        x = _emit(graph, child, [x], [shape], f"{prefix}{index}.")
        shape = child.output_shape(shape)
    return x


@emits(Residual)
def _residual(graph, layer, xs, shapes, prefix):
    body = _emit(graph, layer.body, xs, shapes, f"{prefix}body.")
    shortcut = xs[0]
    if layer.projection is not None:
        shortcut = _emit(graph, layer.projection, xs, shapes, f"{prefix}projection.")
    return graph.node("Add", [body, shortcut], layer)


@emits(Model)
def _model(graph, layer, xs, shapes, prefix):
    """A graph model's calls in order; a model inside a model prefixes its layers' names."""
    names: list = [None] * layer.slots
    plan = layer.plan(shapes)
    for slot, x in zip(layer.input_slots, xs, strict=True):
        names[slot] = x
    for step in layer.steps:
        given = [names[s] for s in step.inputs]
        out = _emit(graph, step.layer, given, [plan[s] for s in step.inputs],
                    f"{prefix}{step.layer.name}.")
        outs = out if isinstance(out, list) else [out]
        for slot, name in zip(step.outputs, outs, strict=True):
            names[slot] = name
    results = [names[s] for s in layer.output_slots]
    return results if layer.multi_output else results[0]


@emits(Conv2d)
def _conv(graph, layer, xs, shapes, prefix):
    geometry = layer.geometry(shapes[0][1:])
    inputs = [xs[0], graph.weight(prefix + "weight", layer.weight.data)]
    if layer.bias is not None:
        inputs.append(graph.weight(prefix + "bias", layer.bias.data))
    return graph.node("Conv", inputs, layer, kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=_onnx_pads(geometry.padding),
                      dilations=list(layer.dilation), group=layer.groups)


@emits(MaxPool2d, AvgPool2d)
def _pool(graph, layer, xs, shapes, prefix):
    geometry = layer.geometry(shapes[0][1:])
    window = {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride),
              "pads": _onnx_pads(geometry.padding), "ceil_mode": 0}
    if isinstance(layer, MaxPool2d):
        return graph.node("MaxPool", xs, layer, **window)
    return graph.node("AveragePool", xs, layer, **window,
                      count_include_pad=int(layer.count_include_pad))


@emits(GlobalAvgPool2d)
def _global_pool(graph, layer, xs, shapes, prefix):
    return graph.node("GlobalAveragePool", xs, layer)


@emits(LeakyReLU)
def _leaky_relu(graph, layer, xs, shapes, prefix):
    return graph.node("LeakyRelu", xs, layer, alpha=layer.negative_slope)


SIMPLE = {ReLU: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh"}


@emits(*SIMPLE)
def _simple(graph, layer, xs, shapes, prefix):
    return graph.node(SIMPLE[type(layer)], xs, layer)


@emits(Hardtanh)
def _hardtanh(graph, layer, xs, shapes, prefix):
    """Hardtanh and ReLU6 are ONNX's Clip, with its bounds as inputs (opset 11 on)."""
    low = graph.constant(f"{layer.name}.min", numpy.array(layer.min_val))
    high = graph.constant(f"{layer.name}.max", numpy.array(layer.max_val))
    return graph.node("Clip", [xs[0], low, high], layer)


@emits(Hardsigmoid)
def _hardsigmoid(graph, layer, xs, shapes, prefix):
    return graph.node("HardSigmoid", xs, layer, alpha=layer.alpha, beta=layer.beta)


@emits(Softmax)
def _softmax(graph, layer, xs, shapes, prefix):
    return graph.node("Softmax", xs, layer, axis=layer.dim)


@emits(Linear)
def _linear(graph, layer, xs, shapes, prefix):
    inputs = [xs[0], graph.weight(prefix + "weight", layer.weight.data)]  # (out, in)
    if layer.bias is not None:
        inputs.append(graph.weight(prefix + "bias", layer.bias.data))
    return graph.node("Gemm", inputs, layer, transB=1)  # x W^T + b


@emits(Flatten)
def _flatten(graph, layer, xs, shapes, prefix):
    return graph.node("Flatten", xs, layer, axis=1)


@emits(Dropout)
def _dropout(graph, layer, xs, shapes, prefix):
    # Without a training_mode input Dropout is the identity: inference, as exported.
    ratio = graph.constant(f"{layer.name}.ratio", numpy.array(layer.p))
    return graph.node("Dropout", [xs[0], ratio], layer)


@emits(BatchNorm2d)
def _batchnorm(graph, layer, xs, shapes, prefix):
    channels = layer.num_features
    if layer.weight is not None:
        scale = graph.weight(prefix + "weight", layer.weight.data)
        bias = graph.weight(prefix + "bias", layer.bias.data)
    else:  # affine=False: the identity scale and shift
        scale = graph.constant(f"{layer.name}.scale", numpy.ones(channels))
        bias = graph.constant(f"{layer.name}.shift", numpy.zeros(channels))
    inputs = [xs[0], scale, bias, graph.weight(prefix + "running_mean", layer.running_mean),
              graph.weight(prefix + "running_var", layer.running_var)]
    # ONNX momentum weighs the old running value; convnet's (PyTorch's) the new batch.
    return graph.node("BatchNormalization", inputs, layer, epsilon=layer.eps,
                      momentum=1.0 - layer.momentum)


@emits(Concat)
def _concat(graph, layer, xs, shapes, prefix):
    return graph.node("Concat", xs, layer, axis=layer.axis)


MERGES = {Add: "Add", Sub: "Sub", Mul: "Mul", Div: "Div"}


@emits(*MERGES)
def _merge(graph, layer, xs, shapes, prefix):
    """ONNX's Add/Sub/Mul/Div take two inputs: a chain of nodes for more."""
    op = MERGES[type(layer)]
    out = xs[0]
    for index, x in enumerate(xs[1:], start=1):
        if index == len(xs) - 1:
            return graph.node(op, [out, x], layer)
        out = graph.node(op, [out, x], Partial(f"{layer.name}_part{index}", layer))
    return out


@emits(MatMul)
def _matmul(graph, layer, xs, shapes, prefix):
    return graph.node("MatMul", xs, layer)


@emits(Reshape)
def _reshape(graph, layer, xs, shapes, prefix):
    """The target for the export shape, the batch copied (0): the file's sizes are fixed."""
    target = graph.ints(f"{layer.name}.shape", [0, *layer.output_shape(shapes[0])])
    return graph.node("Reshape", [xs[0], target], layer)


@emits(Permute)
def _permute(graph, layer, xs, shapes, prefix):
    return graph.node("Transpose", xs, layer, perm=list(layer.dims))


@emits(Split)
def _split(graph, layer, xs, shapes, prefix):
    sizes = graph.ints(f"{layer.name}.split", layer.split_sizes)
    return graph.node("Split", [xs[0], sizes], layer, outputs=len(layer.split_sizes),
                      axis=layer.dim)


@emits(Slice)
def _slice(graph, layer, xs, shapes, prefix):
    inputs = [xs[0]] + [graph.ints(f"{layer.name}.{what}", values) for what, values in
                        (("starts", layer.starts), ("ends", layer.ends), ("axes", layer.dims),
                         ("steps", layer.steps))]
    return graph.node("Slice", inputs, layer)


REDUCTIONS = {ReduceMean: ("ReduceMean", 18), ReduceSum: ("ReduceSum", 13),
              ReduceMax: ("ReduceMax", 18)}


@emits(*REDUCTIONS)
def _reduce(graph, layer, xs, shapes, prefix):
    op, axes_as_input = REDUCTIONS[type(layer)]  # the opset from which axes is an input
    if graph.opset >= axes_as_input:
        axes = graph.ints(f"{layer.name}.axes", layer.dim)
        return graph.node(op, [xs[0], axes], layer, keepdims=int(layer.keepdim))
    return graph.node(op, xs, layer, axes=list(layer.dim), keepdims=int(layer.keepdim))


@emits(Constant)
def _constant(graph, layer, xs, shapes, prefix):
    """The value with a batch axis of 1, expanded to the batch of the tensor it is given."""
    data = layer.data
    value = graph.weight(prefix + "value", data)
    batched = graph.node("Unsqueeze", [value, graph.ints(f"{layer.name}.axis0", [0])],
                         Partial(f"{layer.name}_batched", layer))
    shape = graph.node("Shape", [xs[0]], Partial(f"{layer.name}_shape", layer))
    batch = graph.node("Gather", [shape, graph.ints(f"{layer.name}.index0", [0])],
                       Partial(f"{layer.name}_batch", layer), axis=0)
    target = graph.node("Concat", [batch, graph.ints(f"{layer.name}.dims", data.shape)],
                        Partial(f"{layer.name}_target", layer), axis=0)
    return graph.node("Expand", [batched, target], layer)


@emits(LayerNorm)
def _layer_norm(graph, layer, xs, shapes, prefix):
    if graph.opset < 17:
        raise ValueError(f"{layer.name} (LayerNorm): ONNX has LayerNormalization from opset 17 "
                         f"on; export with opset=17 or newer")
    size = layer.normalized_shape
    scale = (graph.weight(prefix + "weight", layer.weight.data) if layer.weight is not None
             else graph.constant(f"{layer.name}.scale", numpy.ones(size)))
    inputs = [xs[0], scale]
    if layer.bias is not None:
        inputs.append(graph.weight(prefix + "bias", layer.bias.data))
    return graph.node("LayerNormalization", inputs, layer, axis=-len(size),
                      epsilon=layer.eps)


@emits(LocalResponseNorm)
def _lrn(graph, layer, xs, shapes, prefix):
    if layer.size % 2 == 0:
        raise ValueError(f"{layer.name} (LocalResponseNorm): size {layer.size} is even; ONNX's "
                         f"LRN puts the extra channel of an even window after the centre, "
                         f"PyTorch's before, so only odd sizes export exactly")
    return graph.node("LRN", xs, layer, size=layer.size, alpha=layer.alpha, beta=layer.beta,
                      bias=layer.k)


UNARY = {Erf: "Erf", Sqrt: "Sqrt", Exp: "Exp", Log: "Log", Abs: "Abs", Neg: "Neg",
         Reciprocal: "Reciprocal"}


@emits(*UNARY)
def _unary(graph, layer, xs, shapes, prefix):
    return graph.node(UNARY[type(layer)], xs, layer)


@emits(Pow)
def _pow(graph, layer, xs, shapes, prefix):
    exponent = graph.constant(f"{layer.name}.exponent", numpy.array(layer.exponent))
    return graph.node("Pow", [xs[0], exponent], layer)


def _class_names(class_names, output_shape: Shape) -> list[str] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names must be a list of strings such as ['cat', 'dog'], "
                        f"received {type(class_names).__name__}")
    names = [str(name) for name in class_names]
    if len(output_shape) == 1 and len(names) != output_shape[0]:
        raise ValueError(f"class_names has {len(names)} names but the model outputs "
                         f"{output_shape[0]} scores per sample; give one name per output")
    return names


def _normalization(normalization, channels: int) -> dict | None:
    """{'mean': [...], 'std': [...]} from a mapping or an object with mean and std."""
    if normalization is None:
        return None
    if isinstance(normalization, Mapping):
        mean, std = normalization.get("mean"), normalization.get("std")
    else:
        mean, std = getattr(normalization, "mean", None), getattr(normalization, "std", None)
    if mean is None or std is None:
        raise ValueError(f"normalization must give 'mean' and 'std' (one value per input "
                         f"channel), received {normalization!r}")
    mean = [float(v) for v in numpy.atleast_1d(numpy.asarray(mean, dtype=float))]
    std = [float(v) for v in numpy.atleast_1d(numpy.asarray(std, dtype=float))]
    for label, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise ValueError(f"normalization {label} has {len(values)} values; give 1 or one "
                             f"per input channel ({channels})")
    if min(std) <= 0:
        raise ValueError(f"normalization std must be > 0, received {std}")
    return {"mean": mean, "std": std}


def to_onnx(model: Layer, input_shape: Shape | None = None, *, class_names=None,
            normalization=None, opset: int = OPSET) -> onnx.ModelProto:
    """The ONNX model of `model` for per-sample input (C, H, W), checked with full_check.

    The graph's input is 'input' (batch, C, H, W) float32 and its output 'output'; a graph
    model with several inputs or outputs keeps their names. Batch norm uses its running
    statistics and dropout is the identity (inference).
    """
    if not isinstance(model, Layer):
        raise TypeError(f"to_onnx: expected a convnet model such as cn.Sequential(...), "
                        f"received {type(model).__name__}")
    if input_shape is None:
        input_shape = (model.input_shapes if model.multi_input
                       else getattr(model, "input_shape", None))
    if input_shape is None:
        raise ValueError("export needs the per-sample input shape, e.g. input_shape=(3, 32, 32) "
                         "(or build the model first with model.build(input_shape))")
    input_shapes = ([tuple(int(v) for v in shape) for shape in input_shape] if model.multi_input
                    else [tuple(int(v) for v in input_shape)])
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an int >= {MIN_OPSET} (Softmax over the channel axis "
                         f"needs opset 13), received {opset!r}")
    outputs = model.output_shape(input_shapes if model.multi_input else input_shapes[0])
    output_shapes = [tuple(s) for s in outputs] if model.multi_output else [tuple(outputs)]
    names = _class_names(class_names, output_shapes[0])
    norm = _normalization(normalization, input_shapes[0][0])

    graph = _GraphBuilder(opset=opset)
    input_names = ([model.slot_names[s] for s in model.input_slots] if model.multi_input
                   else [INPUT_NAME])
    graph.taken.update(input_names)
    out = _emit(graph, model, input_names, input_shapes, "")
    produced = out if isinstance(out, list) else [out]
    output_names = _name_outputs(graph, produced, input_names)

    onnx_graph = helper.make_graph(
        graph.nodes,
        "convnet",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *shape])
         for name, shape in zip(input_names, input_shapes, strict=True)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *shape])
         for name, shape in zip(output_names, output_shapes, strict=True)],
        initializer=graph.initializers,
        doc_string=repr(model),
    )
    onnx_model = helper.make_model(
        onnx_graph,
        producer_name="convnet",
        producer_version=_version(),
        opset_imports=[helper.make_opsetid("", opset)],
        doc_string=f"convnet model, {model.num_parameters():,} parameters, "
                   f"input (batch, {', '.join(map(str, input_shapes[0]))})",
    )
    # Keep the IR version at what the opset needs, so older runtimes open the file too.
    onnx_model.ir_version = min(onnx_model.ir_version, _ir_version_for(opset))
    metadata = {META_INPUT_SHAPE: json.dumps(list(input_shapes[0]))}
    if names is not None:
        metadata[META_CLASS_NAMES] = json.dumps(names)
    if norm is not None:
        metadata[META_NORMALIZATION] = json.dumps(norm)
    helper.set_model_props(onnx_model, metadata)
    onnx_model = onnx.shape_inference.infer_shapes(onnx_model, check_type=True, strict_mode=True)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def _name_outputs(graph: _GraphBuilder, produced: list[str], input_names: list[str]):
    """The graph's output names: 'output' for a model with one, else the tensors' own names.
    A tensor that is a model input, or an output twice, gets an Identity node of its own."""
    wanted = [OUTPUT_NAME] if len(produced) == 1 else list(produced)
    final, seen = [], set()
    for tensor, name in zip(produced, wanted, strict=True):
        if tensor in input_names or tensor in seen:
            if name in final or name in input_names:
                name = graph.unique(f"{name}_out")
            graph.nodes.append(helper.make_node("Identity", [tensor], [name],
                                                name=graph.unique(f"{name}_identity")))
        elif name != tensor:
            _rename(graph, tensor, name)
        seen.add(tensor)
        final.append(name)
    return final


def _rename(graph: _GraphBuilder, old: str, new: str) -> None:
    for node in graph.nodes:
        for index, name in enumerate(node.output):
            if name == old:
                node.output[index] = new
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new


def export(model: Layer, path, input_shape: Shape | None = None, class_names=None,
           normalization=None, *, opset: int = OPSET) -> onnx.ModelProto:
    """Write `model` as an ONNX file at `path` (see `to_onnx`); returns the ModelProto.

        cn.onnx.export(model, "lenet.onnx", input_shape=(1, 28, 28),
                       class_names=[str(d) for d in range(10)],
                       normalization={"mean": [0.1307], "std": [0.3081]})
    """
    onnx_model = to_onnx(model, input_shape, class_names=class_names,
                         normalization=normalization, opset=opset)
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"export: folder {path.parent} does not exist")

    def write(tmp: Path) -> None:  # atomically: a failed write never leaves half a model
        onnx.save_model(onnx_model, str(tmp))
        tmp.chmod(0o644)  # a model to share, unlike the private temporary file

    atomic_write(path, write)
    return onnx_model


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("convnet")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0"


def _ir_version_for(opset: int) -> int:
    for entry in helper.VERSION_TABLE:  # (release, ir_version, ai.onnx opset, ...)
        if entry[2] >= opset:
            return entry[1]
    return onnx.IR_VERSION


from convnet.io.onnx import export_layers  # noqa: E402,F401  (registers their emitters)
