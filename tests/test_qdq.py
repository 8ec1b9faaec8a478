"""Q/DQ export (calibkit.onnx.qdq) and import (calibkit.onnx.reverse), checked with onnxruntime."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from calibkit.cache.format import CalibrationCache, read_cache, write_cache  # noqa: E402
from calibkit.cli import main  # noqa: E402
from calibkit.errors import CacheFormatError  # noqa: E402
from calibkit.onnx.qdq import DEFAULT_OP_TYPES, to_qdq, write_qdq  # noqa: E402
from calibkit.onnx.reverse import from_qdq, qdq_to_cache  # noqa: E402

PAIRS = (
    "lannyyip_resunet_trt8001_ec2",
    "muqadas2_cnndepthwise_trt8401_ec2",
    "zxm97_retinalp_trt8501_ec2",
)


# -- tiny models --------------------------------------------------------------------------------
def _model(nodes, inputs, outputs, inits=(), opset=13):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * rank) for n, rank in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _identity_pool_model():
    """x -> MaxPool(1x1) -> y: the output is exactly DQ(Q(x)) once x is quantized."""
    node = helper.make_node("MaxPool", ["x"], ["y"], "pool", kernel_shape=[1, 1])
    return _model([node], [("x", [1, 1, 1, None])], [("y", 4)])


def _run(model, feeds):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _fake_quant(x, s):
    """TensorRT IQuantizeLayer then IDequantizeLayer, written independently in NumPy."""
    x, s = np.asarray(x, np.float32), np.float32(s)
    q = np.clip(np.rint(x / s), -128, 127)  # np.rint rounds half to even
    return (q.astype(np.float32) * s).astype(np.float32)


def _nodes(model, op_type):
    return [n for n in model.graph.node if n.op_type == op_type]


def _init(model, name):
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _q_scales(model):
    return {n.input[0]: _init(model, n.input[1]) for n in _nodes(model, "QuantizeLinear")}


# -- activation Q/DQ: bit-exact against NumPy ---------------------------------------------------
positive_scales = st.floats(2.0**-20, 2.0**10, width=32)


@settings(max_examples=60, deadline=None)
@given(
    scale=positive_scales,
    steps=st.lists(st.integers(-300, 300), min_size=1, max_size=40),
    frac=st.lists(
        st.sampled_from([0.0, 0.5, -0.5, 0.25, 0.49999, 0.50001]), min_size=40, max_size=40
    ),
)
def test_activation_qdq_is_round_half_even_clamped(scale, steps, frac):
    # Inputs on and around the rounding ties k + 1/2, and beyond the clamp at -128 and 127.
    s = np.float32(scale)
    x = ((np.array(steps) + np.array(frac[: len(steps)])) * s).astype(np.float32)
    qdq, report = to_qdq(_identity_pool_model(), {"x": s})
    assert report.activations == {"x": float(s)}
    (y,) = _run(qdq, {"x": x.reshape(1, 1, 1, -1)})
    np.testing.assert_array_equal(y.ravel(), _fake_quant(x, s))


def test_activation_qdq_clamps_at_minus_128_not_minus_127(rng):
    s = np.float32(0.01)
    x = np.array([-1.3, -1.275, -1.28, -1.27, 1.27, 1.3], np.float32)
    qdq, _ = to_qdq(_identity_pool_model(), {"x": s})
    (y,) = _run(qdq, {"x": x.reshape(1, 1, 1, -1)})
    np.testing.assert_array_equal(np.rint(y.ravel() / s), [-128, -128, -128, -127, 127, 127])


# -- weights ------------------------------------------------------------------------------------
def _conv_model(weight, *, op="Conv", attrs=None):
    node = helper.make_node(op, ["x", "w"], ["y"], "layer", **(attrs or {}))
    rank = np.ndim(weight)
    return _model([node], [("x", [None] * rank)], [("y", rank)], [("w", weight)])


@pytest.mark.parametrize(
    ("op", "shape", "attrs", "axis"),
    [
        ("Conv", (4, 3, 3, 3), {}, 0),
        ("ConvTranspose", (3, 5, 2, 2), {}, 1),
        ("Gemm", (6, 3), {"transB": 1}, 0),
        ("Gemm", (3, 6), {}, 1),
        ("MatMul", (3, 6), {}, 1),
    ],
    ids=["conv", "convtranspose", "gemm-transB", "gemm", "matmul"],
)
def test_weight_scales_per_output_channel(rng, op, shape, attrs, axis):
    w = rng.standard_normal(shape).astype(np.float32)
    w[(slice(None),) * axis + (0,)] = 0.0  # one all-zero channel: needs a legal scale too
    qdq, report = to_qdq(_conv_model(w, op=op, attrs=attrs), {"x": 0.05})
    (q,) = [n for n in _nodes(qdq, "QuantizeLinear") if n.input[0] == "w"]
    assert helper.get_attribute_value(q.attribute[0]) == axis
    expected = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(axis=1)
    expected = expected.astype(np.float32) / np.float32(127)
    expected[0] = 1.0
    np.testing.assert_array_equal(_init(qdq, q.input[1]), expected)
    assert report.weights == {"w": (axis, w.shape[axis])}
    assert report.zero_weight_channels == {"w": 1}


def test_conv_output_matches_numpy_fake_quant(rng):
    w = rng.standard_normal((8, 5, 1, 1)).astype(np.float32)
    x = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)
    s = np.float32(np.abs(x).max() / 127)
    qdq, _ = to_qdq(_conv_model(w), {"x": s})
    (y,) = _run(qdq, {"x": x})
    ws = np.abs(w).reshape(8, -1).max(axis=1).astype(np.float32) / np.float32(127)
    wq = _fake_quant(w / ws[:, None, None, None], 1.0) * ws[:, None, None, None]
    expected = np.einsum("oc,nchw->nohw", wq[:, :, 0, 0], _fake_quant(x, s))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


# -- placement ----------------------------------------------------------------------------------
def _residual_model(rng):
    """x -> Conv a -> Relu r; Conv b(r) + r -> Add -> MaxPool; x also feeds a second Conv."""
    w = rng.standard_normal((2, 2, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], "conv_a"),
        helper.make_node("Conv", ["x", "w"], ["a2"], "conv_a2"),
        helper.make_node("Relu", ["a"], ["r"], "relu"),
        helper.make_node("Conv", ["r", "w"], ["b"], "conv_b"),
        helper.make_node("Add", ["b", "r"], ["s"], "add"),
        helper.make_node("MaxPool", ["s"], ["y"], "pool", kernel_shape=[1, 1]),
    ]
    return _model(nodes, [("x", [1, 2, 2, 2])], [("y", 4), ("a2", 4)], [("w", w)])


def test_residual_add_quantizes_the_skip_input_and_pairs_are_shared(rng):
    scales = {n: np.float32(0.1) for n in ("x", "a", "a2", "r", "b", "s", "y")}
    qdq, report = to_qdq(_residual_model(rng), scales)
    quantized = [n.input[0] for n in _nodes(qdq, "QuantizeLinear") if n.input[0] != "w"]
    # x feeds two Convs through one pair; the residual r feeds conv_b and add through one pair;
    # b (the Conv output fused into the Add) and a, a2 (Conv outputs) stay float.
    assert sorted(quantized) == ["r", "s", "x"]
    assert report.consumers == {"x": ["conv_a", "conv_a2"], "r": ["add", "conv_b"], "s": ["pool"]}
    assert len([n for n in _nodes(qdq, "QuantizeLinear") if n.input[0] == "w"]) == 1
    add = _nodes(qdq, "Add")[0]
    assert add.input[0] == "b"
    assert sorted(report.unused_scales) == ["a", "a2", "b", "y"]


def test_add_without_weighted_producer_or_with_bias_is_skipped():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], "relu"),
        helper.make_node("Add", ["x", "r"], ["s"], "add"),
        helper.make_node("Add", ["s", "bias"], ["y"], "bias_add"),
    ]
    model = _model(nodes, [("x", [2])], [("y", 1)], [("bias", [1.0, 2.0])])
    qdq, report = to_qdq(model, {"x": 0.1, "r": 0.1, "s": 0.1, "y": 0.1})
    assert not _nodes(qdq, "QuantizeLinear")
    assert set(report.skipped_nodes) == {"add", "bias_add"}
    assert "bias" in report.skipped_nodes["bias_add"]


def test_weight_from_a_constant_node_is_not_half_quantized():
    const = helper.make_node(
        "Constant", [], ["c"], "const", value=numpy_helper.from_array(np.eye(2, dtype=np.float32))
    )
    node = helper.make_node("MatMul", ["x", "c"], ["y"], "mm")
    model = _model([const, node], [("x", [1, 2])], [("y", 2)])
    qdq, report = to_qdq(model, {"x": 0.1})
    assert not _nodes(qdq, "QuantizeLinear")
    assert "Constant node" in report.skipped_nodes["mm"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [(0.0, "is 0"), (np.inf, "is inf"), (np.nan, "is NaN"), (None, "missing")],
    ids=["zero", "inf", "nan", "missing"],
)
def test_illegal_or_missing_scale_stays_float(rng, value, reason):
    scales = {"x": np.float32(0.1), "s": np.float32(0.2)}
    if value is not None:
        scales["r"] = np.float32(value)
    qdq, report = to_qdq(_residual_model(rng), scales)
    assert [t.name for t in report.float_tensors] == ["r"]
    assert reason in report.float_tensors[0].reason
    assert sorted(report.float_tensors[0].consumers) == ["add", "conv_b"]
    assert {"add", "conv_b"} <= set(report.float_nodes)
    for scale in _q_scales(qdq).values():
        assert np.all(np.isfinite(scale))
        assert np.all(scale > 0)
    assert [n.input[0] for n in _nodes(qdq, "QuantizeLinear") if n.input[0] != "w"] == ["x", "s"]


def test_exclude_nodes_and_op_types(rng):
    scales = {n: np.float32(0.1) for n in ("x", "r", "s")}
    _, report = to_qdq(_residual_model(rng), scales, exclude_nodes=r"^conv_a2?$")
    assert set(report.activations) == {"r", "s"}
    assert "excluded" in report.float_nodes["conv_a"]
    _, report = to_qdq(_residual_model(rng), scales, op_types=["MaxPool"])
    assert set(report.activations) == {"s"}
    with pytest.raises(ValueError, match="unknown op types"):
        to_qdq(_residual_model(rng), scales, op_types=["Relu"])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        to_qdq(_residual_model(rng), scales, exclude_nodes="(")


def test_concat_is_opt_in_and_needs_every_input():
    nodes = [helper.make_node("Concat", ["x", "z"], ["y"], "cat", axis=0)]
    model = _model(nodes, [("x", [2]), ("z", [2])], [("y", 1)])
    assert "Concat" not in DEFAULT_OP_TYPES
    _, report = to_qdq(model, {"x": 0.1, "z": 0.2})
    assert not report.activations
    _, report = to_qdq(model, {"x": 0.1, "z": 0.2}, op_types=["Concat"])
    assert report.activations == {"x": np.float32(0.1), "z": np.float32(0.2)}
    _, report = to_qdq(model, {"x": 0.1}, op_types=["Concat"])
    assert not report.activations
    assert "cat" in report.float_nodes


def test_inherit_scales_through_a_removed_reshape():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], "relu"),
        helper.make_node("Reshape", ["r", "shape"], ["t"], "reshape"),
        helper.make_node("MaxPool", ["t"], ["y"], "pool", kernel_shape=[1]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, None])],
        [numpy_helper.from_array(np.array([1, 1, 4], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    _, report = to_qdq(model, {"r": 0.5})
    assert "inherit" in report.float_tensors[0].reason
    _, report = to_qdq(model, {"r": 0.5}, inherit_scales=True)
    assert report.activations == {"t": 0.5}
    assert report.inherited == {"t": "r"}


def test_opset_upgrade_metadata_and_checker(rng):
    node = helper.make_node("Conv", ["x", "w"], ["y"], "conv")
    old = _model(
        [node], [("x", [1, 2, 3, 3])], [("y", 4)], [("w", rng.standard_normal((2, 2, 1, 1)))], 11
    )
    cache = CalibrationCache((8, 6, 1), "MinMaxCalibration", {"x": 0.25})
    qdq, _ = to_qdq(
        old, cache.scales, source_header="TRT-8601-MinMaxCalibration", algorithm="MinMaxCalibration"
    )
    assert [o.version for o in qdq.opset_import if o.domain == ""] == [13]
    meta = {p.key: p.value for p in qdq.metadata_props}
    assert meta["calibkit_source_header"] == "TRT-8601-MinMaxCalibration"
    assert meta["calibkit_algorithm"] == "MinMaxCalibration"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", meta["calibkit_version"])
    onnx.checker.check_model(qdq, full_check=True)


def test_opset_that_cannot_be_upgraded_is_refused(rng, monkeypatch):
    node = helper.make_node("Conv", ["x", "w"], ["y"], "conv")
    old = _model(
        [node], [("x", [1, 2, 3, 3])], [("y", 4)], [("w", rng.standard_normal((2, 2, 1, 1)))], 11
    )

    def fail(model, target):
        msg = "no adapter"
        raise RuntimeError(msg)

    monkeypatch.setattr(onnx.version_converter, "convert_version", fail)
    with pytest.raises(CacheFormatError, match=r"opset 11 is below 13.*no adapter"):
        to_qdq(old, {"x": 0.25})


# -- the reverse direction ----------------------------------------------------------------------
bits = st.integers(0x00800000, 0x7F7FFFFF)  # every positive normal float32


@settings(max_examples=40, deadline=None)
@given(st.lists(bits, min_size=3, max_size=3))
def test_cache_to_qdq_to_cache_is_bit_exact(hex_bits):
    model = _residual_model(np.random.default_rng(0))
    scales = dict(zip(("x", "r", "s"), np.array(hex_bits, np.uint32).view(np.float32), strict=True))
    cache = CalibrationCache((8, 6, 0), "EntropyCalibration2", scales)
    qdq, _report = to_qdq(model, cache.scales, algorithm=cache.algorithm)
    back, float_model = qdq_to_cache(qdq, trt_version="8.6")
    assert back.to_bytes() == cache.to_bytes()
    assert float_model.graph.node == model.graph.node
    assert list(float_model.graph.initializer) == list(model.graph.initializer)


def test_qdq_to_cache_defaults_and_graph_output_kept(rng):
    qdq, _ = to_qdq(_identity_pool_model(), {"x": 0.5})
    cache, float_model = qdq_to_cache(qdq, trt_version="10.3")
    assert (cache.version, cache.algorithm) == ((10, 3, 0), "EntropyCalibration2")
    with pytest.raises(ValueError, match="reads no calibration cache"):
        qdq_to_cache(qdq, trt_version="11.0")
    # A DQ output that is a graph output keeps its name through an Identity.
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], "q")
    dq = helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"], "dq")
    graph = helper.make_graph(
        [q, dq],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.float32(0.5), "s"), numpy_helper.from_array(np.int8(0), "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    scales, float_model = from_qdq(model)
    assert scales == {"x": np.float32(0.5)}
    x = np.array([1.0, 2.0, 3.3], np.float32)
    np.testing.assert_array_equal(_run(float_model, {"x": x})[0], x)


def _qdq_graph(zero_point=0, scale=0.5, dq_scale=None, second=None):
    zero_point = zero_point if isinstance(zero_point, np.ndarray | np.generic) else np.int8(0)
    scale = np.asarray(scale, np.float32)
    inits = [
        numpy_helper.from_array(np.asarray(scale), "s"),
        numpy_helper.from_array(np.asarray(dq_scale if dq_scale is not None else scale), "s2"),
        numpy_helper.from_array(np.asarray(zero_point), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], "q"),
        helper.make_node("DequantizeLinear", ["xq", "s2", "z"], ["xd"], "dq"),
        helper.make_node("Relu", ["xd"], ["y"], "relu"),
    ]
    if second is not None:
        inits.append(numpy_helper.from_array(np.float32(second), "t"))
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "t", "z"], ["xq2"], "q2"),
            helper.make_node("DequantizeLinear", ["xq2", "t", "z"], ["xd2"], "dq2"),
            helper.make_node("Relu", ["xd2"], ["y2"], "relu2"),
        ]
    outputs = ["y", "y2"] if second is not None else ["y"]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [3]) for o in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"zero_point": np.int8(3)}, "zero point"),
        ({"zero_point": np.uint8(128)}, "zero point"),
        ({"scale": np.float32(0.0)}, "expected > 0"),
        ({"dq_scale": np.float32(0.25)}, "different scales"),
        ({"second": 0.25}, "two scales"),
        (
            {"scale": np.array([0.5, 0.5, 0.5], np.float32), "zero_point": np.zeros(3, np.int8)},
            "per channel",
        ),
    ],
    ids=["zp3", "uint8", "zero-scale", "q-dq-differ", "two-scales", "per-channel-activation"],
)
def test_from_qdq_rejects_what_a_cache_cannot_hold(kwargs, match):
    with pytest.raises(CacheFormatError, match=match):
        from_qdq(_qdq_graph(**kwargs))


def test_from_qdq_dequantizes_prequantized_weights():
    wq = np.array([[10, -20], [127, -128]], np.int8)
    s = np.array([0.5, 0.25], np.float32)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], "dqw", axis=1),
        helper.make_node("MatMul", ["x", "w"], ["y"], "mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [
            numpy_helper.from_array(wq, "wq"),
            numpy_helper.from_array(s, "ws"),
            numpy_helper.from_array(np.zeros(2, np.int8), "wz"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    scales, float_model = from_qdq(model)
    assert scales == {}
    np.testing.assert_array_equal(_init(float_model, "w"), wq.astype(np.float32) * s)


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_qdq_and_back(tmp_path, rng, capsys):
    onnx.save(_residual_model(rng), tmp_path / "m.onnx")
    cache = CalibrationCache((8, 5, 1), "EntropyCalibration2", {"x": 0.1, "r": 0.0, "s": 0.3})
    write_cache(tmp_path / "m.cache", cache)
    args = ["qdq", str(tmp_path / "m.onnx"), "--cache", str(tmp_path / "m.cache")]
    args += ["-o", str(tmp_path / "q.onnx"), "--report", str(tmp_path / "r.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "float: r: cache scale is 0" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["activations"]) == {"x", "s"}
    assert report["source"]["calibkit_source_header"] == "TRT-8501-EntropyCalibration2"
    args = ["qdq-to-cache", str(tmp_path / "q.onnx"), "--trt-version", "8.5.1"]
    args += ["-o", str(tmp_path / "back.cache"), "--float-model", str(tmp_path / "f.onnx")]
    assert main(args) == 0
    back = read_cache(tmp_path / "back.cache")
    assert back.scales == {"x": np.float32(0.1), "s": np.float32(0.3)}
    assert onnx.load(tmp_path / "f.onnx").graph.node == _residual_model(rng).graph.node


def test_cli_errors(tmp_path, rng, capsys):
    onnx.save(_residual_model(rng), tmp_path / "m.onnx")
    write_cache(tmp_path / "m.cache", CalibrationCache((8, 6, 0), "MinMaxCalibration", {"x": 0.1}))
    base = ["qdq", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx")]
    assert main([*base, "--cache", str(tmp_path / "m.cache"), "--algorithm", "entropy2"]) == 1
    assert "--algorithm applies to --stats" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    assert (
        main(["qdq", str(tmp_path / "bad.onnx"), "--cache", str(tmp_path / "m.cache"), "-o", "x"])
        == 1
    )
    assert "cannot be read as an ONNX model" in capsys.readouterr().err
    onnx.save(to_qdq(_residual_model(rng), {"x": 0.1})[0], tmp_path / "q.onnx")
    back = ["qdq-to-cache", str(tmp_path / "q.onnx"), "-o", str(tmp_path / "c.cache")]
    assert main([*back, "--trt-version", "11.0"]) == 1
    assert "reads no calibration cache" in capsys.readouterr().err
    assert main([*back, "--trt-version", "8.6", "--algorithm", "Entropy3"]) == 1
    assert "unknown algorithm 'Entropy3'" in capsys.readouterr().err


# -- the shared real TensorRT caches with their ONNX models ------------------------------------
@pytest.mark.parametrize("pair", PAIRS)
def test_shared_cache_pairs_convert(shared_testdata, tmp_path, pair):
    folder = shared_testdata / "onnx_cache_pairs" / pair
    cache = read_cache(folder / "calibration.cache")
    report = write_qdq(
        tmp_path / "q.onnx", folder / "model.onnx", cache, report_path=tmp_path / "r.json"
    )
    qdq = onnx.load(tmp_path / "q.onnx")
    onnx.checker.check_model(qdq)
    assert next(o.version for o in qdq.opset_import if o.domain == "") >= 13
    # Every activation Q/DQ carries the cache's float32 bits unchanged.
    for tensor, scale in _q_scales(qdq).items():
        if scale.ndim == 0:
            assert scale.tobytes() == cache.scales[tensor].tobytes()
    # Every cache name is accounted for, and so is every Conv.
    assert set(report.activations) | set(report.unused_scales) == set(cache.scales)
    convs = {n.name for n in _nodes(onnx.load(folder / "model.onnx"), "Conv")}
    quantized_convs = {c for cs in report.consumers.values() for c in cs} & convs
    assert quantized_convs | set(report.float_nodes) >= convs
    back, _ = qdq_to_cache(qdq, trt_version=cache.version)
    assert all(back.scales[n].tobytes() == cache.scales[n].tobytes() for n in back.scales)


def test_shared_pairs_report_the_known_gaps(shared_testdata):
    """Facts from the pairs' source.md: what TensorRT renamed, removed or added."""
    root = shared_testdata / "onnx_cache_pairs"
    # muqadas2: TensorRT removed one identity Reshape (no line) and wrote 8 constants.
    folder = root / "muqadas2_cnndepthwise_trt8401_ec2"
    cache = read_cache(folder / "calibration.cache")
    _, report = to_qdq(folder / "model.onnx", cache.scales)
    assert [t.name.endswith("BiasAdd__13:0") for t in report.float_tensors] == [True]
    internal = [n for n, r in report.unused_scales.items() if "TensorRT-internal" in r]
    assert len(internal) == 8
    _, report = to_qdq(folder / "model.onnx", cache.scales, inherit_scales=True)
    assert not report.float_tensors
    assert not report.float_nodes
    # zxm97: 26 of the 126 cache names belong to the full 3-level model, not this 2-level file.
    folder = root / "zxm97_retinalp_trt8501_ec2"
    cache = read_cache(folder / "calibration.cache")
    _, report = to_qdq(folder / "model.onnx", cache.scales)
    absent = [n for n, r in report.unused_scales.items() if r.startswith("not a tensor")]
    assert len(cache.scales) == 126
    assert len(absent) == 26


def test_cli_qdq_from_saved_histograms(tmp_path, rng, capsys):
    from calibkit.collect import HistogramCollector
    from calibkit.scale import scale_from_amax
    from calibkit.stats import save_stats

    onnx.save(_residual_model(rng), tmp_path / "m.onnx")
    batch = {n: rng.standard_normal(50).astype(np.float32) * k for k, n in enumerate("xrs", 1)}
    save_stats(tmp_path / "stats.npz", HistogramCollector().update(batch).histograms_)
    base = ["qdq", str(tmp_path / "m.onnx"), "--stats", str(tmp_path / "stats.npz")]
    assert main([*base, "-o", str(tmp_path / "q.onnx")]) == 1
    assert "--stats needs --algorithm" in capsys.readouterr().err
    assert main([*base, "--algorithm", "minmax", "-o", str(tmp_path / "q.onnx")]) == 0
    qdq = onnx.load(tmp_path / "q.onnx")
    for name in "xrs":
        expected = scale_from_amax(np.abs(batch[name]).max())
        assert _q_scales(qdq)[name].tobytes() == expected.tobytes()
    meta = {p.key: p.value for p in qdq.metadata_props}
    assert meta["calibkit_algorithm"] == "MinMaxCalibration"
    assert meta["calibkit_source_header"].endswith("minmax")


# -- real models (benchmarks/models.py): calibrated Q/DQ vs deliberately mis-scaled ---------------
ENTROPY2_BIN0 = (
    "entropy2 (candidate A, bin 0 kept) clips ReLU/ReLU6 outputs that are mostly exact zeros far "
    "below their range (EfficientNet-Lite0: amax 0.376 instead of 6 on 12 of 33 ReLU6 outputs); "
    "with bin 0 emptied it does not (docs/qdq.md)"
)


@pytest.fixture(scope="module")
def agreement(request):
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(request.config.rootpath))
    from benchmarks import qdq_agreement

    yield qdq_agreement
    mp.undo()


@pytest.fixture(scope="module")
def efficientnet(agreement):
    from benchmarks import models

    path = models.efficientnet_lite0_onnx()
    calib = models.efficientnet_inputs("calib", 16, seed=0)
    hists = agreement.collect_histograms(path, [{"image": calib[:8]}, {"image": calib[8:]}])
    feeds = [{"image": models.efficientnet_inputs("eval", 16, seed=1)}]
    return path, hists, feeds, agreement.run_batches(agreement.session(path), feeds)


@pytest.mark.slow
@pytest.mark.parametrize(
    "algorithm",
    [
        "minmax",
        "entropy2",
        pytest.param(
            "entropy2:first-bin=keep", marks=pytest.mark.xfail(strict=True, reason=ENTROPY2_BIN0)
        ),
    ],
)
def test_efficientnet_calibrated_qdq_beats_misscaled(agreement, efficientnet, algorithm):
    path, hists, feeds, ref = efficientnet
    qdq_models, _ = agreement.variants(path, hists, algorithm)
    score = {
        name.removeprefix(algorithm).strip(", ") or "calibrated": agreement.logit_agreement(
            ref, agreement.run_batches(agreement.session(model), feeds)
        )
        for name, model in qdq_models.items()
    }
    good = score["calibrated"]
    assert good["top1"] >= 0.75
    assert good["cosine"] >= 0.95
    for bad in ("scales x16", "scales /16"):
        assert good["top1"] >= score[bad]["top1"] + 0.3, (bad, score)
        assert good["cosine"] >= score[bad]["cosine"] + 0.2, (bad, score)


@pytest.mark.slow
def test_minilm_calibrated_qdq_beats_misscaled(agreement):
    from benchmarks import models

    path = models.minilm_onnx()
    texts = models.sentences("calib", 32, seed=0)
    hists = agreement.collect_histograms(
        path, [models.tokenize(texts[:16]), models.tokenize(texts[16:])]
    )
    feeds = [models.tokenize(models.sentences("eval", 16, seed=1))]
    ref = agreement.run_batches(agreement.session(path), feeds)
    qdq_models, _ = agreement.variants(path, hists, "entropy2")
    cosine = {}
    for name, model in qdq_models.items():
        got = agreement.run_batches(agreement.session(model), feeds)
        cosine[name] = float(np.mean(np.sum(ref * got, 1) / np.linalg.norm(got, axis=1)))
    assert cosine["entropy2"] >= 0.8, cosine
    assert cosine["entropy2"] >= cosine["entropy2, scales x16"] + 0.2, cosine
    assert cosine["entropy2"] >= cosine["entropy2, scales /16"] + 0.2, cosine


def test_shifted_numeric_names_are_detected_and_fixed(shared_testdata, tmp_path, capsys):
    """lannyyip: the cache's numeric names are those of an export numbered 8 higher."""
    folder = shared_testdata / "onnx_cache_pairs" / "lannyyip_resunet_trt8001_ec2"
    cache = read_cache(folder / "calibration.cache")
    _, report = to_qdq(folder / "model.onnx", cache.scales)
    assert len(report.warnings) == 1
    assert "shifted by +8" in report.warnings[0]
    args = ["qdq", str(folder / "model.onnx"), "--cache", str(folder / "calibration.cache")]
    assert main([*args, "-o", str(tmp_path / "q.onnx"), "--shift-numeric-names", "-8"]) == 0
    out = capsys.readouterr().out
    assert "0 tensors read by quantizable ops stay float" in out
    assert "warning" not in out
    assert main([*args, "-o", str(tmp_path / "q.onnx"), "--op-types", "Relu"]) == 1
    assert "unknown op types ['Relu']" in capsys.readouterr().err


@pytest.fixture(scope="module")
def fashion(agreement):
    folder = agreement.Path(agreement.__file__).resolve().parents[1] / "examples" / "fashion_mnist"
    calib = np.load(folder / "calib.npz")["image"]
    test = np.load(folder / "test.npz")
    x = test["image"].astype(np.float32) / np.float32(255)
    path = folder / "model.onnx"
    hists = agreement.collect_histograms(path, [{"image": calib[:250]}, {"image": calib[250:]}])
    return path, hists, {"image": x}, test["label"]


@pytest.mark.parametrize(
    "algorithm",
    [
        "minmax",
        "percentile:99.99",
        "entropy2",
        pytest.param(
            "entropy2:first-bin=keep", marks=pytest.mark.xfail(strict=True, reason=ENTROPY2_BIN0)
        ),
    ],
)
def test_fashion_mnist_qdq_keeps_labelled_accuracy(agreement, fashion, algorithm):
    """The bundled CNN: 2000 labelled test images, FP32 accuracy 0.9165 (examples README)."""
    path, hists, feed, labels = fashion
    fp32 = np.mean(agreement.session(path).run(None, feed)[0].argmax(1) == labels)
    scales = agreement.scales_for(hists, algorithm)
    accuracy = {}
    for name, factor in (("calibrated", 1), ("scales /16", 1 / 16)):
        qdq, _ = to_qdq(path, {k: v * np.float32(factor) for k, v in scales.items()})
        got = agreement.session(qdq.SerializeToString()).run(None, feed)[0].argmax(1)
        accuracy[name] = np.mean(got == labels)
    assert accuracy["calibrated"] >= fp32 - 0.01, accuracy
    assert accuracy["calibrated"] >= accuracy["scales /16"] + 0.3, accuracy


def test_qdq_with_another_models_cache_is_an_error(tmp_path, capsys):
    from calibkit.cli import main

    root = Path(__file__).resolve().parents[1]
    other = root / "examples" / "caches" / "trt8204_entropy2_tiny_trtcookbook.cache"
    out = tmp_path / "q.onnx"
    model = root / "examples" / "fashion_mnist" / "model.onnx"
    assert main(["qdq", str(model), "--cache", str(other), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is the cache for another model?" in err and str(model) in err
    assert not out.exists()
    # a cache whose names are in the model, but no op of --op-types reads them: also refused
    cache = tmp_path / "f.cache"
    cache.write_bytes(b"TRT-101600-EntropyCalibration2\nlogits: 3c010a14\n")
    assert main(["qdq", str(model), "--cache", str(cache), "-o", str(out)]) == 1
    assert "no activation quantized" in capsys.readouterr().err and not out.exists()


@settings(max_examples=60, deadline=None)
@given(st.integers(0x0400, 0x7BFF))  # every positive normal float16
def test_qdq_to_cache_takes_modelopts_float16_scales_exactly(tmp_path_factory, bits):
    # ModelOpt's default export (--high_precision_dtype fp16): a float16 graph whose Q/DQ
    # scales are float16. The cache holds the same value as a float32, exactly.
    scale16 = np.array(bits, np.uint16).view(np.float16)
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], "q")
    dq = helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], "dq")
    relu = helper.make_node("Relu", ["xd"], ["y"], "relu")
    graph = helper.make_graph(
        [q, dq, relu],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3])],
        [numpy_helper.from_array(scale16, "s"), numpy_helper.from_array(np.int8(0), "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    path = tmp_path_factory.mktemp("fp16") / "modelopt.onnx"
    onnx.save(model, str(path))
    cache, _ = qdq_to_cache(str(path), trt_version="10.16")
    assert cache.scales["x"].dtype == np.float32
    assert cache.scales["x"] == np.float32(scale16)  # exact: float16 is a subset of float32
    assert float(cache.scales["x"]) == float(scale16)


def test_qdq_to_cache_errors_name_the_file(tmp_path, capsys):
    from calibkit.cli import main

    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], "q")
    dq = helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"], "dq")
    graph = helper.make_graph(
        [q, dq],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.float32(0.5), "s"), numpy_helper.from_array(np.int8(3), "z")],
    )
    path = tmp_path / "asym.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    out = tmp_path / "c.cache"
    assert main(["qdq-to-cache", str(path), "--trt-version", "8.6", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: DequantizeLinear 'dq' has zero point" in err and "<model>" not in err
    assert not out.exists()
