"""Tests for calibkit.research.stability and ``calibkit stability``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import calibkit as ck
from calibkit.cli import main
from calibkit.errors import CalibkitError
from calibkit.research.stability import samples_from_onnx, samples_from_recorded, stability
from tests.conftest import ROOT

TRIPLE = ROOT / "examples" / "trt7000_conv" / "activations.npz"
FASHION = ROOT / "examples" / "fashion_mnist"


def _manual_amax(x, order, batch_size, selector):
    """The streaming run written out with Histogram.fill, independent of the collector."""
    hist = ck.Histogram()
    for start in range(0, len(order), batch_size):
        hist.fill(x[order[start : start + batch_size]])
    return selector.select(hist)


def test_runs_match_a_manual_replay(rng):
    # Samples whose scale varies a lot: which ones come first decides the histogram range.
    x = (rng.standard_normal((12, 50)) * rng.uniform(0.1, 10, (12, 1))).astype(np.float32)
    result = stability({"x": x}, batch_sizes=(1, 4, 100), num_orders=3, seed=7)
    assert result.batch_sizes == (1, 4)  # 100 > 12 samples is dropped
    t = result.tensors["x"]
    assert t.amax.shape == (2, 3)
    rng7 = np.random.default_rng(7)
    orders = [np.arange(12), rng7.permutation(12), rng7.permutation(12)]
    sel = ck.make_selector("entropy2")
    for i, b in enumerate((1, 4)):
        for j, order in enumerate(orders):
            assert t.amax[i, j] == _manual_amax(x, order, b, sel)
    # the two-pass histogram has a fixed range, so its amax is the same in every run
    assert np.all(t.two_pass_amax == t.two_pass_amax[0, 0])
    assert t.two_pass_spread == 0.0
    assert t.max_abs == float(np.abs(x).max())
    lo, hi, med = t.amax.min(), t.amax.max(), np.median(t.amax)
    assert t.spread == pytest.approx((hi - lo) / med)
    assert t.order_spread == pytest.approx(max(np.ptp(row) for row in t.amax) / med)
    assert t.batch_spread == pytest.approx(np.ptp(np.median(t.amax, axis=1)) / med)
    assert t.unstable == (t.spread > 0.05)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["entropy2", "percentile:99", "mse"]))
def test_two_pass_is_order_and_batch_independent(seed, algorithm):
    x = np.random.default_rng(seed).standard_t(3, (9, 40)).astype(np.float32)
    t = stability({"x": x}, batch_sizes=(1, 2, 9), num_orders=3, algorithm=algorithm).tensors["x"]
    assert t.two_pass_spread == 0.0


def test_minmax_never_moves(rng):
    x = rng.standard_normal((10, 30)).astype(np.float32)
    t = stability({"x": x}, algorithm="minmax", batch_sizes=(1, 3)).tensors["x"]
    assert t.spread == 0.0 and not t.unstable


def test_recorded_triple_is_unstable_and_json(tmp_path):
    """The TensorRT 7.0 conv triple: the first batch does not hold the max, the range grows."""
    samples = samples_from_recorded(TRIPLE)
    assert {k: v.shape for k, v in samples.items()} == {
        "inputTensor": (10, 3, 4, 5),
        "(Unnamed Layer* 0) [Convolution]_output": (10, 2, 4, 5),
    }
    result = stability(samples, batch_sizes=(1, 2, 5), num_orders=4)
    conv = result.tensors["(Unnamed Layer* 0) [Convolution]_output"]
    assert conv.amax[0, 0] == pytest.approx(17.19, abs=0.01)  # TensorRT's own cache value
    assert conv.unstable and result.unstable[0] == conv.name
    result.write_json(tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["unstable"] == result.unstable
    assert len(data["tensors"][0]["amax"]) == 3
    assert "UNSTABLE" in result.format_table()


def test_bad_arguments(rng):
    x = {"x": rng.standard_normal((4, 3)).astype(np.float32)}
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        stability({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="at least 2 samples"):
        stability({"a": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="exceeds the 4 samples"):
        stability(x, batch_sizes=(8,))
    with pytest.raises(ValueError, match="positive ints"):
        stability(x, batch_sizes=(0,))
    with pytest.raises(ValueError, match="num_orders"):
        stability(x, num_orders=0)
    with pytest.raises(ValueError, match="threshold"):
        stability(x, threshold=0)
    with pytest.raises(ValueError, match="no tensors"):
        stability({})


def test_samples_from_onnx_keep_per_sample_activations():
    pytest.importorskip("onnxruntime")
    samples, skipped = samples_from_onnx(
        FASHION / "model.onnx",
        FASHION / "calib.npz",
        tensors="^(image|relu)$",
        batch_size=5,
        max_samples=12,
    )
    assert skipped == {}
    assert set(samples) == {"image", "relu"}
    np.testing.assert_array_equal(samples["image"], np.load(FASHION / "calib.npz")["image"][:12])
    assert samples["relu"].shape[0] == 12
    with pytest.raises(CalibkitError, match=r"exceed 0 MiB.*--tensors REGEX"):
        samples_from_onnx(FASHION / "model.onnx", FASHION / "calib.npz", max_bytes=1000)


def test_cli_stability(tmp_path, capsys):
    argv = ["stability", str(TRIPLE), "--batch-sizes", "1,2", "--orders", "3"]
    assert main([*argv, "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 tensors unstable" in out or "2 of 2 tensors unstable" in out
    assert main([*argv, "--tensors", "input"]) == 0
    assert "of 1 tensors" in capsys.readouterr().out
    assert main(["stability", str(FASHION / "model.onnx")]) == 1
    assert "needs inputs: --data" in capsys.readouterr().err
    assert main([*argv, "--batch-sizes", "50"]) == 1
    assert "exceeds the 10 samples" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_stability_bundled_example(capsys):
    pytest.importorskip("onnxruntime")
    argv = ["stability", str(FASHION / "model.onnx"), "--data", str(FASHION / "calib.npz")]
    assert main([*argv, "--max-samples", "64", "--batch-sizes", "1,8", "--orders", "3"]) == 0
    assert "runs of 64 samples" in capsys.readouterr().out
