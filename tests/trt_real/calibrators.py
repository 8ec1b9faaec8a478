"""calibkit's TensorRT adapter against TensorRT's real Python bindings (8.6 and 10.x).

Not collected by the main run (no ``test_`` prefix): tests/test_trt_bindings.py runs this module
in a fresh process per release, with ``tensorrt_bindings`` from the release's wheel importable,
TensorRT's libraries replaced by the entry-point stub (kit.py) and the C++ harness built for the
release (harness.cpp). ``CALIBKIT_TRT_RELEASE`` names the release.

What is real here: the ``tensorrt`` module, its classes, enums and signatures, pybind11's rules
for subclasses, and the trampolines (pyInt8.cpp) that turn TensorRT's C++ calls into calls of
calibkit's Python methods. What is not: TensorRT's builder (its libraries are stubs, so
``trt.Builder`` cannot be created) and the GPU (device pointers come from the stand-in device of
tests/trt_standin, which TensorRT only passes through).
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import calibkit_trt_harness as harness
import numpy as np
import pytest
from trt_standin import DeviceMemory, make_pycuda, make_tensorrt
from trt_standin.api import CalibrationAlgoType as StandinAlgo

from trt_real.kit import RELEASES

RELEASE = RELEASES[os.environ["CALIBKIT_TRT_RELEASE"]]
real = importlib.import_module("tensorrt_bindings")
sys.modules["tensorrt"] = real  # the bindings, imported as calibkit imports them

from calibkit.cache.format import CalibrationCache, read_cache  # noqa: E402
from calibkit.cli import main  # noqa: E402
from calibkit.errors import CalibkitError  # noqa: E402
from calibkit.trt.adapter import (  # noqa: E402
    build_engine,
    import_tensorrt,
    make_calibrator,
    trt_version,
)

ALGORITHMS = {  # spec -> (TensorRT base class, CalibrationAlgoType member)
    "entropy2": ("IInt8EntropyCalibrator2", "ENTROPY_CALIBRATION_2"),
    "entropy": ("IInt8EntropyCalibrator", "ENTROPY_CALIBRATION"),
    "minmax": ("IInt8MinMaxCalibrator", "MINMAX_CALIBRATION"),
    "legacy:0.9999:0.5": ("IInt8LegacyCalibrator", "LEGACY_CALIBRATION"),
}
TRAMPOLINE_ERROR = "Exception caught"  # what the 8.6+ trampolines print when Python raises


@pytest.fixture
def device(monkeypatch):
    """The stand-in GPU behind a stand-in pycuda: TensorRT only passes its pointers through."""
    memory = DeviceMemory()
    for name, module in make_pycuda(memory).items():
        monkeypatch.setitem(sys.modules, name, module)
    return memory


def _cache(spec):
    from calibkit.selectors import header_algorithm, make_selector

    # percentile and mse emulate no TensorRT calibrator: calibkit's default header word
    word = header_algorithm(make_selector(spec), warn=False)
    version = trt_version(real)
    amax = {"image": 2.5, "mask": 1.0, "out": 0.75}
    if word == "LegacyCalibration":
        return CalibrationCache.from_amax(
            amax, trt_version=None, algorithm=word, quantile=0.9999, regression_cutoff=0.5
        )
    return CalibrationCache.from_amax(amax, trt_version=".".join(map(str, version)), algorithm=word)


def _batches(rng, n=3):
    # keys deliberately not in the order TensorRT asks for them (image, mask)
    return [
        {k: rng.standard_normal((2, 3)).astype(np.float32) for k in ("mask", "image")}
        for _ in range(n)
    ]


def _no_trampoline_error(capfd):
    err = capfd.readouterr().err
    assert TRAMPOLINE_ERROR not in err, err


# -- the module ----------------------------------------------------------------------------------
def test_the_real_bindings_are_imported_as_tensorrt():
    trt = import_tensorrt()
    assert trt is real
    assert trt.__version__ == RELEASE.version
    assert not hasattr(trt, "CALIBKIT_STANDIN")
    assert trt.__file__.endswith(os.path.join("tensorrt_bindings", "__init__.py"))
    assert trt_version(trt) == tuple(int(p) for p in RELEASE.version.split(".")[:3])


def test_calibration_algo_type_matches_the_standin():
    members = {name: int(value) for name, value in real.CalibrationAlgoType.__members__.items()}
    assert members == {m.name: m.value for m in StandinAlgo}


def test_builder_creation_over_the_stub_is_one_clear_error(tmp_path, capsys):
    # without TensorRT's libraries (or without a GPU) createInferBuilder returns null, and the
    # bindings raise TypeError("pybind11::init(): factory function returned nullptr")
    with pytest.raises(CalibkitError, match=r"could not create a builder .*nullptr.*GPU"):
        build_engine(tmp_path / "m.onnx", calibrator=None)
    cache = tmp_path / "m.cache"
    cache.write_bytes(_cache("entropy2").to_bytes())
    argv = ["trt", "build", str(tmp_path / "m.onnx"), "--cache", str(cache)]
    assert main([*argv, "-o", str(tmp_path / "m.engine")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"calibkit trt: error: TensorRT {RELEASE.version} could not create")
    assert not (tmp_path / "m.engine").exists()


# What build_engine and apply_dynamic_ranges use: owner -> {attribute: positional arguments
# calibkit passes, or None for an attribute / property / enum member}
USED = {
    "Logger": {"WARNING": None},
    "Builder": {
        "create_network": 1,
        "create_builder_config": 0,
        "create_optimization_profile": 0,
        "build_serialized_network": 2,
    },
    "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": None},
    "OnnxParser": {"parse_from_file": 1, "num_errors": None, "get_error": 1},
    "ParserError": {"__str__": 0},
    "IBuilderConfig": {
        "set_flag": 1,
        "int8_calibrator": None,
        "add_optimization_profile": 1,
        "set_calibration_profile": 1,
    },
    "BuilderFlag": {"INT8": None, "FP16": None},
    "IOptimizationProfile": {"set_shape": 4},
    "INetworkDefinition": {"num_inputs": None, "get_input": 1, "num_layers": None, "get_layer": 1},
    "ILayer": {"num_outputs": None, "get_output": 1},
    "ITensor": {"name": None, "shape": None, "set_dynamic_range": 2, "dynamic_range": None},
}


def _parameters(function) -> tuple[int, int]:
    """(required, total) parameters after ``self`` of each pybind11 overload's signature."""
    found = []
    for line in function.__doc__.splitlines():
        line = line.strip().removeprefix("1. ").removeprefix("2. ")
        if not line.startswith(function.__name__ + "(self"):
            continue
        inside = line[len(function.__name__) + 1 : line.rindex(") ->")]
        params, depth, current = [], 0, ""
        for char in inside:  # split on top-level commas (annotations hold brackets)
            if char in "[(":
                depth += 1
            elif char in "])":
                depth -= 1
            if char == "," and depth == 0:
                params.append(current.strip())
                current = ""
            else:
                current += char
        params.append(current.strip())
        rest = params[1:]
        found.append((sum("=" not in p for p in rest), len(rest)))
    return found


def test_names_the_adapter_uses_exist_with_these_arities_and_in_the_standin():
    standin = make_tensorrt(RELEASE.version)
    for owner, attributes in USED.items():
        cls, twin = getattr(real, owner), getattr(standin, owner)
        for name, arity in attributes.items():
            assert hasattr(cls, name), f"tensorrt.{owner}.{name}"
            assert hasattr(twin, name), f"stand-in {owner}.{name}"
            if arity is not None and name != "__str__":
                overloads = _parameters(getattr(cls, name))
                assert overloads, f"no signature for tensorrt.{owner}.{name}"
                assert any(lo <= arity <= hi for lo, hi in overloads), (owner, name, overloads)


# -- the calibrator classes calibkit builds ------------------------------------------------------
@pytest.mark.parametrize("mode", ["serve", "record"])
@pytest.mark.parametrize("spec", list(ALGORITHMS))
def test_calibrator_class_methods_and_return_types(spec, mode, device, rng, tmp_path, capfd):
    base_name, member = ALGORITHMS[spec]
    base = getattr(real, base_name)
    if mode == "serve":
        cal = make_calibrator(spec, cache=_cache(spec))
    else:
        cal = make_calibrator(spec, data=_batches(rng), cache=tmp_path / "trt.cache")
    assert type(cal).__mro__[1] is base  # a direct subclass of the real class
    assert isinstance(cal, real.IInt8Calibrator)
    assert harness.base_of(cal) == base_name  # what TensorRT's registration hands to C++
    # the methods TensorRT calls are calibkit's own overrides
    own = set(type(cal).__dict__)
    assert {"get_batch_size", "get_batch", "read_calibration_cache"} <= own
    assert "write_calibration_cache" in own
    if base_name == "IInt8LegacyCalibrator":
        extra = {"get_quantile", "get_regression_cutoff"}
        assert extra | {"read_histogram_cache", "write_histogram_cache"} <= own
    # Python side: get_algorithm is the base class's C++ answer, an enum member
    algo = cal.get_algorithm()
    assert algo == getattr(real.CalibrationAlgoType, member)
    assert type(algo) is real.CalibrationAlgoType
    assert type(cal.get_batch_size()) is int
    # C++ side, through the trampolines
    assert harness.get_batch_size(cal) == 1
    assert harness.get_algorithm(cal) == int(algo)
    served = harness.read_calibration_cache(cal)
    if mode == "serve":
        assert served == cal.read_calibration_cache()
        assert served.startswith(RELEASE.header.encode()) or base_name == "IInt8LegacyCalibrator"
    else:
        assert served is None  # so that TensorRT calibrates
    _no_trampoline_error(capfd)


def test_skipped_base_init_is_refused_naming_the_tensorrt_class():
    # pybind11 checks after __init__ that the C++ object exists; the message names the registered
    # (TensorRT) class, which the stand-in now does too
    class Forgot(real.IInt8MinMaxCalibrator):
        def __init__(self):
            pass

    with pytest.raises(TypeError) as real_error:
        Forgot()
    standin = make_tensorrt(RELEASE.version)

    class ForgotToo(standin.IInt8MinMaxCalibrator):
        def __init__(self):
            pass

    with pytest.raises(TypeError) as standin_error:
        ForgotToo()
    expected = "IInt8MinMaxCalibrator.__init__() must be called when overriding __init__"
    assert str(real_error.value).endswith(expected)
    assert str(standin_error.value).endswith(expected)


# -- serving, as TensorRT's builder calls it -----------------------------------------------------
@pytest.mark.parametrize("spec", [*ALGORITHMS, "percentile:99.99", "mse"])
def test_served_cache_crosses_into_cpp_byte_for_byte(spec, capfd):
    cache = _cache(spec)
    cal = make_calibrator(spec, cache=cache)
    # calibkit-only selectors are served through TensorRT's EntropyCalibrator2
    assert harness.base_of(cal) == ALGORITHMS.get(spec, ("IInt8EntropyCalibrator2",))[0]
    data = harness.read_calibration_cache(cal)
    assert read_cache(data).scales == cache.scales
    assert data == cache.to_bytes()  # header already right for this release: served unchanged
    assert harness.read_calibration_cache(cal) == data  # asked again: the same bytes
    # TensorRT then skips calibration; were it to ask for data, calibration ends at once
    assert harness.get_batch(cal, ["image", "mask"]) == (False, [harness.UNSET] * 2)
    with pytest.raises(CalibkitError, match="rejected the served cache"):
        cal.raise_if_failed()
    _no_trampoline_error(capfd)


def test_served_header_is_rewritten_for_this_release(capfd):
    old = CalibrationCache.from_amax({"x": 1.0}, trt_version="7.2.3", algorithm="MinMaxCalibration")
    with pytest.warns(UserWarning, match="does not match this build"):
        cal = make_calibrator("entropy2", cache=old)
    data = harness.read_calibration_cache(cal)
    assert data.split(b"\n")[0] == f"{RELEASE.header}EntropyCalibration2".encode()
    assert read_cache(data).scales == old.scales
    _no_trampoline_error(capfd)


# -- recording, as TensorRT's builder calls it ---------------------------------------------------
def test_recording_marshals_device_pointers_names_and_the_cache(device, rng, tmp_path, capfd):
    batches = _batches(rng)
    out = tmp_path / "trt.cache"
    cal = make_calibrator("entropy2", data=batches, cache=out)
    names = ["image", "mask"]  # TensorRT's binding order, not the dicts' order
    for batch in batches:
        more, pointers = harness.get_batch(cal, names)
        assert more
        for name, ptr in zip(names, pointers, strict=True):
            raw = device.read(ptr, batch[name].nbytes)  # a live allocation of the right size
            np.testing.assert_array_equal(np.frombuffer(raw, np.float32).reshape(2, 3), batch[name])
    assert harness.get_batch(cal, names) == (False, [harness.UNSET] * 2)  # end of data
    assert not device.blocks  # every buffer freed at the end
    assert (device.n_allocs, device.n_frees) == (2, 2)
    written = f"{RELEASE.header}EntropyCalibration2\nimage: 3c8d6aa0\nmask: 3c0fbe77\n".encode()
    harness.write_calibration_cache(cal, written)  # TensorRT's buffer is scribbled over after
    assert cal.cache_bytes == written
    assert out.read_bytes() == written
    cal.raise_if_failed()
    _no_trampoline_error(capfd)


@pytest.mark.parametrize("spec", ["entropy2", "entropy", "minmax"])
def test_a_cache_round_trips_record_then_serve_through_the_trampolines(spec, device, rng, capfd):
    # one calibration in C++ records TensorRT's cache; a second build is served it: the bytes
    # TensorRT wrote are the bytes it reads back, and calibration is skipped
    word = {"entropy2": "EntropyCalibration2", "entropy": "EntropyCalibration"}
    word = word.get(spec, "MinMaxCalibration")
    written = f"{RELEASE.header}{word}\nimage: 3c8d6aa0\n(Unnamed Layer* 1) [Mul]_output: 0\n"
    batches = _batches(rng)
    recorder = make_calibrator(spec, data=batches)
    first = harness.calibrate(recorder, ["image", "mask"], written.encode(), 10)
    assert first["cache"] is None
    assert len(first["batches"]) == len(batches)
    assert first["batch_size"] == 1
    assert first["algorithm"] == int(recorder.get_algorithm())
    assert recorder.cache_bytes == written.encode()
    server = make_calibrator(spec, cache=recorder.cache_bytes)  # same header: no warning
    second = harness.calibrate(server, ["image", "mask"], b"unused", 10)
    assert second["cache"] == written.encode()
    assert second["batches"] == []
    server.raise_if_failed()
    _no_trampoline_error(capfd)


def test_cache_arrives_as_a_readonly_byte_view_over_tensorrts_memory(capfd):
    # the marshalling facts the stand-in reproduces (tests/test_trt.py)
    seen = {}

    class Probe(real.IInt8MinMaxCalibrator):
        def __init__(self):
            real.IInt8MinMaxCalibrator.__init__(self)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            seen["names"] = names
            return []  # empty: ends calibration like None

        def read_calibration_cache(self):
            return bytearray(b"abc")  # any buffer

        def write_calibration_cache(self, cache):
            seen["cache"] = (type(cache), cache.readonly, cache.format, cache.ndim, bytes(cache))

    probe = Probe()
    assert harness.get_batch(probe, ["a", "b"]) == (False, [harness.UNSET] * 2)
    assert seen["names"] == ["a", "b"]
    assert type(seen["names"]) is list
    assert harness.read_calibration_cache(probe) == b"abc"
    harness.write_calibration_cache(probe, b"TRT-1\n")
    assert seen["cache"] == (memoryview, True, "B", 1, b"TRT-1\n")
    _no_trampoline_error(capfd)


def test_an_escaping_exception_is_what_the_trampoline_prints(capfd):
    # what calibkit's containment avoids: the trampoline catches, prints and answers false, so
    # TensorRT would go on with no data and no reason; this also shows _no_trampoline_error can fail
    class Raising(real.IInt8EntropyCalibrator2):
        def __init__(self):
            real.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            msg = "boom"
            raise RuntimeError(msg)

    assert harness.get_batch(Raising(), ["x"]) == (False, [harness.UNSET])
    err = capfd.readouterr().err
    assert TRAMPOLINE_ERROR in err
    assert "get_batch" in err


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: {**b, "image": b["image"].astype(np.float64)},
        lambda b: {"image": b["image"]},
        lambda b: [b["image"], b["mask"]],
    ],
    ids=["float64", "missing-input", "not-a-mapping"],
)
def test_bad_batch_ends_calibration_without_an_exception_in_cpp(device, rng, mutate, capfd):
    batches = _batches(rng)
    batches[1] = mutate(batches[1])
    cal = make_calibrator("minmax", data=batches)
    assert harness.get_batch(cal, ["image", "mask"])[0]
    assert harness.get_batch(cal, ["image", "mask"]) == (False, [harness.UNSET] * 2)
    assert not device.blocks
    with pytest.raises((ValueError, TypeError)):
        cal.raise_if_failed()
    _no_trampoline_error(capfd)


def test_failing_data_source_is_contained(device, rng, capfd):
    def broken():
        yield _batches(rng, n=1)[0]
        msg = "disk gone"
        raise OSError(msg)

    cal = make_calibrator("entropy", data=broken())
    assert harness.get_batch(cal, ["image", "mask"])[0]
    assert not harness.get_batch(cal, ["image", "mask"])[0]
    with pytest.raises(OSError, match="disk gone"):
        cal.raise_if_failed()
    _no_trampoline_error(capfd)


def test_legacy_parameters_and_histogram_cache(device, rng, tmp_path, capfd):
    hist = tmp_path / "hist.bin"
    cal = make_calibrator("legacy:0.999:0.5", data=_batches(rng), histogram_cache=hist)
    assert harness.get_quantile_and_cutoff(cal) == (0.999, 0.5)
    assert harness.read_histogram_cache(cal) == (True, 0)  # no histograms: TensorRT rebuilds
    payload = bytes(range(256)) * 3
    harness.write_histogram_cache(cal, payload)  # arrives in Python as a capsule + length
    assert cal.histogram_cache == payload
    assert hist.read_bytes() == payload
    _no_trampoline_error(capfd)


if RELEASE.layout == 10:

    @pytest.mark.parametrize("spec", list(ALGORITHMS))
    def test_versioned_interface_slots(spec):
        # TensorRT 10's IVersionedInterface comes first in the vtable: getAPILanguage,
        # getInterfaceInfo. The legacy calibrator reports "IInt8Calibrator" (TRT_CALIBRATION.md §4)
        base_name = ALGORITHMS[spec][0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            cal = make_calibrator(spec, cache=_cache(spec))
        kind = "IInt8Calibrator" if base_name == "IInt8LegacyCalibrator" else base_name
        assert harness.get_interface_info(cal) == (kind, 1, 0, 0)  # kCPP: not a Python plugin
