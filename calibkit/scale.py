"""TensorRT's scale arithmetic: amax (clipping threshold) <-> INT8 scale.

TensorRT's implicit INT8 maps ``[-amax, amax]`` to ``[-127, 127]``, so ``scale = amax / 127``.
The cache stores the float32 scale; both steps round to float32 (TRT_CALIBRATION.md §0.1):
``scale = fl32(fl32(amax) / 127)``.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np

__all__ = ["INT8_MAX", "FloatLike", "amax_from_scale", "scale_from_amax"]

INT8_MAX = 127

#: A scale or amax as callers hold it: a Python float, or a NumPy one (a cache's float32 scale).
FloatLike: TypeAlias = float | np.floating


def scale_from_amax(amax: FloatLike) -> np.float32:
    """Return TensorRT's float32 scale for a clipping threshold: ``fl32(fl32(amax) / 127)``.

    Examples
    --------
    >>> float(scale_from_amax(1.0)) == float(np.float32(1.0) / np.float32(127))
    True
    """
    with np.errstate(over="ignore"):  # amax above FLT_MAX is inf in float32, as in TensorRT
        return np.float32(np.float32(amax) / np.float32(INT8_MAX))


def amax_from_scale(scale: FloatLike) -> float:
    """Return the dynamic range ``127 * scale`` (as TensorRT's ``setDynamicRange`` would take it).

    Computed in float64 from the float32 scale. Going back through float32 amax is not always
    exact (about 1 % of scales move by one ulp), which is why caches store the scale itself.
    """
    return float(np.float64(np.float32(scale)) * INT8_MAX)
