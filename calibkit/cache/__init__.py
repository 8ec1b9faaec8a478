"""TensorRT calibration caches: the text format, other scale formats, diff, edit and check.

``format`` reads and writes TensorRT's cache exactly; ``formats`` converts to and from the files
other tools use; ``diff``, ``edit`` and ``check`` compare, change and validate caches.
"""

from __future__ import annotations

from .format import (
    ALGORITHMS,
    LEGACY_ALGORITHM,
    CalibrationCache,
    LegacyHeader,
    hex_from_scale,
    parse_trt_version,
    read_cache,
    scale_from_hex,
    trt_version_from_number,
    trt_version_number,
    write_cache,
)

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
