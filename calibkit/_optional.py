"""Import optional dependencies at the point of use, failing with the install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

_EXTRA = {
    "tensorrt": "trt",
    "pycuda": "trt",
    "pycuda.driver": "trt",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "tqdm": "onnx",
    "PIL": "onnx",
    "matplotlib": "plot",
    "flatbuffers": "convert",
    "torch": "torch",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`, or raise MissingDependencyError naming the extra that provides it.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"onnxruntime"``.
    purpose : str
        What needs it, for the message (``"ONNX calibration"``).

    Returns
    -------
    module
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = _EXTRA.get(module, _EXTRA.get(module.split(".")[0], "dev"))
        # calibkit is on no package index: the extra installs from the checkout
        msg = f"{purpose} needs '{module}': pip install -e '.[{extra}]' in the calibkit checkout"
        raise MissingDependencyError(msg) from err
