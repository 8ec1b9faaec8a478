"""TensorRT's scale-sharing rules applied by ``calibrate`` and ``select`` (docs/sharing.md)."""

from __future__ import annotations

import pytest

import calibkit as ck
from calibkit.cache.format import read_cache
from calibkit.cli import main
from calibkit.onnx.graph import Graph

pytest.importorskip("onnxruntime")

EXAMPLE = "examples/fashion_mnist"


@pytest.fixture(scope="module")
def example(request):
    folder = request.config.rootpath / EXAMPLE
    return folder / "model.onnx", folder / "calib.npz"


@pytest.fixture(scope="module")
def graph(example):
    return Graph.from_onnx(example[0])


def run(example, out, *extra):
    model, data = example
    argv = ["calibrate", str(model), "--data", str(data), "--max-samples", "64", "-o", str(out)]
    assert main([*argv, "--no-progress", "--table", "0", *extra]) == 0
    return read_cache(out).scales


def pool_pairs(graph):
    return [(n.inputs[0], n.outputs[0]) for n in graph.nodes if n.op_type == "MaxPool"]


def concat_pairs(graph):
    return [(i, n.outputs[0]) for n in graph.nodes if n.op_type == "Concat" for i in n.inputs]


def test_pooling_outputs_take_their_input_scale(example, graph, tmp_path, capsys):
    shared = run(example, tmp_path / "a.cache", "--trt-version", "10.16")
    own = run(example, tmp_path / "b.cache", "--trt-version", "10.16", "--share-scales", "none")
    assert "rule P moved 2 tensor(s)" in capsys.readouterr().out
    for src, pooled in pool_pairs(graph):
        assert shared[pooled] == shared[src]
        assert own[pooled] != own[src]  # the pooled tensor's own histogram differs
    # from TensorRT 8.5 Concat inputs keep their own scales
    assert any(shared[i] != shared[out] for i, out in concat_pairs(graph))
    others = set(shared) - {pooled for _, pooled in pool_pairs(graph)}
    assert all(shared[name] == own[name] for name in others)


def test_trt7_concat_inputs_take_the_output_scale(example, graph, tmp_path):
    scales = run(example, tmp_path / "a.cache", "--trt-version", "7.2.1")  # no warning: settled
    for i, out in concat_pairs(graph):
        assert scales[i] == scales[out]


def test_select_applies_the_recorded_rules(example, tmp_path):
    first = tmp_path / "a.cache"
    run(example, first, "--trt-version", "10.16")
    again = tmp_path / "again.cache"
    assert main(["select", str(tmp_path / "a.stats.npz"), "-a", "entropy2", "-o", str(again)]) == 0
    assert again.read_bytes() == first.read_bytes()
    raw = tmp_path / "raw.cache"
    argv = ["select", str(tmp_path / "a.stats.npz"), "-a", "entropy2", "-o", str(raw)]
    assert main([*argv, "--share-scales", "none"]) == 0
    assert raw.read_bytes() != first.read_bytes()


def test_python_api_reports_moves(example):
    model, data = example
    result = ck.calibrate_onnx(model, data, trt_version="8.0.1", max_samples=32)
    assert set(result.sharing.rules) == {"P", "C"}
    assert result.sharing.moved_by("P")
    assert result.settings.graph.nodes


@pytest.fixture
def constant_add_model(tmp_path):
    """y = x + c with c a Constant node: TensorRT 10 calibrates c and writes 'c_output'."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = numpy_helper.from_array(np.array([0.5, -3.0, 2.0], np.float32), "cval")
    nodes = [
        helper.make_node("Constant", [], ["c"], value=c),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    path = tmp_path / "add.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_trt10_names_include_calibrated_constants(constant_add_model, tmp_path, rng):
    import numpy as np

    np.save(tmp_path / "x.npy", rng.standard_normal((4, 3)).astype(np.float32))
    data = tmp_path / "x.npy"
    result = ck.calibrate_onnx(constant_add_model, data, trt_version="10.16", algorithm="minmax")
    assert sorted(result.cache.scales) == ["c_output", "x", "y"]
    assert result.cache.scales["c_output"] == ck.scale_from_amax(3.0)  # max |c|, like MinMax
    onnx_names = ck.calibrate_onnx(
        constant_add_model, data, trt_version="10.16", algorithm="minmax", names="onnx"
    )
    assert list(onnx_names.cache.scales) == ["x", "y"]
    older = ck.calibrate_onnx(constant_add_model, data, trt_version="8.6", algorithm="minmax")
    assert list(older.cache.scales) == ["x", "y"]  # TensorRT 8 names constants itself
    result.write(tmp_path / "m.cache")
    again = ck.select_from_stats(tmp_path / "m.stats.npz", "minmax")
    assert again.scales == result.cache.scales
