"""ONNX calibration: run the model over the data, fill the histograms, hand them to the pipeline.

:func:`calibrate_onnx` runs the model once over the data (streaming: the next batch is computed
while this one is binned, two batches of activations in memory at most) and fills one
TensorRT-style histogram per tensor; the scale pipeline
(:func:`calibkit.pipeline.select_scales`) turns them into the cache, as it does for every other
path. The result holds the histograms, so :meth:`CalibrationResult.write` saves them next to the
cache and :func:`calibkit.pipeline.select_from_stats` later recomputes any other algorithm from
them, without onnx or onnxruntime.

Examples
--------
>>> import calibkit as ck
>>> model, data = "examples/fashion_mnist/model.onnx", "examples/fashion_mnist/calib.npz"
>>> result = ck.calibrate_onnx(model, data, trt_version="10.16")
>>> result.cache.to_bytes().splitlines()[:2]  # the header and the input's scale
[b'TRT-101600-EntropyCalibration2', b'image: 3c010a14']
>>> result.write("model.cache")  # also writes model.stats.npz  # doctest: +SKIP
>>> cache = ck.select_from_stats("model.stats.npz", "percentile:99.99")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from .._optional import require
from ..cache.format import CalibrationCache, hex_from_scale, parse_trt_version, write_cache
from ..collect import HistogramCollector, MaxCollector
from ..errors import InvalidInputError
from ..histogram import Histogram, max_abs
from ..pipeline import (
    DEFAULT_SHARE_SCALES,
    ScaleResult,
    check_cache_header,
    check_share_scales,
    select_scales,
)
from ..progress import progress_bar
from ..rules.names import CacheNames, constant_values, trt_cache_names
from ..rules.sharing import SharingResult
from ..scale import scale_from_amax
from ..selectors import MinMaxSelector, Selector, as_selector
from ..stats import StatsSettings, default_stats_path, save_stats
from ..text import format_table
from .model import OnnxModel

__all__ = ["CalibrationResult", "InputRange", "calibrate_onnx"]

logger = logging.getLogger(__name__)


@dataclass
class InputRange:
    """Running value range of one model input (reported so wrong scaling is visible)."""

    name: str
    min: float = math.inf
    max: float = -math.inf
    sum: float = 0.0
    count: int = 0
    integral: bool = True  # every value seen so far is a whole number

    def update(self, x: np.ndarray) -> None:
        """Add one batch of this input."""
        if x.size == 0:
            return
        self.min = min(self.min, float(np.min(x)))
        self.max = max(self.max, float(np.max(x)))
        self.sum += float(np.sum(x, dtype=np.float64))
        self.count += x.size
        if self.integral and np.issubdtype(x.dtype, np.floating):
            self.integral = bool(np.all(np.isfinite(x)) and np.all(x == np.round(x)))

    @property
    def mean(self) -> float:
        """Mean of all values seen."""
        return self.sum / self.count if self.count else math.nan

    def looks_like_raw_pixels(self) -> bool:
        """Return True for float data of whole numbers in [0, 255] reaching above 1."""
        return self.integral and self.count > 0 and self.min >= 0 and 1 < self.max <= 255


@dataclass
class CalibrationResult:
    """What one calibration run produced.

    Attributes
    ----------
    histograms : dict of str to Histogram
        One per tensor, in graph order.
    amax : dict of str to float
        The selected clipping threshold per tensor.
    cache : CalibrationCache
        The TensorRT cache for `amax`.
    settings : StatsSettings
        Everything needed to reproduce the run (algorithm, bins, TensorRT version, data,
        batch size, model path and sha256, calibkit version, graph, cache lines); saved with
        the statistics.
    inputs : dict of str to InputRange
        Value range of every model input over the data.
    seconds : dict of str to float
        Wall time of ``"inference"`` (onnxruntime), ``"collect"`` (histograms), ``"select"``
        and ``"total"`` (including data loading).
    selection : ScaleResult or None
        What the scale pipeline did (the sharing rules applied, cache lines without a value).
    """

    histograms: dict[str, Histogram]
    amax: dict[str, float]
    cache: CalibrationCache
    settings: StatsSettings
    inputs: dict[str, InputRange] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    selection: ScaleResult | None = None

    @property
    def sharing(self) -> SharingResult | None:
        """Which tensors TensorRT's scale-sharing rules moved (docs/sharing.md); None if off."""
        return None if self.selection is None else self.selection.sharing

    def write(self, cache_path, stats_path=None, *, save_stats_file: bool = True) -> Path | None:
        """Write the cache and (by default next to it, ``model.stats.npz``) the statistics.

        Returns the statistics path, or None when `save_stats_file` is False.
        """
        if save_stats_file and not self.histograms:
            msg = "no histograms were collected (histograms=False): nothing to save as statistics"
            raise InvalidInputError(msg)
        write_cache(cache_path, self.cache)
        if not save_stats_file:
            return None
        path = Path(stats_path) if stats_path else default_stats_path(cache_path)
        save_stats(path, self.histograms, settings=self.settings)
        return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_bytes(proto) -> str:  # a model given in memory: the digest of its bytes
    return hashlib.sha256(proto.SerializeToString()).hexdigest()


class _Feed:
    """Pass input batches through, counting them and tracking input value ranges."""

    def __init__(self, batches: Iterable[Mapping[str, np.ndarray]], bar, description: str) -> None:
        self.batches, self.bar, self.description = batches, bar, description
        self.ranges: dict[str, InputRange] = {}
        self.num_batches = self.num_samples = 0

    def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]:
        for batch in self.batches:
            for name, x in batch.items():
                self.ranges.setdefault(name, InputRange(name)).update(np.asarray(x))
            n = len(next(iter(batch.values()))) if batch else 0
            if self.num_batches == 0:  # warn before the run, not after it
                _warn_on_raw_pixels(self.ranges, self.description)
            yield batch
            # the consumer asks for the next batch only once this one is collected
            self.num_batches += 1
            self.num_samples += n
            self.bar.update(n)


def calibrate_onnx(
    model: str | os.PathLike | OnnxModel,
    data,  # path, "loader.py[:fn]", DataSource or iterable of dicts
    *,
    algorithm: str | Selector = "entropy2",
    trt_version: str | tuple[int, ...] | None = None,
    num_bins: int = 2048,
    batch_size: int | None = None,
    max_samples: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    preprocess=None,  # preset name or data.ImagePreprocess
    tensors: str | None = None,
    nan_policy: str = "raise",
    max_tensors_per_run: int | None = None,
    optimization: str = "disable",
    num_threads: int | None = None,
    progress: bool = False,
    share_scales: str = DEFAULT_SHARE_SCALES,
    calibration_shapes: Mapping[str, Sequence[int]] | None = None,
    names: str = "trt",
    header_algorithm: str | None = None,
    histograms: bool = True,
    overlap: bool = True,
) -> CalibrationResult:
    """Calibrate an ONNX model on the CPU the way TensorRT's calibrator would.

    Parameters
    ----------
    model : path or OnnxModel
        The ONNX model, read once (:class:`~calibkit.onnx.model.OnnxModel`) for the activation
        source, TensorRT's names and constants, and the sharing rules.
    data : path, "loader.py[:function]", DataSource or iterable of dicts
        Calibration inputs; see :func:`calibkit.data.sources.open_data` for the accepted forms.
    algorithm : str or Selector
        Selector spec (``entropy2``, ``entropy``, ``minmax``, ``percentile:99.99``, ...) or any
        object satisfying :class:`calibkit.selectors.Selector`.
    trt_version : str or tuple
        TensorRT version for the cache header (not needed for ``legacy``).
    num_bins, nan_policy
        Passed to :class:`HistogramCollector`.
    batch_size, max_samples, shuffle, seed, preprocess
        Passed to :func:`calibkit.data.sources.open_data`.
    tensors, max_tensors_per_run, optimization, num_threads
        Passed to :class:`calibkit.onnx.source.OnnxActivationSource`.
    progress : bool
        Show a progress bar (samples/s) on stderr, when stderr is a terminal
        (:mod:`calibkit.progress`).
    share_scales : str
        TensorRT's scale-sharing rules for the target version (``"trt"``, the default), none
        (``"none"``) or explicit ones (``"P"``, ``"P,C"``); see docs/sharing.md.
    names : {"trt", "onnx"}
        Write the lines TensorRT looks up for the target version (``"trt"``: constants it
        calibrates, its aliases, no line for tensors it removes; names it creates itself are
        reported, see docs/sharing.md) or one line per calibrated ONNX tensor (``"onnx"``).
    calibration_shapes : mapping of input name to shape, optional
        Feed each listed input at this shape, as TensorRT does with dynamic shapes (it reads the
        calibration profile's optimum shape from the start of each batch buffer); see
        :func:`calibkit.data.sources.at_calibration_shapes`.
    header_algorithm : str, optional
        Cache header word instead of the selector's TensorRT calibrator; see
        :func:`calibkit.selectors.header_algorithm`.
    histograms : bool
        Collect the histograms (needed to save the statistics, and by every algorithm but
        ``minmax``). With False and ``minmax`` only the running max |x| is kept: a max pass,
        several times cheaper than 2048-bin histograms, the same cache; the result then holds
        no histograms.
    overlap : bool
        Bin one batch's activations while onnxruntime computes the next (two batches of
        activations in memory instead of one; onnxruntime's idle threads do not spin); False
        runs them one after the other.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    ValueError
        For data that does not fit the model, a bad algorithm spec or a missing TensorRT version
        (checked before the model runs).
    """
    from ..data.sources import DataSource, at_calibration_shapes, open_data
    from .source import OnnxActivationSource

    start = time.perf_counter()
    selector = as_selector(algorithm)
    check_share_scales(share_scales)
    check_cache_header(selector, trt_version, header_algorithm)  # now, not after an hour
    if names not in ("trt", "onnx"):
        msg = f"names must be 'trt' or 'onnx', got {names!r}"
        raise InvalidInputError(msg)
    model = OnnxModel.of(model)
    source = OnnxActivationSource(
        model,
        tensors=tensors,
        max_tensors_per_run=max_tensors_per_run,
        optimization=optimization,
        num_threads=num_threads,
        spinning=not overlap,  # binning runs beside inference: no thread may spin on a core
    )
    if not isinstance(data, DataSource):
        data = open_data(
            data,
            source.inputs,
            batch_size=batch_size,
            max_samples=max_samples,
            shuffle=shuffle,
            seed=seed,
            preprocess=preprocess,
        )
    # a tensor that only rearranges another's values (Reshape, Transpose, ...) has its histogram
    same = _same_values(model.graph, source.tensor_names)
    order: dict[str, None] = {}  # tensors in the order they come, as the histograms were kept
    max_only = not histograms and isinstance(selector, MinMaxSelector)
    collector: HistogramCollector | MaxCollector
    if max_only:  # TensorRT's MinMax needs the max |x| only: no histogram is filled
        collector = MaxCollector(nan_policy=nan_policy)
    else:
        collector = HistogramCollector(num_bins, nan_policy=nan_policy)
    collect_seconds = 0.0
    batches = data if not calibration_shapes else at_calibration_shapes(data, calibration_shapes)
    with progress_bar(data.num_samples, unit="sample", enabled=progress) as bar:
        feed = _Feed(batches, bar, data.description)
        runs = source.run(feed)
        stream = _ahead(runs) if overlap else runs
        try:
            for activations in stream:
                t0 = time.perf_counter()
                order.update(dict.fromkeys(activations))
                collector.update({k: v for k, v in activations.items() if k not in same})
                collect_seconds += time.perf_counter() - t0
                del activations  # the next batch is being computed: keep two alive, not three
        finally:  # stop and join the inference thread now, not when the frame is collected
            stream.close()
    if not feed.num_samples:
        msg = f"{data.description}: no calibration samples"
        raise InvalidInputError(msg)
    version = None if trt_version is None else parse_trt_version(trt_version)
    # what the selector reads per tensor: a histogram, or (max only) the running max |x|,
    # which MinMaxSelector.select takes as it is
    binned: dict = collector.amax_ if isinstance(collector, MaxCollector) else collector.histograms_
    statistics: dict = {}
    for name in order:
        stat = binned[same.get(name, name)]
        statistics[name] = stat.copy() if name in same and not max_only else stat
    graph = model.graph
    lines = None
    if names == "trt" and version is not None:
        cache_names = trt_cache_names(model, trt_version=version)
        if tensors is not None:  # --tensors restricts TensorRT's lines as it does activations
            wanted = re.compile(tensors)
            kept = tuple(
                line
                for line in cache_names.lines
                if wanted.search(line.name if line.kind == "constant" else line.source)
            )
            cache_names = CacheNames(kept, cache_names.unknown, cache_names.no_line)
        # TensorRT calibrates a constant like an activation that is the same in every batch;
        # one copy gives the same threshold (scaling all counts changes no KL minimum)
        for name, values in constant_values(model, cache_names).items():
            if max_only:
                m, _, n_inf = max_abs(np.asarray(values, np.float32))
                statistics[name] = math.inf if n_inf else m
                continue
            hist = statistics[name] = Histogram(num_bins)
            hist.fill(np.asarray(values, np.float32), nan_policy=nan_policy)
        lines = cache_names.lines
        if cache_names.unknown:
            logger.info(
                "TensorRT also writes %d line(s) under names only it knows (e.g. %s)",
                len(cache_names.unknown),
                cache_names.unknown[0].pattern,
            )
    t0 = time.perf_counter()
    selection = select_scales(
        statistics,
        selector,
        graph=graph,
        trt_version=trt_version,
        share_scales=share_scales,
        trt_lines=lines,
        header_algorithm=header_algorithm,
    )
    cache = selection.cache()
    select_seconds = time.perf_counter() - t0
    path = model.path
    settings = StatsSettings(
        source_kind="onnx",
        source=None if path is None else str(path),
        source_sha256=_sha256(path) if path is not None else _sha256_bytes(model.proto),
        algorithm=selector.spec,
        num_bins=num_bins,
        trt_version=None if version is None else ".".join(map(str, version)),  # major.minor.patch
        share_scales=share_scales,
        nan_policy=nan_policy,
        data=data.description,
        batch_size=data.batch_size,
        num_samples=feed.num_samples,
        num_batches=feed.num_batches,
        max_samples=max_samples,
        shuffle=shuffle,
        seed=seed if shuffle else None,
        tensors=tensors,
        calibration_shapes={k: tuple(v) for k, v in (calibration_shapes or {}).items()},
        onnxruntime_optimization=optimization,
        onnxruntime_version=_version_of("onnxruntime"),
        calibkit_version=__version__,
        graph=graph,  # lets 'select' apply the sharing rules without the model
        trt_lines=lines,  # the cache lines TensorRT looks up, or None for ONNX names
    )
    seconds = {
        "inference": source.inference_seconds,
        "collect": collect_seconds,
        "select": select_seconds,
        "total": time.perf_counter() - start,
    }
    saved: dict[str, Histogram] = {} if max_only else statistics
    return CalibrationResult(
        saved, selection.amax, cache, settings, feed.ranges, seconds, selection
    )


#: Operators whose first output holds exactly the values of their first input, rearranged: in
#: every batch the same multiset of values, so the same histogram, max and counts.
_SAME_VALUES = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def _same_values(graph, names: Sequence[str]) -> dict[str, str]:
    """Map each tensor that a value-preserving op makes from another tensor to the chain's first.

    Both must be in `names`. The first is binned once and its histogram copied: TensorRT's
    histogram of a reshaped tensor is that of its input, so the caches do not change.
    """
    wanted = set(names)
    first: dict[str, str] = {}
    for node in graph.nodes:  # producers come before consumers
        if node.op_type in _SAME_VALUES and node.inputs and node.outputs:
            source, out = node.inputs[0], node.outputs[0]
            if source in wanted and out in wanted and out != source:
                first[out] = first.get(source, source)
    return first


def _ahead(items: Iterator) -> Generator:
    """Yield from `items`, computing the next item in a thread while the caller uses this one.

    onnxruntime and the histogram kernels release the GIL, so inference and binning overlap.
    At most two items are alive: the next is started only once the caller is done with the
    previous one. An exception in the thread is raised here, in the caller's thread.
    """
    ready: list = []
    cond = threading.Condition()
    state: dict = {"taken": 0, "made": 0, "done": False, "error": None, "stop": False}

    def produce() -> None:
        try:
            for item in items:
                with cond:
                    ready.append(item)
                    del item
                    state["made"] += 1
                    cond.notify_all()
                    # compute the next one only once the caller is done with the one before
                    cond.wait_for(lambda: state["stop"] or state["made"] - state["taken"] <= 1)
                    if state["stop"]:
                        return
        except BaseException as err:  # noqa: BLE001  (handed to the caller's thread, re-raised)
            state["error"] = err
        with cond:
            state["done"] = True
            cond.notify_all()

    thread = threading.Thread(target=produce, name="calibkit-inference", daemon=True)
    thread.start()
    try:
        while True:
            with cond:
                cond.wait_for(lambda: ready or state["done"])
                if not ready:
                    break
                item = ready.pop(0)
            yield item
            del item
            with cond:
                state["taken"] += 1
                cond.notify_all()
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        thread.join()
        ready.clear()
    if state["error"] is not None:
        raise state["error"]


def _version_of(module: str) -> str | None:
    try:
        return require(module, "version lookup").__version__
    except ImportError:
        return None


def _warn_on_raw_pixels(ranges: Mapping[str, InputRange], description: str) -> None:
    for r in ranges.values():
        if r.looks_like_raw_pixels():
            logger.warning(
                "%s: input %r holds whole numbers in [%g, %g], like raw 8-bit pixels; if the "
                "model expects scaled input (e.g. [0, 1] or mean/std-normalised), scale the data "
                "or use an image folder with --preprocess",
                description,
                r.name,
                r.min,
                r.max,
            )


def format_amax_table(
    histograms: Mapping[str, Histogram], amax: Mapping[str, float], *, limit: int | None = None
) -> str:
    """Text table, one line per tensor: max |x|, amax, amax / max |x| and the cache hex."""
    rows = [("tensor", "max |x|", "amax", "amax/max", "scale hex")]
    for k, (name, value) in enumerate(amax.items()):
        if limit is not None and k == limit:
            rows.append((f"... {len(amax) - limit} more", "", "", "", ""))
            break
        hist = histograms.get(name)  # None for a TensorRT alias of another tensor
        m = hist.max_abs if hist is not None else math.nan
        ratio = f"{value / m:.3f}" if m > 0 else "-"
        shown = f"{m:.6g}" if hist is not None else "-"
        rows.append(
            (name, shown, f"{value:.6g}", ratio, hex_from_scale(float(scale_from_amax(value))))
        )
    return format_table(rows)


def format_input_table(ranges: Mapping[str, InputRange]) -> str:
    """Text table of the model inputs' value ranges."""
    rows = [("input", "min", "max", "mean")]
    rows += [(r.name, f"{r.min:.6g}", f"{r.max:.6g}", f"{r.mean:.6g}") for r in ranges.values()]
    return format_table(rows)


def format_summary(result: CalibrationResult) -> str:
    """One-paragraph account of a run: samples, speed, time split."""
    s, st = result.seconds, result.settings
    n = st.num_samples or 0  # None only in settings no calibration run made
    own = s["collect"] + s["select"]
    text = (
        f"{len(result.amax)} tensors, {n} samples in {st.num_batches} batches of "
        f"{st.batch_size or 'loader size'}, {s['total']:.1f} s ({n / s['total']:.1f} samples/s):"
        f" onnxruntime {s['inference']:.1f} s, calibkit {own:.2f} s "
        f"(histograms {s['collect']:.2f} s, {st.algorithm} {s['select']:.2f} s)"
    )
    if result.selection is not None:
        text += "\n" + result.selection.describe_sharing()
    return text
