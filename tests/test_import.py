"""Importing calibkit loads what it says and changes nothing outside calibkit."""

from __future__ import annotations

import subprocess
import sys


def test_import_loads_numpy_only():
    code = (
        "import sys, calibkit; heavy = {'numba', 'onnx', 'onnxruntime', 'matplotlib'}; "
        "loaded = heavy & set(sys.modules); assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
