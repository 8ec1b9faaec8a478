"""Saved statistics: a faithful round trip and clear errors for files that are not ours."""

from __future__ import annotations

import numpy as np
import pytest

import calibkit as ck
from calibkit.stats import StatsFormatError, is_stats_file


def test_round_trip(tmp_path, rng):
    c = ck.HistogramCollector(64, nan_policy="skip")
    c.update({"a/b: c": rng.standard_normal(50), "z": np.array([np.nan, np.inf, 1.0])})
    c.update({"a/b: c": rng.standard_normal(50) * 9, "z": np.zeros(3)})
    path = ck.save_stats(tmp_path / "s.npz", c.histograms_, settings={"algorithm": "entropy2"})
    loaded = ck.load_stats(path)
    assert loaded.histograms == c.histograms_
    assert list(loaded.histograms) == ["a/b: c", "z"]
    assert loaded.settings == ck.StatsSettings(algorithm="entropy2")
    assert loaded.calibkit_version == ck.__version__
    assert is_stats_file(path)


def test_empty_round_trip(tmp_path):
    loaded = ck.load_stats(ck.save_stats(tmp_path / "s.npz", {}))
    assert loaded.histograms == {}


def test_recorded_activations_are_not_stats(tmp_path):
    np.savez(tmp_path / "acts.npz", x=np.ones((2, 3)))
    assert not is_stats_file(tmp_path / "acts.npz")
    with pytest.raises(StatsFormatError, match="not a calibkit statistics file"):
        ck.load_stats(tmp_path / "acts.npz")


def test_unreadable_file(tmp_path):
    (tmp_path / "bad.npz").write_text("hello")
    with pytest.raises(StatsFormatError, match=r"not a readable \.npz"):
        ck.load_stats(tmp_path / "bad.npz")


def test_damaged_arrays(tmp_path):
    h = {"a": ck.Histogram(8).fill(np.ones(3))}
    path = ck.save_stats(tmp_path / "s.npz", h)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["max_abs"] = np.array([5.0])  # larger than the range: impossible
    np.savez(path, **arrays)
    with pytest.raises(StatsFormatError, match=r"tensor 'a'.*inconsistent"):
        ck.load_stats(path)


def test_mixed_bin_counts_refused(tmp_path):
    with pytest.raises(ValueError, match="same number of bins"):
        ck.save_stats(tmp_path / "s.npz", {"a": ck.Histogram(8), "b": ck.Histogram(16)})


def test_settings_must_fit_the_schema(tmp_path):
    with pytest.raises(StatsFormatError, match=r"settings: unknown field\(s\) \['x'\]"):
        ck.save_stats(tmp_path / "s.npz", {}, settings={"x": object()})
    with pytest.raises(StatsFormatError, match=r"settings\.num_bins: expected an integer"):
        ck.save_stats(tmp_path / "s.npz", {}, settings={"num_bins": "2048"})
    assert not (tmp_path / "s.npz").exists()
