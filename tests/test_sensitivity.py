"""Tests for calibkit.research.sensitivity and ``calibkit sensitivity``."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

import calibkit as ck
from calibkit.cli import main
from calibkit.errors import CalibkitError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from calibkit.research.sensitivity import ALL_TENSORS, output_error, sensitivity  # noqa: E402


def _mlp(tmp_path, rng):
    """x -> MatMul(w1) -> h -> Relu -> r -> MatMul(w2) -> y; returns (path, w1, w2)."""
    w1 = rng.standard_normal((6, 8)).astype(np.float32)
    w2 = rng.standard_normal((8, 3)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], "mm1"),
        helper.make_node("Relu", ["h"], ["r"], "relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], "mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    return path, w1, w2


def _fake_quant(x, amax):
    s = np.float32(ck.scale_from_amax(amax))
    return (np.clip(np.rint(x / s), -128, 127) * s).astype(np.float32)


def test_one_tensor_at_a_time_matches_numpy(tmp_path, rng):
    path, w1, w2 = _mlp(tmp_path, rng)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    amax = {"x": 0.5, "r": 1.0, "h": 2.0, "not_in_model": 3.0}
    result = sensitivity(path, amax, [{"x": x[:25]}, {"x": x[25:]}], algorithm="test")
    y = np.maximum(x @ w1, 0) @ w2
    # MatMul inputs x and r are quantised by the placement rules; h feeds a Relu, so it is not.
    expected = {
        "x": np.maximum(_fake_quant(x, 0.5) @ w1, 0) @ w2,
        "r": _fake_quant(np.maximum(x @ w1, 0), 1.0) @ w2,
    }
    assert {r.name for r in result.rows} == set(expected)
    for r in result.rows:
        want = output_error(y, expected[r.name])
        assert r.rel_error == pytest.approx(want["rel_error"], rel=1e-4)
        assert r.cosine == pytest.approx(want["cosine"], rel=1e-6)
        assert r.agreement == want["agreement"]
        assert r.amax == amax[r.name]
    assert result.rows[0].rel_error >= result.rows[1].rel_error
    both = np.maximum(_fake_quant(x, 0.5) @ w1, 0)
    want = output_error(y, _fake_quant(both, 1.0) @ w2)
    assert result.all_quantized.name == ALL_TENSORS
    assert result.all_quantized.rel_error == pytest.approx(want["rel_error"], rel=1e-4)
    assert result.num_samples == 40 and result.output == "y"
    text = result.format_table()
    assert ALL_TENSORS in text and "one tensor quantised at a time" in text
    assert "output 'y', 40 samples, test; one tensor" in text
    unnamed = dataclasses.replace(result, algorithm="").format_table()  # amax given directly
    assert "output 'y', 40 samples; one tensor" in unnamed
    result.write_json(tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())
    assert [t["name"] for t in data["tensors"]] == [r.name for r in result.rows]
    assert data["all_quantized"]["amax"] is None  # NaN written as null


def test_output_error_known_answers():
    y = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]])
    same = output_error(y, y)
    assert same == {"rel_error": 0.0, "cosine": pytest.approx(1.0), "agreement": 1.0}
    flipped = output_error(y, -y)
    assert flipped["rel_error"] == pytest.approx(2.0)
    assert flipped["cosine"] == pytest.approx(-1.0)
    assert flipped["agreement"] == 0.0
    assert math.isnan(output_error(np.ones(3), np.ones(3))["agreement"])
    with pytest.raises(ValueError, match="output shapes differ"):
        output_error(y, y[:, :2])


def test_errors(tmp_path, rng):
    path, _, _ = _mlp(tmp_path, rng)
    x = [{"x": rng.standard_normal((4, 6)).astype(np.float32)}]
    with pytest.raises(CalibkitError, match="none of the 1 amax values gets a Q/DQ pair"):
        sensitivity(path, {"other": 1.0}, x)
    with pytest.raises(ValueError, match="no evaluation batches"):
        sensitivity(path, {"x": 1.0}, [])
    with pytest.raises(ValueError, match="has no output 'z'"):
        sensitivity(path, {"x": 1.0}, x, output="z")


def test_cli_sensitivity(tmp_path, rng, capsys):
    path, _, _ = _mlp(tmp_path, rng)
    x = rng.standard_normal((30, 6)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x)
    hists = {n: ck.Histogram().fill(v) for n, v in {"x": x, "r": np.maximum(x, 0)}.items()}
    ck.save_stats(tmp_path / "s.npz", hists)
    argv = ["sensitivity", str(path), "--stats", str(tmp_path / "s.npz")]
    argv += ["--data", str(tmp_path / "data.npz"), "--json", str(tmp_path / "o.json")]
    assert main([*argv, "-a", "minmax", "--batch-size", "10"]) == 0
    out = capsys.readouterr().out
    assert "30 samples, minmax" in out
    assert main([*argv, "-a", "nope"]) == 1
    assert "unknown algorithm" in capsys.readouterr().err
