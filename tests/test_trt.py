"""Contract tests of calibkit.trt.adapter against the stand-in ``tensorrt`` in tests/trt_standin/.

Real TensorRT cannot be installed here; the stand-in enforces the binding contract (see
tests/trt_standin/api.py for the source of each rule). Each test names the real behaviour it
mirrors; "pyInt8.cpp" is NVIDIA/TensorRT python/src/infer/pyInt8.cpp, "Polygraphy" is
tools/Polygraphy/polygraphy/backend/trt/calibrator.py (TRT_CALIBRATION.md §7).
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_standin import (
    ContractViolation,
    DeviceMemory,
    make_cuda_python,
    make_cupy,
    make_pycuda,
    make_tensorrt,
)

from calibkit import MissingDependencyError, NotCollectedError
from calibkit.cache.format import CalibrationCache, read_cache, write_cache
from calibkit.cli import main
from calibkit.errors import CalibkitError
from calibkit.trt.adapter import apply_dynamic_ranges, build_engine, make_calibrator

onnx = pytest.importorskip("onnx")
helper = onnx.helper

CACHES = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "trt_caches"


# -- fixtures ------------------------------------------------------------------------------------
class StandIn:
    """The stand-in tensorrt + pycuda, installed in sys.modules for one test."""

    def __init__(self, monkeypatch, version="10.16.0.72"):
        self.monkeypatch = monkeypatch
        self.memory = DeviceMemory()
        self.install(version)

    def install(self, version):
        self.trt = make_tensorrt(version, self.memory)
        self.monkeypatch.setitem(sys.modules, "tensorrt", self.trt)
        for name, module in make_pycuda(self.memory).items():
            self.monkeypatch.setitem(sys.modules, name, module)
        return self.trt

    @property
    def build(self):
        return self.trt.standin_builds[-1]


@pytest.fixture
def standin(monkeypatch):
    return StandIn(monkeypatch)


def _model(path, inputs, dims=(2, 3)):
    """Write an ONNX model ``out = Relu(inputs[0] * inputs[-1])`` and return its path."""
    values = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(dims)) for n in inputs]
    nodes = [
        helper.make_node("Mul", [inputs[0], inputs[-1]], ["prod"], name="mul"),
        helper.make_node("Relu", ["prod"], ["out"], name="relu"),
    ]
    out = helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, list(dims))
    graph = helper.make_graph(nodes, "tiny", values, [out])
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.fixture
def model(tmp_path):
    return _model(tmp_path / "tiny.onnx", ["image", "mask"])


def _batches(rng, n=3, names=("mask", "image"), dims=(2, 3)):
    # keys deliberately NOT in the network's input order (image, mask)
    return [{k: rng.standard_normal(dims).astype(np.float32) for k in names} for _ in range(n)]


# -- import, versions ----------------------------------------------------------------------------
def test_missing_tensorrt_names_nvidia_route_and_the_checkout_install(monkeypatch):
    # calibkit is on no package index: no "pip install 'calibkit[trt]'" (issue 15)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    with pytest.raises(MissingDependencyError) as caught:
        make_calibrator("entropy2", cache=b"TRT-101600-EntropyCalibration2\nx: 3c010204\n")
    message = str(caught.value)
    assert re.search(r"pypi\.nvidia\.com.*tarball.*pip install -e '\.\[trt\]'", message)
    assert "calibkit[trt]" not in message


def test_tensorrt_11_is_refused_with_pointer_to_qdq(standin):
    # TRT_CALIBRATION.md §8.1: TensorRT 11.0 headers have no IInt8Calibrator, no setDynamicRange
    standin.install("11.0.0.1")
    with pytest.raises(MissingDependencyError, match=r"removed in 11\.0.*calibkit qdq"):
        make_calibrator("minmax", cache=b"TRT-101600-MinMaxCalibration\nx: 3c010204\n")


@pytest.mark.parametrize(
    ("algorithm", "base"),
    [
        ("entropy2", "IInt8EntropyCalibrator2"),
        ("entropy", "IInt8EntropyCalibrator"),
        ("minmax", "IInt8MinMaxCalibrator"),
        ("legacy:0.9999:1.0", "IInt8LegacyCalibrator"),
        ("percentile:99.99", "IInt8EntropyCalibrator2"),
        ("mse", "IInt8EntropyCalibrator2"),
    ],
)
def test_calibrator_subclasses_the_tensorrt_base(standin, algorithm, base):
    # pyInt8Doc.h: subclass the IInt8* class and call its __init__ explicitly; the stand-in
    # raises pybind11's TypeError when the base __init__ is skipped
    cache = CalibrationCache.from_amax(
        {"image": 1.0}, trt_version="10.16", algorithm="EntropyCalibration2"
    )
    cal = make_calibrator(algorithm, cache=_retarget(cache, algorithm))
    assert type(cal).__mro__[1] is getattr(standin.trt, base)


def _retarget(cache, algorithm):
    from calibkit.selectors import make_selector

    word = make_selector(algorithm).trt_algorithm or "EntropyCalibration2"  # calibkit's default
    if word == "LegacyCalibration":
        sel = make_selector(algorithm)
        return CalibrationCache.from_amax(
            cache.amax,
            trt_version=None,
            algorithm=word,
            quantile=sel.quantile,
            regression_cutoff=sel.regression_cutoff,
        )
    return CalibrationCache.from_amax(cache.amax, trt_version="10.16", algorithm=word)


def test_unknown_algorithm_and_non_tensorrt_recording(standin, rng):
    with pytest.raises(ValueError, match="unknown algorithm"):
        make_calibrator("kl", cache=b"x")
    with pytest.raises(ValueError, match=r"no 'percentile:99\.99' calibrator"):
        make_calibrator("percentile:99.99", data=_batches(rng))
    with pytest.raises(ValueError, match=r"needs cache= .* or data="):
        make_calibrator("entropy2")
    with pytest.raises(TypeError, match="cache= is the path to write"):
        make_calibrator("entropy2", data=_batches(rng), cache=b"TRT-101600-EntropyCalibration2\n")


# -- serving -------------------------------------------------------------------------------------
def test_served_cache_header_rewritten_and_accepted(standin, model):
    # sampleINT8 README: a cache compatible with the calibrator type and TensorRT version is used
    # and calibration is skipped; TensorRT issue #1378: an incompatible one is skipped silently
    path = CACHES / "trt8600_entropy2_retinanet_mlperf30asus.cache"
    original = read_cache(path)
    with pytest.warns(UserWarning, match=r"'TRT-8600-EntropyCalibration2' does not match"):
        cal = make_calibrator("entropy2", cache=path)
    served = cal.read_calibration_cache()
    assert served.startswith(b"TRT-101600-EntropyCalibration2\n")
    assert read_cache(served).scales == original.scales
    build_engine(model, calibrator=cal)
    assert standin.build.cache_used
    assert "get_batch" not in standin.build.calls
    expected = {k: float(v) for k, v in original.scales.items()}
    assert standin.build.scales == expected


def test_matching_header_served_without_warning(standin, model):
    cache = CalibrationCache.from_amax(
        {"image": 2.0, "out": 0.5}, trt_version="10.16.0", algorithm="MinMaxCalibration"
    )
    cal = make_calibrator("minmax", cache=cache)  # filterwarnings=error: a warning would fail
    assert cal.read_calibration_cache() == cache.to_bytes()
    build_engine(model, calibrator=cal)
    assert standin.build.cache_used
    assert standin.build.calls == ["get_batch_size", "read_calibration_cache", "get_algorithm"]


def test_header_uses_the_tensorrt_8_version_number(standin, model):
    # NvInferVersion.h: NV_TENSORRT_VERSION is M*1000 + m*100 + p before 10.0
    standin.install("8.6.1.6")
    cache = CalibrationCache.from_amax(
        {"image": 1.0}, trt_version="8.6.1", algorithm="EntropyCalibration"
    )
    with pytest.warns(UserWarning, match="TRT-8601-EntropyCalibration2"):
        cal = make_calibrator("entropy2", cache=cache)
    assert cal.read_calibration_cache().startswith(b"TRT-8601-EntropyCalibration2\n")
    build_engine(model, calibrator=cal)  # 8.x needs EXPLICIT_BATCH for the ONNX parser
    assert standin.build.cache_used


def test_legacy_cache_served_with_the_calibrator_parameters(standin, model):
    # pyInt8Doc.h: the cache "includes the regression cutoff and quantile values used to
    # generate it, and will not be used if these do not match the settings of the calibrator"
    path = CACHES / "legacy_cut1_q0.99999_3dunet_mlperf07nv.cache"
    cal = make_calibrator("legacy:0.99999:1", cache=path)  # same parameters: no warning
    assert cal.read_calibration_cache() == read_cache(path).to_bytes()
    assert (cal.get_quantile(), cal.get_regression_cutoff()) == (0.99999, 1.0)
    build_engine(model, calibrator=cal)
    assert standin.build.cache_used
    with pytest.warns(UserWarning, match="does not match"):
        cal = make_calibrator("legacy:0.9999:1", cache=path)
    assert cal.read_calibration_cache().startswith(b"0 3ff0000000000000 3fefff2e48e8a71e\n")


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("trt7200_entropy2_resnet50_crlf_mlperf10inspur.cache", "entropy2"),
        ("trt4_entropy1hdr_resnet_modricwang.cache", "entropy2"),
        ("trt100300_minmax_yolo_rtipvd.cache", "minmax"),
        ("legacy_cut1_q0.99999_3dunet_mlperf10dellemc.cache", "legacy:0.99999:1.0"),
    ],
    ids=["crlf", "bare-header", "minmax", "legacy"],
)
def test_real_caches_served_with_lf_and_their_own_algorithm(standin, model, name, spec):
    # TRT_CALIBRATION.md §5: TensorRT writes LF; whether it reads CRLF is unknown, so serve LF
    from calibkit.trt.adapter import algorithm_of

    cache = read_cache(CACHES / name)
    assert algorithm_of(cache) == spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # header rewrites are tested above
        cal = make_calibrator(algorithm_of(cache), cache=cache)
    served = cal.read_calibration_cache()
    assert b"\r" not in served
    assert read_cache(served).scales == cache.scales
    build_engine(model, calibrator=cal)
    assert standin.build.cache_used


def test_rejected_served_cache_fails_the_build_with_the_reason(standin, model, monkeypatch):
    # tensorrt.__version__ disagreeing with the libnvinfer the builder runs (mixed wheels):
    # TensorRT ignores the cache and asks for batches; serving mode has none, so the build fails
    cache = CalibrationCache.from_amax(
        {"image": 1.0}, trt_version="10.15.1", algorithm="EntropyCalibration"
    )
    monkeypatch.setattr(standin.trt, "__version__", "10.15.1.29")
    cal = make_calibrator("entropy", cache=cache)
    monkeypatch.setattr(standin.trt, "__version__", "10.16.0.72")
    with pytest.raises(CalibkitError, match="rejected the served cache"):
        build_engine(model, calibrator=cal)
    assert standin.build.calls.count("get_batch") == 1
    assert "TRT-101501-EntropyCalibration" in standin.build.log[0]


def test_bad_or_empty_cache_fails_before_tensorrt(standin, tmp_path):
    from calibkit import CacheFormatError

    with pytest.raises(CacheFormatError):
        make_calibrator("entropy2", cache=b"TRT-101600-EntropyCalibration2\nimage 3c010204\n")
    empty = CalibrationCache((10, 16, 0), "EntropyCalibration2", {})
    with pytest.raises(CalibkitError, match="no tensors"):
        make_calibrator("entropy2", cache=empty)


# -- recording -----------------------------------------------------------------------------------
def test_recording_feeds_batches_in_tensorrts_name_order(standin, model, rng, tmp_path):
    # pyInt8.cpp: getBatch passes the binding names; the pointers must follow that order
    batches = _batches(rng)
    out = tmp_path / "trt.cache"
    cal = make_calibrator("entropy2", data=batches, cache=out)
    build_engine(model, calibrator=cal)
    build = standin.build
    assert build.names[0] == ["image", "mask"]
    assert len(build.batches) == len(batches) == cal.n_batches_
    for seen, fed in zip(build.batches, batches, strict=True):
        for name in ("image", "mask"):
            np.testing.assert_array_equal(seen[name], fed[name])
    # sequence: get_batch_size, read_calibration_cache, get_batch x (n + 1), write, get_algorithm
    assert build.calls == [
        "get_batch_size",
        "read_calibration_cache",
        *["get_batch"] * (len(batches) + 1),
        "write_calibration_cache",
        "get_algorithm",
    ]


def test_recording_reuses_one_device_buffer_per_input_and_frees_at_end(standin, model, rng):
    # Polygraphy: persistent per-input device buffers, freed when the data ends
    cal = make_calibrator("minmax", data=_batches(rng, n=4))
    build_engine(model, calibrator=cal)
    memory = standin.memory
    assert (memory.n_allocs, memory.n_copies, memory.n_frees) == (2, 8, 2)
    assert not memory.blocks


def test_write_calibration_cache_copies_tensorrts_memory(standin, model, rng, tmp_path):
    # pyInt8.cpp: the memoryview is over TensorRT's buffer, valid only during the call
    batches = _batches(rng, n=2)
    out = tmp_path / "sub" / "trt.cache"
    out.parent.mkdir()
    cal = make_calibrator("minmax", data=batches, cache=out)
    build_engine(model, calibrator=cal)
    cache = read_cache(cal.cache_bytes)
    assert (cache.version, cache.algorithm) == ((10, 16, 0), "MinMaxCalibration")
    amax = max(float(np.abs(b["image"]).max()) for b in batches)
    assert cache.scales["image"] == np.float32(amax) / np.float32(127)
    assert out.read_bytes() == cal.cache_bytes
    assert [p.name for p in out.parent.iterdir()] == ["trt.cache"]  # no temp file left


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda b: {**b, "image": b["image"].astype(np.float64)}, ValueError, "float32"),
        (lambda b: {"image": b["image"]}, ValueError, r"missing \['mask'\]"),
        (lambda b: {**b, "label": np.zeros(2)}, ValueError, r"not network inputs \['label'\]"),
        (lambda b: {**b, "mask": b["mask"][:1]}, ValueError, "one fixed shape"),
        (lambda b: [b["image"], b["mask"]], TypeError, "expected a mapping"),
        (lambda b: {**b, "image": b["image"].astype(object)}, ValueError, "not a tensor type"),
    ],
    ids=["float64", "missing-input", "extra-input", "shape-change", "not-a-mapping", "object"],
)
def test_bad_batch_ends_calibration_and_is_raised_after_build(
    standin, model, rng, mutate, error, match
):
    # pyInt8.cpp: callbacks are noexcept (8.x: std::terminate; later: "[ERROR] Exception caught
    # in get_batch()" and false). The stand-in raises ContractViolation if anything escapes.
    batches = _batches(rng, n=3)
    batches[1] = mutate(batches[1])
    cal = make_calibrator("entropy2", data=batches)
    with pytest.raises(error, match=match):
        build_engine(model, calibrator=cal)
    assert standin.build.calls.count("get_batch") == 2
    assert not standin.memory.blocks  # buffers freed when calibration ended early
    assert cal.cache_bytes is None  # the build failed: no scales, nothing written


def test_data_source_exception_is_contained(standin, model, rng):
    def broken():
        yield _batches(rng, n=1)[0]
        msg = "disk gone"
        raise OSError(msg)

    cal = make_calibrator("entropy2", data=broken())
    with pytest.raises(OSError, match="disk gone"):
        build_engine(model, calibrator=cal)


def test_no_batches_is_an_error(standin, model):
    # TensorRT: "Calibration failure occurred with no scaling factors detected"; Polygraphy
    # logs critical when the loader provided no data
    cal = make_calibrator("entropy2", data=[])
    with pytest.raises(NotCollectedError, match="no batches"):
        build_engine(model, calibrator=cal)


def test_integer_inputs_pass_through_unconverted(standin, tmp_path, rng):
    # Polygraphy: only non-index inputs are forced to float32
    values = [
        helper.make_tensor_value_info("ids", onnx.TensorProto.INT32, [2, 3]),
        helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3]),
    ]
    nodes = [
        helper.make_node("Cast", ["ids"], ["idsf"], to=1),
        helper.make_node("Add", ["idsf", "x"], ["y"]),
    ]
    out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])
    path = tmp_path / "ids.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", values, [out])), path)
    batch = {"ids": np.arange(6, dtype=np.int32).reshape(2, 3), "x": np.ones((2, 3), np.float32)}
    cal = make_calibrator("minmax", data=[batch])
    build_engine(path, calibrator=cal)
    np.testing.assert_array_equal(standin.build.batches[0]["ids"], batch["ids"])
    assert b"ids:" not in cal.cache_bytes  # the stand-in writes float inputs only


def test_legacy_recording_getters_and_histogram_cache(standin, model, rng, tmp_path):
    # pyInt8.cpp: get_quantile / get_regression_cutoff return doubles; read_histogram_cache's
    # answer is cast to void* (None only); write_histogram_cache receives a capsule + length
    hist = tmp_path / "hist.bin"
    cal = make_calibrator("legacy:0.999:0.5", data=_batches(rng), histogram_cache=hist)
    build_engine(model, calibrator=cal)
    assert cal.histogram_cache == b"standin histograms"
    assert hist.read_bytes() == b"standin histograms"
    header = read_cache(cal.cache_bytes)
    assert (header.legacy.quantile, header.legacy.regression_cutoff) == (0.999, 0.5)


def test_dynamic_input_needs_a_shape_then_calibrates_at_it(standin, tmp_path, rng):
    # NvInfer.h: with dynamic shapes TensorRT calibrates at the calibration profile's opt shape
    path = _model(tmp_path / "dyn.onnx", ["image", "mask"], dims=(-1, 3))
    with pytest.raises(CalibkitError, match="dynamic dimensions"):
        build_engine(path, calibrator=make_calibrator("entropy2", data=_batches(rng)))
    cal = make_calibrator("entropy2", data=_batches(rng))
    build_engine(path, calibrator=cal, shapes={"image": (2, 3), "mask": (2, 3)})
    assert len(standin.build.batches) == 3


@pytest.mark.parametrize("device", ["cuda-python", "cupy"])
def test_recording_through_cuda_python_and_cupy(standin, model, rng, monkeypatch, device):
    # TensorRT's samples from 10.14 use cuda-python (cudaMalloc / cudaMemcpy / cudaFree)
    make = make_cuda_python if device == "cuda-python" else make_cupy
    for name, module in make(standin.memory).items():
        monkeypatch.setitem(sys.modules, name, module)
    batches = _batches(rng)
    cal = make_calibrator("minmax", data=batches, device=device)
    build_engine(model, calibrator=cal)
    for seen, fed in zip(standin.build.batches, batches, strict=True):
        np.testing.assert_array_equal(seen["mask"], fed["mask"])
    assert standin.memory.n_allocs == 2
    assert not standin.memory.blocks


def test_cupy_requested_but_absent(standin, monkeypatch, rng):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(MissingDependencyError, match="cupy"):
        make_calibrator("entropy2", data=_batches(rng), device="cupy")


def test_no_device_library(standin, monkeypatch, rng):
    for name in ("pycuda", "pycuda.driver", "pycuda.autoinit", "cuda", "cupy"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match=r"pip install pycuda.*cuda-python or cupy"):
        make_calibrator("entropy2", data=_batches(rng))


# -- dynamic ranges ------------------------------------------------------------------------------
def _network(trt, model):
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(0)
    assert trt.OnnxParser(network, trt.Logger()).parse_from_file(str(model))
    return network


def test_apply_dynamic_ranges_reports_missing_unused_and_skipped(standin, model, caplog):
    # NvInfer.h setDynamicRange: symmetric, finite bounds; tensors without a range fall back
    network = _network(standin.trt, model)
    report = apply_dynamic_ranges(network, {"image": 2.0, "prod": np.inf, "gone": 1.0})
    assert report.applied == {"image": 2.0}
    assert report.missing == ["mask", "out"]
    assert report.unused == ["gone"]
    assert report.skipped == {"prod": np.inf}
    assert network.get_input(0).dynamic_range == (-2.0, 2.0)
    assert "2 of 4 network tensors have no scale" in caplog.text


def test_build_with_dynamic_ranges_from_a_cache(standin, model):
    amax = dict.fromkeys(("image", "mask", "prod", "out"), 1.5)
    cache = CalibrationCache.from_amax(amax, trt_version="10.16", algorithm="EntropyCalibration2")
    build_engine(model, dynamic_ranges=cache)
    amax = float(np.float32(127 * np.float64(cache.scales["out"])))
    assert standin.build.ranges["out"] == (-amax, amax)
    assert "get_batch_size" not in standin.build.calls


# -- the stand-in itself catches what it claims to ------------------------------------------------
def test_standin_catches_escaping_exceptions_and_bad_answers(standin, model):
    trt = standin.trt

    class Naive(trt.IInt8EntropyCalibrator2):
        def __init__(self, answer):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.answer = answer

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return self.answer()

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            self.kept = cache  # no copy

    def boom():
        msg = "boom"
        raise RuntimeError(msg)

    for answer, match in [(boom, "cross into TensorRT"), (lambda: [1], "pointers for 2 bindings")]:
        config_and_build = _standin_build(trt, model, Naive(answer))
        with pytest.raises(ContractViolation, match=match):
            config_and_build()


def test_standin_marshals_like_the_real_trampolines(standin, model):
    # the facts tests/trt_real/calibrators.py reads from the real bindings: names arrive as a list
    # of str, the cache as a read-only 1-D uint8 memoryview over TensorRT's memory
    trt, seen = standin.trt, {}

    class Probe(trt.IInt8MinMaxCalibrator):
        def __init__(self):
            trt.IInt8MinMaxCalibrator.__init__(self)
            self.batches = iter([[standin.memory.alloc(24), standin.memory.alloc(24)]])

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            seen["names"] = names
            return next(self.batches, None)

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            seen["cache"] = (type(cache), cache.readonly, cache.format, cache.ndim)

    assert _standin_build(trt, model, Probe())() is not None
    assert seen["names"] == ["image", "mask"]
    assert type(seen["names"]) is list
    assert seen["cache"] == (memoryview, True, "B", 1)


def test_standin_refuses_skipped_base_init(standin):
    trt = standin.trt

    class Forgot(trt.IInt8MinMaxCalibrator):
        def __init__(self):
            pass

    # pybind11 names the registered TensorRT class, not the subclass (real bindings: trt_real/)
    with pytest.raises(TypeError, match=r"\.IInt8MinMaxCalibrator\.__init__\(\) must be called"):
        Forgot()


def _standin_build(trt, model, calibrator):
    def run():
        builder = trt.Builder(trt.Logger())
        network = _network(trt, model)
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        return builder.build_serialized_network(network, config)

    return run


# -- CLI -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["trt", "build", "m.onnx", "--cache", "m.cache", "-o", "m.engine"],
        ["trt", "crosscheck", "m.onnx", "--data", "d.npz", "--algorithm", "entropy2"],
    ],
    ids=["build", "crosscheck"],
)
def test_cli_without_tensorrt_is_one_clear_line(monkeypatch, capsys, argv):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("calibkit trt: error: The TensorRT adapter needs 'tensorrt'")
    assert "pip install -e '.[trt]'" in err
    assert "calibkit[trt]" not in err


def test_cli_build_serves_a_cache(standin, model, tmp_path, capsys):
    cache = tmp_path / "m.cache"
    write_cache(
        cache,
        CalibrationCache.from_amax(
            {"image": 1.0}, trt_version="10.16", algorithm="MinMaxCalibration"
        ),
    )
    engine = tmp_path / "m.engine"
    assert main(["trt", "build", str(model), "--cache", str(cache), "-o", str(engine)]) == 0
    assert engine.read_bytes() == b"standin engine\n"
    assert standin.build.cache_used
    assert isinstance(standin.trt.standin_builds[-1].calls, list)


def _npz(path, rng, n=6):
    arrays = {k: rng.standard_normal((n, 3)).astype(np.float32) for k in ("image", "mask")}
    np.savez(path, **arrays)
    return arrays


def test_cli_crosscheck_minmax_inputs_agree(standin, model, tmp_path, rng, capsys):
    # the stand-in writes MinMax scales of the network inputs, which calibkit must reproduce
    arrays = _npz(tmp_path / "d.npz", rng)
    trt_cache, ck_cache = tmp_path / "trt.cache", tmp_path / "ck.cache"
    argv = ["trt", "crosscheck", str(model), "--data", str(tmp_path / "d.npz"), "-a", "minmax"]
    argv += ["--trt-cache", str(trt_cache), "--calibkit-cache", str(ck_cache), "--rtol", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "a = TensorRT 10.16.0.72" in out
    assert "3 identical batches" in out
    assert "2 common tensors, 2 equal, 0 only in a, 2 only in b" in out
    assert "rtol 0: 0 tensor(s) above -> ok" in out
    assert (tmp_path / "ck.stats.npz").is_file()
    theirs, ours = read_cache(trt_cache), read_cache(ck_cache)
    assert theirs.scales["image"] == ours.scales["image"]
    assert ours.scales["image"] == np.float32(np.abs(arrays["image"]).max()) / np.float32(127)
    fed = np.concatenate([b["image"] for b in standin.build.batches])
    np.testing.assert_array_equal(fed, arrays["image"])


def test_cli_crosscheck_exits_nonzero_over_rtol(standin, model, tmp_path, rng, capsys):
    # the stand-in's "entropy2" cache is MinMax on inputs: calibkit's entropy2 differs from it
    _npz(tmp_path / "d.npz", rng, n=64)
    argv = ["trt", "crosscheck", str(model), "--data", str(tmp_path / "d.npz")]
    argv += ["--trt-cache", str(tmp_path / "t.cache"), "--calibkit-cache", str(tmp_path / "c")]
    assert main(argv) == 1
    assert "rtol 1e-06: 2 tensor(s) above -> FAIL" in capsys.readouterr().out


def test_gpu_test_refuses_the_standin(standin):
    from test_trt_gpu import require_real_tensorrt

    with pytest.raises(pytest.fail.Exception, match="stand-in is installed"):
        require_real_tensorrt()


def test_cli_build_dynamic_ranges_with_shapes(standin, tmp_path, capsys):
    model = _model(tmp_path / "dyn.onnx", ["image", "mask"], dims=(-1, 3))
    cache = tmp_path / "m.cache"
    amax = dict.fromkeys(("image", "mask", "prod", "out"), 3.0)
    write_cache(
        cache, CalibrationCache.from_amax(amax, trt_version="8.6", algorithm="EntropyCalibration2")
    )
    engine = tmp_path / "m.engine"
    argv = ["trt", "build", str(model), "--cache", str(cache), "-o", str(engine)]
    assert main([*argv, "--dynamic-ranges", "--shape", "image=4x3"]) == 1
    assert "dynamic dimensions" in capsys.readouterr().err
    assert main([*argv, "--dynamic-ranges", "--shape", "image=4x", "--shape", "mask=4x3"]) == 1
    assert "bad --shape 'image=4x'" in capsys.readouterr().err
    shapes = ["--shape", "image=4x3", "--shape", "mask=4x3"]
    assert main([*argv, "--dynamic-ranges", *shapes]) == 0
    assert set(standin.build.ranges) == {"image", "mask", "prod", "out"}
    assert not standin.build.calls  # no calibrator: nothing was asked


@given(
    amax=st.dictionaries(
        # names a cache file can hold: UTF-8 text without line breaks (no lone surrogates)
        st.text(
            st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
            min_size=1,
            max_size=20,
        ),
        st.floats(0, 2.0**64, allow_nan=False, width=32),
        min_size=1,
        max_size=8,
    ),
    running=st.sampled_from(["8.6.1.6", "9.3.0.1", "10.0.1.6", "10.16.0.72"]),
    written=st.sampled_from(["7.2.3", "8.6.1", "10.9", "10.16"]),
    algorithm=st.sampled_from(["entropy2", "entropy", "minmax"]),
)
@settings(max_examples=60, deadline=None)
def test_serving_keeps_every_scale_and_only_rewrites_the_header(amax, running, written, algorithm):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "tensorrt", make_tensorrt(running))
        cache = CalibrationCache.from_amax(amax, trt_version=written, algorithm="MinMaxCalibration")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            served = read_cache(make_calibrator(algorithm, cache=cache).read_calibration_cache())
    assert served.scales == cache.scales
    assert served.version == tuple(int(p) for p in running.split(".")[:3])
    changed = (cache.version, cache.algorithm) != (served.version, served.algorithm)
    assert len(caught) == changed


@pytest.mark.parametrize(
    ("version", "expected"),
    [("10.16.0.72", (10, 16, 0)), ("10.0.0b6", (10, 0, 0)), ("8.6", (8, 6, 0))],
)
def test_trt_version_reads_release_and_beta_strings(standin, version, expected):
    from calibkit.trt.adapter import trt_version

    standin.trt.__version__ = version
    assert trt_version(standin.trt) == expected


def test_cli_bad_algorithm_and_bad_data_are_one_line(standin, model, tmp_path, rng, capsys):
    cache = tmp_path / "m.cache"
    amax = {"image": 1.0}
    write_cache(
        cache,
        CalibrationCache.from_amax(amax, trt_version="10.16", algorithm="EntropyCalibration2"),
    )
    argv = ["trt", "build", str(model), "--cache", str(cache), "-o", str(tmp_path / "e")]
    assert main([*argv, "--algorithm", "kl"]) == 1
    assert capsys.readouterr().err.startswith("calibkit trt: error: bad algorithm spec 'kl'")
    np.savez(tmp_path / "d.npz", image=np.zeros((4, 3), np.float64), mask=np.zeros((4, 3)))
    assert main(["trt", "crosscheck", str(model), "--data", str(tmp_path / "d.npz")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "float" in err
