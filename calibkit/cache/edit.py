"""Change a calibration cache: retarget its header, set, clamp or drop tensors.

Every function returns a new :class:`CalibrationCache` and leaves its argument alone. Untouched
lines keep their original spelling, so an edit changes only the lines it names.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections.abc import Iterable, Mapping

import numpy as np

from ..errors import InvalidInputError
from ..scale import scale_from_amax
from .format import ALGORITHMS, LEGACY_ALGORITHM, CalibrationCache, parse_trt_version

__all__ = ["clamp_amax", "drop_tensors", "retarget", "select_tensors", "set_scales"]


def retarget(
    cache: CalibrationCache,
    *,
    trt_version: str | tuple[int, ...] | None = None,
    algorithm: str | None = None,
) -> CalibrationCache:
    """Return a copy of `cache` with a new header, warning what the change means.

    Only the header changes; the scales are kept. TensorRT uses a cache only when its header
    matches the TensorRT version and the calibrator class in use (DLA accepts only
    ``EntropyCalibration2``), so retargeting makes a cache loadable elsewhere; it recomputes
    nothing.

    Warns
    -----
    UserWarning
        When an existing version or algorithm word is replaced by a different one.
    """
    new = copy.deepcopy(cache)
    if algorithm is not None and algorithm != cache.algorithm:
        if algorithm not in ALGORITHMS:
            msg = f"cannot retarget to {algorithm!r}; choose one of {list(ALGORITHMS)}"
            raise InvalidInputError(msg)
        if cache.algorithm is not None:
            warnings.warn(
                f"header algorithm changed from {cache.algorithm} to {algorithm}, but the scales "
                f"still come from {cache.algorithm}'s method; TensorRT uses the cache only with a "
                f"calibrator of the {algorithm} class (DLA requires EntropyCalibration2)",
                UserWarning,
                stacklevel=2,
            )
        new.algorithm, new.legacy = algorithm, None
    if trt_version is not None:
        version = parse_trt_version(trt_version)
        if version[0] >= 11:
            msg = (
                f"TensorRT {version[0]} removed implicit INT8 calibration and reads no cache; "
                "target TensorRT <= 10 or export Q/DQ (calibkit qdq)"
            )
            raise InvalidInputError(msg)
        if new.algorithm == LEGACY_ALGORITHM:
            msg = "a legacy cache header holds no TensorRT version; retarget its algorithm too"
            raise InvalidInputError(msg)
        if cache.version is not None and version != cache.version:
            old, target = (".".join(map(str, v)) for v in (cache.version, version))
            warnings.warn(
                f"header version changed from TensorRT {old} to {target}, scales unchanged; "
                "TensorRT silently recalibrates when the version does not match, and NVIDIA "
                "does not promise equal scales across versions (recalibrate when you can)",
                UserWarning,
                stacklevel=2,
            )
        new.version = version
    new.to_bytes()  # header consistency: e.g. an algorithm word needs a version
    return new


def select_tensors(cache: CalibrationCache, patterns: Iterable[str]) -> list[str]:
    """Return the names (file order) matched in full by any regular expression in `patterns`.

    Raises
    ------
    ValueError
        If a pattern is not a valid regex or matches no tensor (a typo must not pass silently).
    """
    chosen: set[str] = set()
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as err:
            msg = f"bad regular expression {pattern!r}: {err}"
            raise InvalidInputError(msg) from err
        hits = {name for name in cache.scales if regex.fullmatch(name)}
        if not hits:
            msg = f"pattern {pattern!r} matches no tensor name (it must match the whole name)"
            raise InvalidInputError(msg)
        chosen |= hits
    return [name for name in cache.scales if name in chosen]


def set_scales(
    cache: CalibrationCache,
    scales: Mapping[str, float],
    *,
    from_amax: bool = True,
    add: bool = False,
) -> CalibrationCache:
    """Return a copy with the given tensors set (values are amax unless ``from_amax=False``).

    Unknown names raise ``ValueError`` unless ``add=True``, which appends them at the end.
    """
    new = copy.deepcopy(cache)
    unknown = [name for name in scales if name not in cache.scales]
    if unknown and not add:
        msg = f"{len(unknown)} name(s) not in the cache, e.g. {unknown[0]!r}; use add to append"
        raise InvalidInputError(msg)
    for name, value in scales.items():
        if not isinstance(value, (int, float, np.floating)) or math.isnan(value) or value < 0:
            msg = f"value for tensor {name!r} is {value!r}; expected a number >= 0"
            raise InvalidInputError(msg)
        new.scales[name] = scale_from_amax(value) if from_amax else np.float32(value)
    new.to_bytes()  # names must be writable
    return new


def clamp_amax(
    cache: CalibrationCache,
    names: Iterable[str],
    *,
    lower: float | None = None,
    upper: float | None = None,
) -> CalibrationCache:
    """Return a copy where the amax of `names` is clamped to ``[lower, upper]``.

    Only tensors outside the bounds change; they get ``scale_from_amax(bound)``.
    """
    if lower is not None and upper is not None and lower > upper:
        msg = f"clamp bounds are reversed: lower {lower} > upper {upper}"
        raise InvalidInputError(msg)
    names = list(names)
    _check_known(cache, names)
    changes = {}
    amax = cache.amax
    for name in names:
        if upper is not None and amax[name] > upper:
            changes[name] = upper
        elif lower is not None and amax[name] < lower:
            changes[name] = lower
    return set_scales(cache, changes)


def drop_tensors(cache: CalibrationCache, names: Iterable[str]) -> CalibrationCache:
    """Return a copy without `names` (TensorRT then runs their layers in higher precision)."""
    names = list(names)
    _check_known(cache, names)
    new = copy.deepcopy(cache)
    for name in names:
        del new.scales[name]
    return new


def _check_known(cache: CalibrationCache, names: list[str]) -> None:
    unknown = [name for name in names if name not in cache.scales]
    if unknown:
        msg = f"{len(unknown)} name(s) not in the cache, e.g. {unknown[0]!r}"
        raise InvalidInputError(msg)
