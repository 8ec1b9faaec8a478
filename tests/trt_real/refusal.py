"""TensorRT >= 11's real bindings: no calibrator API, and calibkit refuses them in one line.

Run in its own process by tests/test_trt_bindings.py (see calibrators.py for the set-up).
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
from trt_standin import make_tensorrt

from trt_real.kit import RELEASES

RELEASE = RELEASES[os.environ["CALIBKIT_TRT_RELEASE"]]
real = importlib.import_module("tensorrt_bindings")
sys.modules["tensorrt"] = real

from calibkit.cli import main  # noqa: E402
from calibkit.errors import MissingDependencyError  # noqa: E402
from calibkit.trt.adapter import apply_dynamic_ranges, import_tensorrt, make_calibrator  # noqa: E402

REMOVED = [  # what calibkit's adapter would need, absent from TensorRT 11 (TRT_CALIBRATION.md §8.1)
    "IInt8Calibrator",
    "IInt8EntropyCalibrator2",
    "IInt8EntropyCalibrator",
    "IInt8MinMaxCalibrator",
    "IInt8LegacyCalibrator",
    "CalibrationAlgoType",
]


def test_tensorrt_11_has_no_calibrator_api_and_the_standin_agrees():
    assert real.__version__ == RELEASE.version
    assert int(real.__version__.split(".")[0]) >= 11
    standin = make_tensorrt(RELEASE.version)
    for name in REMOVED:
        assert not hasattr(real, name), name
        assert not hasattr(standin, name), name
    for owner, name in [("BuilderFlag", "INT8"), ("ITensor", "set_dynamic_range")]:
        assert not hasattr(getattr(real, owner), name), f"{owner}.{name}"
        assert not hasattr(getattr(standin, owner), name), f"stand-in {owner}.{name}"


@pytest.mark.parametrize(
    "call",
    [
        import_tensorrt,
        lambda: make_calibrator("entropy2", cache=b"TRT-101600-EntropyCalibration2\nx: 1\n"),
        lambda: apply_dynamic_ranges(object(), {"x": 1.0}),
    ],
    ids=["import", "make_calibrator", "apply_dynamic_ranges"],
)
def test_every_entry_point_refuses_tensorrt_11(call):
    with pytest.raises(MissingDependencyError, match=r"removed in 11\.0.*calibkit qdq"):
        call()


def test_cli_refuses_tensorrt_11_in_one_line(tmp_path, capsys):
    cache = tmp_path / "m.cache"
    cache.write_bytes(b"TRT-101600-EntropyCalibration2\nx: 3c010204\n")
    argv = ["trt", "build", "m.onnx", "--cache", str(cache), "-o", str(tmp_path / "m.engine")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"calibkit trt: error: TensorRT {RELEASE.version[:6]}")
    assert "calibkit qdq" in err
