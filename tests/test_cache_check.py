"""Checking a cache against its model: missing, TensorRT-internal, unknown, zero, inf, shared."""

from __future__ import annotations

import pytest

from calibkit.cache.check import check_cache, read_model_graph
from calibkit.cache.format import read_cache


def _model(tmp_path):
    onnx = pytest.importorskip("onnx")
    h, tp = onnx.helper, onnx.TensorProto
    nodes = [
        h.make_node("Relu", ["x"], ["y"], name="relu"),
        h.make_node("MaxPool", ["y"], ["z"], name="pool", kernel_shape=[1, 1]),
        h.make_node("Shape", ["z"], ["s"], name="shape"),
        h.make_node("Reshape", ["z", "s"], ["r"], name="reshape"),
        h.make_node("Relu", ["r"], ["w"], name="relu2"),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", tp.FLOAT, [1, 1, 4, 4])],
        [h.make_tensor_value_info("w", tp.FLOAT, None)],
    )
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), path)
    return path


def test_check_onnx_model(tmp_path):
    cache = read_cache(
        b"TRT-8601-EntropyCalibration2\nx: 3c010204\ny: 3d000000\nz: 3d000000\nr: 0\n"
        b"(Unnamed Layer* 7) [Constant]_output: 3f800000\nrelu2_output: 3f800000\n"
        b"mystery: 7f800000\n"
    )
    graph, float_tensors = read_model_graph(_model(tmp_path))
    report = check_cache(cache, graph, float_tensors=float_tensors)
    assert report.missing == ["w"]  # 's' is an int64 shape tensor: never reported
    assert report.trt_internal == ["(Unnamed Layer* 7) [Constant]_output", "relu2_output"]
    assert report.unknown == ["mystery"]
    assert report.zero == ["r"]
    assert report.infinite == ["mystery"]
    assert report.shared == [{"op": "MaxPool", "node": "pool", "input": "y", "output": "z"}]
    assert not report.ok


def test_real_pair_matches_its_graph(shared_testdata):
    # A TensorRT 7.2.1 VGG16 cache and its rebuilt graph: every name accounted for.
    pair = shared_testdata / "onnx_cache_pairs" / "liujuanlt_vgg16_trt7201_ec2"
    graph, float_tensors = read_model_graph(pair / "graph.json")
    report = check_cache(read_cache(pair / "calibration.cache"), graph, float_tensors=float_tensors)
    assert report.ok
    assert {s["op"] for s in report.shared} >= {
        "MaxPool"
    }  # rule P: pooling shares its input's scale


def test_real_model_with_shifted_tensor_numbers(shared_testdata):
    # README: this model.onnx has "tensor numbers shifted by 8" relative to the cache.
    pair = shared_testdata / "onnx_cache_pairs" / "lannyyip_resunet_trt8001_ec2"
    graph, float_tensors = read_model_graph(pair / "model.onnx")
    report = check_cache(read_cache(pair / "calibration.cache"), graph, float_tensors=float_tensors)
    assert report.missing and report.unknown
    assert not report.ok
