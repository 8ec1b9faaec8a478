"""Compare scale algorithms on saved histograms: per tensor, numbers instead of guesses.

For every tensor and algorithm :func:`compare` reports the amax and TensorRT scale, the fraction
of values clipped, the KL divergence TensorRT's entropy search assigns to that threshold, the
expected INT8 quantisation error (MSE and SQNR) and the ratio of amax to min-max. Everything is
computed from the histogram, so it takes seconds and needs no model. Each tensor is judged at the
amax the cache would deploy: the scale pipeline (:func:`calibkit.pipeline.select_scales`) applies
TensorRT's scale-sharing rules first (``share_scales="trt"`` by default, as every command).

How each number is defined (values are represented by their bin centres, as in
:class:`~calibkit.selectors.MSESelector`):

- ``clipped``: fraction of all values (infinities included) above amax.
- ``mse``: mean of ``(q(x) - x)**2`` over the binned values, ``q`` the symmetric INT8
  quantiser with scale ``amax / 127`` (round half to even, saturating at +-127).
- ``sqnr_db``: ``10 log10(mean(x**2) / mse)``; higher is better.
- ``kl``: ``EntropySelector().divergences(hist)[i]`` for the candidate i whose threshold
  ``(i + 0.5) * width`` is nearest to amax (for an amax >= max |x|, the candidate keeping every
  bin with data). inf below the search range (128 bins) or where the KL is infinite
  (clipped mass folded into an empty bin); NaN for an infinite amax. This is the quantity
  entropy2 minimises, so entropy2 is lowest by construction.
- ``ratio``: amax / the exact max |x| (min-max's amax).

Examples
--------
>>> import calibkit as ck
>>> result = ck.compare("tests/data/golden_stats/fashion.stats.npz")  # as calibkit compare
>>> print(result.format_summary())
algorithm          tensors  amax/max   clipped  SQNR dB      KL  best MSE
entropy2                19     0.796  6.80e-04    35.80   0.078         0
entropy                 19     0.796  6.80e-04    35.80   0.078         0
minmax                  19     1.000  1.98e-06    35.39  0.0829         0
percentile:99.99        19     0.754  1.09e-04    37.17  0.0829         0
percentile:99.999       19     0.891  9.77e-06    36.50  0.0863         1
legacy:0.9999:1         19     0.754  1.09e-04    37.17  0.0829         0
mse                     19     0.782  5.12e-04    37.19   0.121        18
(amax/max and SQNR: median over tensors; clipped, KL: mean)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..atomic import write_atomic
from ..errors import InvalidInputError
from ..histogram import Histogram
from ..onnx.graph import Graph
from ..pipeline import DEFAULT_SHARE_SCALES, select_scales
from ..scale import scale_from_amax
from ..selectors import EntropySelector, Selector, as_selector
from ..stats import Stats, load_stats
from ..text import format_table

__all__ = [
    "DEFAULT_ALGORITHMS",
    "METRICS",
    "AlgorithmSummary",
    "Comparison",
    "TensorMetrics",
    "compare",
    "quantization_error",
]

#: The algorithms ``calibkit compare`` evaluates unless told otherwise.
DEFAULT_ALGORITHMS: tuple[str, ...] = (  # annotated: read inside an import cycle
    "entropy2",
    "entropy",
    "minmax",
    "percentile:99.99",
    "percentile:99.999",
    "legacy:0.9999:1",
    "mse",
)


@dataclass(frozen=True)
class TensorMetrics:
    """One tensor under one algorithm (see the module docstring for the definitions)."""

    name: str
    algorithm: str
    amax: float
    scale: float
    clipped: float
    kl: float
    mse: float
    sqnr_db: float
    ratio: float


#: The per-tensor numbers (``--metric`` of the terminal table).
METRICS = ("amax", "scale", "clipped", "kl", "mse", "sqnr_db", "ratio")


@dataclass(frozen=True)
class AlgorithmSummary:
    """One algorithm over all tensors.

    ``median_ratio``, ``mean_clipped``, ``median_sqnr_db`` and ``mean_kl`` (finite KL values
    only) summarise the per-tensor numbers; ``best_mse`` counts the tensors where this
    algorithm's expected MSE is the lowest of those compared (ties count for each).
    """

    algorithm: str
    tensors: int
    median_ratio: float
    mean_clipped: float
    median_sqnr_db: float
    mean_kl: float
    best_mse: int


def quantization_error(hist: Histogram, amax: float) -> tuple[float, float, float]:
    """Return ``(clipped fraction, expected MSE, SQNR in dB)`` of INT8 with this amax.

    Values are taken at their bin centres; infinite values count as clipped but not in the MSE.
    An empty or all-zero histogram gives ``(0, 0, nan)``.
    """
    total = hist.total + hist.num_inf
    if total == 0 or hist.upper == 0.0:
        return (1.0 if hist.num_inf else 0.0), 0.0, math.nan
    width = hist.upper / hist.num_bins
    x = (np.arange(hist.num_bins) + 0.5) * width
    c = hist.counts.astype(np.float64)
    signal = float(c @ (x * x)) / max(hist.total, 1)
    if not math.isfinite(amax):
        return hist.num_inf / total, math.nan, math.nan
    clipped = (float(c[x > amax].sum()) + hist.num_inf) / total
    if amax <= 0:
        mse = signal  # everything quantises to 0
    else:
        s = amax / 127.0
        q = np.minimum(np.round(x / s), 127.0) * s
        mse = float(c @ ((q - x) ** 2)) / max(hist.total, 1)
    sqnr = 10 * math.log10(signal / mse) if mse > 0 else math.inf
    return clipped, mse, sqnr


def _kl_at(divergences: np.ndarray, hist: Histogram, amax: float) -> float:
    """D(i) of the entropy candidate nearest to amax (NaN outside the candidates)."""
    if hist.upper == 0.0 or not math.isfinite(amax):
        return math.nan
    i = math.floor(amax / (hist.upper / hist.num_bins))  # nearest (i + 0.5) * width
    if amax >= hist.max_abs:  # clips nothing: the candidate that keeps every bin with data
        i = max(i, int(np.flatnonzero(hist.counts)[-1]) + 1)
    i = min(i, hist.num_bins)
    return float(divergences[i]) if i >= 0 else math.inf


@dataclass
class Comparison:
    """The result of :func:`compare`: one :class:`TensorMetrics` per tensor and algorithm.

    ``sharing`` says which scale-sharing rules the pipeline applied (one line).
    """

    algorithms: tuple[str, ...]
    rows: list[TensorMetrics]
    sharing: str = ""

    def by_tensor(self) -> dict[str, dict[str, TensorMetrics]]:
        """``{tensor: {algorithm: metrics}}``, tensors in the statistics' order."""
        out: dict[str, dict[str, TensorMetrics]] = {}
        for r in self.rows:
            out.setdefault(r.name, {})[r.algorithm] = r
        return out

    def summary(self) -> list[AlgorithmSummary]:
        """One :class:`AlgorithmSummary` per algorithm, in the order compared."""
        best: dict[str, int] = dict.fromkeys(self.algorithms, 0)
        for per_alg in self.by_tensor().values():
            mses = [m.mse for m in per_alg.values() if math.isfinite(m.mse)]
            if mses:
                low = min(mses)
                for alg, m in per_alg.items():
                    best[alg] += m.mse <= low * (1 + 1e-12)
        out = []
        for alg in self.algorithms:
            rows = [r for r in self.rows if r.algorithm == alg]
            out.append(
                AlgorithmSummary(
                    algorithm=alg,
                    tensors=len(rows),
                    median_ratio=_nanmedian([r.ratio for r in rows]),
                    mean_clipped=_nanmean([r.clipped for r in rows]),
                    median_sqnr_db=_nanmedian([r.sqnr_db for r in rows]),
                    mean_kl=_nanmean([r.kl for r in rows]),
                    best_mse=best[alg],
                )
            )
        return out

    def to_dict(self) -> dict:
        """JSON-ready dict: ``algorithms``, ``summary`` and ``tensors`` (one dict per row)."""
        return {
            "algorithms": list(self.algorithms),
            "sharing": self.sharing,
            "summary": [_jsonable(asdict(s)) for s in self.summary()],
            "tensors": [_jsonable(asdict(r)) for r in self.rows],
        }

    def to_csv(self) -> str:
        """Return the per-tensor rows as CSV text (one line per tensor and algorithm)."""
        buf = io.StringIO()
        fields = list(TensorMetrics.__dataclass_fields__)
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow(
                {k: (repr(v) if isinstance(v, float) else v) for k, v in asdict(r).items()}
            )
        return buf.getvalue()

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_csv` to `path` (atomically)."""
        write_atomic(path, self.to_csv().encode())

    def write_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON to `path` (atomically; NaN and inf become null)."""
        write_atomic(path, (json.dumps(self.to_dict(), indent=1) + "\n").encode())

    def format_summary(self) -> str:
        """Return a terminal table with one line per algorithm."""
        head = ("algorithm", "tensors", "amax/max", "clipped", "SQNR dB", "KL", "best MSE")
        rows = [head] + [
            (
                s.algorithm,
                str(s.tensors),
                f"{s.median_ratio:.3f}",
                f"{s.mean_clipped:.2e}",
                f"{s.median_sqnr_db:.2f}",
                f"{s.mean_kl:.3g}",
                str(s.best_mse),
            )
            for s in self.summary()
        ]
        return format_table(rows) + "\n(amax/max and SQNR: median over tensors; clipped, KL: mean)"

    def format_tensors(self, metric: str = "ratio", *, limit: int | None = 30) -> str:
        """Return a terminal table of `metric`: one line per tensor, one column per algorithm."""
        if metric not in METRICS:
            msg = f"unknown metric {metric!r}; choose one of {METRICS}"
            raise InvalidInputError(msg)
        table = self.by_tensor()
        rows = [("tensor", *self.algorithms)]
        for name, per_alg in list(table.items())[:limit]:
            rows.append((name, *(f"{getattr(per_alg[a], metric):.4g}" for a in self.algorithms)))
        text = format_table(rows)
        if limit is not None and len(table) > limit:
            text += f"\n... {len(table) - limit} more tensors (see --csv / --json)"
        return text


def compare(
    stats: Stats | str | os.PathLike | Mapping[str, Histogram],
    algorithms: Sequence[str | Selector] = DEFAULT_ALGORITHMS,
    *,
    share_scales: str = DEFAULT_SHARE_SCALES,
    trt_version: str | Sequence[int] | None = None,
    graph: Graph | Mapping | None = None,
) -> Comparison:
    """Evaluate every algorithm on every histogram, each tensor at the amax the cache would get.

    Parameters
    ----------
    stats : Stats, path or mapping of str to Histogram
        A statistics file (or :func:`~calibkit.load_stats` of it): its graph and TensorRT version
        drive the sharing rules, as in ``calibkit compare``. Bare histograms have neither unless
        `graph` and `trt_version` are given.
    algorithms : sequence of str or Selector
        Selector specs (``make_selector``) or selector objects; duplicates are dropped.
    share_scales : {"trt", "none", "P", "P,C"}
        TensorRT's scale-sharing rules applied to each algorithm's amax before the metrics
        (:func:`calibkit.pipeline.select_scales`).
    trt_version, graph : optional
        Override the recorded version and graph.

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        For an unknown algorithm spec or no histograms.
    """
    if isinstance(stats, str | os.PathLike):
        stats = load_stats(stats)
    histograms: Mapping[str, Histogram]
    if isinstance(stats, Stats):
        graph = graph if graph is not None else stats.settings.graph
        trt_version = trt_version if trt_version is not None else stats.settings.trt_version
        histograms = stats.histograms
    else:
        histograms = stats
    if not histograms:
        msg = "no histograms to compare"
        raise InvalidInputError(msg)
    selectors: dict[str, Selector] = {}
    for spec in algorithms:
        sel = as_selector(spec)
        selectors.setdefault(sel.spec, sel)
    if not selectors:
        msg = "no algorithms to compare"
        raise InvalidInputError(msg)
    chosen, sharing = {}, ""
    for spec, sel in selectors.items():
        result = select_scales(
            histograms, sel, graph=graph, trt_version=trt_version, share_scales=share_scales
        )
        chosen[spec], sharing = result.tensor_amax, result.describe_sharing()
    kl_search = EntropySelector()
    rows = []
    for name, hist in histograms.items():
        d = kl_search.divergences(hist) if hist.num_bins >= kl_search.start_bin else None
        reference = math.inf if hist.num_inf else hist.max_abs
        for spec in selectors:
            amax = float(chosen[spec][name])
            clipped, mse, sqnr = quantization_error(hist, amax)
            ratio = amax / reference if reference > 0 and math.isfinite(reference) else math.nan
            rows.append(
                TensorMetrics(
                    name=name,
                    algorithm=spec,
                    amax=amax,
                    scale=float(scale_from_amax(amax)),
                    clipped=clipped,
                    kl=_kl_at(d, hist, amax) if d is not None else math.nan,
                    mse=mse,
                    sqnr_db=sqnr,
                    ratio=ratio,
                )
            )
    return Comparison(tuple(selectors), rows, sharing)


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return a[np.isfinite(a)]


def _nanmedian(values: Sequence[float]) -> float:
    a = _finite(values)
    return float(np.median(a)) if a.size else math.nan


def _nanmean(values: Sequence[float]) -> float:
    a = _finite(values)
    return float(a.mean()) if a.size else math.nan


def _jsonable(d: dict) -> dict:
    """NaN and inf are not JSON: write them as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
