"""matplotlib views of histograms and the amax each algorithm picks (needs ``calibkit[plot]``).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never through
``pyplot``: no global state, no display needed, safe in tests and servers.

- :func:`plot_histogram`: one tensor: its histogram (log counts) with a vertical line per
  algorithm's threshold, and below it the KL divergence and the INT8 error (MSE) as functions of
  the threshold, so each algorithm's choice can be read against both criteria.
- :func:`plot_ratios`: the overview, readable at hundreds of tensors: a heatmap of amax / max |x|
  (tensors in network order x algorithms, linear colour scale), and per algorithm the sorted
  ratios (linear axis, legend outside). Algorithms whose results equal an earlier one's are
  marked ``(= other)`` and dashed, not drawn over each other unmarked.
- :func:`mse_curve`: the expected INT8 squared error at many thresholds at once.
- :func:`save_figure`: write a figure as PNG, atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._optional import require
from ..atomic import write_atomic
from ..selectors import EntropySelector

if TYPE_CHECKING:
    import os

    from matplotlib.figure import Figure

    from ..histogram import Histogram
    from .compare import Comparison

__all__ = ["duplicates", "mse_curve", "plot_histogram", "plot_ratios", "save_figure"]

_PURPOSE = "Plotting"
_CURVE_POINTS = 256  # thresholds on the MSE curve (the KL curve has one per candidate bin)


def _figure(size: tuple[float, float]) -> Figure:
    require("matplotlib", _PURPOSE)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(algorithms: Sequence[str]) -> dict[str, str]:
    """Give each algorithm a fixed colour, in the order given (matplotlib's C0 ... C9)."""
    palette = [f"C{i}" for i in range(10)]
    return {alg: palette[i % len(palette)] for i, alg in enumerate(algorithms)}


def duplicates(values: Mapping[str, np.ndarray | float]) -> dict[str, str]:
    """Map each key whose value equals an earlier key's (NaN == NaN) to that earlier key."""
    out: dict[str, str] = {}
    seen: list[tuple[str, np.ndarray]] = []
    for key, value in values.items():
        v = np.atleast_1d(np.asarray(value, dtype=np.float64))
        for first, w in seen:
            if v.shape == w.shape and np.array_equal(v, w, equal_nan=True):
                out[key] = first
                break
        else:
            seen.append((key, v))
    return out


def mse_curve(hist: Histogram, thresholds: np.ndarray) -> np.ndarray:
    """Return the expected INT8 squared error at each threshold (amax), values at bin centres.

    The vectorised form of :func:`calibkit.research.compare.quantization_error` (its MSE), which
    the tests use as the slow twin.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if hist.total == 0 or hist.upper == 0.0:
        return np.zeros_like(thresholds)
    width = hist.upper / hist.num_bins
    x = (np.arange(hist.num_bins) + 0.5) * width
    keep = hist.counts > 0
    x, c = x[keep], hist.counts[keep].astype(np.float64)
    out = np.empty_like(thresholds)
    for start in range(0, thresholds.size, 64):  # 64 x bins at a time: small temporaries
        t = thresholds[start : start + 64, None]
        s = np.where(t > 0, t / 127.0, 1.0)
        q = np.where(t > 0, np.minimum(np.round(x / s), 127.0) * s, 0.0)
        out[start : start + 64] = ((q - x) ** 2) @ c / max(hist.total, 1)
    return out


def plot_histogram(
    hist: Histogram,
    amax: Mapping[str, float],
    *,
    title: str = "",
    size=(9.0, 5.6),
    curves: bool = True,
) -> Figure:
    """Return a figure of `hist` with one vertical line per amax, and the KL / MSE curves.

    Parameters
    ----------
    hist : Histogram
    amax : mapping
        Algorithm -> amax; infinite or NaN values are listed in the legend but not drawn.
        An algorithm with the same amax as an earlier one is labelled ``(= earlier)`` and dashed.
    title : str
        Usually the tensor name.
    curves : bool
        Add the lower panel: entropy2's divergence D (its search minimises it; left axis) and the
        expected INT8 squared error (right axis, log) against the threshold.
    """
    fig = _figure(size)
    if curves and hist.upper > 0:
        ax, low = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    else:
        ax, low = fig.add_subplot(), None
    counts, edges = hist.to_numpy()
    if hist.upper > 0:
        bin0 = hist.counts[0] / max(hist.total, 1)  # ReLU zeros: invisible as a bar, so say it
        # Baseline below one count: a log axis cannot draw down to 0 (the fill would break up).
        ax.stairs(
            np.where(counts > 0, counts, 0.5),
            edges,
            baseline=0.5,
            fill=True,
            color="0.7",
            label=f"counts ({hist.total} values, {bin0:.0%} in bin 0)",
        )
    ax.set_yscale("log", nonpositive="mask")
    colors = _colors(list(amax))
    same = duplicates({a: v for a, v in amax.items() if math.isfinite(v)})
    for alg, value in amax.items():
        label = f"{alg}: {value:.4g}" + (f" (= {same[alg]})" if alg in same else "")
        if not math.isfinite(value):
            ax.plot([], [], color=colors[alg], label=label)
            continue
        style = "--" if alg in same else "-"  # equal thresholds would hide each other
        for a in (ax, low) if low is not None else (ax,):
            a.axvline(
                value,
                color=colors[alg],
                linestyle=style,
                linewidth=1.3,
                label=label if a is ax else None,
            )
    if hist.max_abs > 0:
        ax.axvline(hist.max_abs, color="k", linewidth=0.6, alpha=0.5, label="max |x|")
    ax.set_ylabel("count (log)")
    # The range is often twice max |x| after growth: show the data and the thresholds only.
    shown = [v for v in (hist.max_abs, *amax.values()) if math.isfinite(v)]
    right = 1.04 * max(shown) or 1.0
    ax.set_xlim(0, right)
    ax.set_ylim(bottom=0.5)
    ax.set_title(title, fontsize=10)
    # Outside the axes: a legend inside hides the tail, where the thresholds are.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    xlabel = f"|x| = threshold   (max {hist.max_abs:.4g}, histogram range {hist.upper:.4g})"
    if low is None:
        ax.set_xlabel(xlabel)
        return fig
    width = hist.upper / hist.num_bins
    kl = EntropySelector().divergences(hist)  # D(i) at threshold (i + 0.5) * width
    i = np.flatnonzero(np.isfinite(kl))
    low.plot((i + 0.5) * width, kl[i], color="k", linewidth=1.0, label="KL divergence D")
    low.set_ylabel("KL D")
    thresholds = np.linspace(right / _CURVE_POINTS, right, _CURVE_POINTS)
    mse = mse_curve(hist, thresholds)
    twin = low.twinx()
    twin.plot(
        thresholds, np.where(mse > 0, mse, np.nan), color="C3", linewidth=1.0, label="INT8 MSE"
    )
    twin.set_yscale("log", nonpositive="mask")
    twin.set_ylabel("MSE (log)", color="C3")
    low.set_xlabel(xlabel)
    lines = low.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    low.legend(
        lines,
        [h.get_label() for h in lines],
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.08, 1.0),
        borderaxespad=0,
    )
    return fig


def plot_ratios(comparison: Comparison, *, size=None, label_limit: int = 60) -> Figure:
    """Return the overview of amax / max |x|: a heatmap and the sorted ratios per algorithm.

    Top: tensors (network order) x algorithms, colour = amax / max |x| on a linear scale centred
    on 1 (white: min-max's value; blue below, red above). Bottom: each algorithm's ratios
    sorted, against the fraction of tensors (linear axes): readable at any number of tensors.
    Algorithms whose ratios equal an earlier one's on every tensor are marked ``(= earlier)``.
    Tensor names label the heatmap when there are at most `label_limit` tensors (the report's
    table lists them all).
    """
    require("matplotlib", _PURPOSE)
    from matplotlib.colors import Normalize

    table = comparison.by_tensor()
    names = list(table)
    algs = list(comparison.algorithms)
    n = len(names)
    ratios = {a: np.array([table[t][a].ratio for t in names], dtype=np.float64) for a in algs}
    ratios = {a: np.where(np.isfinite(r) & (r >= 0), r, np.nan) for a, r in ratios.items()}
    same = duplicates(ratios)
    labels = {a: a + (f"  (= {same[a]})" if a in same else "") for a in algs}
    if size is None:
        size = (12.0, 3.2 + 0.35 * len(algs) + (1.6 if n <= label_limit else 0.3) + 3.2)
    fig = _figure(size)
    top, bottom = fig.subplots(2, 1, height_ratios=(0.5 + 0.35 * len(algs), 3.2))
    grid = np.vstack([ratios[a] for a in algs])
    finite = grid[np.isfinite(grid)]
    # A linear scale centred on 1 (min-max): equal steps of ratio are equal steps of colour.
    reach = float(np.max(np.abs(finite - 1.0))) if finite.size else 0.0
    reach = max(reach, 0.05)
    cmap = require("matplotlib", _PURPOSE).colormaps["RdBu_r"].with_extremes(bad="0.6")
    image = top.imshow(
        np.ma.masked_invalid(grid),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        norm=Normalize(vmin=1.0 - reach, vmax=1.0 + reach),
    )
    top.set_yticks(range(len(algs)), [labels[a] for a in algs], fontsize=8)
    if n <= label_limit:
        top.set_xticks(range(n), [t[:24] for t in names], rotation=90, fontsize=7)
    else:
        top.set_xlabel(f"{n} tensors, network order (names: the table below the figure)")
    top.set_title(
        "amax / max |x| per tensor (dark grey: no ratio, e.g. an all-zero tensor)", fontsize=10
    )
    fig.colorbar(image, ax=top, label="amax / max |x|", fraction=0.04, pad=0.01)
    colors = _colors(algs)
    for a in algs:
        r = np.sort(ratios[a][np.isfinite(ratios[a])])
        if not r.size:
            continue
        frac = (np.arange(r.size) + 0.5) / r.size
        style = {"linestyle": "--"} if a in same else {}
        bottom.plot(
            frac,
            r,
            color=colors[a],
            linewidth=1.4,
            label=labels[a],
            marker="o" if r.size <= 40 else None,
            markersize=3,
            **style,
        )
    bottom.axhline(1.0, color="k", linewidth=0.5, alpha=0.5)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("fraction of tensors (sorted by ratio, per algorithm)")
    bottom.set_ylabel("amax / max |x|")
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write `fig` as a PNG to `path` (atomically: a half-written image is never left behind)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(path, buf.getvalue())
