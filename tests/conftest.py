"""Shared fixtures: a seeded generator and the paths of the shared TensorRT evidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TESTDATA = SHARED / "testdata"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def shared_testdata() -> Path:
    """``../shared/testdata``: real TensorRT caches, triples and ONNX/cache pairs."""
    if not TESTDATA.is_dir():
        pytest.fail(f"shared test data not found at {TESTDATA}; it sits beside the checkout")
    return TESTDATA


@pytest.fixture(params=["kernels", "reference"])
def impl(request, monkeypatch):
    """Run the public API on the Numba kernels, then on their pure-NumPy twins."""
    from calibkit import _kernels, _reference

    module = _kernels if request.param == "kernels" else _reference
    monkeypatch.setattr("calibkit.histogram._impl", module)
    monkeypatch.setattr("calibkit.selectors._impl", module)
    return module
