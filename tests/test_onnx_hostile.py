"""Hostile and broken ONNX files: each is refused with one clear line, quickly, without
reading outside the model's folder or allocating what the file merely declares."""

import os
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import convnet as cn
from convnet.io.onnx import OnnxImportError


def conv_file(folder, name="model.onnx", **options):
    """A small valid model (Conv + Relu) saved in `folder`."""
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / name
    onnx.save_model(model, str(path), **options)
    return path, model


def refused(path_or_model, fragment, **kwargs):
    start = time.perf_counter()
    with pytest.raises(OnnxImportError, match=fragment) as caught:
        if isinstance(path_or_model, onnx.ModelProto):
            cn.onnx.from_onnx(path_or_model, **kwargs)
        else:
            cn.onnx.load(path_or_model, **kwargs)
    assert "\n" not in str(caught.value)
    assert time.perf_counter() - start < 5
    return caught.value


def test_truncated_and_malformed_files(tmp_path):
    path, _ = conv_file(tmp_path)
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 7, 5):
        broken = tmp_path / f"cut{cut}.onnx"
        broken.write_bytes(data[:cut])
        refused(broken, "truncated|not a readable ONNX file|holds|reads tensor")
    (tmp_path / "empty.onnx").write_bytes(b"")
    refused(tmp_path / "empty.onnx", "is empty")
    (tmp_path / "noise.onnx").write_bytes(os.urandom(4096))
    refused(tmp_path / "noise.onnx", "not a readable ONNX file|truncated|holds")
    (tmp_path / "folder.onnx").mkdir()
    refused(tmp_path / "folder.onnx", "is not a file")


def test_external_data_must_stay_inside_the_models_folder(tmp_path):
    inside = tmp_path / "model"
    inside.mkdir()
    path, model = conv_file(inside, save_as_external_data=True, all_tensors_to_one_file=True,
                            location="weights.bin", size_threshold=0)
    assert cn.onnx.load(path).num_parameters() == 18  # the honest layout loads
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 72)
    for location in ("../secret.bin", str(secret), "sub/../../secret.bin"):
        hostile = onnx.load(str(path), load_external_data=False)
        for entry in hostile.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        target = inside / "hostile.onnx"
        onnx.save_model(hostile, str(target))
        refused(target, "outside the model's folder")
    link = inside / "link.bin"
    link.symlink_to(secret)
    hostile = onnx.load(str(path), load_external_data=False)
    for entry in hostile.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "link.bin"
    onnx.save_model(hostile, str(inside / "linked.onnx"))
    refused(inside / "linked.onnx", "leads out of the model's folder")


def test_external_data_shorter_than_declared(tmp_path):
    path, _ = conv_file(tmp_path, save_as_external_data=True, location="w.bin",
                        size_threshold=0)
    (tmp_path / "w.bin").write_bytes(b"\x00" * 10)
    refused(path, "truncated or inconsistent external data")


def test_an_initializer_with_dims_but_no_data(tmp_path):
    _, model = conv_file(tmp_path)
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    del tensor.float_data[:]
    refused(model, r"declares dims \[2, 1, 3, 3\] \(72 bytes\) but holds 0 bytes")
    tensor.float_data.extend([1.0] * 5)
    refused(model, r"declares dims \[2, 1, 3, 3\] \(18 values\) but holds 5")


def test_huge_declared_tensors_are_refused_before_any_allocation(tmp_path):
    _, model = conv_file(tmp_path)
    tensor = model.graph.initializer[0]
    del tensor.dims[:]
    tensor.dims.extend([100000, 100000, 3, 3])
    refused(model, "more than the 268,435,456 convnet reads")
    shape = numpy_helper.from_array(np.array([100000, 100000], np.int64), "s")
    big = helper.make_model(helper.make_graph(
        [helper.make_node("ConstantOfShape", ["s"], ["big"], name="fill"),
         helper.make_node("Add", ["x", "big"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 100000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[shape]),
        opset_imports=[helper.make_opsetid("", 17)])
    refused(big, "would make a constant of shape")


def test_an_absurd_declared_input_size(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100000, 100000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    refused(model, "30,000,000,000 values per sample, more than")
    # the same graph with open sizes imports at a size of the user's choosing
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    assert cn.onnx.from_onnx(model, input_shape=(3, 64, 64)).input_shape == (3, 64, 64)


def test_cycles_and_dangling_inputs_are_refused():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"], name="start"),
         helper.make_node("Add", ["a", "c"], ["b"], name="first"),
         helper.make_node("Relu", ["b"], ["c"], name="second"),
         helper.make_node("Relu", ["c"], ["y"], name="end")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    refused(model, "the graph has a cycle: node 'first' .* wait on each other")
    del model.graph.node[1:3]
    model.graph.node[-1].input[0] = "nowhere"
    refused(model, "reads tensor 'nowhere', which no node, input or initializer provides")


def test_a_tensor_written_twice_and_control_flow():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="one"),
         helper.make_node("Tanh", ["x"], ["y"], name="two")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    refused(model, "tensor 'y' is written twice")
    branch = helper.make_graph([helper.make_node("Relu", ["x"], ["z"])], "b", [],
                               [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    iffy = helper.make_model(helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch,
                          else_branch=branch)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array(True), "cond")]),
        opset_imports=[helper.make_opsetid("", 17)])
    refused(iffy, "holds a subgraph")
