"""Other files that hold per-tensor scales or dynamic ranges, to and from :class:`CalibrationCache`.

Formats (name: content -> who reads it):

- ``trt``: the TensorRT calibration cache (:mod:`calibkit.cache.format`) -> TensorRT, trtexec;
- ``json``: calibkit JSON, header + per tensor scale, amax, hex -> scripts (``cache show --json``);
- ``csv``: ``name,scale,amax,hex`` with a header row -> spreadsheets;
- ``ranges``: ``name:range`` per line -> TensorRT's sampleINT8API (it splits at the first ':');
- ``ranges-json``: ``{"tensor": range}`` -> PPQ / Polygraphy-style dynamic-range tools;
- ``ort``: ``calibration.flatbuffers``, ``TrtTable{dict: [KeyValue{key, value}]}`` with decimal
  range strings -> ONNX Runtime's TensorRT EP (``trt_int8_calibration_table_name``);
- ``ort-text``: ONNX Runtime's text ``calibration.cache``, ``name range`` per line -> people;
- ``ort-json``: ONNX Runtime's ``calibration.json`` (TensorData lowest/highest), read only.

A *range* is the dynamic range (amax) a tool passes to ``ITensor::setDynamicRange(-r, r)``.
TensorRT turns it into ``scale = fl32(fl32(r) / 127)``. Ranges are written as the float32
``fl32(127 * scale)`` in its shortest decimal form and read back with ``scale_from_amax``, so a
cache -> ranges -> cache trip keeps every scale bit for bit when the scale is itself of the form
``fl32(a / 127)`` -- true of every scale in the 42 real caches (see :func:`range_for_scale`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import struct
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .._optional import require
from ..errors import CacheFormatError, InvalidInputError
from ..inputs import read_input_bytes
from ..scale import INT8_MAX, scale_from_amax
from .format import (
    CalibrationCache,
    LegacyHeader,
    scale_from_hex,
    write_atomic,
)
from .format import _parse as _parse_trt

__all__ = [
    "FORMATS",
    "detect_format",
    "format_for_path",
    "ort_tensor_quant_overrides",
    "parse_scales",
    "range_for_scale",
    "read_scales",
    "to_json_dict",
    "write_scales",
]

logger = logging.getLogger(__name__)

#: format name -> (readable, writable, holds a TensorRT header)
FORMATS = {
    "trt": (True, True, True),
    "json": (True, True, True),
    "csv": (True, True, False),
    "ranges": (True, True, False),
    "ranges-json": (True, True, False),
    "ort": (True, True, False),
    "ort-text": (True, True, False),
    "ort-json": (True, False, False),
    "ort-overrides": (True, True, False),
}
_NUMBER = rb"(?:[0-9.eE+-]+|inf|nan)"
_RANGES_LINE = re.compile(rb".+:\s*" + _NUMBER)
_ORT_TEXT_LINE = re.compile(rb".+ " + _NUMBER)
_SUFFIXES = {".csv": "csv", ".flatbuffers": "ort", ".fb": "ort", ".txt": "ranges"}


# -- numbers ---------------------------------------------------------------------------------
def range_for_scale(scale: np.float32) -> np.float32:
    """Return the float32 dynamic range for `scale`: ``fl32(127 * scale)``.

    TensorRT turns a range ``r`` back into ``fl32(fl32(r) / 127)``. That gives `scale` back
    exactly for every scale of the form ``fl32(a / 127)`` -- all 14577 finite scales of the 42
    real caches do -- and no float32 ``r`` does better for the others (measured: about 0.8 % of
    random float32 bit patterns are not of that form; neighbours of ``fl32(127 * scale)`` never
    hit them either).
    """
    with np.errstate(over="ignore"):
        return np.float32(np.float64(np.float32(scale)) * INT8_MAX)


def _range_text(scale: np.float32) -> str:
    value = range_for_scale(scale)
    return "inf" if np.isinf(value) else str(value)  # str(np.float32): shortest round trip


def _number(text: str, where: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        msg = f"{where}: expected a decimal {what}, got {text!r}"
        raise CacheFormatError(msg) from err
    if math.isnan(value) or value < 0:
        msg = f"{where}: {what} {text!r} must be a number >= 0"
        raise CacheFormatError(msg)
    return value


def _float32_scale(value: float, where: str) -> np.float32:
    """Return `value` as a float32 scale; beyond float32's range is an error, not infinity."""
    if math.isfinite(value) and abs(value) > float(np.finfo(np.float32).max):
        msg = f"{where}: scale {value!r} is beyond float32's range (a cache stores float32)"
        raise CacheFormatError(msg)
    return np.float32(value)


def _hex(text, where: str) -> np.float32:
    try:
        return scale_from_hex(text)
    except ValueError as err:
        msg = f"{where}: {err}"
        raise CacheFormatError(msg) from err


def _json_number(value: float) -> float | str:
    """JSON has no infinity: write it as the string "inf" (hex stays exact)."""
    return "inf" if math.isinf(value) else value


def _load_json(data: bytes, source: str):
    """Parse JSON; too deep a nesting (RecursionError) or bad text is one CacheFormatError."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        kind = "nested too deeply" if isinstance(err, RecursionError) else str(err)[:200]
        msg = f"{source}: not valid JSON ({kind})"
        raise CacheFormatError(msg) from err


# -- detection -------------------------------------------------------------------------------
def detect_format(path: str | os.PathLike, data: bytes | None = None) -> str:
    """Guess the format of `path` from its suffix and, where that is ambiguous, its content."""
    path = Path(path)
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    if data is None:
        data = path.read_bytes()
    head = data[:4096].lstrip()
    if path.suffix.lower() == ".json" or head.startswith(b"{"):
        obj = _load_json(data, str(path))
        if isinstance(obj, dict) and "entries" in obj:
            return "json"
        if _ort_tensors(obj) is not None:
            return "ort-json"
        values = list(obj.values())[:1] if isinstance(obj, dict) else []
        if values and isinstance(values[0], list) and values[0] and isinstance(values[0][0], dict):
            return "ort-overrides"
        return "ranges-json"
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if first.startswith(b"TRT-") or first == b"1" or first.startswith(b"0 "):
        return "trt"
    if data[4:8] == b"\x00\x00\x00\x00" or b"\x00" in data[:64]:
        return "ort"
    if _RANGES_LINE.fullmatch(first):
        return "ranges"
    if _ORT_TEXT_LINE.fullmatch(first):
        return "ort-text"
    return "trt"  # let the strict cache reader produce the error message


# -- reading ---------------------------------------------------------------------------------
def _from_amax_text(pairs, source: str) -> dict[str, np.float32]:
    scales: dict[str, np.float32] = {}
    for lineno, name, text in pairs:
        where = f"{source}:{lineno}"
        if not name:
            msg = f"{where}: empty tensor name"
            raise CacheFormatError(msg)
        if name in scales:
            msg = f"{where}: duplicate tensor name {name!r}"
            raise CacheFormatError(msg)
        scales[name] = scale_from_amax(_number(text, where, "dynamic range"))
    return scales


def _lines(data: bytes, source: str) -> list[tuple[int, str]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        msg = f"{source}: expected UTF-8 text ({err})"
        raise CacheFormatError(msg) from err
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def _read_ranges(data: bytes, source: str) -> dict[str, np.float32]:
    pairs = []
    for lineno, line in _lines(data, source):
        name, sep, value = line.rpartition(":")  # the range holds no ':', the name may
        if not sep:
            msg = f"{source}:{lineno}: expected '<tensor name>:<dynamic range>', got {line!r}"
            raise CacheFormatError(msg)
        pairs.append((lineno, name, value.strip()))
    return _from_amax_text(pairs, source)


def _read_ort_text(data: bytes, source: str) -> dict[str, np.float32]:
    pairs = []
    for lineno, line in _lines(data, source):
        name, sep, value = line.rpartition(" ")
        if not sep:
            msg = f"{source}:{lineno}: expected '<tensor name> <dynamic range>', got {line!r}"
            raise CacheFormatError(msg)
        pairs.append((lineno, name, value))
    return _from_amax_text(pairs, source)


def _json_value(value, where: str) -> float:
    if isinstance(value, str) and value in ("inf", "Infinity"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:80]}..."
        msg = f"{where}: expected a number, got {shown}"
        raise CacheFormatError(msg)
    try:
        return float(value)
    except OverflowError as err:  # a JSON integer of hundreds of digits
        msg = f"{where}: number {str(value)[:40]}... is out of range"
        raise CacheFormatError(msg) from err


def _read_ranges_json(obj, source: str) -> dict[str, np.float32]:
    if not isinstance(obj, dict):
        msg = f"{source}: expected a JSON object {{tensor: range}}, got {type(obj).__name__}"
        raise CacheFormatError(msg)
    scales = {}
    for name, value in obj.items():
        where = f"{source}: tensor {name!r}"
        if isinstance(value, list) and len(value) == 2:  # [min, max] pairs: symmetric range
            amax = max(abs(_json_value(v, where)) for v in value)
        else:
            amax = _json_value(value, where)
        scales[name] = scale_from_amax(_number(str(amax), where, "dynamic range"))
    return scales


def _ort_tensors(obj) -> dict | None:
    """Return the ``{name: TensorData}`` part of an onnxruntime ``calibration.json``, or None.

    onnxruntime writes either a plain ``{name: TensorData}`` dict (``write_calibration_table``
    given a dict) or, for the ``TensorsData`` its calibrators return, the wrapper
    ``{"CLS": "TensorsData", "data": {name: TensorData}}``.
    """
    if not isinstance(obj, dict):
        return None
    if obj.get("CLS") == "TensorsData" and isinstance(obj.get("data"), dict):
        obj = obj["data"]
    values = list(obj.values())[:1]
    if values and isinstance(values[0], dict) and values[0].get("CLS") == "TensorData":
        return obj
    return None


def _ort_number(item, where: str) -> float:
    """One of ``lowest``/``highest``: a number, or a numpy array of one element.

    numpy values are ``{"data": ..., "dtype": ..., "CLS": "numpy.array"}`` with ``data`` a
    number or a (nested) list; onnxruntime itself calls ``.item()`` on them, so exactly one
    element is accepted, as there.
    """
    if isinstance(item, dict):
        item = item.get("data")
    while isinstance(item, list) and len(item) == 1:
        item = item[0]
    if isinstance(item, list):
        msg = f"{where}: expected one number (onnxruntime calls .item()), got {len(item)} values"
        raise CacheFormatError(msg)
    return _json_value(item, where)


def _read_ort_json(obj, source: str) -> dict[str, np.float32]:
    tensors = _ort_tensors(obj)
    if tensors is None:
        msg = f"{source}: expected onnxruntime's calibration.json ({{name: TensorData}})"
        raise CacheFormatError(msg)
    scales = {}
    for name, value in tensors.items():
        where = f"{source}: tensor {name!r}"
        if not isinstance(value, dict):
            msg = f"{where}: expected a TensorData object, got {type(value).__name__}"
            raise CacheFormatError(msg)
        ends = [_ort_number(value.get(key, 0.0), f"{where} {key}") for key in ("highest", "lowest")]
        # write_calibration_table stores max(highest, lowest): ONNX Runtime's own choice
        scales[name] = scale_from_amax(_number(str(max(ends)), where, "range"))
    return scales


def _read_ort_overrides(obj, source: str) -> dict[str, np.float32]:
    if not isinstance(obj, dict):
        msg = f"{source}: expected TensorQuantOverrides {{name: [{{scale, zero_point}}]}}"
        raise CacheFormatError(msg)
    scales = {}
    for name, value in obj.items():
        where = f"{source}: tensor {name!r}"
        if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)):
            msg = f"{where}: expected one per-tensor override [{{scale, zero_point}}]"
            raise CacheFormatError(msg)
        entry = value[0]
        if "scale" not in entry:
            msg = f"{where}: expected a 'scale' (rmin/rmax-only overrides carry no scale)"
            raise CacheFormatError(msg)
        zero_point = entry.get("zero_point", 0)
        if zero_point != 0 or isinstance(zero_point, bool):
            msg = f"{where}: zero_point {zero_point!r}; TensorRT scales are symmetric (0)"
            raise CacheFormatError(msg)
        scale = _json_value(entry["scale"], f"{where} scale")
        scales[name] = np.float32(_number(repr(scale), where, "scale"))
    return scales


def _read_ort(data: bytes, source: str) -> dict[str, np.float32]:
    flatbuffers = require("flatbuffers", "Reading ONNX Runtime's calibration.flatbuffers")
    table = flatbuffers.table
    try:
        root = table.Table(data, flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0))
        pairs = []
        offset = root.Offset(4)  # TrtTable.dict
        count = root.VectorLen(offset) if offset else 0
        start = root.Vector(offset) if offset else 0
        if start + 4 * count > len(data):
            msg = f"{source}: {count} entries do not fit in {len(data)} bytes (damaged file)"
            raise CacheFormatError(msg)
        for i in range(count):
            item = table.Table(data, root.Indirect(start + 4 * i))
            key, value = item.Offset(4), item.Offset(6)  # KeyValue.key, KeyValue.value
            if not key or not value:
                msg = f"{source}: entry {i} lacks a key or a value"
                raise CacheFormatError(msg)
            name = item.String(key + item.Pos).decode("utf-8")
            pairs.append((f"entry {i}", name, item.String(value + item.Pos).decode("utf-8")))
    except (IndexError, ValueError, TypeError, OverflowError, struct.error) as err:
        if isinstance(err, CacheFormatError):
            raise
        # offsets that point outside the buffer or overflow flatbuffers' uint32 arithmetic
        msg = f"{source}: not an ONNX Runtime TrtTable flatbuffer ({str(err)[:120]})"
        raise CacheFormatError(msg) from err
    return _from_amax_text(pairs, source)


def _read_json(obj, source: str) -> CalibrationCache:
    if not isinstance(obj, dict) or not isinstance(obj.get("entries"), dict):
        msg = f"{source}: expected a calibkit JSON object with 'entries'"
        raise CacheFormatError(msg)
    version = obj.get("version")
    legacy = obj.get("legacy")
    scales = {}
    for name, entry in obj["entries"].items():
        where = f"{source}: tensor {name!r}"
        if not isinstance(entry, dict):
            msg = f"{where}: expected {{'scale', 'amax', 'hex'}}, got {entry!r}"
            raise CacheFormatError(msg)
        if "hex" in entry:  # exact; scale and amax are for people
            scales[name] = _hex(entry["hex"], where)
        elif "scale" in entry:
            scales[name] = _float32_scale(_json_value(entry["scale"], where), where)
        else:
            scales[name] = scale_from_amax(_json_value(entry.get("amax"), where))
    try:
        return CalibrationCache(
            None if version is None else tuple(version),
            obj.get("algorithm"),
            scales,
            None
            if legacy is None
            else LegacyHeader(legacy["regression_cutoff"], legacy["quantile"]),
        )
    except (TypeError, ValueError, KeyError) as err:
        msg = f"{source}: inconsistent header fields ({err})"
        raise CacheFormatError(msg) from err


def _read_csv(data: bytes, source: str) -> dict[str, np.float32]:
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    except UnicodeDecodeError as err:
        msg = f"{source}: expected UTF-8 text ({err})"
        raise CacheFormatError(msg) from err
    except csv.Error as err:  # a NUL byte, an unterminated quote at the end, a huge field
        msg = f"{source}: not a valid CSV file ({err})"
        raise CacheFormatError(msg) from err
    scales = {}
    for lineno, row in enumerate(rows, 2):
        name = row.get("name")
        if name is None:
            msg = f"{source}: expected a header row with 'name' and 'hex', 'scale' or 'amax'"
            raise CacheFormatError(msg)
        if row.get("hex"):
            value = _hex(row["hex"], f"{source}:{lineno}")
        elif row.get("scale"):
            where = f"{source}:{lineno}"
            value = _float32_scale(_number(row["scale"], where, "scale"), where)
        else:
            value = scale_from_amax(_number(row.get("amax") or "", f"{source}:{lineno}", "amax"))
        if name in scales:
            msg = f"{source}:{lineno}: duplicate tensor name {name!r}"
            raise CacheFormatError(msg)
        scales[name] = value
    return scales


def _headerless(scales: dict[str, np.float32]) -> CalibrationCache:
    return CalibrationCache(None, None, scales)


def read_scales(source: str | os.PathLike, fmt: str | None = None) -> tuple[CalibrationCache, str]:
    """Read any supported file; return ``(cache, format)``.

    Only ``trt`` and ``json`` hold a TensorRT header (``FORMATS[fmt][2]``). For the others the
    cache has ``version=None`` and ``algorithm=None``; give it a target header before writing it
    as a TensorRT cache.

    Raises
    ------
    CacheFormatError
        If the file does not match its format; the message names the file and line or tensor.
    """
    path = Path(source)
    data = read_input_bytes(path, "scales file")
    fmt = fmt or detect_format(path, data)
    return parse_scales(data, fmt, str(path)), fmt


def parse_scales(data: bytes, fmt: str, source: str = "<bytes>") -> CalibrationCache:
    """Parse the content of a file in format `fmt` (see :data:`FORMATS`).

    Raises
    ------
    CacheFormatError
        If `data` does not match the format; the message names `source` and line or tensor.
    """
    if fmt not in FORMATS:
        msg = f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}"
        raise InvalidInputError(msg)
    if fmt == "trt":
        return _parse_trt(data, source)
    if fmt in ("json", "ranges-json", "ort-json", "ort-overrides"):
        obj = _load_json(data, source)
        if fmt == "json":
            return _read_json(obj, source)
        reader = {
            "ranges-json": _read_ranges_json,
            "ort-json": _read_ort_json,
            "ort-overrides": _read_ort_overrides,
        }[fmt]
        return _headerless(reader(obj, source))
    readers = {
        "csv": _read_csv,
        "ranges": _read_ranges,
        "ort": _read_ort,
        "ort-text": _read_ort_text,
    }
    return _headerless(readers[fmt](data, source))


# -- writing ---------------------------------------------------------------------------------
def to_json_dict(cache: CalibrationCache) -> dict:
    """Return the calibkit JSON object (what ``calibkit cache show --json`` prints)."""
    legacy = cache.legacy
    hexes = cache.hex
    return {
        "version": None if cache.version is None else list(cache.version),
        "algorithm": cache.algorithm,
        "legacy": None
        if legacy is None
        else {"regression_cutoff": legacy.regression_cutoff, "quantile": legacy.quantile},
        "entries": {
            name: {
                "scale": _json_number(float(scale)),
                "amax": _json_number(amax),
                "hex": hexes[name],
            }
            for (name, scale), amax in zip(cache.scales.items(), cache.amax.values(), strict=True)
        },
    }


def _to_csv(cache: CalibrationCache) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "scale", "amax", "hex"])
    hexes = cache.hex
    for (name, scale), amax in zip(cache.scales.items(), cache.amax.values(), strict=True):
        writer.writerow([name, repr(float(scale)), repr(amax), hexes[name]])
    return out.getvalue().encode("utf-8")


def _warn_ranges(cache: CalibrationCache, fmt: str) -> None:
    n_inf = sum(bool(np.isinf(s)) for s in cache.scales.values())
    if n_inf:
        warnings.warn(
            f"{n_inf} tensor(s) have an infinite scale; written as range 'inf', which "
            "setDynamicRange rejects (it needs finite values): fix or drop them first",
            UserWarning,
            stacklevel=3,
        )
    if fmt == "ranges":
        colon = [name for name in cache.scales if ":" in name]
        if colon:
            warnings.warn(
                f"{len(colon)} tensor name(s) contain ':' (e.g. {colon[0]!r}); sampleINT8API "
                "splits each line at the first ':' and will misread them",
                UserWarning,
                stacklevel=3,
            )


def _to_ort(cache: CalibrationCache) -> bytes:
    flatbuffers = require("flatbuffers", "Writing ONNX Runtime's calibration.flatbuffers")
    builder = flatbuffers.Builder(1024)
    items = []
    # Sorted like onnxruntime's write_calibration_table (the schema declares `key` as the key).
    for name in sorted(cache.scales, key=lambda n: n.encode("utf-8")):
        key = builder.CreateString(name)
        value = builder.CreateString(_range_text(cache.scales[name]))
        builder.StartObject(2)
        builder.PrependUOffsetTRelativeSlot(0, key, 0)
        builder.PrependUOffsetTRelativeSlot(1, value, 0)
        items.append(builder.EndObject())
    builder.StartVector(4, len(items), 4)
    for item in reversed(items):
        builder.PrependUOffsetTRelative(item)
    vector = builder.EndVector()
    builder.StartObject(1)
    builder.PrependUOffsetTRelativeSlot(0, vector, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


def ort_tensor_quant_overrides(
    cache: CalibrationCache, tensors: Iterable[str] | None = None, *, as_numpy: bool = True
) -> dict[str, list[dict]]:
    """Return onnxruntime's ``TensorQuantOverrides`` that reproduce `cache`'s scales.

    ``{name: [{"scale": s, "zero_point": 0}]}``: one per-tensor override each, the float32 scale
    itself and a zero point of 0 (TensorRT quantizes symmetrically). Pass it as
    ``quantize_static(..., activation_type=QuantType.QInt8,
    extra_options={"TensorQuantOverrides": overrides})``; onnxruntime then writes exactly these
    scales into its QuantizeLinear / DequantizeLinear nodes.

    Parameters
    ----------
    tensors : iterable of str, optional
        The model's tensor names. onnxruntime refuses an override for a tensor it does not
        know, so cache names outside this set (TensorRT-internal tensors) are left out, with a
        warning. Default: every cache name.
    as_numpy : bool
        True (default): numpy values, as ``quantize_static`` needs (it calls ``.squeeze()``).
        False: plain floats and ints, for JSON.

    Tensors with a zero or infinite scale cannot be expressed (onnxruntime needs a finite
    scale > 0); they are left out with a warning, and quantize with onnxruntime's own range.
    """
    keep = None if tensors is None else set(tensors)
    out: dict[str, list[dict]] = {}
    unknown, unusable = [], []
    for name, scale in cache.scales.items():
        if keep is not None and name not in keep:
            unknown.append(name)
        elif not (np.isfinite(scale) and scale > 0):
            unusable.append(name)
        elif as_numpy:
            out[name] = [{"scale": np.array(scale, np.float32), "zero_point": np.array(0, np.int8)}]
        else:
            out[name] = [{"scale": float(scale), "zero_point": 0}]
    if unknown:
        warnings.warn(
            f"{len(unknown)} cache tensor(s) are not in the model and were left out "
            f"(e.g. {unknown[0]!r}; TensorRT-internal names have no ONNX tensor)",
            UserWarning,
            stacklevel=2,
        )
    if unusable:
        warnings.warn(
            f"{len(unusable)} tensor(s) with a zero or infinite scale were left out "
            f"(e.g. {unusable[0]!r}): onnxruntime needs a finite scale > 0",
            UserWarning,
            stacklevel=2,
        )
    return out


def to_format_bytes(cache: CalibrationCache, fmt: str) -> bytes:
    """Serialize `cache` in format `fmt` (see :data:`FORMATS`)."""
    if fmt not in FORMATS or not FORMATS[fmt][1]:
        writable = sorted(f for f, (_, w, _) in FORMATS.items() if w)
        msg = f"cannot write format {fmt!r}; choose one of {writable}"
        raise InvalidInputError(msg)
    if fmt == "trt":
        return cache.to_bytes()
    if fmt == "json":
        return (json.dumps(to_json_dict(cache), indent=2, ensure_ascii=False) + "\n").encode()
    if fmt == "csv":
        return _to_csv(cache)
    if fmt == "ort-overrides":
        overrides = ort_tensor_quant_overrides(cache, as_numpy=False)
        return (json.dumps(overrides, indent=1, ensure_ascii=False) + "\n").encode()
    _warn_ranges(cache, fmt)
    if fmt == "ort":
        return _to_ort(cache)
    if fmt == "ranges-json":
        ranges = {n: _json_number(float(_range_text(s))) for n, s in cache.scales.items()}
        return (json.dumps(ranges, indent=2, ensure_ascii=False) + "\n").encode()
    sep = ":" if fmt == "ranges" else " "
    lines = [f"{name}{sep}{_range_text(s)}\n" for name, s in cache.scales.items()]
    return "".join(lines).encode("utf-8")


def format_for_path(path: str | os.PathLike) -> str:
    """Return the format a file name suggests: by suffix, ``json`` for .json, else ``trt``."""
    suffix = Path(path).suffix.lower()
    return _SUFFIXES.get(suffix) or ("json" if suffix == ".json" else "trt")


def write_scales(path: str | os.PathLike, cache: CalibrationCache, fmt: str | None = None) -> str:
    """Write `cache` to `path` atomically in `fmt` (default: from the suffix, else ``trt``).

    Returns the format written.
    """
    fmt = fmt or format_for_path(path)
    write_atomic(path, to_format_bytes(cache, fmt))
    return fmt
