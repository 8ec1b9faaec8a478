"""The TensorRT (8.6-10.x) adapter: serve calibkit's scales to a build, or record TensorRT's own.

``tensorrt`` and a CUDA binding are imported by the functions that need them, never at import.
"""

from __future__ import annotations

from .adapter import (
    CrossCheck,
    DynamicRangeReport,
    algorithm_of,
    apply_dynamic_ranges,
    build_engine,
    crosscheck,
    import_tensorrt,
    make_calibrator,
    trt_version,
)

__all__ = [
    "CrossCheck",
    "DynamicRangeReport",
    "algorithm_of",
    "apply_dynamic_ranges",
    "build_engine",
    "crosscheck",
    "import_tensorrt",
    "make_calibrator",
    "trt_version",
]
