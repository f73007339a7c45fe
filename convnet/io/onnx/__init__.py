"""ONNX in and out.

    cn.onnx.export(model, "model.onnx", input_shape=(3, 32, 32), class_names=[...])
    model = cn.onnx.load("model.onnx")  # a cn.Model graph in eval mode

`SUPPORTED_OPS` lists the ONNX operators (and attribute values) the importer accepts;
anything else is refused with an `OnnxImportError` naming the node.
"""

from convnet.io.onnx.errors import OnnxImportError
from convnet.io.onnx.export import OPSET, export, to_onnx
from convnet.io.onnx.importer import from_onnx, load
from convnet.io.onnx.registry import SUPPORTED_OPS

__all__ = ["OPSET", "SUPPORTED_OPS", "OnnxImportError", "export", "from_onnx", "load", "to_onnx"]
