"""Order and batch-size sensitivity of the calibration, the effect TensorRT's docs warn about.

TensorRT's histogram range starts at the first batch's max |x| and grows by doubling, so the
bins (and the entropy threshold) depend on which samples come first and how many form a batch.
:func:`stability` re-runs the real collector over the *same samples* in several orders and
batch sizes and reports, per tensor, how much the selected amax moves; next to it, the same
runs in the order-independent two-pass mode (``HistogramCollector(ranges=MaxCollector().amax_)``:
the range is the exact max from a first pass, so the bins never depend on the order).

Each run's histograms go through the scale pipeline (:func:`calibkit.pipeline.select_scales`)
like a real calibration's, so with the model's graph every tensor is measured at the amax the
cache would give it (TensorRT's scale-sharing rules, ``share_scales="trt"`` by default).

The runs need per-sample activations. :func:`samples_from_onnx` runs an ONNX model once over
the data and keeps the activations of the tensors asked for (``tensors=`` regex) in memory, up
to ``max_bytes`` (checked after each batch); :func:`samples_from_recorded` reads a
recorded-activations ``.npz`` (key = tensor, shape ``(num_batches, batch, ...)``: the batches
are split back into samples).

Examples
--------
>>> import calibkit as ck
>>> samples = ck.samples_from_recorded("examples/trt7000_conv/activations.npz")
>>> print(ck.stability(samples, batch_sizes=(1, 2, 5)).format_table())
tensor                                   max |x|  entropy2 min    max  spread  order  batch ...
(Unnamed Layer* 0) [Convolution]_output    16.23         16.24  17.62    8.5%   8.5%   5.9% ...
inputTensor                                0.999        0.9993  1.044    4.5%   4.5%   4.5% ...
scale sharing: none applied ...
1 of 2 tensors unstable (spread > 5%) over 15 runs of 10 samples: batch sizes 1, 2, 5 x 5 orders;
largest two-pass spread 0.0%
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from ..collect import HistogramCollector, MaxCollector
from ..data.activations import RecordedActivationsError
from ..errors import CalibkitError, InvalidInputError
from ..onnx.graph import Graph
from ..onnx.model import OnnxModel
from ..pipeline import DEFAULT_SHARE_SCALES, select_scales
from ..progress import progress_bar
from ..selectors import Selector, as_selector
from ..text import format_table

__all__ = [
    "StabilityResult",
    "TensorStability",
    "samples_from_onnx",
    "samples_from_recorded",
    "stability",
]

logger = logging.getLogger(__name__)


@dataclass
class TensorStability:
    """One tensor: the amax of every run, in the streaming and the two-pass mode.

    ``amax`` and ``two_pass_amax`` have shape ``(len(batch_sizes), num_orders)``.
    ``spread`` is ``(max - min) / median`` of `amax` over all runs; ``order_spread`` the
    largest ``max - min`` among runs of one batch size (order alone) and ``batch_spread`` the
    ``max - min`` of the per-batch-size medians (batch size alone), both over the same median.
    """

    name: str
    max_abs: float
    amax: np.ndarray
    two_pass_amax: np.ndarray
    spread: float
    order_spread: float
    batch_spread: float
    two_pass_spread: float
    unstable: bool


@dataclass
class StabilityResult:
    """The result of :func:`stability`."""

    algorithm: str
    batch_sizes: tuple[int, ...]
    num_orders: int
    num_samples: int
    threshold: float
    tensors: dict[str, TensorStability]
    skipped: dict[str, str] = field(default_factory=dict)
    sharing: str = ""

    @property
    def unstable(self) -> list[str]:
        """Names of the tensors whose amax spread exceeds the threshold, worst first."""
        bad = [t for t in self.tensors.values() if t.unstable]
        return [t.name for t in sorted(bad, key=lambda t: -t.spread)]

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN and inf as null)."""

        def num(v):
            return float(v) if math.isfinite(v) else None

        return {
            "algorithm": self.algorithm,
            "batch_sizes": list(self.batch_sizes),
            "num_orders": self.num_orders,
            "num_samples": self.num_samples,
            "threshold": self.threshold,
            "unstable": self.unstable,
            "skipped": self.skipped,
            "sharing": self.sharing,
            "tensors": [
                {
                    "name": t.name,
                    "max_abs": num(t.max_abs),
                    "spread": num(t.spread),
                    "order_spread": num(t.order_spread),
                    "batch_spread": num(t.batch_spread),
                    "two_pass_spread": num(t.two_pass_spread),
                    "unstable": t.unstable,
                    "amax": [[num(v) for v in row] for row in t.amax],
                    "two_pass_amax": [[num(v) for v in row] for row in t.two_pass_amax],
                }
                for t in self.tensors.values()
            ],
        }

    def write_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` to `path` (atomically)."""
        write_atomic(path, (json.dumps(self.to_dict(), indent=1) + "\n").encode())

    def format_table(self, *, limit: int | None = 30) -> str:
        """Return a terminal table, least stable tensors first, and a one-line verdict."""
        pct = _pct
        rows = [
            (
                "tensor",
                "max |x|",
                f"{self.algorithm} min",
                "max",
                "spread",
                "order",
                "batch",
                "two-pass amax",
                "two-pass spread",
                "",
            )
        ]
        ordered = sorted(self.tensors.values(), key=lambda t: -np.nan_to_num(t.spread))
        for t in ordered[:limit]:
            rows.append(
                (
                    t.name,
                    f"{t.max_abs:.4g}",
                    f"{np.min(t.amax):.4g}",
                    f"{np.max(t.amax):.4g}",
                    pct(t.spread),
                    pct(t.order_spread),
                    pct(t.batch_spread),
                    f"{np.median(t.two_pass_amax):.4g}",
                    pct(t.two_pass_spread),
                    "UNSTABLE" if t.unstable else "",
                )
            )
        lines = [format_table(rows)]
        if limit is not None and len(ordered) > limit:
            lines.append(f"... {len(ordered) - limit} more tensors (see --json)")
        for name, why in self.skipped.items():
            lines.append(f"skipped {name}: {why}")
        if self.sharing:
            lines.append(self.sharing)
        runs = len(self.batch_sizes) * self.num_orders
        lines.append(
            f"{len(self.unstable)} of {len(self.tensors)} tensors unstable (spread > "
            f"{self.threshold:.0%}) over {runs} runs of {self.num_samples} samples: batch sizes "
            f"{', '.join(map(str, self.batch_sizes))} x {self.num_orders} orders; "
            f"largest two-pass spread {pct(self._max_two_pass())}"
        )
        return "\n".join(lines)

    def _max_two_pass(self) -> float:
        values = [
            t.two_pass_spread for t in self.tensors.values() if math.isfinite(t.two_pass_spread)
        ]
        return max(values, default=math.nan)


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.1f}%"


def _spread(values: np.ndarray, median: float | None = None) -> float:
    """Return ``(max - min) / median`` (the median of `values` unless given)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(v).all():
        return math.nan
    med = float(np.median(v)) if median is None else median
    if med == 0:
        return 0.0 if v.max() == v.min() else math.inf
    return float((v.max() - v.min()) / med)


def _orders(n: int, num_orders: int, seed: int) -> list[np.ndarray]:
    """Return the given order first, then ``num_orders - 1`` seeded permutations."""
    rng = np.random.default_rng(seed)
    return [np.arange(n)] + [rng.permutation(n) for _ in range(num_orders - 1)]


def _run(arrays: Mapping[str, np.ndarray], order, batch_size: int, collector: HistogramCollector):
    """Collect every tensor over the samples in `order`, `batch_size` at a time."""
    collector.reset()
    for start in range(0, order.size, batch_size):
        index = order[start : start + batch_size]
        collector.update({name: x[index] for name, x in arrays.items()})
    return collector.histograms_


def stability(
    samples: Mapping[str, np.ndarray],
    *,
    batch_sizes: Sequence[int] = (1, 8, 32),
    num_orders: int = 5,
    seed: int = 0,
    algorithm: str | Selector = "entropy2",
    num_bins: int = 2048,
    threshold: float = 0.05,
    graph: Graph | Mapping | None = None,
    trt_version: str | Sequence[int] | None = None,
    share_scales: str = DEFAULT_SHARE_SCALES,
    progress: bool = False,
) -> StabilityResult:
    """Re-run the collector over orders and batch sizes of the same samples; measure amax.

    Parameters
    ----------
    samples : mapping
        Tensor name -> array whose first axis is the sample (all tensors the same count).
    batch_sizes : sequence of int
        Samples per collector update; sizes above the sample count are dropped.
    num_orders : int
        Orders per batch size: the given order, then seeded random permutations.
    seed : int
        Seed of the permutations (the same orders are used for every batch size and tensor).
    algorithm : str or Selector
        Selector spec (or object) whose amax is measured (entropy2 is the one with the
        documented effect).
    num_bins : int
        Histogram bins (TensorRT: 2048).
    threshold : float
        A tensor is unstable when ``(max - min) / median`` of its amax exceeds this.
    graph, trt_version, share_scales
        As for :func:`calibkit.pipeline.select_scales`: with the model's graph each run's amax
        are those the cache would get after TensorRT's scale sharing.
    progress : bool
        Show a progress bar (re-runs) on stderr when it is a terminal.

    Raises
    ------
    ValueError
        For no samples, inconsistent sample counts or bad parameters.
    """
    selector = as_selector(algorithm)
    if not samples:
        msg = "no tensors to analyse"
        raise InvalidInputError(msg)
    counts = {name: int(np.shape(x)[0]) if np.ndim(x) else 0 for name, x in samples.items()}
    if len(set(counts.values())) != 1:
        msg = f"tensors disagree on the number of samples (first axis): {counts}"
        raise InvalidInputError(msg)
    n = counts.popitem()[1]
    if n < 2:
        msg = f"need at least 2 samples to re-order, got {n}"
        raise InvalidInputError(msg)
    if num_orders < 1 or isinstance(num_orders, bool):
        msg = f"num_orders must be a positive int, got {num_orders!r}"
        raise InvalidInputError(msg)
    bad = [b for b in batch_sizes if isinstance(b, bool) or not isinstance(b, int) or b < 1]
    if bad or not batch_sizes:
        msg = f"batch sizes must be positive ints, got {list(batch_sizes)!r}"
        raise InvalidInputError(msg)
    sizes = tuple(sorted({b for b in batch_sizes if b <= n}))
    if not sizes:
        msg = f"every batch size {list(batch_sizes)} exceeds the {n} samples"
        raise InvalidInputError(msg)
    if not threshold > 0:
        msg = f"threshold must be > 0, got {threshold!r}"
        raise InvalidInputError(msg)
    orders = _orders(n, num_orders, seed)
    arrays = {name: np.asarray(x) for name, x in samples.items()}
    # Two-pass mode: the range is the exact max of a first pass (MaxCollector's amax_).
    max_abs = MaxCollector().update(arrays).amax_
    streaming = HistogramCollector(num_bins)
    fixed = HistogramCollector(num_bins, ranges=max_abs)
    amax = {name: np.empty((len(sizes), num_orders)) for name in arrays}
    two = {name: np.empty_like(a) for name, a in amax.items()}
    sharing = ""
    with progress_bar(
        len(sizes) * len(orders), desc="stability", unit="run", enabled=progress
    ) as runs:
        for i, b in enumerate(sizes):
            for j, order in enumerate(orders):
                runs.update()
                for collector, out in ((streaming, amax), (fixed, two)):
                    result = select_scales(
                        _run(arrays, order, b, collector),
                        selector,
                        graph=graph,
                        trt_version=trt_version,
                        share_scales=share_scales,
                    )
                    for name, value in result.tensor_amax.items():
                        out[name][i, j] = value
                    sharing = result.describe_sharing()
    tensors = {}
    for name in arrays:
        spread = _spread(amax[name])
        med = float(np.median(amax[name]))  # one denominator, so the three spreads compare
        tensors[name] = TensorStability(
            name=name,
            max_abs=max_abs[name],
            amax=amax[name],
            two_pass_amax=two[name],
            spread=spread,
            order_spread=max(_spread(row, med) for row in amax[name]),
            batch_spread=_spread(np.median(amax[name], axis=1), med),
            two_pass_spread=_spread(two[name]),
            unstable=not spread <= threshold,
        )
        logger.info("%s: %s spread %s", name, selector.spec, _pct(spread))
    return StabilityResult(selector.spec, sizes, num_orders, n, threshold, tensors, {}, sharing)


def samples_from_recorded(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read recorded activations (``(num_batches, batch, ...)`` per tensor) as per-sample arrays.

    Raises
    ------
    RecordedActivationsError
        If the file is unreadable, holds non-float arrays or tensors without a batch axis.
    """
    from ..data.activations import iter_recorded_batches

    batches = list(iter_recorded_batches(path))  # validates the file
    out = {}
    for name in batches[0]:
        per_batch = [b[name] for b in batches]
        if per_batch[0].ndim < 1:
            msg = f"{path}: tensor {name!r} has no batch axis (shape {per_batch[0].shape})"
            raise RecordedActivationsError(msg)
        out[name] = np.concatenate(per_batch, axis=0)
    return out


def samples_from_onnx(
    model: str | os.PathLike | OnnxModel,
    data: str | os.PathLike | Iterable[Mapping[str, np.ndarray]],
    *,
    tensors: str | None = None,
    batch_size: int | None = None,
    max_samples: int | None = None,
    preprocess: str | None = None,
    max_bytes: int = 2 << 30,
    num_threads: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Run `model` once over `data` and keep the per-sample activations of the chosen tensors.

    Parameters
    ----------
    model, data, batch_size, max_samples, preprocess
        As for :func:`calibkit.calibrate_onnx` (``calibkit.data.sources.open_data``).
    tensors : str, optional
        Regex of the tensors to keep (default: every float activation). Keep it small for
        big models: memory is samples x the kept tensors' sizes.
    max_bytes : int
        Stop with an error as soon as the kept activations exceed this (checked per batch).
    progress : bool
        Show a progress bar (samples run) on stderr when it is a terminal.

    Returns
    -------
    (samples, skipped)
        ``{tensor: array [samples, ...]}`` and ``{tensor: reason}`` for tensors that cannot be
        split into samples (no batch axis, or shapes that differ between batches).

    Raises
    ------
    CalibkitError
        When the activations would exceed `max_bytes` (the message names the fix).
    """
    from ..data.sources import open_data
    from ..onnx.source import OnnxActivationSource

    source = OnnxActivationSource(model, tensors=tensors, num_threads=num_threads)
    # open_data reads str and Path as paths, any other object as an iterable of batches
    feed = open_data(
        Path(data) if isinstance(data, os.PathLike) else data,
        source.inputs,
        batch_size=batch_size,
        max_samples=max_samples,
        preprocess=preprocess,
    )
    kept: dict[str, list[np.ndarray]] = {}
    skipped: dict[str, str] = {}
    sizes: list[int] = []

    def batches():
        with progress_bar(feed.num_samples, desc="model", unit="sample", enabled=progress) as bar:
            for b in feed:
                sizes.append(int(next(iter(b.values())).shape[0]))
                bar.update(sizes[-1])
                yield b

    used = 0
    for index, acts in enumerate(source.run(batches())):
        n = sizes[index]
        for name, value in acts.items():
            if name in skipped:
                continue
            shapes = kept.get(name)
            if value.ndim == 0 or value.shape[0] != n:
                skipped[name] = f"first axis {value.shape[:1]} is not the batch ({n} samples)"
            elif shapes and shapes[0].shape[1:] != value.shape[1:]:
                skipped[name] = (
                    f"shape changes between batches ({shapes[0].shape} vs {value.shape})"
                )
            else:
                kept.setdefault(name, []).append(np.array(value, copy=True))
                used += value.nbytes
                continue
            used -= sum(a.nbytes for a in kept.pop(name, []))
        if used > max_bytes:
            msg = (
                f"{model}: the kept activations exceed {max_bytes / 2**20:.0f} MiB after "
                f"{sum(sizes)} samples; keep fewer tensors (--tensors REGEX), fewer samples "
                "(--max-samples N) or allow more memory (--max-memory MB)"
            )
            raise CalibkitError(msg)
    if not sizes:
        msg = f"{model}: the data yielded no batch"
        raise CalibkitError(msg)
    return {name: np.concatenate(parts) for name, parts in kept.items()}, skipped
