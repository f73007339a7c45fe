"""The one error type of ONNX import."""

from __future__ import annotations


class OnnxImportError(ValueError):
    """An ONNX file, graph, node, operator or attribute value convnet cannot import exactly.
    `node` and `op_type` name the node at fault when there is one."""

    def __init__(self, message: str, node: str | None = None, op_type: str | None = None):
        super().__init__(message)
        self.node = node
        self.op_type = op_type


def label(node) -> str:
    """How messages name a node: by its name, or its first output when it has none."""
    if node.name:
        return f"node '{node.name}'"
    first = next((name for name in node.output if name), None)
    return f"the node writing '{first}'" if first else "an unnamed node"
