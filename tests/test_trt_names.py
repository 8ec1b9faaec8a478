"""TensorRT cache names: checked against TensorRT's caches for the pairs' real ONNX files."""

from __future__ import annotations

import re

import numpy as np
import pytest

from calibkit.cache.format import read_cache
from calibkit.onnx.graph import Graph
from calibkit.rules.names import constant_values, trt_amax, trt_cache_names
from calibkit.scale import scale_from_amax
from calibkit.selectors import make_selector

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

UNNAMED = re.compile(r"\(Unnamed Layer\* (\d+)\) \[(\w+)\]_output")


def pair(shared_testdata, name):
    folder = shared_testdata / "onnx_cache_pairs" / name
    return folder, read_cache(folder / "calibration.cache")


def test_trt841_names_and_the_removed_reshape(shared_testdata):
    folder, cache = pair(shared_testdata, "muqadas2_cnndepthwise_trt8401_ec2")
    names = trt_cache_names(folder / "model.onnx", trt_version=cache.version)
    onnx_named = [n for n in cache.scales if not UNNAMED.fullmatch(n)]
    assert sorted(names.names) == sorted(onnx_named)  # 28 of 28, nothing extra
    removed = "sequential_11_1/sequential_11_1/sequential_7_1/conv2d_13_1/BiasAdd__13:0"
    assert "removes it" in names.no_line[removed]
    constants = [n for n in cache.scales if UNNAMED.fullmatch(n)]
    assert len(names.unknown) == len(constants) == 8
    assert all(u.matches(c) for u, c in zip(names.unknown, constants, strict=True))


def test_trt841_constants_calibrate_like_activations(shared_testdata):
    """Each constant's Entropy2 scale, from a one-batch histogram of its values, is bit-exact."""
    folder, cache = pair(shared_testdata, "muqadas2_cnndepthwise_trt8401_ec2")
    model = onnx.load(str(folder / "model.onnx"))
    names = trt_cache_names(model, trt_version=cache.version)
    arrays = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    # TensorRT numbers its layers in parse order, which is the order calibkit reports them in.
    lines = sorted(
        (n for n in cache.scales if UNNAMED.fullmatch(n)),
        key=lambda n: int(UNNAMED.fullmatch(n)[1]),
    )
    selector = make_selector("entropy2")
    from calibkit.histogram import Histogram

    for unknown, line in zip(names.unknown, lines, strict=True):
        amax = selector.select(Histogram().fill(arrays[unknown.source]))
        assert scale_from_amax(amax) == cache.scales[line], (unknown.source, line)
        w = np.abs(arrays[unknown.source]).max()
        assert scale_from_amax(float(w) * 2048.5 / 2048) == cache.scales[line]


def test_trt801_shape_tensors_and_prelu_constants(shared_testdata):
    """8.0.1 ResUNet (cache names are the ONNX numbers + 8, see the pair's source.md)."""
    folder, cache = pair(shared_testdata, "lannyyip_resunet_trt8001_ec2")
    names = trt_cache_names(folder / "model.onnx", trt_version=cache.version)
    shifted = {str(int(n) + 8) if n.isdigit() else n for n in names.names}
    onnx_named = {n for n in cache.scales if not UNNAMED.fullmatch(n)}
    assert shifted == onnx_named  # 76 of 76
    assert names.no_line["63"] == "shape computation"  # Shape(input0)
    kinds = sorted(UNNAMED.fullmatch(n)[2] for n in cache.scales if UNNAMED.fullmatch(n))
    assert kinds == ["Constant"] * 16 + ["Shuffle"] * 16
    reported = [u for u in names.unknown]
    assert len(reported) == 32  # one constant and one broadcast Shuffle per PRelu slope
    assert sum("broadcast" in u.reason for u in reported) == 16


@pytest.mark.parametrize(
    "name",
    ["jkjung_yolov3tiny_trt7103_ec2", "liujuanlt_vgg16_trt7201_ec2", "zxm97_retinalp_trt8501_ec2"],
    ids=["trt7103", "trt7201", "trt8501"],
)
def test_graph_json_names_are_cache_names(shared_testdata, name):
    folder, cache = pair(shared_testdata, name)
    names = trt_cache_names(Graph.from_json(folder / "graph.json"), trt_version=cache.version)
    assert set(names.names) <= set(cache.scales)


@pytest.mark.parametrize(
    "name",
    [
        "dataprodigy_yolo11_trt100300_ec2",
        "rtipvd_yolov8_trt100300_minmax",
        "goldentiger_yolo11m_trt101200_ec2",
    ],
    ids=["trt1003-ec2", "trt1003-minmax", "trt1012"],
)
def test_trt10_softmax_second_line(shared_testdata, name):
    folder, cache = pair(shared_testdata, name)
    graph = Graph.from_json(folder / "graph.json", rename_rewrites=True)
    names = trt_cache_names(graph, trt_version=cache.version)
    aliases = [line for line in names.lines if line.kind == "alias"]
    assert aliases
    for line in aliases:
        assert line.name.endswith("/Softmax_output")
        assert cache.scales[line.name] == cache.scales[line.source]  # same values, same scale


# --- synthetic models ---------------------------------------------------------------------------


def model(nodes, inits=(), opset=17, x_shape=(1, 3, 4, 4)):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_trt10_constant_names_and_broadcast():
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [2.0])
    m = model(
        [
            helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", 1, [], [3.0])),
            helper.make_node("Mul", ["x", "c"], ["a"], name="mul"),
            helper.make_node("Add", ["a", "k"], ["b"], name="add"),
        ],
        inits=[k],
    )
    names = trt_cache_names(m, trt_version=(10, 3, 0))
    assert names.names == ["x", "a", "c_output", "b", "k_output"]
    assert {u.source for u in names.unknown} == {"c", "k"}  # rank 0 and 1 < 4: broadcast
    assert all(u.matches("ONNXTRT_Broadcast_12_output") for u in names.unknown)
    values = constant_values(m, names)
    assert values["c_output"].tolist() == 3.0
    assert values["k_output"].tolist() == [2.0]


def test_before_trt10_constants_are_unknowable():
    k = helper.make_tensor("k", TensorProto.FLOAT, [1, 3, 1, 1], [1.0, -2.0, 0.5])
    m = model([helper.make_node("Mul", ["x", "k"], ["a"], name="mul")], inits=[k])
    names = trt_cache_names(m, trt_version=(8, 6, 1))
    assert names.names == ["x", "a"]
    (unknown,) = names.unknown  # same rank: no broadcast Shuffle
    assert unknown.matches("(Unnamed Layer* 3) [Constant]_output")
    assert (unknown.source, unknown.node) == ("k", "mul")


@pytest.mark.parametrize(
    ("shape", "removed"),
    [([1, 3, 4, 4], True), ([0, 3, -1, 4], True), ([1, 3, 16], False), ([1, 3, 2, 8], False)],
    ids=["same", "zero-and-minus-one", "rank-change", "other-shape"],
)
def test_identity_reshape_gets_no_line(shape, removed):
    s = helper.make_tensor("s", TensorProto.INT64, [len(shape)], shape)
    m = model(
        [
            helper.make_node("Reshape", ["x", "s"], ["r"], name="reshape"),
            helper.make_node("Relu", ["r"], ["y"], name="relu"),
        ],
        inits=[s],
    )
    names = trt_cache_names(m, trt_version=(8, 4, 1))
    assert ("r" in names.no_line) is removed
    assert ("r" in names.names) is not removed


def test_shape_subgraph_and_integer_outputs_get_no_line():
    m = model(
        [
            helper.make_node("Shape", ["x"], ["sh"], name="shape"),
            helper.make_node("Cast", ["sh"], ["shf"], name="cast", to=TensorProto.FLOAT),
            helper.make_node("ArgMax", ["x"], ["idx"], name="argmax", axis=1),
            helper.make_node("Relu", ["x"], ["y"], name="relu"),
        ]
    )
    names = trt_cache_names(m, trt_version=(10, 3, 0))
    assert names.names == ["x", "y"]
    assert names.no_line == {
        "sh": "shape computation",
        "shf": "shape computation",
        "idx": "integer tensor",
    }


@pytest.mark.parametrize(("opset", "flattened"), [(11, True), (13, False)], ids=["11", "13"])
def test_trt10_softmax_lines(opset, flattened):
    m = model(
        [helper.make_node("Softmax", ["x"], ["s"], name="/head/Softmax", axis=1)], opset=opset
    )
    names = trt_cache_names(m, trt_version=(10, 12, 0))
    assert names.sources["/head/Softmax_output"] == "s"
    assert any(u.matches("ONNXTRT_flattenTensor_7_output") for u in names.unknown) is flattened
    assert trt_cache_names(m, trt_version=(8, 6, 1)).names == ["x", "s"]


def test_trt_amax_renames_and_reports_missing():
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [2.0])
    m = model(
        [
            helper.make_node("Add", ["x", "k"], ["a"], name="add"),
            helper.make_node("Softmax", ["a"], ["s"], name="sm", axis=1),
        ],
        inits=[k],
        opset=13,
    )
    names = trt_cache_names(m, trt_version=(10, 3, 0))
    amax = {"x": 1.0, "a": 2.0, "k_output": 2.0 * 2048.5 / 2048, "s": 0.5, "unused": 9.0}
    out, missing = trt_amax(amax, names)
    assert out == {"x": 1.0, "a": 2.0, "k_output": amax["k_output"], "s": 0.5, "sm_output": 0.5}
    assert missing == []
    del amax["s"]
    assert trt_amax(amax, names)[1] == ["s", "sm_output"]
