"""Every exception calibkit raises on purpose.

Each error also inherits the built-in a caller would expect (``ValueError`` for bad input,
``ImportError`` for a missing extra), so generic ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "CacheFormatError",
    "CalibkitError",
    "EntryPointError",
    "HistogramMergeError",
    "HistogramRangeError",
    "InputLimitError",
    "InvalidInputError",
    "MissingDependencyError",
    "ModelFormatError",
    "NonFiniteError",
    "NotCollectedError",
    "OutputPathError",
    "SelectorError",
]


class CalibkitError(Exception):
    """Base of every error calibkit raises on purpose."""


class NotCollectedError(CalibkitError, RuntimeError):
    """A result was asked for before any data was collected."""


class NonFiniteError(CalibkitError, ValueError):
    """A batch held NaN where the policy says NaN is an error."""


class EntryPointError(CalibkitError, ValueError):
    """A PyTorch entry point (``module:factory``) that cannot be loaded, or whose model fails."""


class HistogramMergeError(CalibkitError, ValueError):
    """Two histograms cannot be merged exactly (bin counts or ranges incompatible)."""


class HistogramRangeError(CalibkitError, ValueError):
    """A value would grow a histogram's range past the largest float64."""


class CacheFormatError(CalibkitError, ValueError):
    """A calibration cache (or a file in another supported format) is malformed."""


class MissingDependencyError(CalibkitError, ImportError):
    """An optional dependency (an extra) is not installed."""


class ModelFormatError(CalibkitError, ValueError):
    """A file given as an ONNX model is not one (truncated, another format, unreadable)."""


class SelectorError(CalibkitError, ValueError):
    """A selector spec, or one of a selector's parameters, is invalid."""


class InvalidInputError(CalibkitError, ValueError):
    """An argument or input value calibkit cannot use (out of range, inconsistent, unknown)."""


class InputLimitError(CalibkitError, ValueError):
    """An input exceeds a resource limit (decompressed size, pixels, bytes read)."""


class OutputPathError(CalibkitError, OSError):
    """An output path cannot be written (no folder, a directory, a FIFO or device, read-only).

    Raised before the first byte of any output is written.
    """
