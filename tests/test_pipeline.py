"""One scale pipeline: every command that turns statistics into scales gives the same scales."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import calibkit as ck
from calibkit.cache.format import read_cache
from calibkit.cli import main

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

ROOT = Path(__file__).parents[1]
MODEL = ROOT / "examples" / "fashion_mnist" / "model.onnx"
# statistics of the bundled model (calib.npz, TensorRT 10.16), see tests/data/golden_stats
STATS = ROOT / "tests" / "data" / "golden_stats" / "fashion.stats.npz"


def _activation_scales(path) -> dict[str, bytes]:
    """Tensor -> the bytes of the scale its activation QuantizeLinear uses."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            out[node.input[0]] = inits[node.input[1]].tobytes()
    return out


@pytest.mark.parametrize("spec", ["entropy2", "minmax", "percentile:99.99"])
def test_qdq_from_stats_equals_qdq_from_the_selected_cache(spec, tmp_path, capsys):
    cache = tmp_path / "c.cache"
    header = ["--header-algorithm", "EntropyCalibration2"] if "percentile" in spec else []
    assert main(["select", str(STATS), "-a", spec, "-o", str(cache), *header]) == 0
    a, b = tmp_path / "stats.onnx", tmp_path / "cache.onnx"
    assert main(["qdq", str(MODEL), "--stats", str(STATS), "--algorithm", spec, "-o", str(a)]) == 0
    out = capsys.readouterr().out
    assert "scale sharing (TensorRT 10.16.0 rules): rule P moved 2 tensor(s)" in out
    assert main(["qdq", str(MODEL), "--cache", str(cache), "-o", str(b)]) == 0
    from_stats, from_cache = _activation_scales(a), _activation_scales(b)
    assert from_stats and from_stats == from_cache
    # the pooling output is quantised with its input's scale, as TensorRT deploys it
    scales = read_cache(cache).scales
    assert scales["max_pool2d_1"] == scales["cat"]
    assert from_stats["max_pool2d_1"] == np.float32(scales["cat"]).tobytes()


def test_python_compare_equals_cli_compare(tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["compare", str(STATS), "--json", str(out), "--table", "0"]) == 0
    assert "rule P moved 2 tensor(s)" in capsys.readouterr().out
    cli = json.loads(out.read_text())
    python = json.loads(json.dumps(ck.compare(STATS).to_dict()))
    assert python == cli
    assert ck.compare(ck.load_stats(STATS)).to_dict() == ck.compare(STATS).to_dict()


def test_compare_judges_the_cache_amax():
    """compare's amax for every tensor is the one the cache of 'select' deploys."""
    comparison = ck.compare(STATS, ["entropy2", "minmax"])
    for spec in ("entropy2", "minmax"):
        cache = ck.select_from_stats(STATS, spec)
        for name, per_alg in comparison.by_tensor().items():
            assert ck.scale_from_amax(per_alg[spec].amax) == cache.scales[name], (spec, name)


def test_sensitivity_judges_the_scales_the_cache_deploys(tmp_path, capsys):
    data = tmp_path / "x.npy"
    test = np.load(ROOT / "examples" / "fashion_mnist" / "test.npz")
    np.save(data, test["image"][:16].astype(np.float32) / np.float32(255))
    report = tmp_path / "s.json"
    argv = ["sensitivity", str(MODEL), "--stats", str(STATS), "--data", str(data)]
    assert main([*argv, "-a", "minmax", "--json", str(report), "--threads", "1"]) == 0
    assert "rule P moved 2 tensor(s)" in capsys.readouterr().out
    cache = ck.select_from_stats(STATS, "minmax")
    rows = json.loads(report.read_text())["tensors"]
    assert {r["name"] for r in rows} >= {"max_pool2d", "max_pool2d_1"}
    for row in rows:
        assert ck.scale_from_amax(row["amax"]) == cache.scales[row["name"]], row["name"]


class HalfMax:
    """A selector of the user's own: only the protocol, no calibkit base class."""

    spec = "half-max"

    def select(self, hist):
        return hist.max_abs / 2


def test_any_selector_object_is_accepted_where_a_spec_is(tmp_path):
    assert isinstance(HalfMax(), ck.Selector)
    stats = ck.load_stats(STATS)
    result = ck.scales_from_stats(stats, HalfMax())
    assert result.tensor_amax["relu"] == stats.histograms["relu"].max_abs / 2
    with pytest.warns(ck.selectors.HeaderAlgorithmWarning, match="half-max is not a TensorRT"):
        assert result.cache().algorithm == "EntropyCalibration2"
    named = ck.scales_from_stats(stats, HalfMax(), header_algorithm="MinMaxCalibration")
    assert named.cache().algorithm == "MinMaxCalibration"
    assert ck.compare(stats, [HalfMax(), "minmax"]).algorithms == ("half-max", "minmax")
    samples = {"t": np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)}
    assert ck.stability(samples, batch_sizes=(2,), num_orders=2, algorithm=HalfMax()).algorithm == (
        "half-max"
    )
    qdq = tmp_path / "m.onnx"
    with pytest.warns(ck.selectors.HeaderAlgorithmWarning):
        report = ck.write_qdq(qdq, MODEL, result)
    assert report.activations
    with pytest.raises(TypeError, match="spec string"):
        ck.select_scales(stats.histograms, object())


def test_recorded_activations_have_no_graph_and_say_so(capsys, tmp_path):
    src = ROOT / "examples" / "trt7000_conv" / "activations.npz"
    out = tmp_path / "a.cache"
    assert main(["calibrate", str(src), "--trt-version", "7.0", "-o", str(out)]) == 0
    assert "statistics hold no graph" in capsys.readouterr().out
    assert main(["select", str(tmp_path / "a.stats.npz"), "-a", "minmax", "-o", str(out)]) == 0
    assert "statistics hold no graph" in capsys.readouterr().out


def test_share_scales_none_everywhere(tmp_path, capsys):
    cache = tmp_path / "n.cache"
    argv = ["select", str(STATS), "-a", "minmax", "-o", str(cache), "--share-scales", "none"]
    assert main(argv) == 0
    assert "scale sharing: none" in capsys.readouterr().out
    stats = ck.load_stats(STATS)
    own = stats.histograms["max_pool2d_1"].max_abs
    assert read_cache(cache).scales["max_pool2d_1"] == ck.scale_from_amax(own)
    with pytest.raises(ValueError, match="share_scales must be"):
        ck.scales_from_stats(stats, "minmax", share_scales="Q")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("percentile:150", r"percentile must be a number in \(0, 100\], got 150.0"),
        ("entropy2:foo=1", r"unknown entropy option 'foo'"),
        ("legacy:2:0", r"quantile must be a number in \(0, 1\], got 2.0"),
        ("legacy:0.9:0", r"regression_cutoff must be a number in \(0, 1\], got 0.0"),
        ("mse:0", r"start_bin must be an integer >= 1, got 0"),
    ],
)
def test_bad_parameters_one_type_one_wording(spec, match, capsys):
    with pytest.raises(ck.SelectorError, match=rf"^bad algorithm spec '{spec}': {match}"):
        ck.make_selector(spec)
    assert main(["select", str(STATS), "-a", spec, "-o", "x.cache"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"bad algorithm spec '{spec}'" in err


def test_no_silent_clamp_of_start_bin():
    hist = ck.Histogram(64).fill(np.arange(10, dtype=np.float32))
    with pytest.raises(ck.SelectorError, match="start_bin \\(128\\) exceeds the histogram's 64"):
        ck.MSESelector().select(hist)


@pytest.mark.parametrize(
    ("alias", "spec"),
    [
        ("max", "minmax"),
        ("MinMax", "minmax"),
        ("MinMaxCalibration", "minmax"),
        ("EntropyCalibration2", "entropy2"),
        ("EntropyCalibration", "entropy"),
        ("EntropyCalibration2:pytorch", "entropy2:pytorch"),
        ("LegacyCalibration:0.99:1", "legacy:0.99:1"),
    ],
)
def test_aliases(alias, spec):
    assert ck.make_selector(alias) == ck.make_selector(spec)


def test_every_scale_command_takes_share_scales_with_one_default():
    from calibkit.cli import build_parser
    from calibkit.pipeline import DEFAULT_SHARE_SCALES

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = ["calibrate", "select", "compare", "report", "stability", "sensitivity", "qdq"]
    for name in commands:
        options = {a.dest: a for a in sub.choices[name]._actions}
        assert options["share_scales"].default == DEFAULT_SHARE_SCALES == "trt", name
        assert "trt (default" in options["share_scales"].help, name


def test_qdq_cache_refuses_stats_options(tmp_path, capsys):
    cache = tmp_path / "c.cache"
    assert main(["select", str(STATS), "-a", "minmax", "-o", str(cache)]) == 0
    argv = ["qdq", str(MODEL), "--cache", str(cache), "-o", str(tmp_path / "m.onnx")]
    assert main([*argv, "--share-scales", "none"]) == 1
    assert "--share-scales applies to --stats" in capsys.readouterr().err


def test_stability_measures_the_shared_amax():
    from calibkit.onnx.graph import Graph, Node

    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 40)).astype(np.float32)
    samples = {"x": x, "p": x[:, ::2] * 0.5}  # a pooling output with its own, smaller range
    graph = Graph((Node("MaxPool", ("x",), ("p",)),), ("x",))
    kwargs = {"batch_sizes": (2, 4), "num_orders": 2, "algorithm": "minmax"}
    shared = ck.stability(samples, graph=graph, trt_version="10.16", **kwargs)
    assert np.array_equal(shared.tensors["p"].amax, shared.tensors["x"].amax)
    assert "rule P moved 1 tensor(s) (p <- x)" in shared.format_table()
    own = ck.stability(samples, graph=graph, share_scales="none", **kwargs)
    assert np.all(own.tensors["p"].amax < own.tensors["x"].amax)


def test_calibrate_onnx_takes_a_selector_object():
    calib = ROOT / "examples" / "fashion_mnist" / "calib.npz"
    result = ck.calibrate_onnx(
        MODEL,
        calib,
        algorithm=HalfMax(),
        trt_version="10.16",
        header_algorithm="MinMaxCalibration",
        max_samples=32,
        num_threads=1,
    )
    assert result.cache.algorithm == "MinMaxCalibration"
    assert result.settings.algorithm == "half-max"
    assert result.amax["relu"] == result.histograms["relu"].max_abs / 2
    assert result.amax["max_pool2d"] == result.amax["relu_1"]  # shared, as for any selector
