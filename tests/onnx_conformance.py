"""The ONNX conformance node cases for the operators convnet imports, run through the
importer and compared with onnxruntime.

The onnx wheel ships the generators of its backend node tests (onnx.backend.test.case.node,
one module per operator, each building its models and input/output arrays when imported);
this wheel carries no pre-built data/node folder, so the cases are built here by importing
only the modules of supported operators. A case runs when every node's operator is one
convnet imports; its first input is the data, and inputs after it that the import refuses
as data (a Conv weight, a Reshape target) are bound to their test values as initializers,
as an exporter would have written them. The outcome of each case is 'match', 'refused'
(with the importer's one-line reason) or 'skipped' (with why it was not tried).
"""

from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

import convnet as cn
from convnet.io.onnx import OnnxImportError

TOLERANCE = 1e-4
# Operator -> generator module where the name is not the operator's lowercase name.
MODULES = {"BatchNormalization": "batchnorm", "LRN": "lrn", "LeakyRelu": "leakyrelu",
           "GlobalAveragePool": "globalaveragepool", "Gemm": "gemm"}
EXTRA_MODULES = ("pool_op_common",)


@dataclass
class Outcome:
    name: str
    status: str  # match, refused, skipped, mismatch, crash
    detail: str = ""


def cases():
    """The node test cases whose every operator convnet's importer names."""
    from onnx.backend.test.case import node as generators

    for op in sorted(cn.onnx.SUPPORTED_OPS):
        module = MODULES.get(op, op.lower())
        try:
            with warnings.catch_warnings(), numpy_quiet():
                warnings.simplefilter("ignore")  # the generators' own casts and divisions
                importlib.import_module(f"onnx.backend.test.case.node.{module}")
        except ModuleNotFoundError:
            continue
    seen = set()
    for case in generators._NodeTestCases:
        if case.name in seen:
            continue
        seen.add(case.name)
        yield case


def numpy_quiet():
    return np.errstate(all="ignore")


def _bind(model: onnx.ModelProto, inputs: list, keep: int) -> onnx.ModelProto:
    """A copy where graph inputs after the first `keep` become initializers."""
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    graph = bound.graph
    inits = {i.name for i in graph.initializer}
    data = [v for v in graph.input if v.name not in inits]
    for value, array in list(zip(data, inputs, strict=False))[keep:]:
        graph.initializer.append(numpy_helper.from_array(np.asarray(array), value.name))
    kept = {v.name for v in data[:keep]}
    remaining = [v for v in graph.input if v.name in kept]
    del graph.input[:]
    graph.input.extend(remaining)
    return bound


def _reference(model, feeds, expected):
    """onnxruntime's outputs, or the case's own expected outputs where onnxruntime cannot
    run the model."""
    try:
        from exchange_helpers import ort_session

        session = ort_session(model)
        return session.run(None, feeds), "onnxruntime"
    except Exception:  # an opset or operator version onnxruntime lacks
        return list(expected), "expected outputs"


def run(case) -> Outcome:
    model = case.model
    ops = {node.op_type for node in model.graph.node} - {"Constant"}
    missing = sorted(ops - set(cn.onnx.SUPPORTED_OPS))
    if missing:
        return Outcome(case.name, "skipped", f"uses {', '.join(missing)}")
    inputs, expected = case.data_sets[0]
    if not inputs or np.asarray(inputs[0]).dtype != np.float32:
        kind = np.asarray(inputs[0]).dtype if inputs else "no input"
        return Outcome(case.name, "skipped", f"data input is {kind}, convnet reads float32")
    if np.asarray(inputs[0]).ndim < 2:
        return Outcome(case.name, "skipped", "data input has no batch axis (rank < 2)")
    if any(np.asarray(e).dtype != np.float32 for e in expected):
        return Outcome(case.name, "skipped", "an output is not float32")
    attempts = [len(inputs)] if all(np.asarray(i).dtype == np.float32 for i in inputs) else []
    attempts += [1] if len(inputs) > 1 else []
    error = None
    for keep in attempts or [1]:
        candidate = _bind(model, inputs, keep) if keep < len(inputs) else model
        try:
            imported = cn.onnx.from_onnx(candidate)
        except OnnxImportError as caught:
            error = caught
            continue
        except Exception as crash:  # a crash is a bug: reported, never hidden
            return Outcome(case.name, "crash", f"{type(crash).__name__}: {crash}")
        feeds = [np.asarray(a) for a in inputs[:keep]]
        names = [v.name for v in candidate.graph.input][:keep]
        reference, source = _reference(candidate, dict(zip(names, feeds, strict=True)),
                                       expected)
        try:
            ours = imported.forward(*feeds)
        except Exception as crash:
            return Outcome(case.name, "crash", f"forward: {type(crash).__name__}: {crash}")
        ours = list(ours) if isinstance(ours, tuple) else [ours]
        worst = 0.0
        for a, b in zip(ours, reference, strict=True):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            if a.shape != b.shape:
                return Outcome(case.name, "mismatch", f"shape {a.shape} vs {b.shape}")
            both_nan = np.isnan(a) & np.isnan(b)
            gap = np.where(both_nan, 0, np.abs(a - b) / (TOLERANCE + TOLERANCE * np.abs(b)))
            worst = max(worst, float(gap.max(initial=0)))
        if worst > 1 or math.isnan(worst):
            return Outcome(case.name, "mismatch", f"{worst:.3g} x the tolerance vs {source}")
        bound = "; inputs after the first bound as initializers" if keep < len(inputs) else ""
        return Outcome(case.name, "match", f"vs {source}{bound}")
    return Outcome(case.name, "refused", str(error).split("; supported:")[0])
