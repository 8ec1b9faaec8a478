"""Calibration data: users' files as checked batches, and recorded activations."""

from __future__ import annotations

from .sources import (
    IMAGE_SUFFIXES,
    PRESETS,
    DataError,
    DataSource,
    ImagePreprocess,
    InputSpec,
    at_calibration_shapes,
    check_batch,
    open_data,
    parse_shape,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "PRESETS",
    "DataError",
    "DataSource",
    "ImagePreprocess",
    "InputSpec",
    "at_calibration_shapes",
    "check_batch",
    "open_data",
    "parse_shape",
]
