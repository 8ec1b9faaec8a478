"""The scale pipeline: statistics in, the final per-tensor amax and scales out, in one place.

Every path that turns histograms into scales goes through :func:`select_scales` (or
:func:`scales_from_stats`, the same for a statistics file): ``calibrate`` (both sources),
``select``, ``compare``, ``report``, ``stability``, ``sensitivity``, ``qdq --stats`` and the
Python API. The steps, in order:

1. the selector (a spec string or any :class:`~calibkit.selectors.Selector`) gives each
   histogram its own amax;
2. TensorRT's scale-sharing rules (:mod:`calibkit.rules.sharing`) give some tensors a
   neighbour's amax; ``share_scales="trt"`` (the one default of every command) means the rules of
   the target TensorRT version, ``"none"`` none, ``"P"`` / ``"P,C"`` explicit rules. They need the
   graph (saved with the statistics by the ONNX path); without one nothing moves, and the result
   says so;
3. with TensorRT's cache lines (``--names trt``, saved with the statistics) the values are keyed
   by the names TensorRT looks up;
4. :meth:`ScaleResult.cache` builds the cache, whose header word follows the TensorRT calibrator
   being emulated (:func:`~calibkit.selectors.header_algorithm`).

So ``qdq --stats S --algorithm A`` and ``qdq --cache C`` with ``C`` from ``select S --algorithm A``
carry the same scales, bit for bit, and ``compare`` judges each tensor at the amax the cache
would deploy.

Examples
--------
>>> import calibkit as ck
>>> stats = "tests/data/golden_stats/fashion.stats.npz"  # examples/fashion_mnist's histograms
>>> result = ck.scales_from_stats(stats, "percentile:99.99")
>>> print(result.describe_sharing())
scale sharing (TensorRT 10.16.0 rules): rule P moved 2 tensor(s)
(max_pool2d <- relu_1, max_pool2d_1 <- cat)
>>> ck.write_cache("p.cache", result.cache())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache.format import LEGACY_ALGORITHM, CalibrationCache, parse_trt_version, write_cache
from .errors import InvalidInputError
from .histogram import Histogram
from .onnx.graph import Graph
from .rules import sharing as _sharing
from .rules.names import CacheLine, CacheNames, trt_amax
from .rules.sharing import RULES, SharingResult
from .scale import scale_from_amax
from .selectors import Selector, as_selector, header_algorithm
from .stats import Stats, load_stats

__all__ = [
    "ALL_ALGORITHMS",
    "DEFAULT_SHARE_SCALES",
    "ScaleResult",
    "check_cache_header",
    "check_share_scales",
    "scales_from_stats",
    "select_all",
    "select_from_stats",
    "select_scales",
]

logger = logging.getLogger(__name__)

#: The one default of ``--share-scales`` (and ``share_scales=``) everywhere: TensorRT's rules for
#: the target version (docs/sharing.md).
DEFAULT_SHARE_SCALES = "trt"

#: The algorithms ``calibkit select --all`` writes, one cache each.
ALL_ALGORITHMS = (
    "entropy2",
    "entropy",
    "minmax",
    "percentile:99.9",
    "percentile:99.99",
    "percentile:99.999",
    "mse",
    "legacy",
)


def check_share_scales(rules: str) -> str:
    """Return `rules` if it is ``"trt"``, ``"none"`` or a comma list of P and C.

    Raises
    ------
    ValueError
        Naming the accepted values.
    """
    parts = [r.strip() for r in str(rules).split(",")]
    if rules in ("trt", "none") or (parts and all(r in RULES for r in parts)):
        return rules
    msg = f"share_scales must be trt, none, P, C or P,C, got {rules!r}"
    raise InvalidInputError(msg)


@dataclass(frozen=True)
class ScaleResult:
    """What :func:`select_scales` produced.

    Attributes
    ----------
    selector : Selector
        The selector that chose each tensor's own amax.
    tensor_amax : dict of str to float
        One per histogram (keys and order of the statistics), after the sharing rules: the
        amax each tensor is quantised with.
    amax : dict of str to float
        One per cache line: TensorRT's names where the statistics hold them, else `tensor_amax`.
    trt_version : tuple of int or None
        The target TensorRT version.
    share_scales : str
        The rules asked for (``"trt"``, ``"none"``, ``"P"``, ``"P,C"``).
    sharing : SharingResult or None
        Which rule moved which tensor; None when no rule ran (``"none"``, or no graph).
    missing : tuple of str
        Cache lines with no value (tensors left out of the collection).
    header_override : str or None
        The header algorithm the caller named (``--header-algorithm``).
    """

    selector: Selector
    tensor_amax: dict[str, float]
    amax: dict[str, float]
    trt_version: tuple[int, int, int] | None
    share_scales: str
    sharing: SharingResult | None
    missing: tuple[str, ...] = ()
    header_override: str | None = None

    @property
    def rules(self) -> tuple[str, ...]:
        """The sharing rules applied (empty when none ran)."""
        return () if self.sharing is None else tuple(self.sharing.rules)

    def scales(self) -> dict[str, np.float32]:
        """TensorRT's float32 scale per cache line, ``fl32(fl32(amax) / 127)``."""
        return {name: scale_from_amax(a) for name, a in self.amax.items()}

    @property
    def header_algorithm(self) -> str:
        """The cache header's algorithm word (warns for a selector no TensorRT calibrator is)."""
        return header_algorithm(self.selector, self.header_override)

    def cache(self) -> CalibrationCache:
        """Return the TensorRT calibration cache of :attr:`amax`.

        Raises
        ------
        ValueError
            Without a TensorRT version (except for a legacy cache), or for TensorRT >= 11.
        """
        return _cache(self.amax, self.selector, self.trt_version, self.header_algorithm)

    def describe_sharing(self) -> str:
        """One line saying which sharing rules were applied, and what they moved."""
        if self.share_scales == "none":
            return "scale sharing: none (--share-scales none)"
        if self.sharing is None:
            return (
                f"scale sharing: none applied (--share-scales {self.share_scales}, but the "
                "statistics hold no graph: recorded activations, a PyTorch run or histograms "
                "from the API)"
            )
        version = ".".join(map(str, self.trt_version)) if self.trt_version else "unknown"
        asked = f"TensorRT {version} rules" if self.share_scales == "trt" else "explicit rules"
        parts = []
        for rule in self.sharing.rules:
            moved = self.sharing.moved_by(rule)
            shown = ", ".join(f"{name} <- {src}" for name, src in list(moved.items())[:4])
            more = f", ... {len(moved) - 4} more" if len(moved) > 4 else ""
            parts.append(
                f"rule {rule} moved {len(moved)} tensor(s)" + (f" ({shown}{more})" if moved else "")
            )
        return f"scale sharing ({asked}): " + ("; ".join(parts) or "no rule applies")


def _cache(amax, selector, version, word: str) -> CalibrationCache:
    if word == LEGACY_ALGORITHM:
        quantile = getattr(selector, "quantile", None)
        cutoff = getattr(selector, "regression_cutoff", None)
        if quantile is None or cutoff is None:
            msg = (
                f"a LegacyCalibration header needs the quantile and regression cutoff of a legacy "
                f"selector; {selector.spec} has none"
            )
            raise InvalidInputError(msg)
        return CalibrationCache.from_amax(
            amax,
            trt_version=None,
            algorithm=LEGACY_ALGORITHM,
            quantile=quantile,
            regression_cutoff=cutoff,
        )
    if version is None:
        msg = "a TensorRT version is needed for the cache header, e.g. trt_version='10.16'"
        raise InvalidInputError(msg)
    return CalibrationCache.from_amax(amax, trt_version=version, algorithm=word)


def check_cache_header(selector, trt_version, header_algorithm_override: str | None = None) -> None:
    """Fail now (before an hour of calibration) if the cache header cannot be written.

    Raises
    ------
    ValueError
        As :meth:`ScaleResult.cache` would.
    """
    selector = as_selector(selector)
    version = None if trt_version is None else parse_trt_version(trt_version)
    # no warning here: it comes with the real cache
    _cache({}, selector, version, header_algorithm(selector, header_algorithm_override, warn=False))


def select_scales(
    histograms: Mapping[str, Histogram],
    algorithm: str | Selector,
    *,
    graph: Graph | Mapping | None = None,
    trt_version: str | Sequence[int] | None = None,
    share_scales: str = DEFAULT_SHARE_SCALES,
    trt_lines: Iterable[CacheLine | Sequence[str]] | None = None,
    header_algorithm: str | None = None,
) -> ScaleResult:
    """Turn histograms into the final per-tensor amax: selector, sharing rules, cache names.

    Parameters
    ----------
    histograms : mapping of str to Histogram
        One per tensor (constants TensorRT calibrates keyed by their cache name).
    algorithm : str or Selector
        A spec (``"entropy2"``, ``"percentile:99.99"``, an alias such as ``"MinMax"``) or any
        object satisfying :class:`~calibkit.selectors.Selector`.
    graph : Graph or its ``to_dict()`` form, optional
        The model's dataflow; the sharing rules need it (without one nothing moves).
    trt_version : str or tuple, optional
        Target TensorRT version: picks the rules of ``share_scales="trt"`` (unknown: the pooling
        rule only) and goes into the cache header.
    share_scales : {"trt", "none", "P", "P,C"}
        TensorRT's scale-sharing rules; ``"trt"`` (default) follows `trt_version`.
    trt_lines : iterable of CacheLine or [name, source, kind], optional
        TensorRT's cache lines: the result's :attr:`~ScaleResult.amax` is keyed by them.
    header_algorithm : str, optional
        Cache header word to write instead of the selector's calibrator (``"MinMaxCalibration"``,
        ...); see :func:`~calibkit.selectors.header_algorithm`.

    Returns
    -------
    ScaleResult

    Raises
    ------
    ValueError
        For a bad spec, bad rules or a bad version.
    """
    selector = as_selector(algorithm)
    check_share_scales(share_scales)
    version = None
    if trt_version is not None:
        # parse_trt_version takes a str, tuple or list: any other sequence goes in as a tuple
        given = trt_version if isinstance(trt_version, str | tuple | list) else tuple(trt_version)
        version = parse_trt_version(given)
    own = {name: float(selector.select(h)) for name, h in histograms.items()}
    sharing = None
    tensor_amax = own
    if share_scales != "none" and graph is not None:
        if not isinstance(graph, Graph):
            graph = Graph.from_json(graph)
        sharing = _sharing.share_scales(graph, own, trt_version=version, rules=share_scales)
        tensor_amax = sharing.amax
    amax = tensor_amax
    missing: list[str] = []
    if trt_lines is not None:
        lines = tuple(
            line if isinstance(line, CacheLine) else CacheLine(*line) for line in trt_lines
        )
        amax, missing = trt_amax(tensor_amax, CacheNames(lines, (), {}))
        if missing:
            logger.warning("%d TensorRT cache line(s) without a value: %s", len(missing), missing)
    return ScaleResult(
        selector,
        tensor_amax,
        amax,
        version,
        share_scales,
        sharing,
        tuple(missing),
        header_algorithm,
    )


def _stats_of(stats: Stats | str | os.PathLike) -> Stats:
    return stats if isinstance(stats, Stats) else load_stats(stats)


def scales_from_stats(
    stats: Stats | str | os.PathLike,
    algorithm: str | Selector,
    *,
    trt_version: str | Sequence[int] | None = None,
    share_scales: str = DEFAULT_SHARE_SCALES,
    header_algorithm: str | None = None,
) -> ScaleResult:
    """:func:`select_scales` for a statistics file: its graph, TensorRT version and cache lines.

    `trt_version` defaults to the recorded one. `share_scales` does not default to the recorded
    choice: every command has the one default ``"trt"`` (the recorded value is provenance).
    """
    stats = _stats_of(stats)
    settings = stats.settings
    version = trt_version if trt_version is not None else settings.trt_version
    return select_scales(
        stats.histograms,
        algorithm,
        graph=settings.graph,
        trt_version=version,
        share_scales=share_scales,
        trt_lines=settings.trt_lines,
        header_algorithm=header_algorithm,
    )


def select_from_stats(
    stats: Stats | str | os.PathLike,
    algorithm: str | Selector,
    *,
    trt_version: str | Sequence[int] | None = None,
    share_scales: str = DEFAULT_SHARE_SCALES,
    header_algorithm: str | None = None,
) -> CalibrationCache:
    """Recompute a cache with another algorithm from saved statistics (no model run).

    Parameters are those of :func:`scales_from_stats`.

    Raises
    ------
    ValueError
        If no TensorRT version is given or recorded (and the algorithm is not legacy).
    """
    return scales_from_stats(
        stats,
        algorithm,
        trt_version=trt_version,
        share_scales=share_scales,
        header_algorithm=header_algorithm,
    ).cache()


def select_all(
    stats: Stats | str | os.PathLike,
    folder: str | os.PathLike,
    *,
    algorithms: Iterable[str | Selector] = ALL_ALGORITHMS,
    trt_version: str | Sequence[int] | None = None,
    share_scales: str = DEFAULT_SHARE_SCALES,
    header_algorithm: str | None = None,
) -> dict[str, Path]:
    """Write one cache per algorithm into `folder`; returns ``{spec: path}``.

    ``percentile:99.99`` goes to ``percentile_99.99.cache``.
    """
    stats = _stats_of(stats)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for algorithm in algorithms:
        selector = as_selector(algorithm)
        cache = select_from_stats(
            stats,
            selector,
            trt_version=trt_version,
            share_scales=share_scales,
            header_algorithm=header_algorithm,
        )
        path = folder / (selector.spec.replace(":", "_") + ".cache")
        write_cache(path, cache)
        written[algorithm if isinstance(algorithm, str) else selector.spec] = path
    return written
