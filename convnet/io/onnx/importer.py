"""ONNX -> convnet: any graph of supported operators becomes a `cn.Model` of convnet layers.

The import runs in steps, each its own module:
  loader     reads the file as data that cannot hurt (truncation, external data outside the
             model's folder, tensors whose size disagrees with their data, cycles)
  folding    folds constants: weights, Constant nodes and everything computed only from them
  shapes     the shape pass: Shape(x) of an activation as symbolic sizes (the batch unknown,
             each axis remembered), carried through shape arithmetic by the folding table
  registry   the table of translators, one small function per operator (package `ops`),
             which call convnet layers on `cn.Input` tensors
and this module walks the nodes in topological order, handing each to the folding table or
its translator, and makes the `cn.Model` of the graph's inputs and outputs (in the graph's
order, the ONNX names kept in `model.output_names`). Anything convnet cannot compute exactly
raises `OnnxImportError` naming the node, the operator and what is supported.

Window layers whose stride can leave a border uncovered are built with strict=False, so the
model floors as ONNX does at any input size; `Model.plan` re-checks the arithmetic for each
size it is given.
"""

from __future__ import annotations

import json
import math
import re

import numpy
import onnx
from onnx import helper

from convnet.core import rng
from convnet.io.onnx import ops  # noqa: F401  (registers the translators)
from convnet.io.onnx.errors import OnnxImportError, label
from convnet.io.onnx.export import META_CLASS_NAMES, META_NORMALIZATION
from convnet.io.onnx.folding import fold
from convnet.io.onnx.loader import MAX_ELEMENTS, read, to_array, topological_order
from convnet.io.onnx.registry import REGISTRY, SUPPORTED_OPS, Context, supported_list
from convnet.io.onnx.shapes import shape_of
from convnet.nn.graph import Model
from convnet.nn.layer import Shape
from convnet.nn.symbolic import Input

MIN_OPSET = 7  # Add/Gemm broadcasting and Dropout without is_test date from opset 7
MAX_OPSET = 21
_FLOAT_INPUTS = (onnx.TensorProto.FLOAT,)

__all__ = ["SUPPORTED_OPS", "OnnxImportError", "from_onnx", "load"]


def _attributes(node) -> dict:
    """Attribute values by name: strings decoded, float32 values as their shortest decimal."""
    values = {}
    for attribute in node.attribute:
        if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise OnnxImportError(f"{label(node)} ({node.op_type}): holds a subgraph "
                                  f"(attribute '{attribute.name}'); convnet imports plain "
                                  f"graphs without control flow", node.name, node.op_type)
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, float):
            value = float(str(numpy.float32(value)))  # 0.2 stored as float32 reads as 0.2
        values[attribute.name] = value
    return values


def _show_dims(dims) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


_NAME = re.compile(r"[.:/ ]")


def layer_name(onnx_name: str) -> str:
    """An ONNX tensor name as a convnet layer name (no '.', ':', '/' or spaces)."""
    return _NAME.sub("_", onnx_name) or "output"


class _Importer:
    def __init__(self, model: onnx.ModelProto, input_shape):
        self.model = model
        self.graph = model.graph
        self.opset = self._opset()
        if self.graph.sparse_initializer:
            raise OnnxImportError("the graph holds sparse initializers; convert them to dense "
                                  "tensors first (onnx.numpy_helper)")
        self.values: dict[str, numpy.ndarray] = {}
        for init in self.graph.initializer:
            self.values[init.name] = to_array(init)
        self.tensors: dict = {}  # ONNX tensor name -> symbolic tensor
        self.origin: dict[int, str] = {}  # id(layer) -> ONNX node name
        self.fixed_batch = None  # the batch size the file declares, if it fixes one
        self.inputs = self._data_inputs(input_shape)
        known = set(self.values) | {value.name for value in self.graph.input}
        self.order = topological_order(self.graph, known)
        self.consumers: dict[str, int] = {}
        for node in self.order:
            for name in set(node.input):
                if name:
                    self.consumers[name] = self.consumers.get(name, 0) + 1
        for value in self.graph.output:
            self.consumers[value.name] = self.consumers.get(value.name, 0) + 1

    # -- the graph's boundaries ------------------------------------------------------------
    def _opset(self) -> int:
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise OnnxImportError(
                    f"{label(node)} ({node.op_type}): operators of domain '{node.domain}' are "
                    f"not supported; convnet reads the standard ONNX operators "
                    f"{supported_list()}", node.name, node.op_type)
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
        return version

    def _data_inputs(self, override) -> list:
        values = [value for value in self.graph.input if value.name not in self.values]
        if not values:
            raise OnnxImportError("the graph has no data input (every input is an "
                                  "initializer); nothing to compute from")
        overrides = [None] * len(values)
        if override is not None:
            override = list(override)
            nested = override and isinstance(override[0], (list, tuple))
            if len(values) == 1 and not nested:
                overrides = [override]
            elif nested and len(override) == len(values):
                overrides = override
            else:
                raise OnnxImportError(f"input_shape {override} does not fit the graph's "
                                      f"{len(values)} data inputs; give one per-sample shape "
                                      f"per input")
        tensors = []
        for value, given in zip(values, overrides, strict=True):
            shape = self._input_shape(value, given)
            tensor = Input(shape, name=value.name)
            self.tensors[value.name] = tensor
            tensors.append(tensor)
        return tensors

    def _input_shape(self, value, override) -> Shape:
        tensor_type = value.type.tensor_type
        is_tensor = value.type.HasField("tensor_type")
        if not is_tensor or tensor_type.elem_type not in _FLOAT_INPUTS:
            kind = (onnx.TensorProto.DataType.Name(tensor_type.elem_type) if is_tensor
                    else "not a tensor")
            raise OnnxImportError(f"input '{value.name}' is {kind}; convnet imports float32 "
                                  f"(FLOAT) models")
        if not tensor_type.HasField("shape"):
            raise OnnxImportError(f"input '{value.name}' declares no shape; pass input_shape "
                                  f"(the per-sample shape, e.g. (3, 224, 224)) to load()")
        dims = [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
                for dim in tensor_type.shape.dim]
        if len(dims) < 2:
            raise OnnxImportError(f"input '{value.name}' has rank {len(dims)}; convnet imports "
                                  f"batches: (N, C, H, W) images, (N, features) vectors or "
                                  f"other (N, ...) tensors")
        per_sample = dims[1:]
        if dims[0] is not None:
            if self.fixed_batch not in (None, dims[0]):
                raise OnnxImportError(f"input '{value.name}' has batch size {dims[0]}, another "
                                      f"input {self.fixed_batch}; convnet runs every input of "
                                      f"a model with the same batch")
            self.fixed_batch = dims[0]
        if override is not None:
            override = tuple(int(v) for v in override)
            if len(override) != len(per_sample) or any(
                    known not in (None, given) for known, given in zip(per_sample, override,
                                                                      strict=True)):
                raise OnnxImportError(f"input_shape {override} does not fit input "
                                      f"'{value.name}' of shape {_show_dims(dims)} (per "
                                      f"sample, in the file's own layout)")
            per_sample = list(override)
        if any(v is None or v < 1 for v in per_sample):
            raise OnnxImportError(
                f"input '{value.name}' has shape {_show_dims(dims)}; convnet needs fixed "
                f"sizes after the batch axis to build the model: pass "
                f"input_shape=({', '.join('C' if i == 0 else '...' for i in range(1))}"
                f"{', H, W' if len(per_sample) == 3 else ''}) to load() (per sample, in the "
                f"file's own layout); the model then runs at any size its arithmetic fits")
        count = math.prod(per_sample)
        if count > MAX_ELEMENTS:
            raise OnnxImportError(f"input '{value.name}' declares {_show_dims(dims)}: "
                                  f"{count:,} values per sample, more than the "
                                  f"{MAX_ELEMENTS:,} convnet computes; pass a smaller "
                                  f"input_shape to load()")
        return tuple(per_sample)

    # -- the walk -----------------------------------------------------------------------------
    def build(self) -> Model:
        for node in self.order:
            self._node(node)
        outputs, names = [], []
        for value in self.graph.output:
            tensor = self.tensors.get(value.name)
            if tensor is None:
                if value.name in self.values:
                    raise OnnxImportError(f"the graph output '{value.name}' is a constant; "
                                          f"convnet models compute their outputs from inputs")
                raise OnnxImportError(f"the graph output '{value.name}' is not computed by "
                                      f"any node")
            outputs.append(tensor)
            names.append(value.name)
        if not outputs:
            raise OnnxImportError("the graph has no outputs")
        if len(outputs) > 1:
            for tensor, name in zip(outputs, names, strict=True):
                layer = tensor.node.layer
                if layer is not None and not layer.user_named and len(tensor.node.outputs) == 1:
                    candidate = layer_name(name)
                    if candidate not in {t.node.layer.name for t in outputs if t.node.layer
                                         and t.node.layer.user_named}:
                        layer.named(candidate)
        model = Model(self.inputs, outputs, strict=False)
        model.output_names = names
        model.onnx_names = {layer.name: self.origin[id(layer)] for layer in model.layers
                            if id(layer) in self.origin}
        return model

    def _node(self, node) -> None:
        if node.op_type == "Constant":
            self.values[node.output[0]] = self._constant_value(node)
            return
        attrs = _attributes(node)
        names = [name for name in node.input if name]
        inputs = [self.values.get(name) if name else None for name in node.input]
        if names and all(name in self.values for name in names):
            folded = fold(node, inputs, attrs, self.opset)
            if folded is not None:
                for name, value in zip(node.output, folded, strict=False):
                    if name:
                        self.values[name] = numpy.asarray(value)
                return
        if node.op_type == "Shape" and node.input and node.input[0] in self.tensors:
            full = shape_of(node.input[0], self.tensors[node.input[0]].shape)
            start, end = attrs.get("start", 0), attrs.get("end", len(full))
            self.values[node.output[0]] = full[start:end]
            return
        self._translate(node, attrs)

    def _constant_value(self, node) -> numpy.ndarray:
        attrs = {a.name: a for a in node.attribute}
        if "value" in attrs:
            return to_array(attrs["value"].t)
        values = _attributes(node)
        for key, dtype in (("value_float", numpy.float32), ("value_floats", numpy.float32),
                           ("value_int", numpy.int64), ("value_ints", numpy.int64)):
            if key in values:
                return numpy.asarray(values[key], dtype=dtype)
        raise OnnxImportError(f"{label(node)} (Constant): only tensor, float and int values "
                              f"are supported, received attributes {sorted(values)}",
                              node.name, "Constant")

    def _translate(self, node, attrs) -> None:
        entries = REGISTRY.get(node.op_type)
        if not entries:
            raise OnnxImportError(
                f"{label(node)} ({node.op_type}): operator {node.op_type} is not supported; "
                f"convnet imports {supported_list()}", node.name, node.op_type)
        version = _operator_version(node.op_type, self.opset)
        entry = next((e for e in entries if e.since <= version <= e.until), None)
        if entry is None:
            ranges = ", ".join(f"{e.since}-{e.until if e.until < 10**6 else 'now'}"
                               for e in entries)
            raise OnnxImportError(f"{label(node)} ({node.op_type}): version {version} of the "
                                  f"operator (opset {self.opset}) is not read; convnet reads "
                                  f"versions {ranges}", node.name, node.op_type)
        ctx = Context(self, node, attrs, version)
        unknown = sorted(set(attrs) - entry.attrs)
        if unknown:
            ctx.refuse(f"attribute(s) {', '.join(unknown)} not understood")
        from convnet.core.errors import ShapeError

        try:
            results = entry.function(ctx)
        except OnnxImportError:
            raise
        except (ShapeError, ValueError, TypeError, ZeroDivisionError) as error:
            raise OnnxImportError(f"{label(node)} ({node.op_type}): {error}", node.name,
                                  node.op_type) from None
        for index, name in enumerate(node.output):
            if not name:
                continue
            result = results[index] if index < len(results) else None
            if result is None:
                if self.consumers.get(name):
                    ctx.refuse(f"its output {index} ('{name}') is used; convnet computes only "
                               f"{'the main output' if index else 'other outputs'} here")
                continue
            if isinstance(result, numpy.ndarray):
                self.values[name] = result
            else:
                self.tensors[name] = result


def _operator_version(op_type: str, opset: int) -> int:
    try:
        return onnx.defs.get_schema(op_type, opset, "").since_version
    except Exception:  # not a standard operator at this opset
        return opset


def _metadata(onnx_model: onnx.ModelProto) -> dict:
    return {prop.key: prop.value for prop in onnx_model.metadata_props}


def _json(metadata: dict, key: str):
    if key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as error:
        raise OnnxImportError(f"metadata '{key}' is not valid JSON: {error}") from None


def from_onnx(onnx_model: onnx.ModelProto, input_shape=None) -> Model:
    """A convnet graph model (in eval mode) computing what `onnx_model` computes.

    `input_shape`: the per-sample shape (in the file's own layout: (C, H, W), or (H, W, C)
    for an NHWC input), needed where the file leaves sizes open; a list of shapes for several
    inputs. Attached attributes: `class_names` and `normalization` (from the metadata, or
    None), `output_names` (the ONNX names of the outputs), `onnx_names` (layer name -> ONNX
    node name) and `metadata` (all metadata_props).
    """
    if not isinstance(onnx_model, onnx.ModelProto):
        raise TypeError(f"from_onnx: expected an onnx.ModelProto, received "
                        f"{type(onnx_model).__name__}; use cn.onnx.load(path) for a file")
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


def load(path, input_shape=None) -> Model:
    """Read an ONNX file as a convnet graph model; see `from_onnx`.

        model = cn.onnx.load("resnet8.onnx")
        scores = model.forward(images)  # (N, C, H, W) float32
    """
    return from_onnx(read(path), input_shape)
