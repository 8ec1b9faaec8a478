"""Graph: plain-data dataflow built from ONNX models and from the pairs' graph.json files."""

from __future__ import annotations

import json

import pytest

from calibkit.errors import CacheFormatError
from calibkit.onnx.graph import Graph, Node

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def tiny_model():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2]),
        helper.make_node("Add", ["p", "bias"], ["y"], name="add"),
    ]
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [1], [0.5])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    # IR 3 style: the initializer is also listed as a graph input
    b_in = helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1])
    graph = helper.make_graph(nodes, "g", [x, b_in], [y], initializer=[bias])
    return helper.make_model(graph)


def test_from_onnx():
    g = Graph.from_onnx(tiny_model())
    assert g.inputs == ("x",)
    assert g.initializers == frozenset({"bias"})
    assert [n.op_type for n in g.nodes] == ["Relu", "MaxPool", "Add"]
    assert g.nodes[1].attrs["kernel_shape"] == [2, 2]
    assert g.tensors == ["x", "r", "p", "y"]
    assert [n.name for n in g.consumers()["r"]] == ["pool"]
    assert g.producers()["y"].name == "add"


def test_from_onnx_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model(), str(path))
    assert Graph.from_onnx(path) == Graph.from_onnx(tiny_model())


def test_from_json_matches_pairs(shared_testdata):
    folder = shared_testdata / "onnx_cache_pairs" / "muqadas2_cnndepthwise_trt8401_ec2"
    from_json = Graph.from_json(folder / "graph.json")
    from_onnx = Graph.from_onnx(folder / "model.onnx")
    # graph.json drops the weights; the dataflow between activations is the same
    assert [(n.op_type, n.outputs) for n in from_json.nodes] == [
        (n.op_type, n.outputs) for n in from_onnx.nodes
    ]
    assert from_json.tensors == from_onnx.tensors


def test_nodes_out_of_order_are_rejected():
    nodes = (Node("Relu", ("a",), ("b",)), Node("Relu", ("x",), ("a",)))
    with pytest.raises(ValueError, match=r"node 0 \(Relu\(b\)\) reads tensor 'a' before"):
        Graph(nodes, ("x",))


def test_tensor_written_twice_is_rejected():
    nodes = (Node("Relu", ("x",), ("a",), name="r1"), Node("Relu", ("x",), ("a",), name="r2"))
    with pytest.raises(ValueError, match="node 1 \\(r2\\) writes tensor 'a' a second time"):
        Graph(nodes, ("x",))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"inputs": ["x"]}, "'nodes' must be a list of objects"),
        ({"inputs": "x", "nodes": []}, "'inputs' must be a list of tensor names"),
        ({"inputs": ["x"], "nodes": [{"inputs": ["x"], "outputs": ["y"]}]}, "has no 'op' key"),
        ({"inputs": ["x"], "nodes": [{"op": "Relu", "inputs": ["z"], "outputs": ["y"]}]}, "'z'"),
    ],
    ids=["no-nodes", "inputs-not-list", "no-op", "unknown-tensor"],
)
def test_bad_graph_json(tmp_path, data, match):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CacheFormatError, match=match):
        Graph.from_json(path)


def test_graph_json_not_json(tmp_path):
    path = tmp_path / "graph.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(CacheFormatError, match=r"graph\.json: not valid JSON"):
        Graph.from_json(path)
