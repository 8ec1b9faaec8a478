"""Tensor-by-tensor comparison of two caches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibkit.cache.diff import diff_caches
from calibkit.cache.format import CalibrationCache
from calibkit.histogram import Histogram


def _cache(scales):
    return CalibrationCache((8, 6, 1), "EntropyCalibration2", scales)


def test_diff_rows_sides_and_summary():
    one_ulp = np.nextafter(np.float32(0.5), np.float32(1))
    a = _cache({"same": 0.5, "ulp": 0.5, "half": 1.0, "inf": 1.0, "zero": 0.0, "only_a": 1.0})
    b = _cache(
        {"only_b": 1.0, "zero": 0.0, "inf": math.inf, "half": 0.5, "ulp": one_ulp, "same": 0.5}
    )
    d = diff_caches(a, b)
    rows = {r.name: r for r in d.rows}
    assert [r.name for r in d.rows] == ["same", "ulp", "half", "inf", "zero"]  # a's order
    assert (rows["same"].rel, rows["same"].ulps) == (0.0, 0)
    assert rows["ulp"].ulps == 1 and rows["ulp"].rel == pytest.approx(
        2**-24 / (0.5 + 2**-24), rel=1e-6
    )
    assert rows["half"].rel == 0.5 and rows["half"].amax_b == 63.5
    assert math.isinf(rows["inf"].rel)
    assert rows["zero"].rel == 0.0
    assert (d.only_a, d.only_b) == (["only_a"], ["only_b"])
    s = d.summary(top=2)
    assert (s["common"], s["equal"], s["only_a"], s["only_b"]) == (5, 2, 1, 1)
    assert s["worst"] == ["inf", "half"]
    assert [r.name for r in d.exceeding(0.1)] == ["half", "inf"]


def test_diff_in_histogram_bins():
    hist = Histogram(num_bins=2048, upper=127.0)  # bin width 127/2048
    a, b = _cache({"x": 1.0}), _cache({"x": 0.5})
    (row,) = diff_caches(a, b, histograms={"x": hist}).rows
    assert row.bins == pytest.approx(-63.5 * 2048 / 127)
    (row,) = diff_caches(a, b).rows
    assert row.bins is None
