"""Calibration batches for ``torch_model.py``: ``calib.npz`` in batches of 8 (a loader script).

Each item is one batch, one array: ``model(batch)``. Batches of 8, as ``calibkit calibrate
model.onnx --data calib.npz`` uses by default for this model's dynamic batch axis, so both
paths see the same batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BATCH = 8


def load_data():
    """Yield float32 ``[8, 1, 28, 28]`` batches (the last one smaller) of ``calib.npz``."""
    with np.load(HERE / "calib.npz") as archive:
        images = archive["image"]
    for start in range(0, len(images), BATCH):
        yield images[start : start + BATCH]
