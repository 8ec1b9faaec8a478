"""OnnxActivationSource on tiny ONNX graphs built here, checked against NumPy."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from scipy.special import erf

from calibkit import HistogramCollector
from calibkit.data.sources import DataError, InputSpec
from calibkit.errors import CalibkitError
from calibkit.onnx.source import OnnxActivationSource

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

CNN_TENSORS = ["x", "/conv/Conv_output_0", "relu", "flat", "onnx::MatMul_7", "logits", "scaled"]


def _model(nodes, inputs, outputs, initializers=(), opsets=(("", 17),)):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opset = [helper.make_opsetid(domain, v) for domain, v in opsets]
    model = helper.make_model(graph, opset_imports=opset)
    model.ir_version = 8  # readable by every supported onnxruntime
    return model


def make_cnn(rng):
    """Conv -> Relu -> Reshape (int64 shape branch) -> MatMul -> Add -> Mul by a Constant.

    Also a float "shape arithmetic" output (Shape -> Cast -> Mul) that TensorRT folds away.
    Returns the model and its weights for the NumPy reference.
    """
    w = {
        "W": rng.normal(size=(2, 3, 3, 3)).astype(np.float32),
        "B": rng.normal(size=2).astype(np.float32),
        "Wm": rng.normal(size=(32, 5)).astype(np.float32),
        "bm": rng.normal(size=5).astype(np.float32),
        "k": np.array([1, -2, 3, -4, 5], np.float32),
    }
    inits = [numpy_helper.from_array(w[n], n) for n in ("W", "B", "Wm", "bm")]
    inits += [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes0"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["/conv/Conv_output_0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["/conv/Conv_output_0"], ["relu"]),
        helper.make_node("Shape", ["relu"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"]),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["new_shape"], axis=0),
        helper.make_node("Reshape", ["relu", "new_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "Wm"], ["onnx::MatMul_7"]),
        helper.make_node("Add", ["onnx::MatMul_7", "bm"], ["logits"]),
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(w["k"])),
        helper.make_node("Mul", ["logits", "k"], ["scaled"]),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["shape_f", "half"], ["half_shape"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])
    outs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("scaled", "half_shape")
    ]
    return _model(nodes, [x], outs, inits), w


def cnn_reference(x, w):
    """The CNN in plain NumPy."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    conv = np.einsum("nchwij,ocij->nohw", win, w["W"]) + w["B"][None, :, None, None]
    relu = np.maximum(conv, 0)
    flat = relu.reshape(len(x), -1)
    mm = flat @ w["Wm"]
    logits = mm + w["bm"]
    values = [x, conv, relu, flat, mm, logits, logits * w["k"]]
    return dict(zip(CNN_TENSORS, values, strict=True))


def make_two_inputs():
    """Two float inputs and an int64 one: Add, Cast, Mul, and an int ArgMax output."""
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sum", "ids_f"], ["prod"]),
        helper.make_node("ArgMax", ["prod"], ["argmax"], axis=1),
    ]
    inputs = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 4]),
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 4]),
    ]
    outputs = [
        helper.make_tensor_value_info("prod", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("argmax", TensorProto.INT64, None),
    ]
    return _model(nodes, inputs, outputs)


def _source(model, **kwargs):
    return OnnxActivationSource(model, num_threads=1, **kwargs)


@pytest.fixture
def cnn(rng):
    return make_cnn(rng)


def test_inputs_are_described(cnn):
    source = _source(cnn[0])
    assert source.inputs == [InputSpec("x", np.dtype(np.float32), ("batch", 3, 4, 4))]


def test_yields_every_data_float_tensor_in_graph_order(cnn):
    # int64 shape tensors, the Constant, initializers and float shape arithmetic are left out
    assert _source(cnn[0]).tensor_names == CNN_TENSORS


def test_activations_match_numpy_for_every_batch_size(cnn, rng):
    model, w = cnn
    batches = [{"x": rng.normal(size=(n, 3, 4, 4)).astype(np.float32)} for n in (1, 3, 2)]
    got = list(_source(model).run(batches))
    assert len(got) == len(batches)
    for batch, activations in zip(batches, got, strict=True):
        want = cnn_reference(batch["x"], w)
        assert list(activations) == CNN_TENSORS
        for name in CNN_TENSORS:
            np.testing.assert_allclose(activations[name], want[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimization", ["basic", "all"])
def test_optimised_sessions_keep_names_and_values(cnn, rng, optimization):
    model = cnn[0]
    batch = {"x": rng.normal(size=(2, 3, 4, 4)).astype(np.float32)}
    (plain,) = _source(model).run([batch])
    (fast,) = _source(model, optimization=optimization).run([batch])
    assert list(fast) == list(plain)
    for name in plain:
        np.testing.assert_allclose(fast[name], plain[name], rtol=1e-4, atol=1e-4)  # kernels differ


def test_unknown_optimization_level_is_rejected(cnn):
    with pytest.raises(ValueError, match="optimization must be one of"):
        _source(cnn[0], optimization="max")


def test_tensor_filter_is_a_regex_search(cnn):
    assert _source(cnn[0], tensors=r"^(relu|logits)$").tensor_names == ["relu", "logits"]
    assert _source(cnn[0], tensors="Conv|MatMul").tensor_names == [
        "/conv/Conv_output_0",
        "onnx::MatMul_7",
    ]


def test_tensor_filter_matching_nothing_is_an_error(cnn):
    with pytest.raises(ValueError, match="no float activation matches --tensors 'nothing'"):
        _source(cnn[0], tensors="nothing")
    with pytest.raises(ValueError, match=r"bad --tensors regular expression '\('"):
        _source(cnn[0], tensors="(")


def test_inputs_alone_need_no_onnxruntime_run(cnn, rng):
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    (got,) = _source(cnn[0], tensors="^x$").run([{"x": x}])
    assert list(got) == ["x"]
    assert got["x"] is x


def test_weights_gathered_up_to_an_input_length_are_activations(rng):
    # position embeddings: E[:seq] depends on the input's shape and reads a weight tensor, so
    # TensorRT computes it per batch; seq * 0.5 is shape arithmetic and is not calibrated
    table = rng.normal(size=(10, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(table, "E"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["seq"]),
        helper.make_node("Range", ["zero", "seq", "one"], ["positions"]),
        helper.make_node("Gather", ["E", "positions"], ["pos_emb"]),
        helper.make_node("Cast", ["seq"], ["seq_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["seq_f", "half"], ["half_seq"]),
        helper.make_node("Relu", ["x"], ["relu"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "seq"])
    outs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
        for n in ("pos_emb", "half_seq", "relu")
    ]
    source = _source(_model(nodes, [x], outs, inits))
    assert source.tensor_names == ["x", "pos_emb", "relu"]
    (got,) = source.run([{"x": rng.normal(size=(2, 4)).astype(np.float32)}])
    np.testing.assert_array_equal(got["pos_emb"], table[:4])


def test_two_float_inputs_and_an_int_input(rng):
    source = _source(make_two_inputs())
    assert [spec.name for spec in source.inputs] == ["a", "b", "ids"]
    assert source.tensor_names == ["a", "b", "sum", "ids_f", "prod"]
    a, b = rng.normal(size=(2, 3, 4)).astype(np.float32)
    ids = rng.integers(0, 5, size=(3, 4))
    (got,) = source.run([{"a": a, "b": b, "ids": ids}])
    np.testing.assert_array_equal(got["sum"], a + b)
    np.testing.assert_array_equal(got["ids_f"], ids.astype(np.float32))
    np.testing.assert_array_equal(got["prod"], (a + b) * ids.astype(np.float32))


def test_tensors_without_inferred_type_are_typed_by_onnxruntime(rng):
    # ONNX shape inference does not know com.microsoft ops: 'g' and 'r' have no type info
    nodes = [
        helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
        helper.make_node("Relu", ["g"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    outs = [helper.make_tensor_value_info("s", TensorProto.INT64, None)]
    model = _model(nodes, [x], outs, opsets=(("", 17), ("com.microsoft", 1)))
    inferred = onnx.shape_inference.infer_shapes(model)
    assert "g" not in {v.name for v in inferred.graph.value_info}
    source = _source(model)
    assert source.tensor_names == ["x", "g", "r"]
    xs = rng.normal(size=(3, 4)).astype(np.float32)
    (got,) = source.run([{"x": xs}])
    gelu = 0.5 * xs * (1 + erf(xs / np.sqrt(2)))
    np.testing.assert_allclose(got["r"], np.maximum(gelu, 0), rtol=1e-5, atol=1e-6)


def test_chunked_runs_give_the_same_histograms(cnn, rng):
    model = cnn[0]
    batches = [{"x": rng.normal(size=(2, 3, 4, 4)).astype(np.float32)} for _ in range(3)]
    whole = HistogramCollector(num_bins=64)
    for activations in _source(model).run(batches):
        whole.update(activations)
    source = _source(model, max_tensors_per_run=2)
    parts = list(source.run(batches))
    assert len(parts) == 3 * 3  # 6 node outputs in groups of 2, per batch
    assert [name for part in parts[:3] for name in part] == CNN_TENSORS
    chunked = HistogramCollector(num_bins=64)
    for activations in parts:
        chunked.update(activations)
    assert list(chunked.histograms_) == list(whole.histograms_)
    for name, hist in whole.histograms_.items():
        assert chunked.histograms_[name] == hist


def test_max_tensors_per_run_must_be_positive(cnn):
    with pytest.raises(ValueError, match="max_tensors_per_run must be a positive int"):
        _source(cnn[0], max_tensors_per_run=0)


def test_external_data_is_read_from_the_model_folder(cnn, rng, tmp_path, monkeypatch):
    model, w = cnn
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(
        model,
        str(folder / "cnn.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="cnn.weights",
        size_threshold=64,  # weights outside; onnxruntime needs small shape inputs inline
    )
    assert (folder / "cnn.weights").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    source = _source(folder / "cnn.onnx")
    assert source.tensor_names == CNN_TENSORS
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    (got,) = source.run([{"x": x}])
    np.testing.assert_allclose(got["scaled"], cnn_reference(x, w)["scaled"], rtol=1e-5, atol=1e-5)


def test_missing_external_data_file_is_named(cnn, tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save_model(
        cnn[0], str(path), save_as_external_data=True, location="w.bin", size_threshold=64
    )
    (tmp_path / "w.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"external data file .*w\.bin not found"):
        _source(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ONNX model .*nope\.onnx not found"):
        _source(tmp_path / "nope.onnx")


def test_batches_are_checked_against_the_model(cnn):
    source = _source(cnn[0])
    bad = {"x": np.zeros((1, 3, 4, 4), np.float64)}
    with pytest.raises(DataError, match=r"batch 0: input 'x' has dtype float64, the model expects"):
        next(source.run([bad]))
    with pytest.raises(DataError, match=r"missing \['x'\]"):
        next(source.run([{"y": np.zeros((1, 3, 4, 4), np.float32)}]))


def test_onnxruntime_failures_name_the_batch(rng):
    # a Reshape to a fixed size only some batch sizes can take
    shape = numpy_helper.from_array(np.array([2, 8], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    source = _source(_model(nodes, [x], [y], [shape]))
    good, bad = ({"x": rng.normal(size=(n, 4)).astype(np.float32)} for n in (4, 3))
    with pytest.raises(CalibkitError, match="onnxruntime failed on batch 1"):
        list(source.run([good, bad]))


def test_iterating_needs_data(cnn, rng):
    with pytest.raises(ValueError, match="no data"):
        iter(_source(cnn[0]))
    batch = {"x": rng.normal(size=(1, 3, 4, 4)).astype(np.float32)}
    assert len(list(OnnxActivationSource(cnn[0], [batch, batch], num_threads=1))) == 2


def test_activations_are_not_kept_between_batches(cnn, rng):
    source = _source(cnn[0])
    batches = ({"x": rng.normal(size=(2, 3, 4, 4)).astype(np.float32)} for _ in range(4))
    refs = []
    for activations in source.run(batches):
        refs.append(weakref.ref(activations["relu"]))
        del activations
        gc.collect()
        assert all(ref() is None for ref in refs[:-1])
