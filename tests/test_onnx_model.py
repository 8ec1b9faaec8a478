"""The ONNX model layer: one load, one graph, one shape inference, one constant reader."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibkit.cache.check import check_cache, read_model_graph
from calibkit.cache.format import CalibrationCache, read_cache, write_cache
from calibkit.cli import main
from calibkit.data.sources import DataError
from calibkit.errors import ModelFormatError
from calibkit.onnx.graph import Graph
from calibkit.onnx.model import OnnxModel, dims_of

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from test_onnx_source import make_cnn  # noqa: E402

from calibkit.onnx.calibrate import calibrate_onnx  # noqa: E402
from calibkit.onnx.qdq import to_qdq  # noqa: E402
from calibkit.onnx.reverse import from_qdq  # noqa: E402
from calibkit.onnx.source import OnnxActivationSource  # noqa: E402
from calibkit.rules.names import constant_values, trt_cache_names  # noqa: E402
from calibkit.rules.sharing import share_scales  # noqa: E402
from calibkit.scale import scale_from_amax  # noqa: E402


def _model(nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.fixture
def cnn_path(rng, tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(make_cnn(rng)[0], str(path))
    return path


@pytest.fixture
def count_inference(monkeypatch):
    """Count calls of onnx.shape_inference.infer_shapes (the one inference per model)."""
    calls = []
    real = onnx.shape_inference.infer_shapes

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counting)
    return calls


@pytest.fixture
def count_graphs(monkeypatch):
    """Count the Graph objects built."""
    built = []
    real = Graph.__post_init__

    def counting(self):
        built.append(self)
        real(self)

    monkeypatch.setattr(Graph, "__post_init__", counting)
    return built


# -- constants ---------------------------------------------------------------------------------
SPARSE = helper.make_sparse_tensor(
    helper.make_tensor("v", TensorProto.FLOAT, [2], [1.5, -2.0]),
    helper.make_tensor("i", TensorProto.INT64, [2], [1, 4]),
    [2, 3],
)
CONSTANT_FORMS = {
    "value": {"value": numpy_helper.from_array(np.array([[1, -2], [3, 4]], np.float32))},
    "value_float": {"value_float": 2.5},
    "value_floats": {"value_floats": [0.25, -1.0, 3.0]},
    "value_int": {"value_int": -7},
    "value_ints": {"value_ints": [2, 0, -1]},
    "value_string": {"value_string": "abc"},
    "value_strings": {"value_strings": ["a", "bc"]},
    "sparse_value": {"sparse_value": SPARSE},
}


@pytest.mark.parametrize("form", list(CONSTANT_FORMS))
def test_constant_reader_handles_every_constant_form(form):
    attrs = CONSTANT_FORMS[form]
    node = helper.make_node("Constant", [], ["c"], **attrs)
    model = _model([node], [], [helper.make_tensor_value_info("c", TensorProto.UNDEFINED, None)])
    if form == "sparse_value":  # onnx's evaluator returns its own sparse type: densify here
        expected = np.zeros((2, 3), np.float32)
        expected.reshape(-1)[[1, 4]] = [1.5, -2.0]
    else:  # onnx's own evaluator is the reference
        (expected,) = ReferenceEvaluator(model).run(None, {})
        expected = np.asarray(expected)
    m = OnnxModel(model)
    got = m.constant("c")
    assert m.is_constant("c") and "c" in m.constant_names
    assert got.shape == expected.shape
    assert m.constant_dims("c") == expected.shape
    if expected.dtype.kind in "OUS":  # strings: the evaluator returns str, calibkit objects
        assert got.tolist() == expected.tolist()
        assert m.constant_type("c") == TensorProto.STRING
    else:
        assert got.dtype == expected.dtype
        assert got.tobytes() == expected.tobytes()
        assert m.constant_type("c") == helper.np_dtype_to_tensor_dtype(expected.dtype)


@settings(max_examples=60, deadline=None)
@given(
    floats=st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=6),
    ints=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=6),
)
def test_list_constants_match_onnx_evaluator(floats, ints):
    nodes = [
        helper.make_node("Constant", [], ["f"], value_floats=floats),
        helper.make_node("Constant", [], ["i"], value_ints=ints),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in "fi"]
    model = _model(nodes, [], outputs)
    expected = ReferenceEvaluator(model).run(None, {})
    m = OnnxModel(model)
    for name, want in zip("fi", expected, strict=True):
        got = m.constant(name)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        assert m.constant_dims(name) == want.shape


def test_constant_reader_covers_initializers_and_reads_external_data_lazily(tmp_path):
    w = np.arange(64, dtype=np.float32).reshape(8, 8) / 7
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0
    )
    m = OnnxModel.load(path)
    assert m.external_locations == ("w.bin",)
    assert m.constant("w").tobytes() == w.tobytes()
    assert m.constant_type("w") == TensorProto.FLOAT and m.constant_dims("w") == (8, 8)
    # reading a value leaves the loaded model as stored; the copy to edit holds the weights
    assert onnx.external_data_helper.uses_external_data(m.proto.graph.initializer[0])
    full = m.with_weights()
    assert not onnx.external_data_helper.uses_external_data(full.graph.initializer[0])
    assert numpy_helper.to_array(full.graph.initializer[0]).tobytes() == w.tobytes()


def test_value_float_constant_scales_are_read_by_qdq_import():
    # A Q/DQ model whose scale and zero point are Constant nodes written with value_float and
    # value (an int8 tensor): the import reads both with the one constant reader.
    nodes = [
        helper.make_node("Constant", [], ["s"], value_float=0.0625),
        helper.make_node(
            "Constant", [], ["zp"], value=numpy_helper.from_array(np.array(0, np.int8))
        ),
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
        helper.make_node("Relu", ["dq"], ["y"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    scales, float_model = from_qdq(model)
    assert scales == {"x": np.float32(0.0625)}
    assert [n.op_type for n in float_model.graph.node] == ["Relu"]


def test_identity_reshape_to_a_value_ints_constant_gets_no_line():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Constant", [], ["shape"], value_ints=[2, 3]),
        helper.make_node("Reshape", ["r", "shape"], ["same"]),
        helper.make_node("Relu", ["same"], ["y"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    names = trt_cache_names(model, trt_version=(10, 16, 0))
    assert names.names == ["x", "r", "y"]
    assert "TensorRT removes it" in names.no_line["same"]


def test_constant_values_of_a_value_floats_constant():
    nodes = [
        helper.make_node("Constant", [], ["k"], value_floats=[0.5, -4.0, 2.0]),
        helper.make_node("Mul", ["x", "k"], ["y"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    names = trt_cache_names(model, trt_version=(10, 16, 0))
    values = constant_values(model, names)
    assert list(values) == ["k_output"]
    assert values["k_output"].tolist() == [0.5, -4.0, 2.0]


# -- dimensions --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dims", "expected"),
    [
        ([4, 3], (4, 3)),
        ([-1, 3], (None, 3)),
        ([0, 3], (None, 3)),
        (["batch", 3], ("batch", 3)),
        ([None, 3], (None, 3)),
    ],
)
def test_a_dimension_that_is_not_a_positive_int_is_dynamic(dims, expected):
    info = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    assert dims_of(info.type.tensor_type) == expected


@given(st.lists(st.one_of(st.integers(-(2**62), 2**62), st.text(min_size=1)), max_size=5))
def test_only_positive_dimension_values_are_fixed(dims):
    info = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    got = dims_of(info.type.tensor_type)
    for want, have in zip(dims, got, strict=True):
        if isinstance(want, str):
            assert have == want
        else:
            assert have == (want if want > 0 else None)


def test_no_shape_is_none():
    info = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    assert dims_of(info.type.tensor_type) is None


def _paddle_style(tmp_path, batch_dim):
    """Relu -> Mul on an input whose batch is written as Paddle does (dim_value -1 or 0)."""
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Mul", ["r", "two"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 3])],
        [numpy_helper.from_array(np.array(2, np.float32), "two")],
    )
    path = tmp_path / "paddle.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("batch_dim", [-1, 0])
def test_paddle_dynamic_batch_calibrates_every_sample(tmp_path, rng, batch_dim):
    path = _paddle_style(tmp_path, batch_dim)
    x = rng.normal(size=(24, 3)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    assert [str(s) for s in OnnxModel.load(path).inputs] == ["x: float32[?, 3]"]
    result = calibrate_onnx(
        path, tmp_path / "calib.npz", algorithm="minmax", trt_version="10.16", batch_size=8
    )
    assert result.settings.num_samples == 24 and result.settings.num_batches == 3
    assert result.amax["x"] == float(np.abs(x).max())
    assert result.amax["y"] == float(np.max(2 * np.maximum(x, 0)))


@pytest.mark.parametrize("batch_dim", [-1, 0])
def test_paddle_dynamic_batch_mismatch_names_input_and_dimension(tmp_path, rng, batch_dim):
    path = _paddle_style(tmp_path, batch_dim)
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(24, 4)).astype(np.float32))
    with pytest.raises(DataError, match=r"input 'x' .*dimension 1 is 4, expected 3"):
        calibrate_onnx(path, tmp_path / "calib.npz", algorithm="minmax", trt_version="10.16")


# -- one load, one graph, one shape inference --------------------------------------------------
def _cnn_data(tmp_path, rng):
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(6, 3, 4, 4)).astype(np.float32))
    return tmp_path / "calib.npz"


def test_calibrate_onnx_infers_shapes_once_and_builds_one_graph(
    cnn_path, tmp_path, rng, count_inference, count_graphs
):
    data = _cnn_data(tmp_path, rng)
    calibrate_onnx(cnn_path, data, trt_version="10.16", batch_size=2)
    assert len(count_inference) == 1
    assert count_inference[0] == {"strict_mode": False, "data_prop": True}
    assert len(count_graphs) == 1


def _conv_model(rng, opset=17):
    """Conv -> Relu -> Conv: two weighted ops, a valid model at any opset >= 11."""
    w = rng.normal(size=(4, 3, 1, 1)).astype(np.float32)
    w2 = rng.normal(size=(4, 4, 1, 1)).astype(np.float32)
    return _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv1"),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w2, "w2")],
        opset=opset,
    )


def _cache(amax):
    return CalibrationCache.from_amax(amax, trt_version="10.16", algorithm="EntropyCalibration2")


@pytest.mark.parametrize("opset", [17, 11])  # 11: upgraded to 13 in the copy, types kept
def test_qdq_command_infers_shapes_once(tmp_path, rng, count_inference, opset, capsys):
    onnx.save(_conv_model(rng, opset), str(tmp_path / "m.onnx"))
    write_cache(tmp_path / "m.cache", _cache({"x": 1.0, "r": 2.0}))
    argv = ["qdq", str(tmp_path / "m.onnx"), "--cache", str(tmp_path / "m.cache")]
    assert main([*argv, "-o", str(tmp_path / "q.onnx")]) == 0, capsys.readouterr().err
    assert len(count_inference) == 1
    qdq = onnx.load(str(tmp_path / "q.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in qdq.graph.node) == 4  # x, r, 2 weights


def test_cache_check_command_infers_shapes_once(cnn_path, tmp_path, count_inference, capsys):
    write_cache(
        tmp_path / "m.cache",
        _cache({"x": 1.0}),
    )
    # the model's other tensors are missing from the cache: an issue, so exit status 1
    assert main(["cache", "check", str(tmp_path / "m.cache"), "--model", str(cnn_path)]) == 1
    assert len(count_inference) == 1
    assert "missing" in capsys.readouterr().out


def test_sensitivity_infers_shapes_once_for_every_qdq_variant(tmp_path, rng, count_inference):
    from calibkit.research.sensitivity import sensitivity

    onnx.save(_conv_model(rng), str(tmp_path / "m.onnx"))
    batches = [{"x": rng.normal(size=(1, 3, 4, 4)).astype(np.float32)}]
    result = sensitivity(tmp_path / "m.onnx", {"x": 3.0, "r": 2.0}, batches)
    assert len(result.rows) >= 2  # several Q/DQ variants were built and run
    assert len(count_inference) == 1


def test_one_model_object_serves_every_stage(tmp_path, rng, count_inference, count_graphs):
    onnx.save(_conv_model(rng), str(tmp_path / "m.onnx"))
    model = OnnxModel.load(tmp_path / "m.onnx")
    source = OnnxActivationSource(model)
    assert source.model is model and source.inputs == model.inputs
    names = trt_cache_names(model, trt_version=(10, 16, 0))
    amax = dict.fromkeys(source.tensor_names, 1.5)
    shared = share_scales(model.graph, amax, trt_version=(10, 16, 0))
    scales = {name: scale_from_amax(a) for name, a in shared.amax.items()}
    _, report = to_qdq(model, scales)
    check = check_cache(
        _cache(amax),
        model,
    )
    assert report.activations and names.lines and not check.missing
    assert len(count_graphs) == 1  # sharing, names, Q/DQ and check: the same Graph
    assert len(count_inference) == 1


def test_graph_round_trips_through_its_saved_form(cnn_path):
    graph = OnnxModel.load(cnn_path).graph
    assert Graph.from_json(graph.to_dict()) == graph
    assert Graph.from_onnx(cnn_path) == graph


# -- loading errors ----------------------------------------------------------------------------
def test_missing_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ONNX model .*nope\.onnx not found"):
        OnnxModel.load(tmp_path / "nope.onnx")


def test_directory_is_named(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"ONNX model .* is a directory"):
        OnnxModel.load(tmp_path)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "the file is empty"), (b"\xff\xfenot a model", "truncated or another format")],
    ids=["empty", "garbage"],
)
def test_bad_model_file_is_one_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(
        ModelFormatError, match=rf"bad\.onnx: cannot be read as an ONNX model.*{match}"
    ):
        OnnxModel.load(path)


def test_truncated_model_in_cache_check_is_one_line(cnn_path, tmp_path, capsys):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(cnn_path.read_bytes()[:-40])
    write_cache(
        tmp_path / "m.cache",
        _cache({"x": 1.0}),
    )
    assert main(["cache", "check", str(tmp_path / "m.cache"), "--model", str(cut)]) != 0
    err = capsys.readouterr().err
    assert "cut.onnx: cannot be read as an ONNX model" in err and "Traceback" not in err


def test_unsorted_graph_is_an_error_naming_the_file_and_node(tmp_path):
    model = _model(
        [
            helper.make_node("Relu", ["a"], ["b"], name="late"),
            helper.make_node("Relu", ["x"], ["a"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])],
    )
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelFormatError, match=r"m\.onnx: node 0 \(late\) reads tensor 'a' before"):
        _ = OnnxModel.load(tmp_path / "m.onnx").graph


# -- TensorRT-internal names: one definition for Q/DQ export and cache check --------------------
def test_qdq_and_check_agree_on_trt_internal_names(shared_testdata):
    for folder in sorted((shared_testdata / "onnx_cache_pairs").iterdir()):
        if not (folder / "model.onnx").is_file():
            continue
        cache = read_cache(folder / "calibration.cache")
        _, report = to_qdq(folder / "model.onnx", cache.scales)
        qdq_internal = [n for n, r in report.unused_scales.items() if "TensorRT-internal" in r]
        graph, float_tensors = read_model_graph(folder / "model.onnx")
        check = check_cache(cache, graph, float_tensors=float_tensors)
        assert qdq_internal == check.trt_internal, folder.name
