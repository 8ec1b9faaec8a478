"""Histogram: counts of |x| on [0, upper), grown the way TensorRT's calibrators grow it.

TensorRT keeps 2048 bins per tensor. The range starts at the first batch's max |x| and, when a
later batch holds a larger value, doubles (as often as needed) while adjacent bins merge, so the
bin count never changes and no count is lost (TRT_CALIBRATION.md §0.2, §1.6: the TensorRT 7.0
conv triple is bit-exact only under this rule). A value equal to the range lands in the last bin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from . import _kernels as _impl
from .errors import HistogramMergeError, InvalidInputError, NonFiniteError

__all__ = ["NAN_POLICIES", "Histogram", "fold"]

NAN_POLICIES = ("raise", "skip")


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
        TypeError
            If `x` is not a floating-point array.
        """
        if nan_policy not in NAN_POLICIES:
            msg = f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}"
            raise InvalidInputError(msg)
        flat = _as_float_vector(x)
        if flat.size == 0:
            return self
        if self.upper == 0.0:  # no range yet: it comes from this batch's max, so two passes
            m, n_nan, n_inf = _impl.scan(flat)
            self._accept(flat.size, m, n_nan, n_inf, nan_policy)
            if m == 0.0:  # only zeros so far: they belong in bin 0 whatever the range becomes
                self.counts[0] += flat.size - n_nan - n_inf
                return self
            self.upper = float(m)
            _impl.accumulate(flat, self.counts, self.upper)
            return self
        # One pass bins everything below the range into scratch counts (kept only if the batch
        # is accepted) and defers the rest; after a growth the bins fold exactly and only the
        # deferred values are binned again, at the new range (docs/algorithms.md).
        scratch = np.zeros(self.num_bins, np.int64)
        m, n_nan, n_inf, n_deferred = _impl.fill_within(flat, scratch, self.upper)
        self._accept(flat.size, m, n_nan, n_inf, nan_policy)
        self.counts += scratch
        if m > self.upper:
            previous = self.upper
            self._grow(m)
            _impl.accumulate_above(flat, self.counts, self.upper, previous)
        elif n_deferred:  # values at the top of the range: the last bin, as TensorRT does
            self.counts[-1] += n_deferred
        return self

    def _accept(self, size: int, m: float, n_nan: int, n_inf: int, nan_policy: str) -> None:
        """Apply the NaN policy to a scanned batch, then record its max, NaN and inf counts."""
        if n_nan and nan_policy == "raise":
            msg = f"{n_nan} NaN value(s) in a batch of {size}"
            raise NonFiniteError(msg)
        self.num_nan += int(n_nan)
        self.num_inf += int(n_inf)
        self.max_abs = max(self.max_abs, float(m))

    def _grow(self, value: float) -> None:
        """Double the range (k times) until `value` fits, merging runs of 2**k bins."""
        k, upper = 0, self.upper
        while upper < value:
            upper *= 2.0  # exact in binary floating point
            k += 1
        self.counts = fold(self.counts, 2**k)  # fold caps the run at num_bins
        self.upper = upper

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

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (
            f"Histogram(num_bins={self.num_bins}, upper={self.upper!r}, total={self.total}, "
            f"max_abs={self.max_abs!r}, num_inf={self.num_inf}, num_nan={self.num_nan})"
        )


def _as_float_vector(x: np.ndarray | Iterable[float]) -> np.ndarray:
    """Return `x` as a contiguous 1-D float32/float64 array (float16 widened to float32)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        msg = f"expected a floating-point array, got dtype {arr.dtype}"
        raise TypeError(msg)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr).reshape(-1)
