"""A static HTML report of saved statistics: compare every algorithm, with plots, offline.

``calibkit report stats.npz -o report/`` writes::

    report/index.html       summary per algorithm, overview figure, per-tensor table and plots
    report/overview.png     amax / max |x| per tensor and algorithm (plot.plot_ratios)
    report/tensors/NNNN.png per tensor: histogram with each algorithm's amax, KL and MSE curves
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
from ..errors import InvalidInputError
from ..histogram import Histogram
from ..pipeline import DEFAULT_SHARE_SCALES
from ..progress import track
from ..stats import Stats, load_stats
from .compare import DEFAULT_ALGORITHMS, Comparison, TensorMetrics, compare
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
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-dir=asc]::after { content: " \\25B2"; }
table.sortable th[data-dir=desc]::after { content: " \\25BC"; }
"""

# Small, inline and offline: click a header to sort by it (numbers by value, text by name); the
# load handler records in <body data-*> what a headless browser test checks (plots loaded).
_JS = """
function sortBy(th) {
  const table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
  const dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  table.querySelectorAll('th').forEach(h => { delete h.dataset.dir; });
  th.dataset.dir = dir;
  const key = row => row.cells[col].dataset.v ?? row.cells[col].textContent;
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
    const c = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
    return dir === 'asc' ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}
document.querySelectorAll('table.sortable th').forEach(th => {
  th.title = 'click to sort';
  th.addEventListener('click', () => sortBy(th));
});
window.addEventListener('load', () => {
  const eager = Array.from(document.images).filter(i => i.loading !== 'lazy');
  const ok = eager.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.plotsLoaded = ok + '/' + eager.length;
  document.body.dataset.sortable = document.querySelectorAll('table.sortable').length;
  if (location.hash === '#check-sort') {  // for the headless-browser test: sort, record
    const th = document.querySelector('#tensors th');
    sortBy(th); sortBy(th);  // ascending, then descending by tensor number
    document.body.dataset.sortedFirst = document.querySelector('#tensors tbody tr').id;
  }
});
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
    return _sortable(f"<tr>{head}</tr>", rows)


def _sortable(head: str, rows: Sequence[str]) -> str:
    return f"<table class='sortable'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _num(value: float) -> str:
    """Return a data-v attribute: the exact number for sorting (NaN: empty, sorts as text)."""
    return "" if value is None or math.isnan(value) else repr(float(value))


def _reference(algorithms: Sequence[str]) -> str:
    """Return the algorithm gains are measured against: entropy2 (TensorRT's), else the first."""
    return "entropy2" if "entropy2" in algorithms else algorithms[0]


def _best(per_alg: Mapping[str, TensorMetrics], algs: Sequence[str]) -> tuple[list[str], float]:
    """Return the algorithms with the highest SQNR (within 0.05 dB) and that SQNR."""
    sqnr = {a: per_alg[a].sqnr_db for a in algs}
    finite = [v for v in sqnr.values() if math.isfinite(v)]
    if not finite:
        return [], math.nan
    top = max(finite)
    return [a for a in algs if math.isfinite(sqnr[a]) and sqnr[a] >= top - 0.05], top


def _best_summary(comparison: Comparison) -> str:
    """Which algorithm is best for how many tensors, and what it gains over the reference."""
    algs = comparison.algorithms
    ref = _reference(algs)
    wins: dict[str, list[float]] = {a: [] for a in algs}
    beaten = []
    n_tensors = 0
    for name, per_alg in comparison.by_tensor().items():
        best, top = _best(per_alg, algs)
        if not best:
            continue
        n_tensors += 1
        gain = top - per_alg[ref].sqnr_db if math.isfinite(per_alg[ref].sqnr_db) else math.inf
        for a in best:
            wins[a].append(gain)
        if ref not in best and gain > 1.0:
            beaten.append((gain, name, best[0]))
    rows = []
    for a in algs:
        gains = [g for g in wins[a] if math.isfinite(g)]
        med = sorted(gains)[len(gains) // 2] if gains else math.nan
        rows.append(
            f"<tr><td>{html.escape(a)}</td><td data-v='{len(wins[a])}'>{len(wins[a])} / "
            f"{n_tensors}</td><td data-v='{_num(med)}'>{_fmt(med, '.2f')}</td>"
            f"<td data-v='{_num(max(gains) if gains else math.nan)}'>"
            f"{_fmt(max(gains) if gains else math.nan, '.2f')}</td></tr>"
        )
    beaten.sort(reverse=True)
    worst = ", ".join(
        f"<a href='#row-{html.escape(n, quote=True)}'>{html.escape(n)}</a> "
        f"({html.escape(a)}, +{g:.1f} dB)"
        for g, n, a in beaten[:5]
    )
    sentence = (
        f"<p>On <b>{len(beaten)} of {n_tensors}</b> tensors another algorithm beats "
        f"<code>{html.escape(ref)}</code> by more than 1 dB of SQNR"
        + (f"; the largest gains: {worst}" if beaten else "")
        + ". Ties (within 0.05 dB) count for every algorithm tied.</p>"
    )
    head = (
        "<tr><th>algorithm</th><th>best SQNR on</th>"
        f"<th>median gain over {html.escape(ref)} there (dB)</th><th>largest gain (dB)</th></tr>"
    )
    return sentence + _sortable(head, rows)


def _tensor_table(comparison: Comparison, files: Mapping[str, str]) -> str:
    algs = comparison.algorithms
    ref = _reference(algs)
    head = (
        "<th>#</th><th>tensor</th><th>max |x|</th>"
        + "".join(f"<th>{html.escape(a)}<br>amax (SQNR dB)</th>" for a in algs)
        + f"<th>best</th><th>gain over {html.escape(ref)} (dB)</th>"
    )
    rows = []
    for i, (name, per_alg) in enumerate(comparison.by_tensor().items()):
        best, top = _best(per_alg, algs)
        ref_metrics = per_alg[algs[0]]
        ratio = ref_metrics.ratio
        max_abs = ref_metrics.amax / ratio if ratio and math.isfinite(ratio) else math.nan
        cells = []
        for a in algs:
            v = per_alg[a].sqnr_db
            cls = ""
            if math.isfinite(v) and math.isfinite(top):
                cls = (
                    " class='best'" if v >= top - 0.05 else (" class='bad'" if v < top - 6 else "")
                )
            cells.append(
                f"<td{cls} data-v='{_num(v)}'>{_fmt(per_alg[a].amax)} ({_fmt(v, '.1f')})</td>"
            )
        ref_sqnr = per_alg[ref].sqnr_db
        gain = top - ref_sqnr if math.isfinite(top) and math.isfinite(ref_sqnr) else math.nan
        label = html.escape(name)
        link = f"<a href='#t{i}'>{label}</a>" if name in files else label
        rows.append(
            f"<tr id='row-{html.escape(name, quote=True)}'><td data-v='{i}'>{i}</td>"
            f"<td data-v='{html.escape(name, quote=True)}'>{link}</td>"
            f"<td data-v='{_num(max_abs)}'>{_fmt(max_abs)}</td>{''.join(cells)}"
            f"<td>{html.escape(', '.join(best))}</td>"
            f"<td data-v='{_num(gain)}'>{_fmt(gain, '.2f')}</td></tr>"
        )
    return (
        f"<table class='sortable' id='tensors'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


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
        raise InvalidInputError(msg)
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
<h2>Best algorithm per tensor, and what it gains</h2>
{_best_summary(comparison)}
<h2>Summary per algorithm</h2>
{_summary_table(comparison)}
<h2>Overview</h2>
<p>Top: amax / max |x| per tensor and algorithm, linear colour scale centred on 1 (min-max).
Bottom: each algorithm's ratios sorted. <i>(= X)</i> marks an algorithm whose results equal
X's on every tensor.</p>
<p><a href="overview.png"><img src="overview.png" alt="amax / max per tensor"></a></p>
<h2>Per tensor</h2>
<p>amax and SQNR per algorithm; green = best SQNR (within 0.05 dB), red = 6 dB or more below.
Click a column header to sort.</p>
{_tensor_table(comparison, files)}
<h2>Histograms</h2>
<p>Per tensor: the histogram of |x| (log counts) with every algorithm's threshold; below, the
KL divergence entropy2 minimises and the INT8 squared error, both over the threshold.</p>
{"".join(blocks)}
{note if skipped else ""}
<script>{_JS}</script>
</body></html>
"""
    index = out / "index.html"
    write_atomic(index, page.encode("utf-8"))
    return index
