"""The TensorRT calibration cache text format: read it exactly, write it exactly.

A cache is one header line and one ``name: hex`` line per tensor (TRT_CALIBRATION.md §5)::

    TRT-8601-EntropyCalibration2        <- TRT-<version number>-<algorithm word>
    input: 3c010204                     <- float32 bits of the scale (amax / 127), lower-case hex
    onnx::MatMul_12_output: 3d4c8a20    <- names may hold ':' and ': ', so split at the LAST ': '

Two older headers exist: a bare ``1`` (TensorRT 4/5.0) and the IInt8LegacyCalibrator form
``0 <regression cutoff> <quantile>`` (both numbers are float64 bit patterns in hex).

Reading is strict: anything outside this grammar raises :class:`CacheFormatError` naming the
source, the line number, the offending text and what was expected; nothing is skipped. Within the
grammar, text that is not in canonical form (upper-case or zero-padded hex, CRLF line endings)
is remembered so that writing an unchanged cache reproduces the file byte for byte.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from ..atomic import write_atomic
from ..errors import CacheFormatError, InvalidInputError
from ..inputs import read_input_bytes
from ..scale import amax_from_scale, scale_from_amax

__all__ = [
    "ALGORITHMS",
    "LEGACY_ALGORITHM",
    "CalibrationCache",
    "LegacyHeader",
    "hex_from_scale",
    "parse_trt_version",
    "read_cache",
    "scale_from_hex",
    "trt_version_from_number",
    "trt_version_number",
    "write_cache",
]

#: Header words TensorRT writes, one per calibrator class.
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration")
#: calibkit's name for the IInt8LegacyCalibrator header ``0 <cutoff> <quantile>`` (no word in it).
LEGACY_ALGORITHM = "LegacyCalibration"

_V10 = 100_000  # NV_TENSORRT_VERSION of 10.0.0: from here on major * 10000
_HEADER_RE = re.compile(r"TRT-([1-9][0-9]*)-([A-Za-z0-9]+)")
_LEGACY_RE = re.compile(r"0 ([0-9a-fA-F]{1,16}) ([0-9a-fA-F]{1,16})")
_HEX_RE = re.compile(r"[0-9a-fA-F]{1,8}")
_ENTRY_HINT = "'<tensor name>: <1-8 hex digits>'"


@dataclass(frozen=True)
class LegacyHeader:
    """The two IInt8LegacyCalibrator parameters stored in a legacy cache header."""

    regression_cutoff: float
    quantile: float


def parse_trt_version(version: str | tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    """Return ``(major, minor, patch)`` from ``"10.16"``, ``"8.6.1"``, ``"8.6.1.6"`` or a tuple.

    A fourth (build) component is dropped: the cache header does not hold it.

    Examples
    --------
    >>> parse_trt_version("10.16")
    (10, 16, 0)
    """
    if isinstance(version, str):
        parts = version.strip().split(".")
        if not 1 <= len(parts) <= 4 or not all(p.isascii() and p.isdigit() for p in parts):
            msg = f"bad TensorRT version {version!r}; expected 'major[.minor[.patch]]' like '10.16'"
            raise InvalidInputError(msg)
        numbers = [int(p) for p in parts]
    else:
        numbers = [int(p) for p in version]
        if not 1 <= len(numbers) <= 4 or min(numbers) < 0:
            msg = f"bad TensorRT version {version!r}; expected (major, minor, patch)"
            raise InvalidInputError(msg)
    major, minor, patch = [*numbers, 0, 0][:3]
    trt_version_number((major, minor, patch))  # range check
    return major, minor, patch


def trt_version_number(version: tuple[int, int, int]) -> int:
    """Return TensorRT's ``NV_TENSORRT_VERSION`` for ``(major, minor, patch)``.

    ``major*1000 + minor*100 + patch`` up to 9.x, ``major*10000 + minor*100 + patch`` from 10.0.

    Examples
    --------
    >>> trt_version_number((8, 6, 1)), trt_version_number((10, 16, 0))
    (8601, 101600)
    """
    major, minor, patch = version
    max_minor = 9 if major < 10 else 99
    if not (1 <= major and 0 <= minor <= max_minor and 0 <= patch <= 99):
        msg = (
            f"TensorRT version {major}.{minor}.{patch} cannot be written in a cache header "
            f"(needs major >= 1, minor <= {max_minor}, patch <= 99)"
        )
        raise InvalidInputError(msg)
    return major * (1000 if major < 10 else 10000) + minor * 100 + patch


def trt_version_from_number(number: int) -> tuple[int, int, int]:
    """Invert :func:`trt_version_number`: ``8601 -> (8, 6, 1)``, ``101600 -> (10, 16, 0)``.

    Numbers from 10000 to 99999 fit neither rule and raise ``ValueError``.
    """
    if number >= _V10:
        return number // 10000, number // 100 % 100, number % 100
    if 1000 <= number < 10000:
        return number // 1000, number // 100 % 10, number % 100
    msg = (
        f"{number} is not a TensorRT version number "
        "(expected 1000-9999 for TensorRT 1-9 or >= 100000 for TensorRT 10+)"
    )
    raise InvalidInputError(msg)


def scale_from_hex(text: str) -> np.float32:
    """Decode a cache value (1-8 hex digits, any case) to its float32 scale.

    Raises
    ------
    ValueError
        If `text` is not 1-8 hex digits or denotes a NaN or negative value.
    """
    if not isinstance(text, str) or not _HEX_RE.fullmatch(text):
        msg = f"bad hex {text!r}; expected 1-8 hex digits (the float32 bits of the scale)"
        raise InvalidInputError(msg)
    scale = _bits_to_float32(int(text, 16))
    if np.isnan(scale) or np.signbit(scale):
        msg = f"hex {text!r} is the scale {scale}; expected a number >= 0"
        raise InvalidInputError(msg)
    return scale


def hex_from_scale(scale: float) -> str:
    """Encode a scale as TensorRT does: float32 bits in lower-case hex, unpadded (``0`` for 0)."""
    return format(_float32_to_bits(np.float32(scale)), "x")


def _bits_to_float32(bits: int) -> np.float32:
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def _float32_to_bits(value: np.float32) -> int:
    return int(np.array([value], dtype=np.float32).view(np.uint32)[0])


def _double_to_hex(value: float) -> str:
    return format(struct.unpack(">Q", struct.pack(">d", value))[0], "x")


def _hex_to_double(text: str) -> float:
    return struct.unpack(">d", struct.pack(">Q", int(text, 16)))[0]


@dataclass
class CalibrationCache:
    r"""A TensorRT calibration cache: header fields and tensor name -> float32 scale.

    Parameters
    ----------
    version : tuple of int or None
        ``(major, minor, patch)`` of the TensorRT that wrote (or will read) the cache; None for
        the bare ``1`` header and for legacy caches, whose headers hold no version.
    algorithm : str or None
        Header word (one of :data:`ALGORITHMS`), ``"LegacyCalibration"`` for a legacy header,
        None for the bare ``1`` header.
    scales : dict
        Tensor name -> scale (coerced to ``np.float32``), in file order.
    legacy : LegacyHeader or None
        Regression cutoff and quantile; set exactly when ``algorithm == "LegacyCalibration"``.
    newline : str
        Line ending, ``"\n"`` (TensorRT's) or ``"\r\n"`` (kept from a file that had it).
    """

    version: tuple[int, int, int] | None
    algorithm: str | None
    scales: dict[str, np.float32]
    legacy: LegacyHeader | None = None
    newline: str = field(default="\n", compare=False)
    # Original spellings that differ from the canonical form: header text, and hex per tensor.
    # Used on write only while they still denote the current value (see _header_line, to_bytes).
    _header_text: str | None = field(default=None, init=False, repr=False, compare=False)
    _hex_text: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.version is not None:
            # callers pass parse_trt_version's triple; int() only turns NumPy integers into ints
            self.version = cast("tuple[int, int, int]", tuple(int(v) for v in self.version))
        self.scales = {str(k): np.float32(v) for k, v in self.scales.items()}
        if self.newline not in ("\n", "\r\n"):
            msg = f"newline must be '\\n' or '\\r\\n', got {self.newline!r}"
            raise InvalidInputError(msg)
        self._header_line()  # validates the header fields

    # -- views -------------------------------------------------------------------------------
    @property
    def amax(self) -> dict[str, float]:
        """Tensor name -> clipping threshold ``127 * scale`` (float64 from the float32 scale)."""
        return {name: amax_from_scale(s) for name, s in self.scales.items()}

    @property
    def dynamic_range(self) -> dict[str, tuple[float, float]]:
        """Tensor name -> ``(-amax, amax)``, the arguments of ``ITensor.set_dynamic_range``."""
        return {name: (-a, a) for name, a in self.amax.items()}

    @property
    def hex(self) -> dict[str, str]:
        """Tensor name -> hex text as it will be written (canonical unless kept from the file)."""
        return {name: self._hex_for(name, s) for name, s in self.scales.items()}

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_amax(
        cls,
        amax: Mapping[str, float],
        *,
        trt_version: str | tuple[int, ...] | None,
        algorithm: str,
        quantile: float | None = None,
        regression_cutoff: float | None = None,
    ) -> CalibrationCache:
        """Build a cache from clipping thresholds, ``scale = fl32(fl32(amax) / 127)``.

        Parameters
        ----------
        amax : mapping
            Tensor name -> amax (>= 0; inf allowed, as TensorRT writes it).
        trt_version : str or tuple or None
            Target TensorRT version, e.g. ``"10.16"``; required except for a legacy cache, whose
            header holds no version (pass None there).
        algorithm : str
            A word of :data:`ALGORITHMS`, or ``"LegacyCalibration"`` together with
            `quantile` and `regression_cutoff`.

        Raises
        ------
        ValueError
            For NaN or negative amax, a bad name, or an inconsistent header.
        """
        for name, value in amax.items():
            if math.isnan(value) or value < 0:
                msg = f"amax of tensor {name!r} is {value}; expected a number >= 0"
                raise InvalidInputError(msg)
        legacy = None
        if algorithm == LEGACY_ALGORITHM:
            if quantile is None or regression_cutoff is None:
                msg = "algorithm 'LegacyCalibration' needs quantile= and regression_cutoff="
                raise InvalidInputError(msg)
            legacy = LegacyHeader(float(regression_cutoff), float(quantile))
        elif quantile is not None or regression_cutoff is not None:
            msg = f"quantile/regression_cutoff apply only to 'LegacyCalibration', not {algorithm!r}"
            raise InvalidInputError(msg)
        version = None if trt_version is None else parse_trt_version(trt_version)
        if version is not None and version[0] >= 11:
            msg = (
                f"TensorRT {version[0]} removed implicit INT8 calibration and reads no "
                "calibration cache; target TensorRT <= 10 or export Q/DQ (calibkit qdq)"
            )
            raise InvalidInputError(msg)
        scales = {name: scale_from_amax(value) for name, value in amax.items()}
        return cls(version, algorithm, scales, legacy)

    # -- writing -----------------------------------------------------------------------------
    def _canonical_header(self) -> str:
        if self.legacy is not None or self.algorithm == LEGACY_ALGORITHM:
            if self.legacy is None or self.algorithm != LEGACY_ALGORITHM or self.version:
                msg = (
                    "a legacy cache needs algorithm='LegacyCalibration', legacy=LegacyHeader(...) "
                    f"and version=None; got algorithm={self.algorithm!r}, legacy={self.legacy!r}, "
                    f"version={self.version!r}"
                )
                raise InvalidInputError(msg)
            cutoff, quantile = self.legacy.regression_cutoff, self.legacy.quantile
            if not (math.isfinite(cutoff) and math.isfinite(quantile)):
                msg = f"legacy regression cutoff and quantile must be finite, got {self.legacy}"
                raise InvalidInputError(msg)
            return f"0 {_double_to_hex(cutoff)} {_double_to_hex(quantile)}"
        if self.version is None and self.algorithm is None:
            return "1"
        if self.algorithm not in ALGORITHMS:
            msg = f"unknown algorithm {self.algorithm!r}; choose one of {list(ALGORITHMS)}"
            raise InvalidInputError(msg)
        if self.version is None:
            msg = f"a {self.algorithm} cache needs an explicit TensorRT version (e.g. '10.16')"
            raise InvalidInputError(msg)
        return f"TRT-{trt_version_number(self.version)}-{self.algorithm}"

    def _header_line(self) -> str:
        canonical = self._canonical_header()
        if self._header_text is not None:
            try:
                kept = _parse_header(self._header_text, "<kept header>")
            except CacheFormatError:
                kept = None
            if kept == (self.version, self.algorithm, self.legacy):
                return self._header_text
        return canonical

    def _hex_for(self, name: str, scale: np.float32) -> str:
        bits = _float32_to_bits(scale)
        kept = self._hex_text.get(name)
        if kept is not None and int(kept, 16) == bits:
            return kept
        return format(bits, "x")

    def to_bytes(self) -> bytes:
        """Return the cache file content (UTF-8) exactly as :func:`write_cache` writes it.

        Raises
        ------
        ValueError
            If a name is empty, holds a line break or is not valid Unicode (a lone surrogate),
            a scale is NaN or negative, or the header
            fields are inconsistent (e.g. an algorithm word without a TensorRT version).
        """
        lines = [self._header_line()]
        for name, scale in self.scales.items():
            if not name or "\n" in name or "\r" in name:
                msg = f"tensor name {name!r} cannot be written: it is empty or holds a line break"
                raise InvalidInputError(msg)
            try:
                name.encode("utf-8")
            except UnicodeEncodeError as err:
                msg = f"tensor name {name!r} cannot be written as UTF-8 text: {err.reason}"
                raise InvalidInputError(msg) from err
            if np.isnan(scale) or np.signbit(scale):
                msg = f"scale of tensor {name!r} is {scale}; expected a number >= 0"
                raise InvalidInputError(msg)
            lines.append(f"{name}: {self._hex_for(name, scale)}")
        nl = self.newline
        return (nl.join(lines) + nl).encode("utf-8")


# -- reading ---------------------------------------------------------------------------------
def _parse_header(text: str, where: str) -> tuple:
    """Return ``(version, algorithm, legacy)`` for a header line, or raise CacheFormatError."""
    if text == "1":
        return None, None, None
    match = _LEGACY_RE.fullmatch(text)
    if match:
        cutoff, quantile = (_hex_to_double(g) for g in match.groups())
        if not (math.isfinite(cutoff) and math.isfinite(quantile)):
            msg = f"{where}: legacy header {text!r} holds a non-finite cutoff or quantile"
            raise CacheFormatError(msg)
        return None, LEGACY_ALGORITHM, LegacyHeader(cutoff, quantile)
    match = _HEADER_RE.fullmatch(text)
    if match is None:
        msg = (
            f"{where}: expected a header 'TRT-<version number>-<algorithm>', "
            f"'0 <cutoff hex> <quantile hex>' or '1', got {_clip(text)!r}"
        )
        raise CacheFormatError(msg)
    digits, algorithm = match.group(1), match.group(2)
    if len(digits) > 9:  # TensorRT's are 4 to 6 digits; int() of 4301 digits raises, slowly
        msg = (
            f"{where}: version number in the header has {len(digits)} digits; "
            "expected NV_TENSORRT_VERSION such as 8601 or 101600"
        )
        raise CacheFormatError(msg)
    number = int(digits)
    if algorithm not in ALGORITHMS:
        msg = (
            f"{where}: unknown algorithm {algorithm!r} in header; "
            f"expected one of {list(ALGORITHMS)}"
        )
        raise CacheFormatError(msg)
    try:
        version = trt_version_from_number(number)
    except ValueError as err:
        msg = f"{where}: bad version in header {text!r}: {err}"
        raise CacheFormatError(msg) from err
    return version, algorithm, None


def _clip(text: str, limit: int = 80) -> str:
    """Shorten `text` for an error message (a header or line may be megabytes long)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        msg = f"{where}: expected UTF-8 text, got {raw!r}"
        raise CacheFormatError(msg) from err


def _parse(data: bytes, source: str) -> CalibrationCache:
    if not data:
        msg = f"{source}: empty file; expected a header line such as 'TRT-8601-EntropyCalibration2'"
        raise CacheFormatError(msg)
    lines = data.split(b"\n")
    if lines[-1]:
        msg = (
            f"{source}:{len(lines)}: truncated last line {lines[-1][:200]!r} (no final newline); "
            "TensorRT ends every line with a newline, so the file may be cut short"
        )
        raise CacheFormatError(msg)
    lines.pop()
    crlf = lines[0].endswith(b"\r")
    newline = "\r\n" if crlf else "\n"
    texts = []
    for lineno, raw in enumerate(lines, 1):
        if crlf:
            if not raw.endswith(b"\r"):
                msg = f"{source}:{lineno}: line ends with LF but the header line ends with CRLF"
                raise CacheFormatError(msg)
            raw = raw[:-1]
        if b"\r" in raw:
            msg = f"{source}:{lineno}: stray carriage return in {raw[:200]!r}"
            raise CacheFormatError(msg)
        texts.append(_decode(raw, f"{source}:{lineno}"))
    header = texts[0]
    version, algorithm, legacy = _parse_header(header, f"{source}:1")
    scales: dict[str, np.float32] = {}
    hex_text: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, text in enumerate(texts[1:], 2):
        cut = text.rfind(": ")
        if cut <= 0:
            msg = f"{source}:{lineno}: expected {_ENTRY_HINT}, got {text[:300]!r}"
            raise CacheFormatError(msg)
        name, digits = text[:cut], text[cut + 2 :]
        if not _HEX_RE.fullmatch(digits):
            msg = (
                f"{source}:{lineno}: bad hex {digits[:40]!r} for tensor {name[:200]!r}; "
                "expected 1-8 hex digits (the float32 bits of the scale)"
            )
            raise CacheFormatError(msg)
        bits = int(digits, 16)
        scale = _bits_to_float32(bits)
        if np.isnan(scale):
            msg = f"{source}:{lineno}: tensor {name[:200]!r} has a NaN scale ({digits})"
            raise CacheFormatError(msg)
        if bits >> 31:
            msg = (
                f"{source}:{lineno}: tensor {name[:200]!r} has a negative scale "
                f"{float(scale)!r} ({digits}); expected a scale >= 0"
            )
            raise CacheFormatError(msg)
        if name in first_line:
            msg = (
                f"{source}:{lineno}: duplicate tensor name {name[:200]!r} "
                f"(first on line {first_line[name]})"
            )
            raise CacheFormatError(msg)
        first_line[name] = lineno
        scales[name] = scale
        if digits != format(bits, "x"):
            hex_text[name] = digits
    cache = CalibrationCache(version, algorithm, scales, legacy, newline)
    if header != cache._canonical_header():
        cache._header_text = header
    cache._hex_text = hex_text
    return cache


def read_cache(source: str | os.PathLike | bytes) -> CalibrationCache:
    r"""Read a TensorRT calibration cache from a path or from its bytes.

    Parameters
    ----------
    source : path or bytes
        The cache file, or its content.

    Returns
    -------
    CalibrationCache
        Header fields and scales in file order; ``write_cache`` of it reproduces the file.

    Raises
    ------
    CacheFormatError
        For an empty file, a bad header, a line that is not ``name: hex``, bad hex, a NaN or
        negative scale, a duplicate name, mixed line endings, non-UTF-8 text, or a missing final
        newline. The message names the file and line.

    Examples
    --------
    >>> cache = read_cache(b"TRT-8601-EntropyCalibration2\ninput: 3c010204\n")
    >>> cache.version, cache.algorithm, cache.amax
    ((8, 6, 1), 'EntropyCalibration2', {'input': 0.9999999962747097})
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _parse(bytes(source), "<bytes>")
    path = Path(source)
    return _parse(read_input_bytes(path, "calibration cache"), str(path))


def write_cache(path: str | os.PathLike, cache: CalibrationCache) -> None:
    """Write `cache` to `path` atomically (temporary file in the same folder, then rename).

    The header comes from the cache's own fields (its ``version`` is the explicit target; build
    a new one with :meth:`CalibrationCache.from_amax`). A cache read from a file is written back
    byte for byte.
    """
    write_atomic(path, cache.to_bytes())
