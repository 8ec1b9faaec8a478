"""Collectors: batches in, per-tensor statistics out; errors name the tensor and the batch."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest

import calibkit as ck
from calibkit import HistogramCollector, MaxCollector, NonFiniteError


def test_histogram_collector_streams_each_tensor(rng):
    c = ck.HistogramCollector(64)
    batches = [{"x": rng.standard_normal(10), "y": rng.random((2, 3))} for _ in range(3)]
    for b in batches:
        assert c.update(b) is c
    assert c.n_batches_ == 3 and list(c.histograms_) == ["x", "y"]
    expected = ck.Histogram(64)
    for b in batches:
        expected.fill(b["x"])
    assert c.histograms_["x"] == expected


def test_reset_forgets(rng):
    c = ck.HistogramCollector(64).update({"x": rng.random(4)})
    assert c.reset() is c and c.histograms_ == {} and c.n_batches_ == 0


def test_fixed_ranges_two_pass(rng):
    batches = [{"x": rng.standard_normal(50) * s} for s in (1, 4, 2)]
    first = ck.MaxCollector()
    for b in batches:
        first.update(b)
    two_pass = ck.HistogramCollector(64, ranges=first.amax_)
    for b in reversed(batches):
        two_pass.update(b)
    assert two_pass.histograms_["x"].upper == first.amax_["x"]


def test_nan_error_names_tensor_and_batch():
    c = ck.HistogramCollector(8).update({"a": np.ones(3)})
    with pytest.raises(ck.NonFiniteError, match=r"tensor 'conv1', batch 1: 1 NaN"):
        c.update({"conv1": np.array([1.0, np.nan])})


def test_nan_skip_policy_counts():
    c = ck.HistogramCollector(8, nan_policy="skip").update({"a": np.array([np.nan, 1.0])})
    assert c.histograms_["a"].num_nan == 1


def test_integer_tensor_error_names_tensor():
    with pytest.raises(TypeError, match=r"tensor 'ids', batch 0: expected a floating-point"):
        ck.HistogramCollector(8).update({"ids": np.arange(3)})
    with pytest.raises(TypeError, match=r"tensor 'ids', batch 0"):
        ck.MaxCollector().update({"ids": np.arange(3)})


@pytest.mark.parametrize("cls", [ck.HistogramCollector, ck.MaxCollector])
def test_batch_must_be_a_mapping(cls):
    with pytest.raises(TypeError, match="mapping of tensor name"):
        cls().update([np.ones(3)])


@pytest.mark.parametrize("cls", [ck.HistogramCollector, ck.MaxCollector])
def test_bad_nan_policy(cls):
    with pytest.raises(ValueError, match="nan_policy"):
        cls(nan_policy="zero")


def test_max_collector_exact_and_inf():
    c = ck.MaxCollector().update({"x": np.array([-3.0, 1.0])}).update({"x": np.array([2.5])})
    assert c.amax_ == {"x": 3.0}
    c.update({"x": np.array([np.inf])})
    assert c.amax_["x"] == math.inf
    with pytest.raises(ck.NonFiniteError, match=r"tensor 'x', batch 3"):
        c.update({"x": np.array([np.nan])})


def test_minmax_from_collector_matches_max_collector(rng):
    batches = [{"t": rng.standard_normal(100) * s} for s in (3, 1, 7)]
    h, m = ck.HistogramCollector(), ck.MaxCollector()
    for b in batches:
        h.update(b)
        m.update(b)
    assert ck.MinMaxSelector().select(h.histograms_["t"]) == m.amax_["t"]


@pytest.mark.parametrize("cls", [HistogramCollector, MaxCollector])
def test_update_is_all_or_nothing_across_tensors(cls):
    """A NaN in tensor b leaves tensor a as it was (no half-applied batch)."""
    c = cls().update({"a": np.array([1.0, 2.0]), "b": np.array([1.0])})
    before = copy.deepcopy(c.__dict__)
    with pytest.raises(NonFiniteError, match="'b'"):
        c.update({"a": np.array([100.0, 5.0]), "new": np.ones(3), "b": np.array([np.nan])})
    after = c.__dict__
    assert after.keys() == before.keys() and after["n_batches_"] == before["n_batches_"]
    if cls is HistogramCollector:
        assert list(after["histograms_"]) == ["a", "b"]
        assert all(after["histograms_"][k] == before["histograms_"][k] for k in "ab")
    else:
        assert after["amax_"] == before["amax_"]


def test_commands_that_never_bin_do_not_load_numba(tmp_path):
    cache = tmp_path / "m.cache"
    cache.write_text("TRT-10016-EntropyCalibration2\nx: 3c010a14\n")
    code = (
        "import sys; from calibkit.cli import main; main(['cache', 'show', sys.argv[1]]); "
        "assert 'numba' not in sys.modules, 'numba was loaded'"
    )
    subprocess.run([sys.executable, "-c", code, str(cache)], check=True, capture_output=True)
