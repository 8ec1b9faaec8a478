"""Saved calibration statistics: every histogram plus the settings, in one ``.npz`` file.

This is what ``calibkit calibrate --save-histograms`` writes and ``calibkit select`` reads, so
any algorithm can be recomputed later without running the model again. Layout (all plain
arrays, loadable with ``allow_pickle=False``): ``names`` (str, T), ``counts`` (int64, T x bins),
``upper``, ``max_abs`` (float64, T), ``num_inf``, ``num_nan`` (int64, T), ``settings`` (a JSON
string), ``format`` and ``calibkit_version``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import write_atomic
from .errors import CalibkitError
from .histogram import Histogram

__all__ = ["STATS_FORMAT", "Stats", "StatsFormatError", "load_stats", "save_stats"]

STATS_FORMAT = "calibkit-stats-1"


class StatsFormatError(CalibkitError, ValueError):
    """A file is not a calibkit statistics file, or is damaged."""


@dataclass
class Stats:
    """The contents of a statistics file."""

    histograms: dict[str, Histogram]
    settings: dict = field(default_factory=dict)
    calibkit_version: str = __version__


def save_stats(path, histograms: Mapping[str, Histogram], *, settings: dict | None = None) -> Path:
    """Write `histograms` and `settings` to `path` (``.npz``) atomically; returns the path.

    Raises
    ------
    ValueError
        If the histograms have different bin counts, or `settings` is not JSON-serialisable.
    """
    path = Path(path)
    hists = list(histograms.values())
    bins = {h.num_bins for h in hists}
    if len(bins) > 1:
        msg = f"all histograms must have the same number of bins, got {sorted(bins)}"
        raise ValueError(msg)
    num_bins = bins.pop() if bins else 0
    try:
        settings_json = json.dumps(settings or {}, sort_keys=True)
    except TypeError as err:
        msg = f"settings must be JSON-serialisable: {err}"
        raise ValueError(msg) from err
    arrays = {
        "format": np.array(STATS_FORMAT),
        "calibkit_version": np.array(__version__),
        "settings": np.array(settings_json),
        "names": np.array(list(histograms), dtype=str) if hists else np.array([], dtype=str),
        "counts": np.array([h.counts for h in hists], np.int64).reshape(len(hists), num_bins),
        "upper": np.array([h.upper for h in hists], np.float64),
        "max_abs": np.array([h.max_abs for h in hists], np.float64),
        "num_inf": np.array([h.num_inf for h in hists], np.int64),
        "num_nan": np.array([h.num_nan for h in hists], np.int64),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(path, buffer.getvalue())
    return path


def is_stats_file(path) -> bool:
    """Return True if `path` is an ``.npz`` written by :func:`save_stats`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return "format" in z.files and str(z["format"]) == STATS_FORMAT
    except (OSError, ValueError):
        return False


def load_stats(path) -> Stats:
    """Read a statistics file written by :func:`save_stats`.

    Raises
    ------
    StatsFormatError
        If the file is not a calibkit statistics file or its arrays are inconsistent.
    """
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        msg = f"{path}: not a readable .npz file ({err})"
        raise StatsFormatError(msg) from err
    with z:
        if "format" not in z.files or str(z["format"]) != STATS_FORMAT:
            msg = (
                f"{path}: not a calibkit statistics file (no format {STATS_FORMAT!r}); "
                "recorded activations go to 'calibkit calibrate', saved statistics to 'select'"
            )
            raise StatsFormatError(msg)
        try:
            names = [str(n) for n in z["names"]]
            counts, upper, max_abs = z["counts"], z["upper"], z["max_abs"]
            num_inf, num_nan = z["num_inf"], z["num_nan"]
            settings = json.loads(str(z["settings"]))
            version = str(z["calibkit_version"])
        except (KeyError, ValueError) as err:
            msg = f"{path}: damaged statistics file: {err}"
            raise StatsFormatError(msg) from err
    n = len(names)
    if any(len(a) != n for a in (counts, upper, max_abs, num_inf, num_nan)):
        msg = f"{path}: arrays disagree on the number of tensors ({n} names)"
        raise StatsFormatError(msg)
    hists = {}
    for k, name in enumerate(names):
        try:
            hists[name] = Histogram.from_arrays(
                counts[k], upper[k], max_abs=max_abs[k], num_inf=num_inf[k], num_nan=num_nan[k]
            )
        except ValueError as err:
            msg = f"{path}: tensor {name!r}: {err}"
            raise StatsFormatError(msg) from err
    return Stats(hists, settings, version)
