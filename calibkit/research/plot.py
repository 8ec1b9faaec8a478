"""matplotlib views of histograms and the amax each algorithm picks (needs ``calibkit[plot]``).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never through
``pyplot``: no global state, no display needed, safe in tests and servers.

- :func:`plot_histogram`: one tensor's histogram (log counts) with a vertical line per algorithm.
- :func:`plot_ratios`: amax / max |x| of every tensor across the network, one series per algorithm.
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

if TYPE_CHECKING:
    import os

    from matplotlib.figure import Figure

    from ..histogram import Histogram
    from .compare import Comparison

__all__ = ["plot_histogram", "plot_ratios", "save_figure"]

_PURPOSE = "Plotting"


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


def plot_histogram(
    hist: Histogram, amax: Mapping[str, float], *, title: str = "", size=(8.0, 4.0)
) -> Figure:
    """Return a figure of `hist` (log counts over |x|) with one vertical line per amax.

    Parameters
    ----------
    hist : Histogram
    amax : mapping
        Algorithm -> amax; infinite or NaN values are listed in the legend but not drawn.
    title : str
        Usually the tensor name.
    """
    fig = _figure(size)
    ax = fig.add_subplot()
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
    for k, (alg, value) in enumerate(amax.items()):
        label = f"{alg}: {value:.4g}"
        if not math.isfinite(value):
            ax.plot([], [], color=colors[alg], label=label)
            continue
        # Equal thresholds (entropy and entropy2) would hide each other: dash the later ones.
        style = ("-", "--", ":", "-.")[sum(1 for v in list(amax.values())[:k] if v == value) % 4]
        ax.axvline(value, color=colors[alg], linestyle=style, linewidth=1.3, label=label)
    if hist.max_abs > 0:
        ax.axvline(hist.max_abs, color="k", linewidth=0.6, alpha=0.5)
    ax.set_xlabel("|x|" + (f"   (max {hist.max_abs:.4g}, histogram range {hist.upper:.4g})"))
    ax.set_ylabel("count (log)")
    # The range is often twice max |x| after growth: show the data and the thresholds only.
    shown = [v for v in (hist.max_abs, *amax.values()) if math.isfinite(v)]
    ax.set_xlim(0, 1.04 * max(shown) or 1.0)
    ax.set_ylim(bottom=0.5)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def plot_ratios(comparison: Comparison, *, size=None, label_limit: int = 60) -> Figure:
    """Return an overview: amax / max |x| per tensor (network order), one series per algorithm.

    min-max (always 1) is drawn as the reference line. Tensor names label the x axis when there
    are at most `label_limit` tensors, otherwise every n-th one does.
    """
    table = comparison.by_tensor()
    names = list(table)
    n = len(names)
    if size is None:
        size = (min(max(8.0, 0.18 * n + 3), 24.0), 5.0)
    fig = _figure(size)
    ax = fig.add_subplot()
    x = np.arange(n)
    colors = _colors(comparison.algorithms)
    drawn: list[np.ndarray] = []
    for alg in comparison.algorithms:
        y = np.array([table[t][alg].ratio for t in names], dtype=np.float64)
        if alg == "minmax":
            ax.axhline(1.0, color=colors[alg], linewidth=1, label="minmax (= 1)")
            continue
        y = np.where(np.isfinite(y) & (y > 0), y, np.nan)
        # A series equal to one already drawn (entropy = entropy2) would hide it: dash it.
        same = any(np.array_equal(y, d, equal_nan=True) for d in drawn)
        style = {"linestyle": "--", "marker": "x"} if same else {"marker": "o"}
        ax.plot(x, y, markersize=3, linewidth=0.8, color=colors[alg], label=alg, **style)
        drawn.append(y)
    ax.set_yscale("log")
    ax.set_ylabel("amax / max |x|  (log)")
    ax.set_xlabel("tensor (network order)")
    step = max(1, math.ceil(n / label_limit))
    ax.set_xticks(x[::step])
    ax.set_xticklabels([names[i][:24] for i in range(0, n, step)], rotation=90, fontsize=7)
    ax.set_xlim(-0.5, n - 0.5)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_title("amax relative to min-max, per tensor", fontsize=10)
    ax.legend(fontsize=8, ncols=min(4, len(comparison.algorithms)), loc="lower left")
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write `fig` as a PNG to `path` (atomically: a half-written image is never left behind)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(path, buf.getvalue())
