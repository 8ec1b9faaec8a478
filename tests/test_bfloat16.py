"""bfloat16 activations: onnxruntime hands them over, the histograms read their bits exactly."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
ml_dtypes = pytest.importorskip("ml_dtypes")  # installed with onnx

from onnx import TensorProto, helper  # noqa: E402

import calibkit as ck  # noqa: E402
from calibkit.onnx.source import OnnxActivationSource  # noqa: E402


@pytest.fixture
def bf16_model(tmp_path):
    """x (float) -> Cast to bfloat16 -> y -> Cast to float -> z."""
    nodes = [
        helper.make_node("Cast", ["x"], ["y"], to=TensorProto.BFLOAT16),
        helper.make_node("Cast", ["y"], ["z"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "bf16.onnx"
    onnx.save(model, str(path))
    return path


def test_bfloat16_activations_are_yielded_and_binned_exactly(bf16_model, rng):
    x = (rng.standard_normal((4, 5)) * 3).astype(np.float32)
    (got,) = list(OnnxActivationSource(bf16_model).run([{"x": x}]))
    assert got["y"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got["y"].astype(np.float32), got["z"])
    h = ck.Histogram().fill(got["y"])
    assert h == ck.Histogram().fill(got["y"].astype(np.float64))


def test_calibrating_a_model_with_bfloat16_tensors(bf16_model, rng, tmp_path):
    np.save(tmp_path / "x.npy", rng.standard_normal((6, 5)).astype(np.float32))
    result = ck.calibrate_onnx(
        bf16_model, tmp_path / "x.npy", trt_version="10.16", batch_size=2, names="onnx"
    )
    assert {"x", "y", "z"} <= set(result.histograms)
    assert result.histograms["y"].total == 30
