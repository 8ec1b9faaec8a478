"""Scale sharing: the rules checked against TensorRT's own caches for the ONNX/cache pairs."""

from __future__ import annotations

import warnings
from collections import defaultdict

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from calibkit.cache.format import read_cache
from calibkit.onnx.graph import Graph, Node
from calibkit.rules.sharing import (
    POOLING_OPS,
    UnsettledVersionWarning,
    rules_for_version,
    share_scales,
)

PAIRS = [
    "jkjung_yolov3tiny_trt7103_ec2",
    "liujuanlt_vgg16_trt7201_ec2",
    "lannyyip_resunet_trt8001_ec2",
    "muqadas2_cnndepthwise_trt8401_ec2",
    "zxm97_retinalp_trt8501_ec2",
    "invigilo_yolov5l_trt8502_ec2",
    "dataprodigy_yolo11_trt100300_ec2",
    "rtipvd_yolov8_trt100300_minmax",
    "goldentiger_yolo11m_trt101200_ec2",
]


def load_pair(root, name):
    """Graph and cache bits of one pair."""
    folder = root / "onnx_cache_pairs" / name
    graph = Graph.from_json(folder / "graph.json", rename_rewrites=True)
    cache = read_cache(folder / "calibration.cache")
    bits = {n: int(np.float32(s).view(np.uint32)) for n, s in cache.scales.items()}
    return graph, cache.version, bits


def tokens(graph, bits, version, rules="trt"):
    """Run the pass on symbolic values: each tensor starts as its own name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsettledVersionWarning)
        names = [t for t in graph.tensors if t in bits]
        return share_scales(graph, {t: t for t in names}, trt_version=version, rules=rules)


def broken_ties(result, bits):
    """Tensors the pass ties together whose TensorRT scales differ."""
    groups = defaultdict(list)
    for name, token in result.amax.items():
        groups[token].append(name)
    return [g for g in groups.values() if len({bits[t] for t in g}) > 1]


@pytest.fixture(params=PAIRS)
def pair(request, shared_testdata):
    return load_pair(shared_testdata, request.param)


def test_every_predicted_tie_is_in_the_cache(pair):
    graph, version, bits = pair
    assert broken_ties(tokens(graph, bits, version), bits) == []


def test_pooling_outputs_take_their_input_scale(pair):
    graph, version, bits = pair
    result = tokens(graph, bits, version)
    overwritten = result.moved_by("C")
    for node in graph.nodes:
        if node.op_type in POOLING_OPS and node.inputs[0] not in overwritten:
            assert result.amax[node.outputs[0]] == result.amax[node.inputs[0]]
            assert bits[node.outputs[0]] == bits[node.inputs[0]], node.label


@pytest.mark.parametrize("name", PAIRS[5:], ids=PAIRS[5:])
def test_concat_rule_would_contradict_newer_tensorrt(shared_testdata, name):
    graph, version, bits = load_pair(shared_testdata, name)
    assert broken_ties(tokens(graph, bits, version, rules="P,C"), bits) != []


@pytest.mark.parametrize("name", [PAIRS[0], PAIRS[2]], ids=["trt7103", "trt8001"])
def test_concat_rule_in_old_tensorrt(shared_testdata, name):
    graph, version, bits = load_pair(shared_testdata, name)
    result = tokens(graph, bits, version)
    assert result.rules == ("P", "C")
    moved = result.moved_by("C")
    assert moved
    for tensor, concat_output in moved.items():
        assert bits[tensor] == bits[concat_output]
    assert all(
        bits[t] == bits[n.outputs[0]]
        for n in graph.nodes
        if n.op_type == "Concat"
        for t in n.inputs
    )


@pytest.mark.parametrize("name", [PAIRS[0], PAIRS[2]], ids=["trt7103", "trt8001"])
def test_pooling_runs_before_concat(shared_testdata, name):
    """A pooling output keeps its input's own scale even when rule C then overwrites the input."""
    graph, version, bits = load_pair(shared_testdata, name)
    result = tokens(graph, bits, version)
    overwritten = result.moved_by("C")
    cases = [n for n in graph.nodes if n.op_type in POOLING_OPS and n.inputs[0] in overwritten]
    assert cases
    for node in cases:
        assert result.amax[node.outputs[0]] != result.amax[node.inputs[0]]
        assert bits[node.outputs[0]] != bits[node.inputs[0]], node.label
        assert bits[node.outputs[0]] != bits[overwritten[node.inputs[0]]], node.label


def test_pooling_direction_is_forward(shared_testdata):
    """VGG16 (7.2.1): MaxPool 63 and AveragePool 64 carry 62's scale; Flatten 65 (same data) not."""
    graph, version, bits = load_pair(shared_testdata, "liujuanlt_vgg16_trt7201_ec2")
    result = tokens(graph, bits, version)
    assert result.amax["64"] == result.amax["63"] == "62"
    assert bits["64"] == bits["63"] == bits["62"] != bits["65"]


def test_pair_counts_match_the_readme(shared_testdata):
    """README: 23 checkable pooling outputs equal their input; 8 of 8 Concat inputs under C."""
    p_ok = c_ok = 0
    for name in PAIRS:
        graph, version, bits = load_pair(shared_testdata, name)
        result = tokens(graph, bits, version)
        overwritten = result.moved_by("C")
        p_ok += sum(
            bits[m.name] == bits[m.source]
            for m in result.moves
            if m.rule == "P" and m.source not in overwritten
        )
        c_ok += sum(bits[t] == bits[o] for t, o in overwritten.items())
    assert (p_ok, c_ok) == (23, 8)


# --- the pass on small graphs -------------------------------------------------------------------


def chain(*specs, inputs=("x",)):
    return Graph(tuple(Node(op, tuple(i), tuple(o)) for op, i, o in specs), inputs)


def test_pooling_chain_carries_the_first_input():
    g = chain(("MaxPool", ["x"], ["a"]), ("AveragePool", ["a"], ["b"]))
    result = share_scales(g, {"x": 3.0, "a": 2.0, "b": 1.0}, trt_version=(10, 3, 0))
    assert result.amax == {"x": 3.0, "a": 3.0, "b": 3.0}
    assert [(m.rule, m.name, m.source) for m in result.moves] == [("P", "a", "x"), ("P", "b", "a")]


def test_topologically_last_concat_wins():
    g = chain(
        ("Concat", ["x", "y"], ["c1"]),
        ("Concat", ["x", "c1"], ["c2"]),
        inputs=("x", "y"),
    )
    values = {"x": 1.0, "y": 2.0, "c1": 3.0, "c2": 4.0}
    result = share_scales(g, values, trt_version=(7, 1, 3))
    # x feeds both Concats: c2 (the last) wins; c1 itself takes c2's value, and so y.
    assert result.amax == {"x": 4.0, "y": 4.0, "c1": 4.0, "c2": 4.0}


def test_concat_of_a_concat_reaches_inputs_of_the_first():
    g = chain(
        ("Concat", ["x", "y"], ["c1"]),
        ("Relu", ["c1"], ["r"]),
        ("Concat", ["c1", "r"], ["c2"]),
        inputs=("x", "y"),
    )
    values = {"x": 1.0, "y": 2.0, "c1": 3.0, "r": 5.0, "c2": 6.0}
    result = share_scales(g, values, trt_version=(8, 0, 1))
    assert result.amax == {"x": 6.0, "y": 6.0, "c1": 6.0, "r": 6.0, "c2": 6.0}


def test_missing_values_are_recorded_not_invented():
    g = chain(("MaxPool", ["x"], ["p"]), ("Concat", ["p", "w"], ["c"]), inputs=("x", "w"))
    result = share_scales(g, {"p": 1.0, "c": 2.0}, trt_version=(7, 2, 1))
    assert result.amax == {"p": 2.0, "c": 2.0}
    assert [(rule, name) for rule, _, name, _ in result.skipped] == [("P", "p"), ("C", "w")]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [("none", ()), ("P", ("P",)), ("C,P", ("P", "C")), (["C"], ("C",)), ("trt", ("P", "C"))],
    ids=["none", "P", "comma-list", "iterable", "trt"],
)
def test_rule_selection(rules, expected):
    g = chain(("MaxPool", ["x"], ["p"]))
    assert (
        share_scales(g, {"x": 1.0, "p": 2.0}, trt_version=(7, 0, 0), rules=rules).rules == expected
    )


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match=r"unknown sharing rule\(s\) \['Q'\]"):
        share_scales(chain(), {}, trt_version=(8, 5, 1), rules="P,Q")


@pytest.mark.parametrize(
    ("version", "rules"),
    [((6, 0, 1), ("P", "C")), ((8, 0, 3), ("P", "C")), ((8, 5, 1), ("P",)), ((10, 12, 0), ("P",))],
    ids=["6.0.1", "8.0.3", "8.5.1", "10.12"],
)
def test_settled_versions(version, rules):
    assert rules_for_version(version) == rules


@pytest.mark.parametrize("version", [(8, 2, 1), (8, 4, 2), (9, 0, 0)], ids=["8.2", "8.4", "9.0"])
def test_unsettled_versions_warn_and_default_to_pooling_only(version):
    with pytest.warns(UnsettledVersionWarning, match="not settle|no real cache settles"):
        result = share_scales(chain(), {}, trt_version=version)
    assert result.rules == ("P",)


def test_explicit_rules_do_not_warn():
    assert share_scales(chain(), {}, trt_version=(8, 4, 1), rules="P,C").rules == ("P", "C")


OPS = ["MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Relu", "Add", "Conv"]


@st.composite
def graphs(draw):
    n = draw(st.integers(0, 12))
    tensors, nodes = ["t0"], []
    for i in range(n):
        op = draw(st.sampled_from(OPS))
        arity = draw(st.integers(2, 3)) if op in ("Concat", "Add") else 1
        inputs = [draw(st.sampled_from(tensors)) for _ in range(arity)]
        nodes.append(Node(op, tuple(inputs), (f"t{i + 1}",)))
        tensors.append(f"t{i + 1}")
    values = {t: float(k) for k, t in enumerate(tensors)}
    return Graph(tuple(nodes), ("t0",)), values


@settings(max_examples=60, deadline=None)
@given(graphs(), st.sampled_from([(7, 1, 3), (10, 3, 0)]))
def test_pass_invariants(case, version):
    graph, values = case
    result = share_scales(graph, values, trt_version=version)
    assert set(result.amax.values()) <= set(values.values())  # values are copied, never made
    assert share_scales(graph, values, trt_version=version, rules="none").amax == values
    for node in graph.nodes:  # after the pass, every Concat input equals the output (rule C)
        if node.op_type == "Concat" and "C" in result.rules:
            last = [n for n in graph.nodes if n.op_type == "Concat"]
            for t in node.inputs:
                winner = [n for n in last if t in n.inputs][-1]
                assert result.amax[t] == result.amax[winner.outputs[0]]
