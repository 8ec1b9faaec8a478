"""Stand-ins for ``tensorrt`` and ``pycuda`` that enforce the contracts calibkit's adapter needs.

Never installed under the name ``tensorrt``: tests put the module into ``sys.modules`` with
``monkeypatch`` for the duration of one test. The module carries ``CALIBKIT_STANDIN = True`` so
that the real-GPU test can refuse it. See ``api.py`` for what each check mirrors and where the
real behaviour is documented.
"""

from .api import BuildRecord, CalibrationAlgoType, make_tensorrt, version_number
from .device import ContractViolation, DeviceMemory, make_cuda_python, make_cupy, make_pycuda

__all__ = [
    "BuildRecord",
    "CalibrationAlgoType",
    "ContractViolation",
    "DeviceMemory",
    "make_cuda_python",
    "make_cupy",
    "make_pycuda",
    "make_tensorrt",
    "version_number",
]
