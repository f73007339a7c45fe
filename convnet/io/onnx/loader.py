"""Reading an ONNX file as data that cannot hurt: the checks before any node is looked at.

`read(path)` parses the protobuf itself (a truncated or malformed file is one clear error),
reads external data only from files inside the model's own folder (an absolute path, '..',
or a link leading out is refused), and `check_graph` refuses what would crash, hang or
allocate without bound later: tensors whose declared size disagrees with their data, more
elements than `MAX_ELEMENTS`, nodes reading tensors nothing writes, tensors written twice,
cycles, and declared input sizes too large to run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy
import onnx
from onnx import TensorProto, helper, numpy_helper

from convnet.io.onnx.errors import OnnxImportError, label

# The protobuf format's own limit on one message; larger files are not valid ONNX files.
MAX_FILE_BYTES = 2**31 - 1
# One tensor (a weight, a folded constant, an activation per sample) holds at most this many
# values: 2**28 float32 values are 1 GiB, beyond the largest layer of any published CNN.
MAX_ELEMENTS = 2**28
# Nested graphs (If/Loop bodies) are refused anyway; this bounds the walk that finds tensors.
MAX_NODES = 200_000


def read(path) -> onnx.ModelProto:
    """The ModelProto of `path`, external data read and checked; OnnxImportError if bad."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load: no ONNX file at {path}")
    if not path.is_file():
        raise OnnxImportError(f"{path} is not a file (expected an .onnx model file)")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise OnnxImportError(f"{path} is {size:,} bytes, larger than the 2 GiB a protobuf "
                              f"message can hold; keep the weights as external data beside it")
    if size == 0:
        raise OnnxImportError(f"{path} is empty (0 bytes); expected an ONNX model")
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as error:  # protobuf's DecodeError and friends: the file is not ONNX
        raise OnnxImportError(f"{path} is not a readable ONNX file: {error}; it may be "
                              f"truncated or not an ONNX model at all") from None
    if not model.HasField("graph") or not model.graph.node:
        raise OnnxImportError(f"{path} is not a readable ONNX file: it holds no graph nodes "
                              f"(truncated, or not an ONNX model)")
    _read_external_data(model, path.parent.resolve())
    return model


def _tensors(graph):
    """Every TensorProto of the graph: initializers and Constant nodes' values."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            elif attribute.type == onnx.AttributeProto.TENSORS:
                yield from attribute.tensors


def _read_external_data(model: onnx.ModelProto, folder: Path) -> None:
    for tensor in _tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"tensor '{tensor.name}'"
        if not location or os.path.isabs(location) or ".." in Path(location).parts:
            raise OnnxImportError(f"{where} keeps its data in {location!r}, outside the model's "
                                  f"folder; convnet reads external data only from files beside "
                                  f"the model (a plain relative name)")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            raise OnnxImportError(f"{where} keeps its data in {location!r}, which leads out of "
                                  f"the model's folder {folder} (through a link); refused")
        if not target.is_file():
            raise OnnxImportError(f"{where} keeps its data in {location!r}, which is not a file "
                                  f"in {folder}")
        expected = _byte_count(tensor)
        try:
            offset = int(info.get("offset", 0))
            length = int(info.get("length", expected))
        except ValueError:
            raise OnnxImportError(f"{where}: external data offset/length are not integers "
                                  f"({info})") from None
        available = target.stat().st_size
        if offset < 0 or length != expected or offset + length > available:
            raise OnnxImportError(
                f"{where} declares {expected:,} bytes at offset {offset} of {location!r} "
                f"(length {length:,}), but the file holds {available:,}: truncated or "
                f"inconsistent external data")
        with open(target, "rb") as handle:
            handle.seek(offset)
            tensor.raw_data = handle.read(length)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def _elements(tensor) -> int:
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise OnnxImportError(f"tensor '{tensor.name}' has negative dims {dims}")
    return math.prod(dims)


def _byte_count(tensor) -> int:
    count = _elements(tensor)
    if count > MAX_ELEMENTS:
        raise OnnxImportError(f"tensor '{tensor.name}' declares dims {list(tensor.dims)} = "
                              f"{count:,} values, more than the {MAX_ELEMENTS:,} convnet reads "
                              f"in one tensor")
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        raise OnnxImportError(f"tensor '{tensor.name}' has data type {tensor.data_type}, which "
                              f"convnet does not read") from None
    return count * itemsize


_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                 "string_data")


def to_array(tensor) -> numpy.ndarray:
    """numpy_helper.to_array after checking that the data present matches the dims declared
    (a tensor with dims but no data would otherwise fail deep inside NumPy, or be read as
    zeros)."""
    count = _elements(tensor)
    if count > MAX_ELEMENTS:
        raise OnnxImportError(f"tensor '{tensor.name}' declares dims {list(tensor.dims)} = "
                              f"{count:,} values, more than the {MAX_ELEMENTS:,} convnet reads "
                              f"in one tensor")
    if tensor.data_location == TensorProto.EXTERNAL:
        raise OnnxImportError(f"tensor '{tensor.name}' keeps its data outside the file; load "
                              f"the model with cn.onnx.load(path) so it is read from beside it")
    if tensor.data_type == TensorProto.STRING:
        raise OnnxImportError(f"tensor '{tensor.name}' holds strings; convnet reads numbers")
    if tensor.HasField("raw_data") or not any(len(getattr(tensor, f)) for f in _TYPED_FIELDS):
        present = len(tensor.raw_data)
        expected = _byte_count(tensor)
        if present != expected:
            raise OnnxImportError(f"tensor '{tensor.name}' declares dims {list(tensor.dims)} "
                                  f"({expected:,} bytes) but holds {present:,} bytes of data; "
                                  f"the file is truncated or corrupt")
    else:
        present = max(len(getattr(tensor, f)) for f in _TYPED_FIELDS)
        if tensor.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
            present //= 2
        packed = {TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8,
                  TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.BOOL,
                  TensorProto.INT4, TensorProto.UINT4}
        if present != count and not (tensor.data_type in packed and present >= count):
            raise OnnxImportError(f"tensor '{tensor.name}' declares dims {list(tensor.dims)} "
                                  f"({count:,} values) but holds {present:,}; the file is "
                                  f"truncated or corrupt")
    try:
        return numpy.asarray(numpy_helper.to_array(tensor))
    except Exception as error:
        raise OnnxImportError(f"tensor '{tensor.name}' cannot be read: {error}") from None


def topological_order(graph, known: set[str]) -> list:
    """The nodes in an order where each comes after those writing its inputs (Kahn's
    algorithm); refuses tensors written twice, inputs nothing writes, and cycles."""
    nodes = list(graph.node)
    if len(nodes) > MAX_NODES:
        raise OnnxImportError(f"the graph has {len(nodes):,} nodes; convnet imports at most "
                              f"{MAX_NODES:,}")
    writer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            if not name:
                continue
            if name in writer or name in known:
                raise OnnxImportError(f"tensor '{name}' is written twice (by {label(node)} "
                                      f"and earlier); an ONNX graph writes each tensor once",
                                      node.name, node.op_type)
            writer[name] = index
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in dict.fromkeys(n for n in node.input if n):
            if name in known:
                continue
            if name not in writer:
                raise OnnxImportError(f"{label(node)} ({node.op_type}) reads tensor '{name}', "
                                      f"which no node, input or initializer provides",
                                      node.name, node.op_type)
            waiting[index] += 1
            readers.setdefault(writer[name], []).append(index)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    order = []
    while ready:
        index = ready.pop()
        order.append(index)
        for reader in readers.get(index, []):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                ready.append(reader)
    if len(order) != len(nodes):
        stuck = [nodes[i] for i, count in enumerate(waiting) if count > 0]
        names = ", ".join(f"{label(n)} ({n.op_type})" for n in stuck[:4])
        raise OnnxImportError(f"the graph has a cycle: {names} wait on each other's outputs; "
                              f"an ONNX graph must be acyclic")
    order.sort()  # keep the file's own order where it is valid (it usually is)
    return _stable_topological(nodes, order, writer)


def _stable_topological(nodes, order, writer) -> list:
    """The file's order if it is already topological, else a valid order (depth-first)."""
    position = {}
    valid = True
    for index in order:
        node = nodes[index]
        for name in node.input:
            if name in writer and writer[name] not in position:
                valid = False
                break
        position[index] = len(position)
        if not valid:
            break
    if valid:
        return nodes
    placed: set[int] = set()
    result = []
    for start in range(len(nodes)):
        stack = [(start, False)]
        while stack:
            index, expanded = stack.pop()
            if index in placed:
                continue
            if expanded:
                placed.add(index)
                result.append(nodes[index])
                continue
            stack.append((index, True))
            for name in nodes[index].input:
                if name in writer and writer[name] not in placed:
                    stack.append((writer[name], False))
    return result
