"""Calibration shapes: TensorRT reads the calibration profile's opt shape from each batch."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import calibkit as ck
from calibkit.cli import main
from calibkit.data.sources import DataError, at_calibration_shapes, parse_shape

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_parse_shape():
    assert parse_shape("a=b=2x3") == ("a=b", (2, 3))
    for bad in ("x", "x=", "x=2xa", "x=0x3", "=2"):
        with pytest.raises(DataError, match="NAME=DxDx"):
            parse_shape(bad)


def test_first_elements_in_memory_order(rng, caplog):
    batches = [{"x": rng.random((8, 3)).astype(np.float32)} for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="calibkit.data.sources"):
        out = list(at_calibration_shapes(batches, {"x": (2, 3)}))
    for src, got in zip(batches, out, strict=True):
        np.testing.assert_array_equal(got["x"], src["x"][:2])
    assert sum("reads 6" in r.getMessage() for r in caplog.records) == 1  # warned once


def test_too_small_or_missing_is_an_error():
    with pytest.raises(DataError, match="fewer than its calibration shape"):
        list(at_calibration_shapes([{"x": np.ones(4)}], {"x": (2, 3)}))
    with pytest.raises(DataError, match="no input 'y'"):
        list(at_calibration_shapes([{"x": np.ones(4)}], {"y": (1,)}))


@pytest.fixture
def relu_model(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    return path


def test_calibrate_onnx_uses_only_the_calibration_shape(relu_model, tmp_path, rng):
    x = rng.standard_normal((8, 3)).astype(np.float32)
    x[5:] *= 100  # beyond the first two samples: TensorRT would never see these
    np.save(tmp_path / "x.npy", x)
    result = ck.calibrate_onnx(
        relu_model,
        tmp_path / "x.npy",
        trt_version="10.16",
        batch_size=8,
        calibration_shapes={"x": (2, 3)},
    )
    assert result.histograms["x"].max_abs == float(np.abs(x[:2]).max())
    assert result.settings.calibration_shapes == {"x": (2, 3)}


def test_cli_option(relu_model, tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((4, 3)).astype(np.float32))
    argv = ["calibrate", str(relu_model), "--data", str(tmp_path / "x.npy"), "--no-progress"]
    argv += ["--trt-version", "10.16", "-o", str(tmp_path / "c.cache")]
    assert main([*argv, "--calibration-shape", "x=1x3"]) == 0
    assert main([*argv, "--calibration-shape", "x=9x3"]) == 1  # more than a batch holds
