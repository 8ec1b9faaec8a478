"""Tests for calibkit.research.plot: figures render to valid, non-empty PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import calibkit as ck
from calibkit.histogram import Histogram
from calibkit.research.compare import compare, quantization_error

pytest.importorskip("matplotlib")
from calibkit.research.plot import (
    duplicates,
    mse_curve,
    plot_histogram,
    plot_ratios,
    save_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """Width and height from the IHDR chunk, read without matplotlib or PIL."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_histogram_figure_has_one_line_per_amax_and_the_curves(rng, tmp_path):
    hist = Histogram().fill(rng.standard_normal(5000).astype(np.float32))
    amax = {"entropy2": 2.5, "entropy": 2.5, "minmax": hist.max_abs, "bad": math.inf}
    fig = plot_histogram(hist, amax, title="t")
    ax, low, twin = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [lab.split(":")[0] for lab in labels[1:5]] == list(amax)
    assert labels[2] == "entropy: 2.5 (= entropy2)"  # identical results are marked
    assert labels[-1] == "max |x|"
    vertical = [line for line in ax.get_lines() if len(set(line.get_xdata())) == 1]
    assert sorted(line.get_xdata()[0] for line in vertical)[:3] == [2.5, 2.5, hist.max_abs]
    assert ax.get_yscale() == "log" and twin.get_yscale() == "log"
    # the KL curve is entropy2's divergences; its minimum is entropy2's threshold
    (kl,) = [line for line in low.get_lines() if line.get_label() == "KL divergence D"]
    x, y = kl.get_xdata(), kl.get_ydata()
    selected = ck.make_selector("entropy2").select(hist)
    assert x[np.argmin(y)] == pytest.approx(selected)
    (mse,) = twin.get_lines()
    np.testing.assert_allclose(
        mse.get_ydata(), [quantization_error(hist, t)[1] for t in mse.get_xdata()], rtol=1e-12
    )
    save_figure(fig, tmp_path / "h.png")
    assert _png_size(tmp_path / "h.png") == (900, 560)
    assert list(tmp_path.iterdir()) == [tmp_path / "h.png"]  # no temporary file left


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False, width=32), min_size=1, max_size=200),
    st.lists(st.floats(1e-6, 2e6, allow_nan=False), min_size=1, max_size=70),
)
def test_mse_curve_equals_its_slow_twin(values, thresholds):
    hist = Histogram().fill(np.array(values, np.float32))
    got = mse_curve(hist, np.array(thresholds))
    want = [quantization_error(hist, t)[1] for t in thresholds]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)


def test_duplicates_marks_later_equal_series():
    same = duplicates({"a": [1.0, np.nan], "b": [1.0, np.nan], "c": [1.0, 2.0], "d": 3.0})
    assert same == {"b": "a"}


def test_ratio_overview_and_empty_histogram(rng, tmp_path):
    hists = {
        f"t{i}": Histogram().fill(rng.standard_normal(1000).astype(np.float32)) for i in range(5)
    }
    hists["zeros"] = Histogram().fill(np.zeros(3, np.float32))
    comparison = compare(hists, ["entropy2", "entropy", "minmax", "percentile:99"])
    fig = plot_ratios(comparison)
    heat, sorted_ax = fig.axes[:2]
    grid = heat.get_images()[0].get_array()
    expected = [comparison.by_tensor()[f"t{i}"]["entropy2"].ratio for i in range(5)]
    np.testing.assert_allclose(grid[0, :5], expected)
    assert grid.mask[0, 5]  # all-zero tensor: no ratio
    ticks = [t.get_text() for t in heat.get_yticklabels()]
    assert ticks == ["entropy2", "entropy  (= entropy2)", "minmax", "percentile:99"]
    norm = heat.get_images()[0].norm
    assert type(norm).__name__ == "Normalize"  # linear, not log
    assert norm.vmin + norm.vmax == pytest.approx(2.0)  # centred on min-max's 1
    labels = [t.get_text() for t in sorted_ax.get_legend().get_texts()]
    assert labels == ticks
    assert sorted_ax.get_legend().get_bbox_to_anchor().x0 > sorted_ax.bbox.x1 - 1  # outside
    save_figure(fig, tmp_path / "o.png")
    width, height = _png_size(tmp_path / "o.png")
    assert width > 0 and height > 0
    save_figure(plot_histogram(hists["zeros"], {"minmax": 0.0}), tmp_path / "z.png")
    assert _png_size(tmp_path / "z.png")[0] > 0


def test_overview_stays_readable_at_500_tensors(rng, tmp_path):
    hists = {
        f"t{i}": Histogram().fill(rng.standard_normal(300).astype(np.float32)) for i in range(500)
    }
    fig = plot_ratios(compare(hists, ["entropy2", "minmax", "mse"]))
    heat = fig.axes[0]
    assert heat.get_images()[0].get_array().shape == (3, 500)
    assert not [t for t in heat.get_xticklabels() if t.get_text().startswith("t")]  # no name soup
    save_figure(fig, tmp_path / "o.png")
    assert _png_size(tmp_path / "o.png")[0] <= 1400
