"""calibkit: TensorRT's INT8 post-training calibration, reimplemented on the CPU.

Importing calibkit loads NumPy and Numba only; onnx, onnxruntime, tensorrt, pycuda and
matplotlib are imported by the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .cache import CalibrationCache, parse_trt_version, read_cache, write_cache
from .calibrate import calibrate_onnx, select_from_stats
from .collect import HistogramCollector, MaxCollector
from .errors import (
    CacheFormatError,
    CalibkitError,
    HistogramMergeError,
    MissingDependencyError,
    NonFiniteError,
    NotCollectedError,
)
from .histogram import Histogram
from .scale import amax_from_scale, scale_from_amax
from .selectors import (
    EntropySelector,
    LegacySelector,
    MinMaxSelector,
    MSESelector,
    PercentileSelector,
    compute_amax,
    make_selector,
)
from .stats import Stats, load_stats, save_stats

__all__ = [
    "CacheFormatError",
    "CalibkitError",
    "CalibrationCache",
    "EntropySelector",
    "Histogram",
    "HistogramCollector",
    "HistogramMergeError",
    "LegacySelector",
    "MSESelector",
    "MaxCollector",
    "MinMaxSelector",
    "MissingDependencyError",
    "NonFiniteError",
    "NotCollectedError",
    "PercentileSelector",
    "Stats",
    "__version__",
    "amax_from_scale",
    "calibrate_onnx",
    "compute_amax",
    "load_stats",
    "make_selector",
    "parse_trt_version",
    "read_cache",
    "save_stats",
    "scale_from_amax",
    "select_from_stats",
    "write_cache",
]
