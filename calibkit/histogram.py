"""Histogram: counts of |x| on [0, upper), grown the way TensorRT's calibrators grow it.

TensorRT keeps 2048 bins per tensor. The range starts at the first batch's max |x| and, when a
later batch holds a larger value, doubles (as often as needed) while adjacent bins merge, so the
bin count never changes and no count is lost (TRT_CALIBRATION.md §0.2, §1.6: the TensorRT 7.0
conv triple is bit-exact only under this rule). A value equal to the range lands in the last bin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import _reference as _codes
from .errors import HistogramMergeError, HistogramRangeError, InvalidInputError, NonFiniteError

__all__ = ["NAN_POLICIES", "Histogram", "bin_scale", "fold", "max_abs", "raw_bits"]

NAN_POLICIES = ("raise", "skip")


class _Kernels:
    """The Numba kernels, imported on first use: commands that never bin never load Numba."""

    def __getattr__(self, name: str):  # called only while `name` is not yet an attribute
        from . import _kernels

        kernel = getattr(_kernels, name)
        setattr(self, name, kernel)  # later look-ups skip the import machinery (2 us a call)
        return kernel


_impl = _Kernels()  # tests swap in the NumPy twins (calibkit._reference) here

# dtype -> (kernel format code, unsigned view, mask clearing the sign bit, bits of +inf)
_FORMATS = {
    np.dtype(t): (code, u, u(mask), u(inf))
    for t, code, u, mask, inf in [
        (np.float16, _codes.FMT_FLOAT16, np.uint16, 0x7FFF, 0x7C00),
        (np.float32, _codes.FMT_FLOAT32, np.uint32, 0x7FFF_FFFF, 0x7F80_0000),
        (np.float64, _codes.FMT_FLOAT64, np.uint64, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF << 52),
    ]
}
_FLOATS = {_codes.FMT_FLOAT32: np.float32, _codes.FMT_FLOAT64: np.float64}
_BFLOAT16 = (_codes.FMT_BFLOAT16, np.uint16, np.uint16(0x7FFF), np.uint16(0x7F80))
_NORMAL_RANGE = 2.0**-1000  # below it num_bins / upper overflows: bin_scale rescales


def raw_bits(x: np.ndarray | Iterable[float]) -> tuple[np.ndarray, int, int, int]:
    """Return the flat unsigned-integer view of a float array and how the kernels read it.

    float16, float32, float64 and bfloat16 (``ml_dtypes.bfloat16``, as ONNX hands it over) are
    read as they are, without a conversion copy; other floating types are converted to float64.
    Returns ``(bits, format code, sign-clearing mask, bits of +inf)``.
    """
    arr = x if type(x) is np.ndarray else np.asarray(x)
    fmt = _FORMATS.get(arr.dtype)
    if fmt is None and arr.dtype.name == "bfloat16" and arr.dtype.itemsize == 2:
        fmt = _BFLOAT16
    if fmt is None:
        if not np.issubdtype(arr.dtype, np.floating):
            msg = f"expected a floating-point array, got dtype {arr.dtype}"
            raise TypeError(msg)
        arr, fmt = arr.astype(np.float64), _FORMATS[np.dtype(np.float64)]
    code, view, mask, inf_bits = fmt
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr.reshape(-1).view(view), code, mask, inf_bits


def bin_scale(upper: float, num_bins: int) -> tuple[float, float]:
    """Return ``(factor, scale)``: |x| lands in bin ``int((|x| * factor) * scale)``.

    ``factor`` is 1 (the bin index is ``|x| * (num_bins / upper)`` in float64, as TensorRT's
    evidence requires) unless the range is so small that ``num_bins / upper`` would overflow;
    then it is the power of two that brings ``upper`` near 1, which changes no index (products
    with a power of two are exact) and keeps every value counted.
    """
    if upper >= _NORMAL_RANGE:
        return 1.0, num_bins / upper  # Python floats are IEEE doubles: the same division
    _, exp = math.frexp(upper)
    factor = math.ldexp(1.0, min(-exp, 1023))
    return factor, num_bins / (upper * factor)


def max_abs(x: np.ndarray) -> tuple[float, int, int]:
    """Return (max finite |x|, number of NaN, number of +-inf) of a float array, in one pass."""
    bits, fmt, mask, inf_bits = raw_bits(x)
    if bits.size == 0:
        return 0.0, 0, 0
    m, n_nan, n_inf = _impl.scan(bits, fmt, mask, inf_bits)
    return float(m), int(n_nan), int(n_inf)


def _grown(upper: float, value: float) -> tuple[float, int]:
    """Return the range after doubling `upper` (k times) until `value` fits, and k."""
    k = 0
    while upper < value:
        upper *= 2.0  # exact in binary floating point
        k += 1
    if math.isinf(upper):
        msg = f"|x| = {value!r} grows the histogram range past the float64 maximum"
        raise HistogramRangeError(msg)
    return upper, k


@dataclass
class _Update:
    """One batch binned but not yet added: what :meth:`Histogram._commit` applies."""

    counts: np.ndarray  # the batch's counts at range `upper`
    upper: float
    doublings: int  # the existing counts fold by 2**doublings first
    max_abs: float
    num_nan: int
    num_inf: int


def fold(counts: np.ndarray, factor: int) -> np.ndarray:
    """Merge runs of `factor` adjacent bins; the range grows by `factor`, the bin count does not.

    Examples
    --------
    >>> fold(np.array([1, 2, 3, 4]), 2).tolist()
    [3, 7, 0, 0]
    """
    merged = counts.reshape(-1, min(factor, counts.size)).sum(axis=1)  # num_bins is a power of 2
    return np.concatenate([merged, np.zeros(counts.size - merged.size, counts.dtype)])


def _check_num_bins(num_bins: int) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)):
        msg = f"num_bins must be an int, got {num_bins!r}"
        raise TypeError(msg)
    if num_bins < 2 or num_bins & (num_bins - 1):
        msg = f"num_bins must be a power of two >= 2 (growth merges bin pairs), got {num_bins}"
        raise InvalidInputError(msg)
    return int(num_bins)


class Histogram:
    """Counts of |x| in `num_bins` equal bins on ``[0, upper)``, with TensorRT's range growth.

    Parameters
    ----------
    num_bins : int
        Number of bins, a power of two (TensorRT uses 2048).
    upper : float, optional
        Start with this range instead of the first batch's max |x| (fixed-range / two-pass
        mode: pass the exact max from a first pass and the range never grows, so the result
        does not depend on batch order). Values above it still grow the range.

    Attributes
    ----------
    counts : ndarray of int64
        Bin counts; zeros are counted (in bin 0).
    upper : float
        The range R; 0.0 while only zeros have been seen.
    max_abs : float
        Exact largest finite |x| seen (MinMax calibration uses this, not the bins).
    num_inf, num_nan : int
        Infinite values seen (recorded, not binned) and NaN values skipped.

    Examples
    --------
    >>> h = Histogram(8).fill(np.array([0.5, -1.0])).fill(np.array([3.0]))
    >>> h.upper, h.counts.tolist()
    (4.0, [0, 2, 0, 0, 0, 0, 1, 0])
    """

    __slots__ = ("counts", "max_abs", "num_bins", "num_inf", "num_nan", "upper")

    def __init__(self, num_bins: int = 2048, upper: float | None = None) -> None:
        self.num_bins = _check_num_bins(num_bins)
        self.counts = np.zeros(self.num_bins, np.int64)
        self.upper = 0.0
        self.max_abs = 0.0
        self.num_inf = 0
        self.num_nan = 0
        if upper is not None:
            upper = float(upper)
            if not (math.isfinite(upper) and upper >= 0):
                msg = f"upper must be finite and >= 0, got {upper!r}"
                raise InvalidInputError(msg)
            self.upper = upper

    @classmethod
    def from_arrays(
        cls,
        counts: np.ndarray,
        upper: float,
        *,
        max_abs: float,
        num_inf: int = 0,
        num_nan: int = 0,
    ) -> Histogram:
        """Rebuild a histogram from saved arrays (see ``calibkit.stats``), checking them."""
        counts = np.asarray(counts)
        if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer):
            msg = f"counts must be a 1-D integer array, got {counts.dtype} of shape {counts.shape}"
            raise InvalidInputError(msg)
        if np.any(counts < 0):
            msg = "counts must be non-negative"
            raise InvalidInputError(msg)
        h = cls(counts.size, upper)
        h.counts = counts.astype(np.int64, copy=True)
        h.max_abs = float(max_abs)
        h.num_inf, h.num_nan = int(num_inf), int(num_nan)
        if h.upper == 0 and h.counts[1:].any():
            msg = "counts above bin 0 need a positive upper range"
            raise InvalidInputError(msg)
        if not 0 <= h.max_abs <= h.upper or (h.max_abs == 0 and h.counts[1:].any()):
            msg = f"max_abs={h.max_abs!r} is inconsistent with upper={h.upper!r} and the counts"
            raise InvalidInputError(msg)
        return h

    # -- filling ---------------------------------------------------------------------------

    def fill(self, x: np.ndarray, *, nan_policy: str = "raise") -> Histogram:
        """Add |x| to the histogram, growing the range first if needed; returns self.

        Raises
        ------
        NonFiniteError
            If `x` holds NaN and `nan_policy` is ``"raise"`` (``"skip"`` counts them instead).
        HistogramRangeError
            If a value would grow the range past the float64 maximum.
        TypeError
            If `x` is not a floating-point array.
        """
        update = self._stage(x, nan_policy)
        if update is not None:
            self._commit(update)
        return self

    def _stage(self, x: np.ndarray, nan_policy: str) -> _Update | None:
        """Bin a batch into new counts without changing the histogram (None: empty batch).

        The batch's max comes first (a vectorised integer max of the bits, which also finds
        inf and NaN), so the range grows before binning and the batch is binned in one pass at
        its final range. Binning at the grown range equals binning at the old range and
        merging bins, as TensorRT does (docs/algorithms.md): the ranges differ by a power of
        two, so ``int(|x| * scale) >> k == int(|x| * scale / 2**k)``.
        """
        if nan_policy not in NAN_POLICIES:
            msg = f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}"
            raise InvalidInputError(msg)
        bits, fmt, mask, inf_bits = raw_bits(x)
        if bits.size == 0:
            return None
        m, n_nan, n_inf = _impl.scan(bits, fmt, mask, inf_bits)
        _check_nan(n_nan, bits.size, nan_policy)
        counts = np.zeros(self.num_bins, np.int64)
        upper, doublings = self.upper, 0
        if upper == 0.0:  # no range yet: this batch's max sets it
            if m == 0.0:  # only zeros so far: they belong in bin 0 whatever the range becomes
                counts[0] = bits.size - n_nan - n_inf
                return _Update(counts, 0.0, 0, 0.0, n_nan, n_inf)
            upper = float(m)
        elif m > upper:
            upper, doublings = _grown(upper, float(m))
        scale = bin_scale(upper, self.num_bins)
        if n_nan or n_inf:  # skip them, one branch per value
            *_, deferred = _impl.bin_values(bits, fmt, mask, inf_bits, counts, *scale)
            counts[-1] += deferred  # at the top of the range: the last bin, as TensorRT does
        else:  # every value is finite and within the range: branch-free
            values = bits if bits.dtype == np.uint16 else bits.view(_FLOATS[fmt])
            _impl.bin_clamped(values, fmt, counts, *scale)
        return _Update(counts, upper, doublings, float(m), int(n_nan), int(n_inf))

    def _commit(self, update: _Update) -> None:
        """Add a staged batch: fold the existing counts to its range, then add its counts."""
        if update.doublings:
            self.counts = fold(self.counts, 2**update.doublings)  # fold caps the run at num_bins
        self.counts += update.counts
        self.upper = max(self.upper, update.upper)
        self.max_abs = max(self.max_abs, update.max_abs)
        self.num_nan += update.num_nan
        self.num_inf += update.num_inf

    # -- views -----------------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Number of binned values (zeros included, inf and NaN excluded)."""
        return int(self.counts.sum())

    @property
    def width(self) -> float:
        """Width of one bin, ``upper / num_bins``."""
        return self.upper / self.num_bins

    @property
    def edges(self) -> np.ndarray:
        """Bin edges, ``num_bins + 1`` values from 0 to ``upper``."""
        return np.linspace(0.0, self.upper, self.num_bins + 1)

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(counts, edges)`` like ``np.histogram``."""
        return self.counts.copy(), self.edges

    def copy(self) -> Histogram:
        """Return an independent copy."""
        return Histogram.from_arrays(
            self.counts,
            self.upper,
            max_abs=self.max_abs,
            num_inf=self.num_inf,
            num_nan=self.num_nan,
        )

    # -- merging ---------------------------------------------------------------------------

    def __add__(self, other: object) -> Histogram:
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool) and other == 0:
            return self.copy()
        if not isinstance(other, Histogram):
            return NotImplemented
        if other.num_bins != self.num_bins:
            msg = f"cannot merge histograms of {self.num_bins} and {other.num_bins} bins"
            raise HistogramMergeError(msg)
        big, small = (self, other) if self.upper >= other.upper else (other, self)
        counts = big.counts.copy()
        if small.upper == 0.0 or small.upper == big.upper:
            counts += small.counts  # an empty range holds only zeros: bin 0 in any range
        else:
            mant, exp = math.frexp(big.upper / small.upper)
            if mant != 0.5 or big.upper != small.upper * 2.0 ** (exp - 1):
                msg = (
                    f"cannot merge exactly: ranges {small.upper!r} and {big.upper!r} are not "
                    "power-of-two multiples of each other; collect both with the same fixed "
                    "range (Histogram(upper=...)) to merge them"
                )
                raise HistogramMergeError(msg)
            counts += fold(small.counts, 2 ** (exp - 1))
        out = Histogram(self.num_bins, big.upper)
        out.counts = counts
        out.max_abs = max(self.max_abs, other.max_abs)
        out.num_inf = self.num_inf + other.num_inf
        out.num_nan = self.num_nan + other.num_nan
        return out

    __radd__ = __add__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.num_bins == other.num_bins
            and self.upper == other.upper
            and self.max_abs == other.max_abs
            and self.num_inf == other.num_inf
            and self.num_nan == other.num_nan
            and bool(np.array_equal(self.counts, other.counts))
        )

    # mutable, so deliberately unhashable (as list and dict); mypy wants a callable here
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Histogram(num_bins={self.num_bins}, upper={self.upper!r}, total={self.total}, "
            f"max_abs={self.max_abs!r}, num_inf={self.num_inf}, num_nan={self.num_nan})"
        )


def _check_nan(n_nan: int, size: int, nan_policy: str) -> None:
    if n_nan and nan_policy == "raise":
        msg = f"{n_nan} NaN value(s) in a batch of {size}"
        raise NonFiniteError(msg)
