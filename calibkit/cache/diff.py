"""Compare two sets of scales tensor by tensor: relative difference, ulps, histogram bins."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .format import CalibrationCache

if TYPE_CHECKING:
    from ..histogram import Histogram

__all__ = ["CacheDiff", "TensorDiff", "diff_caches"]


@dataclass(frozen=True)
class TensorDiff:
    """One tensor present on both sides.

    ``rel`` is ``|a - b| / max(a, b)`` on the scales (0 if equal, inf if only one is inf);
    ``ulps`` counts float32 steps between the scales; ``bins`` is ``(amax_b - amax_a)`` in
    histogram bins (``upper / num_bins``) when a histogram for the tensor was given.
    """

    name: str
    scale_a: float
    scale_b: float
    amax_a: float
    amax_b: float
    rel: float
    ulps: int
    bins: float | None = None


@dataclass
class CacheDiff:
    """All tensors of two caches: common ones as :class:`TensorDiff`, the rest by side."""

    rows: list[TensorDiff]
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    def exceeding(self, rtol: float) -> list[TensorDiff]:
        """Rows whose relative difference is above `rtol`."""
        return [row for row in self.rows if row.rel > rtol]

    def summary(self, top: int = 5) -> dict:
        """Count, equal count, max and median relative difference, and the `top` worst rows."""
        rels = np.array([row.rel for row in self.rows], dtype=np.float64)
        worst = sorted(self.rows, key=lambda row: row.rel, reverse=True)[:top]
        return {
            "common": len(self.rows),
            "equal": int(np.sum(rels == 0)),
            "only_a": len(self.only_a),
            "only_b": len(self.only_b),
            "max_rel": float(rels.max()) if rels.size else 0.0,
            "median_rel": float(np.median(rels)) if rels.size else 0.0,
            "worst": [row.name for row in worst if row.rel > 0],
        }


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    if math.isinf(a) or math.isinf(b):
        return math.inf
    return abs(a - b) / max(a, b)


def _bits(scale) -> int:
    return int(np.array([scale], dtype=np.float32).view(np.uint32)[0])


def diff_caches(
    a: CalibrationCache,
    b: CalibrationCache,
    *,
    histograms: Mapping[str, Histogram] | None = None,
) -> CacheDiff:
    """Compare `a` and `b`; rows follow `a`'s order.

    Parameters
    ----------
    histograms : mapping, optional
        Tensor name -> Histogram (e.g. ``load_stats(path).histograms``); gives the difference
        in bins of that histogram, the unit TensorRT's entropy search moves in.
    """
    histograms = histograms or {}
    amax_a, amax_b = a.amax, b.amax
    rows = []
    for name, sa in a.scales.items():
        if name not in b.scales:
            continue
        sb = b.scales[name]
        hist = histograms.get(name)
        bins = None
        if hist is not None and hist.upper > 0 and math.isfinite(amax_a[name] + amax_b[name]):
            bins = (amax_b[name] - amax_a[name]) * hist.num_bins / hist.upper
        rows.append(
            TensorDiff(
                name,
                float(sa),
                float(sb),
                amax_a[name],
                amax_b[name],
                _rel(float(sa), float(sb)),
                abs(_bits(sa) - _bits(sb)),
                bins,
            )
        )
    return CacheDiff(
        rows,
        [name for name in a.scales if name not in b.scales],
        [name for name in b.scales if name not in a.scales],
    )
