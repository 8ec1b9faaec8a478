"""Tests for calibkit.research.plot: figures render to valid, non-empty PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibkit.histogram import Histogram
from calibkit.research.compare import compare

pytest.importorskip("matplotlib")
from calibkit.research.plot import plot_histogram, plot_ratios, save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """Width and height from the IHDR chunk, read without matplotlib or PIL."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_histogram_figure_has_one_line_per_amax(rng, tmp_path):
    hist = Histogram().fill(rng.standard_normal(5000).astype(np.float32))
    amax = {"entropy2": 2.5, "entropy": 2.5, "minmax": hist.max_abs, "bad": math.inf}
    fig = plot_histogram(hist, amax, title="t")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [lab.split(":")[0] for lab in labels[1:]] == list(amax)
    vertical = [line for line in ax.get_lines() if len(set(line.get_xdata())) == 1]
    assert sorted(line.get_xdata()[0] for line in vertical)[:3] == [2.5, 2.5, hist.max_abs]
    assert ax.get_yscale() == "log"
    save_figure(fig, tmp_path / "h.png")
    assert _png_size(tmp_path / "h.png") == (800, 400)
    assert list(tmp_path.iterdir()) == [tmp_path / "h.png"]  # no temporary file left


def test_ratio_overview_and_empty_histogram(rng, tmp_path):
    hists = {
        f"t{i}": Histogram().fill(rng.standard_normal(1000).astype(np.float32)) for i in range(5)
    }
    hists["zeros"] = Histogram().fill(np.zeros(3, np.float32))
    comparison = compare(hists, ["entropy2", "minmax", "percentile:99"])
    fig = plot_ratios(comparison)
    ax = fig.axes[0]
    series = {line.get_label(): line for line in ax.get_lines()}
    assert set(series) == {"entropy2", "minmax (= 1)", "percentile:99"}
    expected = [comparison.by_tensor()[f"t{i}"]["entropy2"].ratio for i in range(5)]
    np.testing.assert_allclose(series["entropy2"].get_ydata()[:5], expected)
    assert math.isnan(series["entropy2"].get_ydata()[5])  # all-zero tensor: no ratio
    save_figure(fig, tmp_path / "o.png")
    width, height = _png_size(tmp_path / "o.png")
    assert width > 0 and height > 0
    save_figure(plot_histogram(hists["zeros"], {"minmax": 0.0}), tmp_path / "z.png")
    assert _png_size(tmp_path / "z.png")[0] > 0
