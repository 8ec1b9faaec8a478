"""Recorded activations: an ``.npz`` with one array per tensor, first axis = calibration batch.

This is the layout of the TensorRT triples (``activations.npz``): key = the exact tensor name,
shape ``(num_batches, *tensor_shape)``, batches in the order TensorRT received them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import CalibkitError
from ..inputs import load_npz
from ..stats import STATS_FORMAT

__all__ = ["RecordedActivationsError", "iter_recorded_batches"]


class RecordedActivationsError(CalibkitError, ValueError):
    """A recorded-activations file is unreadable or inconsistent."""


def iter_recorded_batches(path) -> Iterator[dict[str, np.ndarray]]:
    """Yield one ``{tensor name: array}`` batch per index of the first axis, in order.

    Raises
    ------
    RecordedActivationsError
        If the file is not an ``.npz`` of float arrays that agree on the number of batches.
    """
    path = Path(path)
    arrays = load_npz(path, "recorded activations (.npz, key = tensor name)")
    if "format" in arrays and str(arrays["format"]) == STATS_FORMAT:
        msg = f"{path} holds saved statistics, not activations: use 'calibkit select'"
        raise RecordedActivationsError(msg)
    if not arrays:
        msg = f"{path}: holds no arrays"
        raise RecordedActivationsError(msg)
    counts = set()
    for name, arr in arrays.items():
        if arr.ndim < 1 or not np.issubdtype(arr.dtype, np.floating):
            msg = (
                f"{path}: tensor {name!r} has dtype {arr.dtype} and shape {arr.shape}; expected "
                "a float array whose first axis is the calibration batch"
            )
            raise RecordedActivationsError(msg)
        counts.add(arr.shape[0])
    if len(counts) != 1:
        sizes = {name: arr.shape[0] for name, arr in arrays.items()}
        msg = f"{path}: tensors disagree on the number of batches (first axis): {sizes}"
        raise RecordedActivationsError(msg)
    num_batches = counts.pop()
    if num_batches == 0:
        msg = f"{path}: holds 0 calibration batches (first axis); expected at least one"
        raise RecordedActivationsError(msg)
    for b in range(num_batches):
        yield {name: arr[b] for name, arr in arrays.items()}
