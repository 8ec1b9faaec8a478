"""calibkit: TensorRT's INT8 post-training calibration, reimplemented on the CPU.

Importing calibkit loads NumPy only and changes no global setting; Numba is imported when the
first histogram is filled or searched, and onnx, onnxruntime, tensorrt, pycuda and matplotlib
by the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .cache.format import CalibrationCache, parse_trt_version, read_cache, write_cache
from .collect import HistogramCollector, MaxCollector
from .data.sources import DataError, ImagePreprocess, open_data
from .errors import (
    CacheFormatError,
    CalibkitError,
    HistogramMergeError,
    MissingDependencyError,
    NonFiniteError,
    NotCollectedError,
    SelectorError,
)
from .histogram import Histogram
from .onnx.calibrate import CalibrationResult, calibrate_onnx
from .onnx.qdq import QdqReport, to_qdq, write_qdq
from .onnx.reverse import qdq_to_cache
from .onnx.source import OnnxActivationSource
from .pipeline import (
    DEFAULT_SHARE_SCALES,
    ScaleResult,
    scales_from_stats,
    select_all,
    select_from_stats,
    select_scales,
)
from .research.compare import Comparison, compare
from .research.report import write_report
from .research.sensitivity import output_error, sensitivity
from .research.stability import samples_from_onnx, samples_from_recorded, stability
from .scale import amax_from_scale, scale_from_amax
from .selectors import (
    EntropySelector,
    LegacySelector,
    MinMaxSelector,
    MSESelector,
    PercentileSelector,
    Selector,
    as_selector,
    compute_amax,
    header_algorithm,
    make_selector,
)
from .stats import Stats, StatsFormatError, StatsSettings, load_stats, save_stats

__all__ = [
    "DEFAULT_SHARE_SCALES",
    "CacheFormatError",
    "CalibkitError",
    "CalibrationCache",
    "CalibrationResult",
    "Comparison",
    "DataError",
    "EntropySelector",
    "Histogram",
    "HistogramCollector",
    "HistogramMergeError",
    "ImagePreprocess",
    "LegacySelector",
    "MSESelector",
    "MaxCollector",
    "MinMaxSelector",
    "MissingDependencyError",
    "NonFiniteError",
    "NotCollectedError",
    "OnnxActivationSource",
    "PercentileSelector",
    "QdqReport",
    "ScaleResult",
    "Selector",
    "SelectorError",
    "Stats",
    "StatsFormatError",
    "StatsSettings",
    "__version__",
    "amax_from_scale",
    "as_selector",
    "calibrate_onnx",
    "compare",
    "compute_amax",
    "header_algorithm",
    "load_stats",
    "make_selector",
    "open_data",
    "output_error",
    "parse_trt_version",
    "qdq_to_cache",
    "read_cache",
    "samples_from_onnx",
    "samples_from_recorded",
    "save_stats",
    "scale_from_amax",
    "scales_from_stats",
    "select_all",
    "select_from_stats",
    "select_scales",
    "sensitivity",
    "stability",
    "to_qdq",
    "write_cache",
    "write_qdq",
    "write_report",
]
