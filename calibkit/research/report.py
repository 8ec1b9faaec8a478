"""A static HTML report of saved statistics: compare every algorithm, with plots, offline.

``calibkit report stats.npz -o report/`` writes::

    report/index.html       summary per algorithm, overview figure, per-tensor table and plots
    report/overview.png     amax / max |x| per tensor and algorithm (plot.plot_ratios)
    report/tensors/NNNN.png one histogram per tensor with each algorithm's amax (plot_histogram)
    report/compare.csv, report/compare.json   the numbers of calibkit.research.compare

Every link is relative and nothing is fetched from the network, so the folder can be zipped,
mailed or opened from disk. Tensor files are numbered (names may hold ``/``, ``:`` or spaces).
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._optional import require
from ..atomic import write_atomic
from ..histogram import Histogram
from ..pipeline import DEFAULT_SHARE_SCALES
from ..progress import track
from ..stats import Stats, load_stats
from .compare import DEFAULT_ALGORITHMS, Comparison, compare
from .plot import plot_histogram, plot_ratios, save_figure

__all__ = ["write_report"]

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
td.best { background: #dff0d8; } td.bad { background: #f8d7da; }
img { max-width: 100%; border: 1px solid #ddd; }
.tensor { margin-bottom: 1.5em; } code { background: #f4f4f4; padding: 0 3px; }
"""


def _fmt(value: float, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _summary_table(comparison: Comparison) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "algorithm",
            "median amax/max",
            "mean clipped",
            "median SQNR (dB)",
            "mean KL",
            "lowest MSE on",
        )
    )
    rows = []
    for s in comparison.summary():
        rows.append(
            f"<tr><td>{html.escape(s.algorithm)}</td><td>{_fmt(s.median_ratio, '.3f')}</td>"
            f"<td>{_fmt(s.mean_clipped, '.2e')}</td><td>{_fmt(s.median_sqnr_db, '.2f')}</td>"
            f"<td>{_fmt(s.mean_kl, '.3g')}</td><td>{s.best_mse} / {s.tensors}</td></tr>"
        )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _tensor_table(comparison: Comparison, files: Mapping[str, str]) -> str:
    algs = comparison.algorithms
    head = "<th>tensor</th><th>max |x|</th>" + "".join(
        f"<th>{html.escape(a)}<br>amax (SQNR dB)</th>" for a in algs
    )
    rows = []
    for i, (name, per_alg) in enumerate(comparison.by_tensor().items()):
        sqnr = [per_alg[a].sqnr_db for a in algs]
        finite = [v for v in sqnr if math.isfinite(v)]
        best = max(finite) if finite else math.nan
        ref = per_alg[algs[0]]
        max_abs = ref.amax / ref.ratio if ref.ratio and math.isfinite(ref.ratio) else math.nan
        cells = []
        for a, v in zip(algs, sqnr, strict=True):
            cls = ""
            if math.isfinite(v) and math.isfinite(best):
                cls = (
                    " class='best'"
                    if v >= best - 0.05
                    else (" class='bad'" if v < best - 6 else "")
                )
            cells.append(f"<td{cls}>{_fmt(per_alg[a].amax)} ({_fmt(v, '.1f')})</td>")
        label = html.escape(name)
        link = f"<a href='#t{i}'>{label}</a>" if name in files else label
        rows.append(f"<tr><td>{link}</td><td>{_fmt(max_abs)}</td>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def write_report(
    stats: Stats | str | os.PathLike | Mapping[str, Histogram],
    out_dir: str | os.PathLike,
    *,
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    max_tensors: int | None = None,
    title: str = "calibkit calibration report",
    settings: Mapping | None = None,
    share_scales: str = DEFAULT_SHARE_SCALES,
    progress: bool = False,
) -> Path:
    """Write the report folder and return the path of its ``index.html``.

    Parameters
    ----------
    stats : Stats, path or mapping
        A statistics file (its graph and TensorRT version drive the sharing rules, as in
        ``calibkit report``) or bare histograms (tensor name -> Histogram).
    out_dir : path
        Created if missing; files already there with the report's names are replaced.
    algorithms : sequence of str
        Selector specs to compare.
    max_tensors : int, optional
        Plot only the first N tensors (all of them are still in the tables and CSV/JSON).
    title : str
        Page title (e.g. the statistics file's name).
    settings : mapping, optional
        Shown as JSON on the page (default: the statistics' settings).
    share_scales : {"trt", "none", "P", "P,C"}
        TensorRT's scale sharing applied to each algorithm's amax (see :func:`~.compare.compare`).
    progress : bool
        Show a progress bar (tensors plotted) on stderr when it is a terminal.

    Raises
    ------
    ValueError
        For bad algorithm specs, no histograms, or a negative `max_tensors`.
    MissingDependencyError
        Without matplotlib.
    """
    if max_tensors is not None and max_tensors < 0:
        msg = f"max_tensors must be >= 0, got {max_tensors!r}"
        raise ValueError(msg)
    require("matplotlib", "The HTML report")  # before anything is written
    if isinstance(stats, str | os.PathLike):
        stats = load_stats(stats)
    histograms = stats.histograms if isinstance(stats, Stats) else stats
    if settings is None and isinstance(stats, Stats):
        settings = stats.settings.to_dict()
    comparison = compare(stats, algorithms, share_scales=share_scales)
    out = Path(out_dir)
    (out / "tensors").mkdir(parents=True, exist_ok=True)
    comparison.write_csv(out / "compare.csv")
    comparison.write_json(out / "compare.json")
    save_figure(plot_ratios(comparison), out / "overview.png")

    files: dict[str, str] = {}
    blocks = []
    table = comparison.by_tensor()
    plotted = list(table)[:max_tensors]
    for i, name in enumerate(track(plotted, desc="report", unit="tensor", enabled=progress)):
        rel = f"tensors/{i:04d}.png"
        amax = {a: m.amax for a, m in table[name].items()}
        save_figure(plot_histogram(histograms[name], amax, title=name), out / rel)
        files[name] = rel
        blocks.append(
            f"<div class='tensor' id='t{i}'><h3>{html.escape(name)}</h3>"
            f"<a href='{rel}'><img src='{rel}' loading='lazy' alt='histogram of "
            f"{html.escape(name, quote=True)}'></a></div>"
        )
    skipped = len(table) - len(files)
    note = f"<p>{skipped} more tensors are not plotted (max_tensors={max_tensors}).</p>"
    long = ("graph", "trt_lines")  # too long to read on the page
    shown = {k: v for k, v in (settings or {}).items() if k not in long}
    settings_html = f"<p>{html.escape(comparison.sharing)}</p>" + (
        f"<details><summary>collection settings</summary><pre>"
        f"{html.escape(json.dumps(shown, indent=1, default=str))}</pre></details>"
        if settings
        else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(table)} tensors, {len(comparison.algorithms)} algorithms. Numbers are computed from the
histograms (values at bin centres): <b>clipped</b> = fraction of values above amax,
<b>SQNR</b> = 10&nbsp;log10(E[x&sup2;] / E[(q(x) &minus; x)&sup2;]) of symmetric INT8 with scale
amax/127, <b>KL</b> = the divergence entropy2's search minimises, at that threshold.
Data: <a href="compare.csv">compare.csv</a>, <a href="compare.json">compare.json</a>.</p>
{settings_html}
<h2>Summary per algorithm</h2>
{_summary_table(comparison)}
<h2>Overview</h2>
<p><a href="overview.png"><img src="overview.png" alt="amax / max per tensor"></a></p>
<h2>Per tensor</h2>
<p>amax and SQNR per algorithm; green = best SQNR (within 0.05 dB), red = 6 dB or more below.</p>
{_tensor_table(comparison, files)}
<h2>Histograms</h2>
{"".join(blocks)}
{note if skipped else ""}
</body></html>
"""
    index = out / "index.html"
    write_atomic(index, page.encode("utf-8"))
    return index
