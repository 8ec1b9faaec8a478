"""Selectors: a histogram (or an exact max) in, a clipping threshold amax out.

One class per method, each holding only its own parameters; ``select`` is a pure function of
the histogram. ``make_selector("entropy2")`` builds one from the spec strings the command line
takes. The TensorRT algorithms and the evidence behind each choice are in docs/algorithms.md.

Any object that satisfies the :class:`Selector` protocol (a ``spec`` string and a
``select(histogram) -> amax`` method) is accepted wherever a spec string is; :func:`as_selector`
turns either into a selector. The cache header's algorithm word follows the TensorRT calibrator
a selector emulates (its ``trt_algorithm``), never its class: :func:`header_algorithm`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, overload, runtime_checkable

import numpy as np

from . import _reference as _codes
from .errors import InvalidInputError, SelectorError
from .histogram import Histogram, _Kernels

_impl = _Kernels()  # the Numba kernels, loaded on first use (tests swap in the twins)

__all__ = [
    "ALIASES",
    "DEFAULT_HEADER_ALGORITHM",
    "ENTROPY_PRESETS",
    "EntropySelector",
    "HeaderAlgorithmWarning",
    "LegacySelector",
    "MSESelector",
    "MinMaxSelector",
    "PercentileSelector",
    "Selector",
    "SelectorError",
    "as_selector",
    "compute_amax",
    "header_algorithm",
    "make_selector",
]

#: Header words of the TensorRT calibrators (``TRT-<version>-<word>``); legacy caches differ.
TRT_CALIBRATORS = (
    "EntropyCalibration2",
    "EntropyCalibration",
    "MinMaxCalibration",
    "LegacyCalibration",
)

#: The header word of a scale that no TensorRT calibrator computes (percentile, MSE, your own):
#: IInt8Calibrator's default algorithm and trtexec's calibrator, the class most deployments pass.
DEFAULT_HEADER_ALGORITHM = "EntropyCalibration2"


@runtime_checkable
class Selector(Protocol):
    """What calibkit needs of a selector: accepted wherever an algorithm spec string is.

    Attributes
    ----------
    spec : str
        A short name recorded in outputs (statistics, reports, Q/DQ metadata), e.g.
        ``"percentile:99.99"`` or ``"my-rule"``.

    Methods
    -------
    select(hist) -> float
        The clipping threshold amax (>= 0, inf allowed) for one :class:`Histogram`; a pure
        function of the histogram (calibkit may call it for tensors in any order).

    Optionally a selector has ``trt_algorithm``: the header word of the TensorRT calibrator it
    emulates (one of ``TRT_CALIBRATORS``), or None when no TensorRT calibrator computes its
    scales; see :func:`header_algorithm`.

    Examples
    --------
    >>> class Half:
    ...     spec = "half-max"
    ...     def select(self, hist):
    ...         return hist.max_abs / 2
    >>> isinstance(Half(), Selector)
    True
    """

    @property
    def spec(self) -> str:
        """Short name recorded in outputs."""
        ...

    def select(self, hist: Histogram) -> float:
        """Return amax for `hist`."""
        ...


class HeaderAlgorithmWarning(UserWarning):
    """A cache header names a calibrator that did not compute its scales (calibkit's default)."""


_OFFSETS = {"center": 0.5, "edge": 0.0, "last-center": -0.5}
_GROUPINGS = {
    "proportional": _codes.GROUP_PROPORTIONAL,
    "floor": _codes.GROUP_FLOOR,
    "fractional": _codes.GROUP_FRACTIONAL,
}


def _choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        msg = f"{name} must be one of {sorted(allowed)}, got {value!r}"
        raise SelectorError(msg)


def _check_int(name: str, value, low: int) -> None:
    """Every integer parameter: an int (not a bool) >= low; the one wording for all selectors."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        msg = f"{name} must be an integer >= {low}, got {value!r}"
        raise SelectorError(msg)


def _check_fraction(name: str, value, high: float) -> None:
    """Every real parameter in (0, high]; no clamping, NaN and non-numbers refused."""
    number = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if not number or not 0 < value <= high:
        msg = f"{name} must be a number in (0, {high:g}], got {value!r}"
        raise SelectorError(msg)


def _pick(d: np.ndarray, ties: str) -> int:
    """Index of the minimum of `d`; values within 1e-9 (relative) of it count as ties.

    The tolerance makes "first" and "last" mean the same thing whatever the summation order:
    the closed-form kernel and the bin-by-bin twin differ in the last bits (~1e-12).
    """
    finite = np.isfinite(d)
    if not finite.any():
        return -1
    dmin = d[finite].min()
    tied = np.flatnonzero(finite & (d <= dmin + 1e-9 * max(abs(dmin), 1e-3)))
    return int(tied[0] if ties == "first" else tied[-1])


@dataclass(frozen=True)
class EntropySelector:
    """TensorRT's KL-divergence threshold search (IInt8EntropyCalibrator2 / IInt8EntropyCalibrator).

    The defaults are "candidate A" of TRT_CALIBRATION.md §1.6, the only known search that
    reproduces TensorRT's own caches bit for bit, including the non-trivial TensorRT 7.0 conv
    tensor. Bin 0 (exact zeros and the smallest values) is emptied first. For every candidate i
    (bins kept, ``start_bin`` ... ``num_bins``):
    P = the first i bins with the clipped counts added to bin i-1; Q = the first i bins merged
    into ``num_quant_bins`` levels, each level's count spread over its non-empty bins; P and Q
    both divided by the total count; D(i) = sum P ln(P/Q). amax = (i* + 0.5) * upper / num_bins.
    The other parameters reproduce published variants (see ``ENTROPY_PRESETS``).

    Parameters
    ----------
    version : {2, 1}
        2 for EntropyCalibration2, 1 for EntropyCalibration (same threshold maths; the header
        word differs, and TensorRT calibrates v1 after layer fusion).
    num_quant_bins : int
        Quantised levels (128: one side of symmetric INT8).
    start_bin : int
        First candidate i.
    stride : int
        Candidate step (pytorch-quantization's ``stride``).
    grouping : {"proportional", "floor", "fractional"}
        How i bins map to levels: ``floor(128 j / i)``; ``i // 128`` per level with the
        remainder in the last (MXNet, ONNX Runtime, the GTC slides); levels of width i/128 with
        fractional overlap (ncnn; candidate B).
    spread : {"nonzero", "all"}
        Spread a level's count over its non-empty bins only (slides) or over all its bins.
    normalization : {"total", "separate"}
        Divide P and Q by the total count (TensorRT), or each by its own sum (every published
        reimplementation; it cannot see clipping and picks heavily clipped thresholds).
    smoothing : float
        MXNet/ONNX Runtime ``smooth_distribution`` epsilon on counts (0: none, +inf where Q is 0).
    first_bin : {"zero", "keep", "copy-next"}
        Bin 0 emptied before the search (NVIDIA's MLPerf notes: "the first bin is discarded"),
        kept as is, or replaced by bin 1 (pytorch-quantization). Every triple matches all three;
        with bin 0 kept, ReLU outputs that are mostly exact zeros get clipped far below their
        range (docs/algorithms.md).
    ties : {"first", "last"}
        Which of equal minima wins.
    threshold : {"center", "edge", "last-center"}
        amax = (i + 0.5) * width (TensorRT), i * width (pytorch-quantization), or
        (i - 0.5) * width, the centre of the last kept bin (candidate B's reading).
    precision : {"float64", "float32"}
        Arithmetic of the normalised distributions and the KL sum.
    """

    version: int = 2
    num_quant_bins: int = 128
    start_bin: int = 128
    stride: int = 1
    grouping: str = "proportional"
    spread: str = "nonzero"
    normalization: str = "total"
    smoothing: float = 0.0
    first_bin: str = "zero"
    ties: str = "first"
    threshold: str = "center"
    precision: str = "float64"

    def __post_init__(self) -> None:
        if self.version not in (1, 2) or isinstance(self.version, bool):
            msg = f"version must be 1 or 2, got {self.version!r}"
            raise SelectorError(msg)
        for name in ("num_quant_bins", "start_bin", "stride"):
            _check_int(name, getattr(self, name), 1)
        if self.start_bin < self.num_quant_bins:
            msg = (
                f"start_bin must be >= num_quant_bins ({self.num_quant_bins}), got {self.start_bin}"
            )
            raise SelectorError(msg)
        _choice("grouping", self.grouping, _GROUPINGS)
        _choice("spread", self.spread, {"nonzero", "all"})
        _choice("normalization", self.normalization, {"total", "separate"})
        _choice("first_bin", self.first_bin, {"keep", "zero", "copy-next"})
        _choice("ties", self.ties, {"first", "last"})
        _choice("threshold", self.threshold, set(_OFFSETS))
        _choice("precision", self.precision, {"float64", "float32"})
        number = isinstance(self.smoothing, int | float) and not isinstance(self.smoothing, bool)
        if not (number and math.isfinite(self.smoothing) and 0 <= self.smoothing < 1):
            msg = f"smoothing must be a number in [0, 1), got {self.smoothing!r}"
            raise SelectorError(msg)

    @property
    def trt_algorithm(self) -> str:
        """The cache header word of this calibrator."""
        return "EntropyCalibration2" if self.version == 2 else "EntropyCalibration"

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. ``"entropy2"`` or ``"entropy2:ties=last"``."""
        base = "entropy2" if self.version == 2 else "entropy"
        default = EntropySelector(version=self.version)
        changed = [
            f"{f.name.replace('_', '-')}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if f.name != "version" and getattr(self, f.name) != getattr(default, f.name)
        ]
        return base + (":" + ",".join(changed) if changed else "")

    def divergences(self, hist: Histogram) -> np.ndarray:
        """D(i) for i = 0 ... num_bins (inf outside the candidates); for plots and research."""
        nb = hist.num_bins
        if self.start_bin > nb:
            msg = f"start_bin ({self.start_bin}) exceeds the histogram's {nb} bins"
            raise SelectorError(msg)
        counts = hist.counts.copy()  # never mutate the caller's histogram
        if self.first_bin == "zero":
            counts[0] = 0
        elif self.first_bin == "copy-next":
            counts[0] = counts[1]
        group = _GROUPINGS[self.grouping]
        args = (
            counts,
            self.start_bin,
            nb,
            self.num_quant_bins,
            group,
            self.spread == "nonzero",
            self.normalization == "total",
        )
        if group != _codes.GROUP_FRACTIONAL and self.smoothing == 0 and self.precision == "float64":
            d = _impl.kl_sweep_fast(*args)
        else:
            d = _impl.kl_sweep_general(*args, float(self.smoothing), self.precision == "float32")
        if self.stride > 1:
            off = np.arange(d.size) - self.start_bin
            d = np.where(off % self.stride == 0, d, np.inf)
        return d

    def select(self, hist: Histogram) -> float:
        """Return amax for `hist` (inf if it saw inf, 0 if it holds only zeros)."""
        if hist.num_inf:
            return math.inf  # TensorRT writes 7f800000 for such tensors in EC2 caches too
        if hist.upper == 0.0:
            return 0.0
        i = _pick(self.divergences(hist), self.ties)
        if i < 0:  # nothing left to compare (e.g. everything in an emptied bin 0): keep all
            i = hist.num_bins
        return (i + _OFFSETS[self.threshold]) * hist.upper / hist.num_bins


ENTROPY_PRESETS: dict[str, dict] = {
    "trt": {},
    "candidate-b": {"grouping": "fractional", "threshold": "last-center"},
    "pytorch": {
        "normalization": "separate",
        "first_bin": "copy-next",
        "ties": "last",
        "threshold": "edge",
    },
    "mxnet": {
        "first_bin": "keep",
        "grouping": "floor",
        "normalization": "separate",
        "smoothing": 1e-4,
        "threshold": "edge",
    },
}
"""Named variants: ``trt`` is TensorRT (candidate A); ``candidate-b`` its fractional-overlap
rival (exact only where no value equals the range: candidate B gives such values a bin of
their own, which calibkit's histogram does not keep); ``pytorch`` the KL of NVIDIA
pytorch-quantization / ModelOpt; ``mxnet`` the KL of MXNet, ONNX Runtime and TVM applied to a
|x| histogram (their signed collection is not reproduced). TensorRT 8.6's Constant lines rule
out all three as TensorRT's search (docs/fidelity.md §1b); they are kept for research."""


@dataclass(frozen=True)
class MinMaxSelector:
    """TensorRT's MinMax calibrator: the exact max |x| over all batches, not from the bins."""

    trt_algorithm: ClassVar[str] = "MinMaxCalibration"
    spec: ClassVar[str] = "minmax"

    def select(self, hist: Histogram | float) -> float:
        """Return the exact max |x| (inf if an infinite value was seen)."""
        if isinstance(hist, Histogram):
            return math.inf if hist.num_inf else hist.max_abs
        value = float(hist)
        if math.isnan(value) or value < 0:
            msg = f"a running max |x| must be >= 0, got {value!r}"
            raise InvalidInputError(msg)
        return value


def _quantile_edge(hist: Histogram, fraction: float) -> float:
    """Upper edge of the first bin where the cumulative count reaches `fraction` of all values.

    Infinite values count as lying above every bin; the answer is inf if the quantile is there.
    """
    total = hist.total + hist.num_inf
    if total == 0 or hist.upper == 0.0:
        return math.inf if hist.num_inf else 0.0
    need = fraction * total
    cum = np.cumsum(hist.counts)
    b = int(np.searchsorted(cum, need - 1e-9 * total, side="left"))
    if b >= hist.num_bins:
        return math.inf
    return (b + 1) * hist.upper / hist.num_bins


@dataclass(frozen=True)
class PercentileSelector:
    """amax = the upper edge of the bin holding the given percentile of |x| (not in TensorRT).

    Parameters
    ----------
    percentile : float
        In (0, 100]; 99.99 and 99.999 are common choices.
    """

    percentile: float = 99.99
    trt_algorithm: ClassVar[str | None] = None  # no TensorRT calibrator: see header_algorithm

    def __post_init__(self) -> None:
        _check_fraction("percentile", self.percentile, 100)

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. ``"percentile:99.99"``."""
        return f"percentile:{self.percentile:g}"

    def select(self, hist: Histogram) -> float:
        """Return amax for `hist`."""
        return _quantile_edge(hist, self.percentile / 100.0)


@dataclass(frozen=True)
class LegacySelector:
    """calibkit's documented stand-in for IInt8LegacyCalibrator (TensorRT never published it).

    amax = min(q-quantile of |x|, regression_cutoff * max |x|): the quantile picks the "region
    maximum", and a cutoff below 1 caps it at that fraction of the maximum. With cutoff 1.0 (the
    value in NVIDIA's BERT demo and MLPerf 3D-UNet) only the quantile acts. This is an
    approximation: TensorRT's legacy caches cannot be reproduced from public information.

    Parameters
    ----------
    quantile : float
        In (0, 1]; TensorRT's ``get_quantile()``.
    regression_cutoff : float
        In (0, 1]; TensorRT's ``get_regression_cutoff()``.
    """

    quantile: float = 0.9999
    regression_cutoff: float = 1.0
    trt_algorithm: ClassVar[str] = "LegacyCalibration"

    def __post_init__(self) -> None:
        for name in ("quantile", "regression_cutoff"):
            _check_fraction(name, getattr(self, name), 1)

    @property
    def spec(self) -> str:
        """Canonical spec string, ``"legacy:<quantile>:<cutoff>"``."""
        return f"legacy:{self.quantile:g}:{self.regression_cutoff:g}"

    def select(self, hist: Histogram) -> float:
        """Return amax for `hist`."""
        if hist.num_inf:
            return math.inf
        return min(_quantile_edge(hist, self.quantile), self.regression_cutoff * hist.max_abs)


@dataclass(frozen=True)
class MSESelector:
    """amax minimising the expected INT8 quantisation MSE over the histogram (not in TensorRT).

    Candidates are the entropy search's thresholds, amax = (i + 0.5) * width for i in
    [start_bin, num_bins]; values are represented by their bin centres.
    """

    start_bin: int = 128
    trt_algorithm: ClassVar[str | None] = None  # no TensorRT calibrator: see header_algorithm

    def __post_init__(self) -> None:
        _check_int("start_bin", self.start_bin, 1)

    @property
    def spec(self) -> str:
        """Canonical spec string."""
        return "mse" if self.start_bin == 128 else f"mse:{self.start_bin}"

    def errors(self, hist: Histogram) -> np.ndarray:
        """Return the expected squared error sum per candidate i (inf outside the candidates)."""
        return self._sweep(hist, hist.upper)

    def _sweep(self, hist: Histogram, upper: float) -> np.ndarray:
        if self.start_bin > hist.num_bins:  # as the entropy search: an error, not a clamp
            msg = f"start_bin ({self.start_bin}) exceeds the histogram's {hist.num_bins} bins"
            raise SelectorError(msg)
        return _impl.mse_sweep(hist.counts, upper, self.start_bin, hist.num_bins)

    def select(self, hist: Histogram) -> float:
        """Return amax for `hist`."""
        if hist.num_inf:
            return math.inf
        if hist.upper == 0.0:
            return 0.0
        # errors at the range scaled by a power of two into [0.5, 1): each error scales by
        # exactly 4**-exp, so the choice is the same, and ranges near 1e154 no longer overflow
        # every error to inf (which made argmin pick index -1: a negative amax)
        _, exp = math.frexp(hist.upper)
        i = _pick(self._sweep(hist, math.ldexp(hist.upper, -exp)), "first")
        return (i + 0.5) * hist.upper / hist.num_bins


def _parse_options(text: str) -> dict:
    """``"pytorch,ties=first"`` -> the options of an entropy preset plus overrides."""
    out: dict = {}
    # the field types are strings ("int", "float", "str"): this module postpones annotations
    fields = {
        f.name: str(f.type) for f in dataclasses.fields(EntropySelector) if f.name != "version"
    }
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            if item not in ENTROPY_PRESETS:
                presets = sorted(ENTROPY_PRESETS)
                msg = f"unknown entropy preset {item!r}; choose one of {presets}"
                raise SelectorError(msg)
            out.update(ENTROPY_PRESETS[item])
            continue
        key, value = (s.strip() for s in item.split("=", 1))
        key = key.replace("-", "_")
        if key not in fields:
            msg = f"unknown entropy option {key!r}; options are {sorted(fields)}"
            raise SelectorError(msg)
        out[key] = _number(key, value, fields[key]) if fields[key] in ("int", "float") else value
    return out


@overload
def _number(name: str, text: str, kind: Literal["int"]) -> int: ...
@overload
def _number(name: str, text: str, kind: Literal["float"]) -> float: ...
@overload
def _number(name: str, text: str, kind: str) -> int | float: ...


def _number(name: str, text: str, kind: str) -> int | float:
    """Parse one number of a spec: ``kind`` is ``"int"`` or ``"float"``."""
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        what = "an integer" if kind == "int" else "a number"
        msg = f"{name} must be {what}, got {text!r}"
        raise SelectorError(msg) from None


#: Other spellings of the algorithms, as TensorRT (header words), onnxruntime
#: (``CalibrationMethod``) and ModelOpt write them. calibkit's ``entropy`` is TensorRT's
#: EntropyCalibration (v1), not onnxruntime's ``Entropy`` method, whose KL search is
#: ``entropy2:mxnet`` on an |x| histogram (docs/algorithms.md).
ALIASES = {
    "max": "minmax",
    "MinMax": "minmax",
    "MinMaxCalibration": "minmax",
    "EntropyCalibration2": "entropy2",
    "EntropyCalibration": "entropy",
    "LegacyCalibration": "legacy",
}


def make_selector(spec: str):
    """Build a selector from a spec string.

    Specs: ``entropy2``, ``entropy`` (each optionally ``:preset`` and/or ``:key=value,...``,
    e.g. ``entropy2:pytorch`` or ``entropy2:grouping=floor,ties=last``), ``minmax``,
    ``percentile:99.99``, ``legacy:<quantile>:<regression_cutoff>`` (``legacy`` alone is
    0.9999 and 1.0), ``mse`` or ``mse:<start_bin>``; the names of :data:`ALIASES` too.

    Raises
    ------
    SelectorError
        For an unknown name or a bad parameter: ``bad algorithm spec '<spec>': <why>``.
    TypeError
        If `spec` is not a string.

    Examples
    --------
    >>> make_selector("percentile:99.9").spec
    'percentile:99.9'
    >>> make_selector("entropy2:pytorch").ties
    'last'
    >>> make_selector("MinMaxCalibration").spec
    'minmax'
    """
    if not isinstance(spec, str):
        msg = f"an algorithm spec must be a string, got {type(spec).__name__}"
        raise TypeError(msg)
    name, _, rest = spec.strip().partition(":")
    name = ALIASES.get(name, name)
    try:
        return _build(name, rest)
    except SelectorError as err:
        msg = f"bad algorithm spec {spec!r}: {err}"
        raise SelectorError(msg) from None


def _build(name: str, rest: str):
    if name in ("entropy2", "entropy"):
        return EntropySelector(version=2 if name == "entropy2" else 1, **_parse_options(rest))
    if name == "minmax":
        if rest:
            msg = "minmax takes no parameters"
            raise SelectorError(msg)
        return MinMaxSelector()
    if name == "percentile":
        return (
            PercentileSelector(_number("percentile", rest, "float"))
            if rest
            else (PercentileSelector())
        )
    if name == "legacy":
        parts = rest.split(":") if rest else []
        if len(parts) > 2:
            msg = "expected legacy:<quantile>:<cutoff>"
            raise SelectorError(msg)
        names = ("quantile", "regression_cutoff")
        return LegacySelector(*(_number(n, p, "float") for n, p in zip(names, parts, strict=False)))
    if name == "mse":
        return MSESelector(_number("start_bin", rest, "int")) if rest else MSESelector()
    msg = (
        f"unknown algorithm {name!r}; choose one of entropy2, entropy, minmax, "
        "percentile:<p>, legacy:<quantile>:<cutoff>, mse (or an alias: "
        + ", ".join(sorted(ALIASES))
        + ")"
    )
    raise SelectorError(msg)


def as_selector(algorithm) -> Selector:
    """Return `algorithm` as a selector: a spec string via :func:`make_selector`, or the object.

    Raises
    ------
    TypeError
        If `algorithm` is neither a string nor an object with a ``spec`` string and a callable
        ``select`` (the :class:`Selector` protocol).
    """
    if isinstance(algorithm, str):
        return make_selector(algorithm)
    if isinstance(algorithm, Selector) and isinstance(algorithm.spec, str):
        return algorithm
    msg = (
        "an algorithm must be a spec string such as 'entropy2' or an object with a 'spec' "
        f"string and a select(histogram) method, got {type(algorithm).__name__}"
    )
    raise TypeError(msg)


def header_algorithm(selector: Selector, override: str | None = None, *, warn: bool = True) -> str:
    """Return the cache header's algorithm word for scales chosen by `selector`.

    TensorRT accepts a cache only under the calibrator class whose algorithm the header names
    (TRT_CALIBRATION.md §5.5), so the word says which calibrator the cache stands in for, not
    which rule chose the scales. A selector that emulates a TensorRT calibrator
    (``trt_algorithm``: entropy2, entropy, minmax, legacy) gives its word; `override` may name
    another. A selector that emulates none (percentile, mse, your own) gets `override`, or
    :data:`DEFAULT_HEADER_ALGORITHM` with a :class:`HeaderAlgorithmWarning` (unless `warn` is
    False).

    Raises
    ------
    SelectorError
        If `override` is not a TensorRT calibrator word.
    """
    if override is not None:
        if override not in TRT_CALIBRATORS:
            msg = f"header algorithm must be one of {list(TRT_CALIBRATORS)}, got {override!r}"
            raise SelectorError(msg)
        return override
    word = getattr(selector, "trt_algorithm", None)
    if word in TRT_CALIBRATORS:
        return word
    msg = (
        f"{selector.spec} is not a TensorRT calibrator; the cache header says "
        f"{DEFAULT_HEADER_ALGORITHM} (deploy it with IInt8EntropyCalibrator2, or name the "
        "calibrator: --header-algorithm / header_algorithm=)"
    )
    if warn:
        warnings.warn(msg, HeaderAlgorithmWarning, stacklevel=2)
    return DEFAULT_HEADER_ALGORITHM


def compute_amax(histograms: Mapping[str, Histogram], selector) -> dict[str, float]:
    """Apply `selector` (a :class:`Selector` or a spec) to every histogram; ``{name: amax}``.

    The order of `histograms` is kept.
    """
    selector = as_selector(selector)
    return {name: float(selector.select(h)) for name, h in histograms.items()}
