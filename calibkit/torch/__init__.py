"""TensorRT-style calibration statistics from PyTorch models (``pip install -e '.[torch]'``).

``calibkit`` itself never imports torch; importing this subpackage does.

>>> from calibkit.torch import collect  # doctest: +SKIP
>>> with collect(model) as c:  # doctest: +SKIP
...     for x in loader:
...         model(x)
>>> c.save("stats.npz")  # then: calibkit select stats.npz ...  # doctest: +SKIP
"""

from __future__ import annotations

from .._optional import require

require("torch", "calibkit.torch")

from .hooks import BACKENDS, TorchCollector, collect  # noqa: E402
from .names import onnx_names  # noqa: E402

__all__ = ["BACKENDS", "TorchCollector", "collect", "onnx_names"]
