"""Tests for calibkit.research.compare and the ``calibkit compare`` command."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import calibkit as ck
from calibkit.cli import main
from calibkit.histogram import Histogram
from calibkit.research.compare import DEFAULT_ALGORITHMS, compare, quantization_error
from calibkit.selectors import EntropySelector


@pytest.fixture
def histograms(rng):
    return {
        "gauss": Histogram().fill(rng.standard_normal(20000).astype(np.float32)),
        "relu": Histogram().fill(np.maximum(rng.standard_normal(20000), 0).astype(np.float32)),
        "heavy": Histogram().fill(rng.standard_t(2, 20000).astype(np.float32)),
    }


def _fake_quant_mse(hist, amax):
    """Independent check: quantise every bin centre with NumPy's clip, weight by the counts."""
    width = hist.upper / hist.num_bins
    x = (np.arange(hist.num_bins) + 0.5) * width
    s = amax / 127
    q = np.clip(np.rint(x / s), -128, 127) * s
    return np.average((q - x) ** 2, weights=hist.counts)


def test_metrics_match_independent_computation(histograms):
    result = compare(histograms)
    assert result.algorithms == DEFAULT_ALGORITHMS
    assert len(result.rows) == len(histograms) * len(DEFAULT_ALGORITHMS)
    for r in result.rows:
        hist = histograms[r.name]
        expected = ck.make_selector(r.algorithm).select(hist)
        assert r.amax == expected
        assert r.scale == float(ck.scale_from_amax(expected))
        assert r.ratio == pytest.approx(expected / hist.max_abs)
        assert r.mse == pytest.approx(_fake_quant_mse(hist, r.amax), rel=1e-9)
        centres = (np.arange(hist.num_bins) + 0.5) * hist.upper / hist.num_bins
        assert r.clipped == pytest.approx(hist.counts[centres > r.amax].sum() / hist.total)
        signal = np.average(centres**2, weights=hist.counts)
        assert r.sqnr_db == pytest.approx(10 * np.log10(signal / r.mse))


def test_entropy2_has_the_lowest_kl_and_mse_the_lowest_error(histograms):
    by_tensor = compare(histograms).by_tensor()
    for per_alg in by_tensor.values():
        kls = [m.kl for m in per_alg.values() if math.isfinite(m.kl)]
        assert per_alg["entropy2"].kl == pytest.approx(min(kls))
        # mse searches the same candidates as entropy2, so it is at least as good as entropy2
        assert per_alg["mse"].mse <= per_alg["entropy2"].mse
        assert per_alg["minmax"].clipped == 0.0
        assert per_alg["minmax"].ratio == 1.0
    summary = {s.algorithm: s for s in compare(histograms).summary()}
    assert summary["mse"].best_mse == len(histograms)


def test_kl_is_the_divergence_at_the_entropy_threshold(histograms):
    hist = histograms["heavy"]
    d = EntropySelector().divergences(hist)
    row = compare({"h": hist}, ["entropy2"]).rows[0]
    assert row.kl == pytest.approx(np.min(d[np.isfinite(d)]))


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 50.0), st.integers(0, 2**31 - 1))
def test_error_shrinks_without_clipping_as_amax_falls_to_the_max(amax_factor, seed):
    """Property: clipping rises and SQNR is finite; no clipping at or above max |x|."""
    x = np.random.default_rng(seed).standard_normal(2000).astype(np.float32)
    hist = Histogram(256).fill(x)
    clipped, mse, sqnr = quantization_error(hist, amax_factor * hist.max_abs)
    assert 0.0 <= clipped <= 1.0
    assert mse >= 0
    if amax_factor >= 1.0:
        assert clipped == 0.0
    assert math.isfinite(sqnr) or mse == 0


def test_special_histograms():
    zeros = Histogram().fill(np.zeros(10, np.float32))
    assert quantization_error(zeros, 0.0) == (0.0, 0.0, pytest.approx(math.nan, nan_ok=True))
    inf = Histogram().fill(np.array([1.0, np.inf], np.float32))
    result = compare({"inf": inf}, ["minmax", "percentile:99"]).rows
    assert math.isinf(result[0].amax)
    assert math.isnan(result[0].mse) and math.isnan(result[0].ratio)
    assert result[1].clipped == 0.5  # the infinity is above every finite amax


def test_duplicate_specs_collapse_and_errors(histograms):
    assert compare(histograms, ["entropy2", "entropy2", "legacy"]).algorithms == (
        "entropy2",
        "legacy:0.9999:1",
    )
    with pytest.raises(ValueError, match="unknown algorithm 'nope'"):
        compare(histograms, ["nope"])
    with pytest.raises(ValueError, match="no histograms"):
        compare({})
    with pytest.raises(ValueError, match="no algorithms"):
        compare(histograms, [])
    with pytest.raises(ValueError, match="unknown metric 'speed'"):
        compare(histograms).format_tensors("speed")


def test_share_moves_amax_before_the_metrics(histograms):
    from calibkit.onnx.graph import Graph, Node

    # relu and heavy are pooling outputs of gauss: rule P gives them gauss's amax
    graph = Graph(
        (Node("MaxPool", ("gauss",), ("relu",)), Node("MaxPool", ("relu",), ("heavy",))),
        ("gauss",),
    )
    own = compare(histograms, ["minmax"]).by_tensor()
    shared = compare(histograms, ["minmax"], graph=graph, trt_version="10.16")
    assert "rule P moved 2 tensor(s)" in shared.sharing
    for name, hist in histograms.items():
        m = shared.by_tensor()[name]["minmax"]
        assert m.amax == own["gauss"]["minmax"].amax
        assert m.ratio == pytest.approx(m.amax / hist.max_abs)
    unshared = compare(histograms, ["minmax"], graph=graph, share_scales="none").by_tensor()
    assert unshared == own


def test_csv_json_and_tables(histograms, tmp_path):
    result = compare(histograms, ["entropy2", "minmax"])
    result.write_csv(tmp_path / "c.csv")
    result.write_json(tmp_path / "c.json")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "c.csv").read_text())))
    assert len(rows) == 6
    assert float(rows[0]["amax"]) == result.rows[0].amax  # repr round-trips exactly
    data = json.loads((tmp_path / "c.json").read_text())
    assert [s["algorithm"] for s in data["summary"]] == ["entropy2", "minmax"]
    assert data["tensors"][1]["kl"] == result.rows[1].kl
    table = result.format_tensors("sqnr_db", limit=2)
    assert "gauss" in table and "heavy" not in table and "1 more tensors" in table
    assert result.format_summary().splitlines()[0].split()[:2] == ["algorithm", "tensors"]


def test_cli_compare(histograms, tmp_path, capsys):
    stats = tmp_path / "s.npz"
    ck.save_stats(stats, histograms)
    argv = ["compare", str(stats), "--csv", str(tmp_path / "c.csv"), "--json", str(tmp_path / "j")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ratio per tensor" in out and "percentile:99.999" in out
    assert (tmp_path / "c.csv").is_file() and (tmp_path / "j").is_file()
    assert main(["compare", str(stats), "--algorithms", "entropy2,bogus"]) == 1
    assert "unknown algorithm 'bogus'" in capsys.readouterr().err
    assert main(["compare", str(stats), "--metric", "speed"]) == 1
    assert "unknown metric" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_bundled_example(tmp_path, capsys):
    """The bundled Fashion-MNIST example: calibrate, then compare from its statistics."""
    pytest.importorskip("onnxruntime")
    from tests.conftest import ROOT

    ex = ROOT / "examples" / "fashion_mnist"
    stats = tmp_path / "fm.stats.npz"
    argv = ["calibrate", str(ex / "model.onnx"), "--data", str(ex / "calib.npz")]
    argv += ["--max-samples", "64", "--trt-version", "10.16", "-o", str(tmp_path / "fm.cache")]
    assert main([*argv, "--save-histograms", str(stats), "--no-progress"]) == 0
    assert main(["compare", str(stats), "--json", str(tmp_path / "c.json")]) == 0
    data = json.loads((tmp_path / "c.json").read_text())
    assert {t["name"] for t in data["tensors"]} == set(ck.load_stats(stats).histograms)
    # calibrate recorded TensorRT's sharing rules: a MaxPool output is judged at its input's amax
    amax = {(t["name"], t["algorithm"]): t["amax"] for t in data["tensors"]}
    assert amax["max_pool2d", "entropy2"] == amax["relu_1", "entropy2"]
    argv = ["compare", str(stats), "--share-scales", "none", "--json", str(tmp_path / "n.json")]
    assert main(argv) == 0
    data = json.loads((tmp_path / "n.json").read_text())
    own = {(t["name"], t["algorithm"]): t["amax"] for t in data["tensors"]}
    assert own["max_pool2d", "entropy2"] != own["relu_1", "entropy2"]
    capsys.readouterr()
