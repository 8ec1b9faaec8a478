"""Saved calibration statistics: every histogram plus the settings, in one ``.npz`` file.

This is what ``calibkit calibrate`` writes next to the cache and ``calibkit select`` (and every
other command that turns statistics into scales) reads, so any algorithm can be recomputed later
without running the model again.

Layout (all plain arrays, loadable with ``allow_pickle=False``): ``format``
(``"calibkit-stats-<N>"``), ``calibkit_version``, ``names`` (str, T), ``counts`` (int64,
T x bins), ``upper``, ``max_abs`` (float64, T), ``num_inf``, ``num_nan`` (int64, T) and
``settings``: a JSON object holding a :class:`StatsSettings`, the one typed record for both the
ONNX path and the recorded-activations path (every key always present).

Format versions: 1 (calibkit before the typed record: loose settings, ``trt_version`` as typed on
the recorded-activations path) is read and mapped onto :class:`StatsSettings`; 2 is written. A
file of a newer version is refused with a clear :class:`StatsFormatError`, as is any damaged
file (the message names the file and the field).
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import write_atomic
from .cache.format import parse_trt_version
from .errors import CalibkitError, InputLimitError
from .histogram import Histogram
from .inputs import check_npz_size, check_regular_file
from .onnx.graph import Graph
from .rules.names import CacheLine

__all__ = [
    "FORMAT_VERSION",
    "STATS_FORMAT",
    "Stats",
    "StatsFormatError",
    "StatsSettings",
    "default_stats_path",
    "is_stats_file",
    "load_stats",
    "save_stats",
]

FORMAT_VERSION = 2
_PREFIX = "calibkit-stats-"
STATS_FORMAT = f"{_PREFIX}{FORMAT_VERSION}"

# What a damaged .npz raises while it is opened or one of its members read.
# zipfile raises NotImplementedError for an unknown zip version or compression method and
# RuntimeError for an encrypted member (both found by scripts/fuzz.py)
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
    RuntimeError,
)


class StatsFormatError(CalibkitError, ValueError):
    """A file is not a calibkit statistics file, or is damaged."""


@dataclass(frozen=True)
class StatsSettings:
    """How the histograms of a statistics file were made: one schema for every path.

    Attributes
    ----------
    source_kind : {"onnx", "activations", "torch"} or None
        What was calibrated: an ONNX model run by onnxruntime, recorded activations, a PyTorch
        model (``calibkit.torch``; `source` is its class name), or (None) histograms saved from
        the library.
    source, source_sha256 : str or None
        The model or activations file and (ONNX path) the model's sha256.
    algorithm : str or None
        Spec of the selector the accompanying cache was written with.
    num_bins : int or None
        Histogram bins per tensor.
    trt_version : str or None
        Target TensorRT version, normalised to ``"major.minor.patch"`` (``"10.16"`` or
        ``(10, 16)`` given become ``"10.16.0"``).
    share_scales : str or None
        The ``--share-scales`` of the run that wrote the file (provenance: commands apply their
        own ``--share-scales``, whose default is ``trt``).
    nan_policy, data, batch_size, num_samples, num_batches, max_samples, shuffle, seed, tensors
        The collection settings (``data``: a description of the inputs).
    calibration_shapes : dict of str to tuple of int
        ``--calibration-shape`` of the ONNX path.
    onnxruntime_optimization, onnxruntime_version, calibkit_version : str or None
        The software that computed the activations and histograms.
    graph : Graph or None
        The model's dataflow (ONNX path), so TensorRT's sharing rules apply without the model.
    trt_lines : tuple of CacheLine or None
        The cache lines TensorRT looks up (``--names trt``); None for ONNX names.
    """

    source_kind: str | None = None
    source: str | None = None
    source_sha256: str | None = None
    algorithm: str | None = None
    num_bins: int | None = None
    trt_version: str | None = None
    share_scales: str | None = None
    nan_policy: str | None = None
    data: str | None = None
    batch_size: int | None = None
    num_samples: int | None = None
    num_batches: int | None = None
    max_samples: int | None = None
    shuffle: bool = False
    seed: int | None = None
    tensors: str | None = None
    calibration_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    onnxruntime_optimization: str | None = None
    onnxruntime_version: str | None = None
    calibkit_version: str | None = __version__
    graph: Graph | None = None
    trt_lines: tuple[CacheLine, ...] | None = None

    def __post_init__(self) -> None:
        # one spelling of the version whatever the caller typed ("10.16" -> "10.16.0")
        if self.trt_version is not None:
            version = ".".join(map(str, parse_trt_version(self.trt_version)))
            object.__setattr__(self, "trt_version", version)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``settings`` member of the file), every key present."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["calibration_shapes"] = {k: list(v) for k, v in self.calibration_shapes.items()}
        out["graph"] = None if self.graph is None else self.graph.to_dict()
        if self.trt_lines is not None:
            out["trt_lines"] = [[line.name, line.source, line.kind] for line in self.trt_lines]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "settings") -> StatsSettings:
        """Check and convert a :meth:`to_dict` mapping; missing keys take their defaults.

        Raises
        ------
        StatsFormatError
            For an unknown key or a value of the wrong type (the message names `where` and the
            field).
        """
        if not isinstance(data, Mapping):
            msg = f"{where}: expected a JSON object, got {type(data).__name__}"
            raise StatsFormatError(msg)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            msg = f"{where}: unknown field(s) {unknown}; fields are {sorted(known)}"
            raise StatsFormatError(msg)
        values = {}
        for name, value in data.items():
            values[name] = _convert(name, value, f"{where}.{name}")
        try:
            return cls(**values)
        except ValueError as err:  # trt_version that does not parse
            msg = f"{where}.trt_version: {err}"
            raise StatsFormatError(msg) from err


_STR_FIELDS = frozenset(
    {
        "source_kind",
        "source",
        "source_sha256",
        "algorithm",
        "share_scales",
        "nan_policy",
        "data",
        "tensors",
        "onnxruntime_optimization",
        "onnxruntime_version",
        "calibkit_version",
    }
)
_INT_FIELDS = frozenset(
    {"num_bins", "batch_size", "num_samples", "num_batches", "max_samples", "seed"}
)


def _convert(name: str, value: Any, where: str) -> Any:
    """One field of the JSON settings -> its typed value, or a StatsFormatError naming it."""
    if name == "graph" and isinstance(value, Mapping):
        try:
            return Graph.from_json(value)
        except (ValueError, TypeError) as err:  # CacheFormatError from the graph reader
            msg = f"{where}: {err}"
            raise StatsFormatError(msg) from err
    expected, ok = _EXPECTED[name], value is None and name != "shuffle"
    if name in _STR_FIELDS or name == "trt_version":
        ok = ok or isinstance(value, str)
    elif name in _INT_FIELDS:
        ok = ok or (isinstance(value, int) and not isinstance(value, bool))
    elif name == "shuffle":
        ok = isinstance(value, bool)
    elif name == "calibration_shapes":
        ok = isinstance(value, Mapping) and all(
            isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in v)
            for v in value.values()
        )
        value = {str(k): tuple(v) for k, v in value.items()} if ok else value
    elif name == "trt_lines" and value is not None:
        ok = isinstance(value, list) and all(
            isinstance(line, list)
            and len(line) == 3
            and all(isinstance(x, str) for x in line)
            and line[2] in _LINE_KINDS
            for line in value
        )
        value = tuple(CacheLine(*line) for line in value) if ok else value
    if not ok:
        msg = f"{where}: expected {expected}, got {value!r:.200}"
        raise StatsFormatError(msg)
    return value


_LINE_KINDS = ("input", "activation", "constant", "alias")
_EXPECTED = {
    **dict.fromkeys(_STR_FIELDS, "a string or null"),
    **dict.fromkeys(_INT_FIELDS, "an integer or null"),
    "trt_version": "a version string or null",
    "shuffle": "true or false",
    "calibration_shapes": "an object of input name -> list of integers",
    "graph": "a graph object or null",
    "trt_lines": f"null or a list of [name, source, kind] with kind in {list(_LINE_KINDS)}",
}


def _from_v1(data: Mapping[str, Any], where: str, calibkit_version: str) -> StatsSettings:
    """Map the loose settings of format 1 onto the typed record.

    Format 1 had two writers: the ONNX path (``model``, ``model_sha256`` and the fields below)
    and the recorded-activations path (``source``, ``algorithm``, ``trt_version`` as typed,
    ``num_bins``, ``num_batches``). Keys neither wrote are ignored.
    """
    if not isinstance(data, Mapping):
        msg = f"{where}: expected a JSON object, got {type(data).__name__}"
        raise StatsFormatError(msg)
    known = {f.name for f in dataclasses.fields(StatsSettings)} - {"source_kind", "source"}
    values = {k: v for k, v in data.items() if k in known}
    values.setdefault("calibkit_version", calibkit_version)  # the writer's, not this calibkit's
    if "model" in data:
        values |= {"source_kind": "onnx", "source": data["model"]}
        values["source_sha256"] = data.get("model_sha256")
    elif "source" in data:
        values |= {"source_kind": "activations", "source": data["source"]}
    if values.get("trt_version") is not None and not isinstance(values["trt_version"], str):
        values["trt_version"] = str(values["trt_version"])
    return StatsSettings.from_dict(values, where=where)


@dataclass
class Stats:
    """The contents of a statistics file."""

    histograms: dict[str, Histogram]
    settings: StatsSettings = field(default_factory=StatsSettings)
    calibkit_version: str = __version__
    format_version: int = FORMAT_VERSION


def save_stats(
    path, histograms: Mapping[str, Histogram], *, settings: StatsSettings | Mapping | None = None
) -> Path:
    """Write `histograms` and `settings` to `path` (``.npz``) atomically; returns the path.

    `settings` is a :class:`StatsSettings` or a mapping of its fields (missing ones take their
    defaults).

    Raises
    ------
    ValueError
        If the histograms have different bin counts.
    StatsFormatError
        If a `settings` mapping has an unknown field or a value of the wrong type.
    """
    path = Path(path)
    if not isinstance(settings, StatsSettings):
        settings = StatsSettings.from_dict(settings or {})
    hists = list(histograms.values())
    bins = {h.num_bins for h in hists}
    if len(bins) > 1:
        msg = f"all histograms must have the same number of bins, got {sorted(bins)}"
        raise ValueError(msg)
    num_bins = bins.pop() if bins else 0
    # values typed Any: numpy's stub reads ``**arrays`` as possibly filling its bool keyword
    arrays: dict[str, Any] = {
        "format": np.array(STATS_FORMAT),
        "calibkit_version": np.array(__version__),
        "settings": np.array(json.dumps(settings.to_dict(), sort_keys=True)),
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


def default_stats_path(cache_path) -> Path:
    """Where the statistics go by default: ``model.cache`` -> ``model.stats.npz``."""
    return Path(cache_path).with_suffix(".stats.npz")


def _format_version(text: str) -> int | None:
    """``"calibkit-stats-2"`` -> 2; None for anything else."""
    if not text.startswith(_PREFIX) or not text[len(_PREFIX) :].isdigit():
        return None
    return int(text[len(_PREFIX) :])


def is_stats_file(path) -> bool:
    """Return True if `path` is an ``.npz`` with a calibkit statistics ``format`` member."""
    try:  # our own handle: np.load leaks its own when the archive is damaged
        check_regular_file(path, "statistics")  # a FIFO would block the open
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            return "format" in z.files and _format_version(str(z["format"])) is not None
    except (*_READ_ERRORS, AttributeError, TypeError):  # a bare .npy is no archive
        return False


def _member(z, path, key: str, kind: str, ndim: int) -> np.ndarray:
    """Read member `key`, checking its dtype kind (``"U"``, ``"i"``, ``"f"``) and dimensions."""
    if key not in z.files:
        msg = f"{path}: damaged statistics file: no {key!r} array"
        raise StatsFormatError(msg)
    try:
        a = z[key]
    except _READ_ERRORS as err:
        msg = f"{path}: damaged statistics file: cannot read {key!r} ({err})"
        raise StatsFormatError(msg) from err
    if not isinstance(a, np.ndarray):  # np.load hands back raw bytes for a non-.npy member
        msg = f"{path}: damaged statistics file: {key!r} is not a .npy array"
        raise StatsFormatError(msg)
    kinds = {"U": "strings", "i": "integers", "f": "floats"}
    ok = a.dtype.kind in (("i", "u") if kind == "i" else (kind,))
    if not ok or a.ndim != ndim:
        msg = (
            f"{path}: damaged statistics file: {key!r} must be a {ndim}-d array of "
            f"{kinds[kind]}, got {a.dtype} of shape {a.shape}"
        )
        raise StatsFormatError(msg)
    return a


def load_stats(path) -> Stats:
    """Read a statistics file written by :func:`save_stats` (format 1 or 2).

    Raises
    ------
    StatsFormatError
        If the file is not a calibkit statistics file, is of a newer format than this calibkit
        reads, or is damaged (one line naming the file and the field).
    """
    try:  # our own handle: np.load leaks its own when the archive is damaged
        # a FIFO would block, /dev/zero not end, a zip bomb not fit: refused before opening
        check_npz_size(path, "statistics (.npz)")
        with open(path, "rb") as f:
            return _load(path, f)
    except _READ_ERRORS as err:
        if isinstance(err, (StatsFormatError, InputLimitError)):
            raise
        msg = f"{path}: not a readable .npz file ({err})"
        raise StatsFormatError(msg) from err


def _load(path, f) -> Stats:
    try:
        z = np.load(f, allow_pickle=False)
    except _READ_ERRORS as err:
        msg = f"{path}: not a readable .npz file ({err})"
        raise StatsFormatError(msg) from err
    if not hasattr(z, "files"):  # a bare .npy: one array, not an archive
        msg = f"{path}: not a calibkit statistics file (a single .npy array, not an .npz)"
        raise StatsFormatError(msg)
    with z:
        if "format" not in z.files:
            msg = (
                f"{path}: not a calibkit statistics file (no 'format' array); recorded "
                "activations go to 'calibkit calibrate', saved statistics to 'select'"
            )
            raise StatsFormatError(msg)
        text = str(_member(z, path, "format", "U", 0))
        version = _format_version(text)
        if version is None:
            msg = f"{path}: not a calibkit statistics file (format {text!r})"
            raise StatsFormatError(msg)
        if version > FORMAT_VERSION:
            msg = (
                f"{path}: statistics format {version} was written by a newer calibkit; this "
                f"one (calibkit {__version__}) reads formats 1 to {FORMAT_VERSION}: upgrade"
            )
            raise StatsFormatError(msg)
        names = _member(z, path, "names", "U", 1)
        counts = _member(z, path, "counts", "i", 2)
        upper = _member(z, path, "upper", "f", 1)
        max_abs = _member(z, path, "max_abs", "f", 1)
        num_inf = _member(z, path, "num_inf", "i", 1)
        num_nan = _member(z, path, "num_nan", "i", 1)
        calibkit_version = str(_member(z, path, "calibkit_version", "U", 0))
        raw_settings = str(_member(z, path, "settings", "U", 0))
    try:
        parsed = json.loads(raw_settings)
    except json.JSONDecodeError as err:
        msg = f"{path}: damaged statistics file: 'settings' is not JSON ({err})"
        raise StatsFormatError(msg) from err
    where = f"{path}: settings"
    if version == 1:
        settings = _from_v1(parsed, where, calibkit_version)
    else:
        if isinstance(parsed, Mapping):
            missing = sorted({f.name for f in dataclasses.fields(StatsSettings)} - set(parsed))
            if missing:
                msg = f"{where}: missing field(s) {missing}"
                raise StatsFormatError(msg)
        settings = StatsSettings.from_dict(parsed, where=where)
    n = len(names)
    if any(len(a) != n for a in (counts, upper, max_abs, num_inf, num_nan)):
        msg = f"{path}: arrays disagree on the number of tensors ({n} names)"
        raise StatsFormatError(msg)
    if len(set(names.tolist())) != n:
        msg = f"{path}: 'names' holds a tensor name twice"
        raise StatsFormatError(msg)
    hists = {}
    for k, name in enumerate(names.tolist()):
        try:
            hists[name] = Histogram.from_arrays(
                counts[k], upper[k], max_abs=max_abs[k], num_inf=num_inf[k], num_nan=num_nan[k]
            )
        except ValueError as err:
            msg = f"{path}: tensor {name!r}: {err}"
            raise StatsFormatError(msg) from err
        if num_inf[k] < 0 or num_nan[k] < 0:
            msg = f"{path}: tensor {name!r}: num_inf and num_nan must be >= 0"
            raise StatsFormatError(msg)
    return Stats(hists, settings, calibkit_version, version)
