"""Collectors: batches ``{tensor name: array}`` in, per-tensor statistics out.

They follow scikit-learn: ``__init__`` only stores parameters, ``reset()`` creates the state,
``update(batch)`` (the ``partial_fit`` analogue) and ``reset()`` return ``self``, learned results
end in ``_``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from .errors import HistogramRangeError, InvalidInputError, NonFiniteError
from .histogram import NAN_POLICIES, Histogram, max_abs

__all__ = ["HistogramCollector", "MaxCollector"]

logger = logging.getLogger(__name__)


def _check_nan_policy(nan_policy: str) -> str:
    if nan_policy not in NAN_POLICIES:
        msg = f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}"
        raise InvalidInputError(msg)
    return nan_policy


def _check_mapping(batch: object) -> None:
    if not isinstance(batch, Mapping):
        msg = f"a batch must be a mapping of tensor name to array, got {type(batch).__name__}"
        raise TypeError(msg)


def _where(name: str, batch_index: int) -> str:
    return f"tensor {name!r}, batch {batch_index}"


class HistogramCollector:
    """Stream batches into one TensorRT-style :class:`Histogram` per tensor.

    Parameters
    ----------
    num_bins : int
        Bins per histogram (TensorRT: 2048).
    ranges : mapping of str to float, optional
        Fixed starting range per tensor (two-pass mode: the exact max |x| from a first pass,
        e.g. ``MaxCollector().amax_``), which makes the histograms independent of batch order.
        Tensors not listed start at their first batch's max |x|, as TensorRT does.
    nan_policy : {"raise", "skip"}
        NaN in a batch raises :class:`NonFiniteError` naming the tensor and batch, or is
        counted (``Histogram.num_nan``) and skipped.

    Attributes
    ----------
    histograms_ : dict of str to Histogram
        One histogram per tensor, in the order tensors were first seen.
    n_batches_ : int
        Number of batches seen.

    Examples
    --------
    >>> c = HistogramCollector(num_bins=8).update({"x": np.array([1.0, -2.0])})
    >>> c.histograms_["x"].upper, c.n_batches_
    (2.0, 1)
    """

    def __init__(
        self,
        num_bins: int = 2048,
        *,
        ranges: Mapping[str, float] | None = None,
        nan_policy: str = "raise",
    ) -> None:
        self.num_bins = num_bins
        self.ranges = ranges
        self.nan_policy = nan_policy
        self.reset()

    def reset(self) -> HistogramCollector:
        """Forget everything collected; returns self."""
        _check_nan_policy(self.nan_policy)
        Histogram(self.num_bins)  # validates num_bins now rather than at the first batch
        self.histograms_: dict[str, Histogram] = {}
        self.n_batches_ = 0
        return self

    def update(self, batch: Mapping[str, np.ndarray]) -> HistogramCollector:
        """Add one batch (tensor name -> array of any shape); returns self.

        All or nothing: every tensor is binned first and the histograms change only once all
        succeeded, so an error (NaN in one tensor) leaves every histogram as it was.
        """
        _check_mapping(batch)
        index = self.n_batches_
        staged = []
        for name, x in batch.items():
            hist = self.histograms_.get(name)
            if hist is None:
                upper = None if self.ranges is None else self.ranges.get(name)
                hist = Histogram(self.num_bins, upper)
            try:
                update = hist._stage(x, self.nan_policy)
            except (NonFiniteError, HistogramRangeError, TypeError) as err:
                msg = f"{_where(name, index)}: {err}"
                raise type(err)(msg) from err
            staged.append((name, hist, update))
        for name, hist, update in staged:
            self.histograms_.setdefault(name, hist)
            if update is not None:
                hist._commit(update)
        self.n_batches_ += 1
        return self


class MaxCollector:
    """Exact running max |x| per tensor (TensorRT's MinMax calibrator; the two-pass first pass).

    Parameters
    ----------
    nan_policy : {"raise", "skip"}
        As for :class:`HistogramCollector`.

    Attributes
    ----------
    amax_ : dict of str to float
        Largest |x| per tensor; ``inf`` once an infinite value was seen (TensorRT then writes
        the scale ``7f800000``).
    n_batches_ : int
        Number of batches seen.
    """

    def __init__(self, *, nan_policy: str = "raise") -> None:
        self.nan_policy = nan_policy
        self.reset()

    def reset(self) -> MaxCollector:
        """Forget everything collected; returns self."""
        _check_nan_policy(self.nan_policy)
        self.amax_: dict[str, float] = {}
        self.n_batches_ = 0
        return self

    def update(self, batch: Mapping[str, np.ndarray]) -> MaxCollector:
        """Add one batch (tensor name -> array); returns self."""
        _check_mapping(batch)
        index = self.n_batches_
        found: dict[str, float] = {}
        for name, x in batch.items():
            try:
                m, n_nan, n_inf = max_abs(x)
            except TypeError as err:
                msg = f"{_where(name, index)}: {err}"
                raise TypeError(msg) from err
            if n_nan and self.nan_policy == "raise":
                size = np.size(x)
                msg = f"{_where(name, index)}: {n_nan} NaN value(s) in a batch of {size}"
                raise NonFiniteError(msg)
            found[name] = math.inf if n_inf else m
        for name, m in found.items():  # all or nothing, as HistogramCollector.update
            self.amax_[name] = max(self.amax_.get(name, 0.0), m)
        self.n_batches_ += 1
        return self
