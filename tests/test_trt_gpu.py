"""Real TensorRT (8.6-10.x) on a real GPU: TensorRT's own calibrators vs calibkit, bit for bit.

Run on a machine with an NVIDIA GPU, TensorRT <= 10 and pycuda (or cuda-python / cupy)::

    pip install -e '.[dev,trt]' --extra-index-url https://pypi.nvidia.com
    pytest -m gpu tests/test_trt_gpu.py -v -rs

Everywhere else every test here is SKIPPED with the reason printed (pytest's ``-rs``/``-ra``).
The stand-in ``tensorrt`` of tests/trt_standin/ is refused explicitly: it carries
``CALIBKIT_STANDIN = True``, and a module that has it makes these tests fail, not pass.

What is asserted: a tiny ONNX network (Conv -> Relu -> Conv -> Add) is calibrated by TensorRT's
``IInt8EntropyCalibrator2`` and ``IInt8MinMaxCalibrator`` on seeded data, and calibkit's cache
for the same batches equals TensorRT's for every activation (``REPRODUCED``): the tensors
docs/fidelity.md says calibkit reproduces (histogram-derived entropy scales, bit-exact on every
TensorRT triple; MinMax's exact max). The network has no pooling or Concat, so no scale sharing
is involved; both calibrators calibrate before layer fusion, so every activation has a line.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from calibkit.trt.adapter import build_engine, crosscheck, make_calibrator, trt_version

pytestmark = pytest.mark.gpu

_ALGORITHMS = ["entropy2", "minmax"]
# The activations of the tiny network: what docs/fidelity.md says calibkit reproduces bit for bit
# (EntropyCalibration2 lines derived from a histogram: every TensorRT triple; MinMax: the exact
# max, TRT_CALIBRATION.md §0.4). Weight constants TensorRT may also list are reported, not
# asserted: no triple covers them.
REPRODUCED = ("x", "conv1", "relu1", "conv2", "y")


def require_real_tensorrt():
    """Return the real tensorrt module with a usable GPU, or skip saying what is missing."""
    trt = pytest.importorskip(
        "tensorrt", reason="tensorrt is not installed (NVIDIA's index only; see docs/tensorrt.md)"
    )
    if getattr(trt, "CALIBKIT_STANDIN", False):
        pytest.fail(
            "the calibkit stand-in is installed as 'tensorrt'; the GPU test needs the real one"
        )
    version = trt_version(trt)
    if version[0] >= 11:
        pytest.skip(f"TensorRT {trt.__version__} has no calibrator API (removed in 11.0)")
    for module in ("pycuda.autoinit", "cuda.bindings.runtime", "cuda.cudart", "cupy"):
        try:
            importlib.import_module(module)
            break
        except ImportError:
            continue
        except Exception as err:  # noqa: BLE001 - pycuda raises its own errors without a GPU
            pytest.skip(f"no usable CUDA device ({module}: {err})")
    else:
        pytest.skip("no CUDA memory library: pip install pycuda (or cuda-python, or cupy)")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    if builder is None or not builder.platform_has_fast_int8:
        pytest.skip("this GPU has no fast INT8 (TensorRT's builder.platform_has_fast_int8)")
    return trt


@pytest.fixture(scope="module")
def real_trt():
    return require_real_tensorrt()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    onnx = pytest.importorskip("onnx", reason="the GPU test builds its network with onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(0.1 * rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["conv1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "w2"], ["conv2"], name="conv2"),
        helper.make_node("Add", ["conv2", "relu1"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [8, 4, 16, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8, 8, 16, 16])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path_factory.mktemp("gpu") / "tiny.onnx"
    onnx.save(model, path)
    return path


def _batches(n=6):
    rng = np.random.default_rng(0)
    # growing spread, so that TensorRT's histogram range doubles during calibration
    return [
        {"x": (1 + i) * rng.standard_normal((8, 4, 16, 16)).astype(np.float32)} for i in range(n)
    ]


@pytest.mark.parametrize("algorithm", _ALGORITHMS)
def test_calibkit_cache_equals_tensorrts(real_trt, tiny_model, tmp_path, algorithm):
    result = crosscheck(
        tiny_model,
        _batches(),
        algorithm=algorithm,
        trt_cache=tmp_path / "trt.cache",
        calibkit_cache=tmp_path / "calibkit.cache",
    )
    assert result.trt_cache.version == trt_version(real_trt)
    rows = {row.name: row for row in result.diff.rows}
    missing = [name for name in REPRODUCED if name not in rows]
    assert not missing, f"activations missing from one of the caches: {missing}"
    unequal = [
        (name, rows[name].scale_a, rows[name].scale_b, rows[name].ulps, rows[name].bins)
        for name in REPRODUCED
        if rows[name].ulps
    ]
    others = [(r.name, r.scale_a, r.scale_b) for r in result.diff.rows if r.name not in REPRODUCED]
    assert not unequal, (
        f"scales that differ from TensorRT's (name, trt, calibkit, ulps, bins): {unequal}; "
        f"other common tensors, not asserted: {others}; only TensorRT: {result.diff.only_a}"
    )


@pytest.mark.parametrize("algorithm", _ALGORITHMS)
def test_tensorrt_uses_a_served_calibkit_cache(real_trt, tiny_model, tmp_path, algorithm):
    from calibkit.onnx.calibrate import calibrate_onnx

    ours = calibrate_onnx(
        tiny_model, _batches(), algorithm=algorithm, trt_version=trt_version(real_trt)
    )
    calibrator = make_calibrator(algorithm, cache=ours.cache)
    engine = build_engine(tiny_model, calibrator=calibrator)
    assert engine
    assert calibrator.n_batches_ == 0  # TensorRT accepted the cache: it never asked for data
