"""calibkit: TensorRT's INT8 post-training calibration, reimplemented on the CPU.

Importing calibkit loads only NumPy (and Numba when a kernel first runs); onnx, onnxruntime,
tensorrt, pycuda and matplotlib are imported by the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    CacheFormatError,
    CalibkitError,
    HistogramMergeError,
    MissingDependencyError,
    NonFiniteError,
    NotCollectedError,
)
from .scale import amax_from_scale, scale_from_amax

__all__ = [
    "CacheFormatError",
    "CalibkitError",
    "HistogramMergeError",
    "MissingDependencyError",
    "NonFiniteError",
    "NotCollectedError",
    "__version__",
    "amax_from_scale",
    "scale_from_amax",
]
