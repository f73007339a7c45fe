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
from convnet.nn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from convnet.nn.batchnorm import BatchNorm2d
from convnet.nn.containers import Residual, Sequential
from convnet.nn.conv import Conv2d
from convnet.nn.layer import Layer, Shape
from convnet.nn.linear import Dropout, Flatten, Linear
from convnet.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d

OPSET = 17  # BatchNormalization-15, Softmax-13 (per-axis) and Dropout-13 are all available
MIN_OPSET = 13  # Softmax(axis=1) on 4-D input means per-channel only from opset 13 on
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH = "batch"  # the symbolic batch dimension of input and output

# metadata_props keys (values are JSON)
META_INPUT_SHAPE = "convnet.input_shape"
META_CLASS_NAMES = "convnet.class_names"
META_NORMALIZATION = "convnet.nn.batchnorm"

EXPORTABLE = ("Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "ReLU", "LeakyReLU",
              "Sigmoid", "Tanh", "Softmax", "Linear", "Flatten", "Dropout", "BatchNorm2d",
              "Residual", "Sequential")


@dataclass
class _GraphBuilder:
    """Nodes and initializers in the order they are emitted; tensor names kept unique."""

    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    taken: set = field(default_factory=lambda: {INPUT_NAME, OUTPUT_NAME})

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

    def node(self, op: str, inputs: list[str], layer: Layer, **attributes) -> str:
        """One node named after the layer, whose single output tensor carries the same name."""
        name = self.unique(layer.name)
        node = helper.make_node(op, inputs, [name], name=name, doc_string=repr(layer),
                                **attributes)
        self.nodes.append(node)
        return name


def _onnx_pads(padding) -> list[int]:
    """convnet Padding (top, bottom, left, right) -> ONNX [top, left, bottom, right]."""
    return [padding.top, padding.left, padding.bottom, padding.right]


def _emit(graph: _GraphBuilder, layer: Layer, x: str, shape: Shape, prefix: str):
    """Append the nodes of `layer` reading tensor x (per-sample shape `shape`).

    Returns (output tensor name, output per-sample shape).
    """
    if isinstance(layer, Sequential):
        for index, child in enumerate(layer.layers):
            x, shape = _emit(graph, child, x, shape, f"{prefix}{index}.")
        return x, shape
    out_shape = tuple(layer.output_shape(shape))
    if isinstance(layer, Residual):
        body, _ = _emit(graph, layer.body, x, shape, f"{prefix}body.")
        shortcut = x
        if layer.projection is not None:
            shortcut, _ = _emit(graph, layer.projection, x, shape, f"{prefix}projection.")
        return graph.node("Add", [body, shortcut], layer), out_shape
    if isinstance(layer, Conv2d):
        geometry = layer.geometry(shape[1:])
        inputs = [x, graph.constant(prefix + "weight", layer.weight.data)]
        if layer.bias is not None:
            inputs.append(graph.constant(prefix + "bias", layer.bias.data))
        out = graph.node("Conv", inputs, layer, kernel_shape=list(layer.kernel_size),
                         strides=list(layer.stride), pads=_onnx_pads(geometry.padding),
                         dilations=list(layer.dilation), group=layer.groups)
        return out, out_shape
    if isinstance(layer, (MaxPool2d, AvgPool2d)):
        geometry = layer.geometry(shape[1:])
        window = {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride),
                  "pads": _onnx_pads(geometry.padding), "ceil_mode": 0}
        if isinstance(layer, MaxPool2d):
            return graph.node("MaxPool", [x], layer, **window), out_shape
        return graph.node("AveragePool", [x], layer, **window,
                          count_include_pad=int(layer.count_include_pad)), out_shape
    if isinstance(layer, GlobalAvgPool2d):
        return graph.node("GlobalAveragePool", [x], layer), out_shape
    if isinstance(layer, LeakyReLU):
        return graph.node("LeakyRelu", [x], layer, alpha=layer.negative_slope), out_shape
    simple = {ReLU: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh"}
    if type(layer) in simple:
        return graph.node(simple[type(layer)], [x], layer), out_shape
    if isinstance(layer, Softmax):
        return graph.node("Softmax", [x], layer, axis=1), out_shape
    if isinstance(layer, Linear):
        inputs = [x, graph.constant(prefix + "weight", layer.weight.data)]  # (out, in)
        if layer.bias is not None:
            inputs.append(graph.constant(prefix + "bias", layer.bias.data))
        return graph.node("Gemm", inputs, layer, transB=1), out_shape  # x W^T + b
    if isinstance(layer, Flatten):
        return graph.node("Flatten", [x], layer, axis=1), out_shape
    if isinstance(layer, Dropout):
        # Without a training_mode input Dropout is the identity: inference, as exported.
        ratio = graph.constant(f"{layer.name}.ratio", numpy.array(layer.p))
        return graph.node("Dropout", [x, ratio], layer), out_shape
    if isinstance(layer, BatchNorm2d):
        channels = layer.num_features
        if layer.weight is not None:
            scale = graph.constant(prefix + "weight", layer.weight.data)
            bias = graph.constant(prefix + "bias", layer.bias.data)
        else:  # affine=False: the identity scale and shift
            scale = graph.constant(f"{layer.name}.scale", numpy.ones(channels))
            bias = graph.constant(f"{layer.name}.shift", numpy.zeros(channels))
        inputs = [x, scale, bias, graph.constant(prefix + "running_mean", layer.running_mean),
                  graph.constant(prefix + "running_var", layer.running_var)]
        # ONNX momentum weighs the old running value; convnet's (PyTorch's) the new batch.
        return graph.node("BatchNormalization", inputs, layer, epsilon=layer.eps,
                          momentum=1.0 - layer.momentum), out_shape
    raise TypeError(
        f"{layer.name} ({type(layer).__name__}): cannot export this layer type to ONNX; "
        f"exportable layers are {', '.join(EXPORTABLE)}"
    )


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

    The graph's input is 'input' (batch, C, H, W) float32 and its output 'output'; batch
    norm uses its running statistics and dropout is the identity (inference).
    """
    if not isinstance(model, Layer):
        raise TypeError(f"to_onnx: expected a convnet model such as cn.Sequential(...), "
                        f"received {type(model).__name__}")
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        raise ValueError("export needs the per-sample input shape, e.g. input_shape=(3, 32, 32) "
                         "(or build the model first with model.build(input_shape))")
    input_shape = tuple(int(v) for v in input_shape)
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an int >= {MIN_OPSET} (Softmax over the channel axis "
                         f"needs opset 13), received {opset!r}")
    output_shape = tuple(model.output_shape(input_shape))  # ShapeError early, with advice
    names = _class_names(class_names, output_shape)
    norm = _normalization(normalization, input_shape[0])

    graph = _GraphBuilder()
    out, _ = _emit(graph, model, INPUT_NAME, input_shape, "")
    if out == INPUT_NAME:  # an empty model: still a graph from input to output
        graph.nodes.append(helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME],
                                            name="identity"))
    else:  # the last node writes the graph output directly
        last = graph.nodes[-1]
        last.output[0] = OUTPUT_NAME

    onnx_graph = helper.make_graph(
        graph.nodes,
        "convnet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH, *input_shape])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH, *output_shape])],
        initializer=graph.initializers,
        doc_string=repr(model),
    )
    onnx_model = helper.make_model(
        onnx_graph,
        producer_name="convnet",
        producer_version=_version(),
        opset_imports=[helper.make_opsetid("", opset)],
        doc_string=f"convnet model, {model.num_parameters():,} parameters, "
                   f"input (batch, {', '.join(map(str, input_shape))})",
    )
    # Keep the IR version at what the opset needs, so older runtimes open the file too.
    onnx_model.ir_version = min(onnx_model.ir_version, _ir_version_for(opset))
    metadata = {META_INPUT_SHAPE: json.dumps(list(input_shape))}
    if names is not None:
        metadata[META_CLASS_NAMES] = json.dumps(names)
    if norm is not None:
        metadata[META_NORMALIZATION] = json.dumps(norm)
    helper.set_model_props(onnx_model, metadata)
    onnx_model = onnx.shape_inference.infer_shapes(onnx_model, check_type=True, strict_mode=True)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


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
