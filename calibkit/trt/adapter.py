"""TensorRT (8.6-10.x) adapter: serve calibkit's scales to a build, or record TensorRT's own.

Three ways to hand scales to TensorRT (docs/tensorrt.md):

- **serve a cache**: :func:`make_calibrator` with ``cache=`` returns an ``IInt8*Calibrator`` whose
  ``read_calibration_cache`` hands TensorRT calibkit's cache, its header rewritten for the running
  TensorRT and the calibrator's algorithm (TensorRT silently recalibrates on any mismatch);
- **set dynamic ranges**: :func:`apply_dynamic_ranges` calls ``ITensor.set_dynamic_range``;
- **Q/DQ** (the only way for TensorRT >= 11, which removed both): ``calibkit qdq``.

With ``data=`` the calibrator *records*: it feeds TensorRT's own calibrator the same batches
calibkit sees and captures the cache TensorRT writes, for a tensor-by-tensor cross-check.

The binding contract followed here was read in TensorRT's sources (TRT_CALIBRATION.md §7):
``python/src/infer/pyInt8.cpp`` (``get_batch(names)`` returns device pointers, ``None`` ends
calibration; ``read_calibration_cache`` returns a buffer or ``None``; ``write_calibration_cache``
receives a ``memoryview``), ``python/docstrings/infer/pyInt8Doc.h`` (call the base ``__init__``
explicitly) and Polygraphy's ``backend/trt/calibrator.py`` (persistent per-input device buffers,
float32 for non-index inputs).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import importlib
import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import CalibkitError, InvalidInputError, MissingDependencyError, NotCollectedError

__all__ = [
    "CrossCheck",
    "DynamicRangeReport",
    "algorithm_of",
    "apply_dynamic_ranges",
    "build_engine",
    "crosscheck",
    "import_tensorrt",
    "make_calibrator",
    "trt_version",
]

logger = logging.getLogger(__name__)

# calibkit is installed from its checkout (it is on no package index); TensorRT comes from NVIDIA
_INSTALL = (
    "install TensorRT 8.6-10.x from NVIDIA: pip install 'tensorrt<11' "
    "--extra-index-url https://pypi.nvidia.com, or the wheel in the python/ folder of the "
    "TensorRT tarball (developer.nvidia.com/tensorrt); from a calibkit checkout, "
    "pip install -e '.[trt]' --extra-index-url https://pypi.nvidia.com installs both"
)

# cache header word -> the TensorRT class that writes it (TRT_CALIBRATION.md §8.1)
_BASES = {
    "EntropyCalibration2": "IInt8EntropyCalibrator2",
    "EntropyCalibration": "IInt8EntropyCalibrator",
    "MinMaxCalibration": "IInt8MinMaxCalibrator",
    "LegacyCalibration": "IInt8LegacyCalibrator",
}
# selectors that TensorRT also implements, so that its own result can be recorded
_NATIVE = ("entropy2", "entropy", "minmax", "legacy")


@dataclasses.dataclass(frozen=True)
class _Algorithm:
    spec: str
    base: str  # TensorRT class name
    word: str  # cache header word
    native: bool  # TensorRT computes it itself (recording mode possible)
    quantile: float | None = None
    regression_cutoff: float | None = None

    def legacy_parameters(self) -> tuple[float, float]:
        """Return ``(quantile, regression_cutoff)`` of an IInt8LegacyCalibrator algorithm."""
        if self.quantile is None or self.regression_cutoff is None:
            msg = f"{self.spec!r} has no quantile and regression cutoff for a legacy calibrator"
            raise TypeError(msg)
        return self.quantile, self.regression_cutoff


def _parse_algorithm(algorithm: Any) -> _Algorithm:
    """Map a selector spec (``"entropy2"``, ``"legacy:0.9999:1.0"``, ...) or a Selector."""
    from ..selectors import Selector, header_algorithm, make_selector

    selector = make_selector(algorithm) if isinstance(algorithm, str) else algorithm
    # the calibrator class follows the header word (percentile, mse: calibkit's default, the
    # IInt8EntropyCalibrator2 base this adapter reports building)
    word = header_algorithm(selector, warn=False) if isinstance(selector, Selector) else None
    if word not in _BASES:
        msg = (
            f"algorithm must be a selector spec such as 'entropy2' or a selector, got {algorithm!r}"
        )
        raise TypeError(msg)
    return _Algorithm(
        selector.spec,
        _BASES[word],
        word,
        native=selector.spec.partition(":")[0] in _NATIVE,
        quantile=getattr(selector, "quantile", None) if word == "LegacyCalibration" else None,
        regression_cutoff=getattr(selector, "regression_cutoff", None),
    )


def algorithm_of(cache: Any) -> str:
    """Return the selector spec whose TensorRT calibrator wrote `cache` (bare ``1``: entropy2)."""
    if cache.legacy is not None:
        return f"legacy:{cache.legacy.quantile!r}:{cache.legacy.regression_cutoff!r}"
    specs = {"EntropyCalibration": "entropy", "MinMaxCalibration": "minmax"}
    return specs.get(cache.algorithm, "entropy2")


# -- the tensorrt module -------------------------------------------------------------------------
def trt_version(trt: ModuleType) -> tuple[int, int, int]:
    """Return ``(major, minor, patch)`` of an imported ``tensorrt`` module (its ``__version__``)."""
    text = str(getattr(trt, "__version__", ""))
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)  # "10.16.0.72", "10.0.0b6", "8.6"
    if match is None:
        msg = f"cannot read the TensorRT version from tensorrt.__version__ = {text!r}"
        raise CalibkitError(msg)
    major, minor, patch = (int(g or 0) for g in match.groups())
    return major, minor, patch


def import_tensorrt() -> ModuleType:
    """Import ``tensorrt`` and check that it still has the calibrator API (TensorRT <= 10).

    Raises
    ------
    MissingDependencyError
        If tensorrt is not installed (naming the ``trt`` extra and NVIDIA's install route), or if
        it is TensorRT >= 11, which removed calibrators and ``set_dynamic_range``.
    """
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as err:
        msg = f"The TensorRT adapter needs 'tensorrt', which cannot be imported ({err}): {_INSTALL}"
        raise MissingDependencyError(msg) from err
    version = trt_version(trt)
    if version[0] >= 11:
        msg = (
            f"TensorRT {'.'.join(map(str, version))} has no INT8 calibrator API (deprecated in "
            "10.1, removed in 11.0); give it explicit Q/DQ scales instead: "
            "calibkit qdq MODEL.onnx --cache model.cache -o model.qdq.onnx"
        )
        raise MissingDependencyError(msg)
    if version < (8, 6, 0):
        logger.warning("TensorRT %s is older than 8.6, the oldest version tested", trt.__version__)
    return trt


# -- device memory ---------------------------------------------------------------------------
class _PyCuda:
    """pycuda, as TensorRT's own Python samples used it up to 10.13."""

    name = "pycuda"

    def __init__(self) -> None:
        self.driver = importlib.import_module("pycuda.driver")
        importlib.import_module("pycuda.autoinit")  # creates the CUDA context

    def alloc(self, nbytes: int) -> tuple[Any, int]:
        buf = self.driver.mem_alloc(nbytes)
        return buf, int(buf)

    def copy(self, buf: Any, host: np.ndarray) -> None:
        self.driver.memcpy_htod(buf, host)

    def free(self, buf: Any) -> None:
        buf.free()


class _CudaPython:
    """cuda-python's runtime API, as TensorRT's samples use it from 10.14."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            self.rt = importlib.import_module("cuda.bindings.runtime")
        except ImportError:
            self.rt = importlib.import_module("cuda.cudart")

    def _check(self, result: tuple, what: str) -> Any:
        err, *rest = result
        if err != self.rt.cudaError_t.cudaSuccess:
            msg = f"{what} failed: {err}"
            raise CalibkitError(msg)
        return rest[0] if rest else None

    def alloc(self, nbytes: int) -> tuple[Any, int]:
        ptr = int(self._check(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
        return ptr, ptr

    def copy(self, buf: Any, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpy(buf, host.ctypes.data, host.nbytes, kind), "cudaMemcpy")

    def free(self, buf: Any) -> None:
        self._check(self.rt.cudaFree(buf), "cudaFree")


class _CuPy:
    name = "cupy"

    def __init__(self) -> None:
        self.cupy = importlib.import_module("cupy")

    def alloc(self, nbytes: int) -> tuple[Any, int]:
        buf = self.cupy.empty(nbytes, dtype=self.cupy.uint8)
        return buf, int(buf.data.ptr)

    def copy(self, buf: Any, host: np.ndarray) -> None:
        buf.set(host.reshape(-1).view(np.uint8))

    def free(self, buf: Any) -> None:
        del buf  # cupy's memory pool releases it with the last reference


_DEVICES = {"pycuda": _PyCuda, "cuda-python": _CudaPython, "cupy": _CuPy}


def _open_device(device: str) -> Any:
    """Return a device-memory backend; ``"auto"`` takes the first of pycuda, cuda-python, cupy."""
    if device != "auto":
        if device not in _DEVICES:
            msg = f"unknown device library {device!r}; choose 'auto' or one of {list(_DEVICES)}"
            raise InvalidInputError(msg)
        try:
            return _DEVICES[device]()
        except ImportError as err:
            msg = f"device={device!r} but {device} cannot be imported ({err})"
            raise MissingDependencyError(msg) from err
    for backend in _DEVICES.values():
        try:
            return backend()
        except ImportError:
            continue  # "if present": try the next library
    msg = (
        "Recording TensorRT's calibration needs a CUDA memory library: pip install pycuda "
        "(calibkit's trt extra), or install cuda-python or cupy"
    )
    raise MissingDependencyError(msg)


class _DeviceBuffers:
    """Persistent per-input device buffers, filled in the order of the names TensorRT asks for."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self._buffers: dict[str, tuple[Any, int, tuple, np.dtype]] = {}

    def put(self, batch: Any, names: list[str], index: int) -> list[int]:
        if not isinstance(batch, Mapping):
            msg = f"batch {index} is a {type(batch).__name__}; expected a mapping {{input: array}}"
            raise TypeError(msg)
        missing = [n for n in names if n not in batch]
        extra = [k for k in batch if k not in names]
        if missing or extra:
            msg = (
                f"batch {index} has inputs {sorted(batch)}, TensorRT asked for {list(names)}"
                f" (missing {missing}, not network inputs {extra})"
            )
            raise InvalidInputError(msg)
        return [self._copy(name, batch[name], index) for name in names]

    def _copy(self, name: str, value: Any, index: int) -> int:
        array = np.asarray(value)
        if array.dtype.kind == "f" and array.dtype != np.float32:
            msg = (
                f"batch {index}, input {name!r}: dtype {array.dtype}; TensorRT takes float "
                "calibration inputs as float32 only: convert with .astype(np.float32)"
            )
            raise InvalidInputError(msg)
        if array.dtype.kind not in "fiub":
            msg = f"batch {index}, input {name!r}: dtype {array.dtype} is not a tensor type"
            raise InvalidInputError(msg)
        array = np.ascontiguousarray(array)
        if name not in self._buffers:
            buf, ptr = self.device.alloc(max(array.nbytes, 1))
            self._buffers[name] = (buf, ptr, array.shape, array.dtype)
        buf, ptr, shape, dtype = self._buffers[name]
        if array.shape != shape or array.dtype != dtype:
            msg = (
                f"batch {index}, input {name!r}: shape {array.shape} {array.dtype}, but the first "
                f"batch had {shape} {dtype}; TensorRT calibrates at one fixed shape"
            )
            raise InvalidInputError(msg)
        self.device.copy(buf, array)
        return ptr

    def free(self) -> None:
        buffers, self._buffers = self._buffers, {}
        for buf, *_ in buffers.values():
            self.device.free(buf)


def _bytes_at(ptr: Any, length: int) -> bytes:
    """Copy `length` bytes from what pybind11 passes for a ``const void*`` (a capsule) or an int."""
    if isinstance(ptr, int):
        return ctypes.string_at(ptr, length)
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return ctypes.string_at(get(ptr, None), length)


# -- serving -------------------------------------------------------------------------------------
def _served_bytes(cache: Any, algo: _Algorithm, version: tuple[int, int, int]) -> bytes:
    """Return `cache` with its header rewritten for `version` and `algo`; warn if it differed."""
    from ..cache.format import LEGACY_ALGORITHM, CalibrationCache, LegacyHeader, read_cache

    if not isinstance(cache, CalibrationCache):
        cache = read_cache(cache)
    if not cache.scales:
        msg = "the calibration cache has no tensors; TensorRT would recalibrate"
        raise CalibkitError(msg)
    if algo.word == LEGACY_ALGORITHM:
        quantile, cutoff = algo.legacy_parameters()
        written, legacy = None, LegacyHeader(cutoff, quantile)
    else:
        written, legacy = version, None
    # LF line endings, as TensorRT writes them (whether it reads CRLF is not known)
    served = dataclasses.replace(
        cache, newline="\n", version=written, algorithm=algo.word, legacy=legacy
    )
    data = served.to_bytes()
    if (cache.version, cache.algorithm, cache.legacy) != (
        served.version,
        served.algorithm,
        served.legacy,
    ):
        old = cache.to_bytes().split(b"\n", 1)[0].decode().rstrip("\r")
        new = data.split(b"\n", 1)[0].decode()
        msg = (
            f"the cache header {old!r} does not match this build ({new!r}: TensorRT "
            f"{'.'.join(map(str, version))}, {algo.base}); TensorRT would silently ignore it and "
            f"recalibrate, so calibkit serves it as {new!r}. Its scales are used unchanged: check "
            "that they were computed for this algorithm"
        )
        warnings.warn(msg, UserWarning, stacklevel=3)
    return data


# -- the calibrator ------------------------------------------------------------------------------
def _contained(fallback: Any) -> Any:
    """Keep exceptions out of TensorRT's C++: record the first, answer `fallback`, and go on."""

    def wrap(method: Any) -> Any:
        @functools.wraps(method)
        def guarded(self: Any, *args: Any) -> Any:
            if self.error_ is not None:
                return fallback
            try:
                return method(self, *args)
            except Exception as err:  # noqa: BLE001 - nothing may cross into TensorRT
                self._fail(method.__name__, err)
                return fallback

        return guarded

    return wrap


def make_calibrator(
    algorithm: Any,
    *,
    cache: Any = None,
    data: Iterable[Mapping[str, np.ndarray]] | None = None,
    device: str = "auto",
    histogram_cache: str | os.PathLike | None = None,
) -> Any:
    """Return a TensorRT INT8 calibrator that serves calibkit's cache or records TensorRT's.

    The class is built at call time as a subclass of ``tensorrt.IInt8EntropyCalibrator2``,
    ``IInt8EntropyCalibrator``, ``IInt8MinMaxCalibrator`` or ``IInt8LegacyCalibrator``, whose
    ``__init__`` is called explicitly (pyInt8Doc.h: required by the pybind11 trampoline).

    Parameters
    ----------
    algorithm : str or Selector
        ``"entropy2"``, ``"entropy"``, ``"minmax"``, ``"legacy:<quantile>:<regression_cutoff>"``;
        when serving, also ``"percentile:..."`` and ``"mse"`` (served as EntropyCalibration2).
    cache : path, bytes or CalibrationCache, optional
        Serving (no `data`): the cache to hand TensorRT, header rewritten for the running
        TensorRT version and `algorithm` (a warning says so when the header differed).
        Recording: where to write the cache TensorRT produces (atomically); None keeps it only
        in ``calibrator.cache_bytes``.
    data : iterable of mapping, optional
        Recording mode: batches ``{input name: array}``, e.g. a calibkit data source. Float inputs
        must be float32; every batch must have the first batch's shapes.
    device : {"auto", "pycuda", "cuda-python", "cupy"}
        Library for the device buffers (recording only); "auto" takes the first importable.
    histogram_cache : path, optional
        Legacy calibrator only: where to save the histogram cache TensorRT writes.

    Returns
    -------
    calibrator
        Pass it as ``config.int8_calibrator``; after ``build_serialized_network`` returns, call
        ``calibrator.raise_if_failed()`` (:func:`build_engine` does) to see any error that was
        kept from crossing into TensorRT.

    Raises
    ------
    MissingDependencyError
        Without tensorrt (or a device library when recording), or with TensorRT >= 11.
    """
    algo = _parse_algorithm(algorithm)
    trt = import_tensorrt()
    version = trt_version(trt)
    if data is None:
        if cache is None:
            msg = "make_calibrator needs cache= (to serve) or data= (to record TensorRT's cache)"
            raise InvalidInputError(msg)
        served, buffers = _served_bytes(cache, algo, version), None
    else:
        if not algo.native:
            msg = f"TensorRT has no {algo.spec!r} calibrator to record; use entropy2 or minmax"
            raise InvalidInputError(msg)
        if cache is not None and not isinstance(cache, (str, os.PathLike)):
            msg = f"when recording, cache= is the path to write TensorRT's cache to, got {cache!r}"
            raise TypeError(msg)
        served, buffers = None, _DeviceBuffers(_open_device(device))
    base: Any = getattr(trt, algo.base)  # TensorRT's calibrator class, chosen at run time

    class Calibrator(base):
        """calibkit's TensorRT calibrator (see :func:`calibkit.trt.adapter.make_calibrator`)."""

        def __init__(self) -> None:
            base.__init__(self)  # pybind11 trampoline: must be called explicitly
            self.spec = algo.spec  # not "algorithm": IInt8Calibrator documents that ivar
            self.cache_bytes: bytes | None = None  # what TensorRT wrote (recording)
            self.histogram_cache: bytes | None = None  # legacy histograms TensorRT wrote
            self.error_: BaseException | None = None
            self.n_batches_ = 0
            self._batches = None if data is None else iter(data)

        def _fail(self, where: str, err: BaseException) -> None:
            if self.error_ is None:
                self.error_ = err
                logger.error(
                    "%s failed (%s); ending calibration, raised after the build", where, err
                )
            if buffers is not None:
                buffers.free()

        def raise_if_failed(self) -> None:
            """Raise the first error kept from TensorRT during the build, if there was one."""
            if self.error_ is not None:
                raise self.error_

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is part of the input shape

        @_contained(None)
        def get_batch(self, names: list[str]) -> list[int] | None:
            if buffers is None or self._batches is None:  # both None when serving
                msg = (
                    "TensorRT rejected the served cache and asked for calibration data; "
                    "check the TensorRT log for the reason"
                )
                raise CalibkitError(msg)
            batch = next(self._batches, _END)
            if batch is _END:
                buffers.free()
                if not self.n_batches_:
                    msg = "the calibration data yielded no batches"
                    raise NotCollectedError(msg)
                logger.info("fed TensorRT %d calibration batches", self.n_batches_)
                return None
            pointers = buffers.put(batch, list(names), self.n_batches_)  # batch 0 is the first
            self.n_batches_ += 1
            return pointers

        @_contained(None)
        def read_calibration_cache(self) -> bytes | None:
            return served  # None while recording, so that TensorRT calibrates

        @_contained(None)
        def write_calibration_cache(self, cache_view: Any) -> None:
            self.cache_bytes = bytes(cache_view)  # TensorRT frees the memory after this call
            if data is not None and cache is not None:
                from ..atomic import write_atomic

                write_atomic(cache, self.cache_bytes)

        if algo.base == "IInt8LegacyCalibrator":

            def get_quantile(self) -> float:
                return algo.legacy_parameters()[0]

            def get_regression_cutoff(self) -> float:
                return algo.legacy_parameters()[1]

            def read_histogram_cache(self, length: int) -> None:
                # The binding passes `length` to Python by value and casts the answer to a
                # void pointer (pyInt8.cpp), so no bytes can be handed back: TensorRT rebuilds.
                return None

            @_contained(None)
            def write_histogram_cache(self, ptr: Any, length: int) -> None:
                self.histogram_cache = _bytes_at(ptr, length)
                if histogram_cache is not None:
                    from ..atomic import write_atomic

                    write_atomic(histogram_cache, self.histogram_cache)

    return Calibrator()


_END = object()


# -- dynamic ranges ------------------------------------------------------------------------------
@dataclasses.dataclass
class DynamicRangeReport:
    """What :func:`apply_dynamic_ranges` did, tensor by tensor."""

    applied: dict[str, float]  # name -> amax set as (-amax, amax)
    missing: list[str]  # network tensors with no scale: TensorRT runs their layers in FP16/FP32
    unused: list[str]  # scale names not found in the network
    skipped: dict[str, float]  # non-finite amax: set_dynamic_range needs finite bounds


def _network_tensors(network: Any) -> dict[str, Any]:
    tensors: dict[str, Any] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        tensors.setdefault(tensor.name, tensor)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            tensors.setdefault(tensor.name, tensor)
    return tensors


def apply_dynamic_ranges(network: Any, cache_or_scales: Any) -> DynamicRangeReport:
    """Set ``ITensor.set_dynamic_range(-amax, amax)`` on every network tensor that has a scale.

    The TensorRT <= 10 alternative to serving a cache (TRT_CALIBRATION.md §8.4): ranges override
    calibration, and TensorRT turns ``amax`` back into ``amax / 127`` in float32, which differs
    from the cache's scale by one ulp for about 1 % of tensors; serve the cache where
    bit-exactness matters.

    Parameters
    ----------
    network : tensorrt.INetworkDefinition
        A parsed network (inputs and layer outputs are visited).
    cache_or_scales : CalibrationCache, path, bytes or mapping
        A cache, or a mapping tensor name -> amax.

    Returns
    -------
    DynamicRangeReport
        Applied, missing (a warning is logged when there are any), unused and skipped tensors.
    """
    import_tensorrt()
    from ..cache.format import CalibrationCache, read_cache

    if isinstance(cache_or_scales, Mapping):
        amax = {str(k): float(v) for k, v in cache_or_scales.items()}
    else:
        if not isinstance(cache_or_scales, CalibrationCache):
            cache_or_scales = read_cache(cache_or_scales)
        amax = cache_or_scales.amax
    tensors = _network_tensors(network)
    applied, skipped, missing = {}, {}, []
    for name, tensor in tensors.items():
        if name not in amax:
            missing.append(name)
        elif not math.isfinite(amax[name]) or amax[name] < 0:
            skipped[name] = amax[name]
        elif not tensor.set_dynamic_range(-amax[name], amax[name]):
            msg = f"TensorRT refused set_dynamic_range({-amax[name]}, {amax[name]}) on {name!r}"
            raise CalibkitError(msg)
        else:
            applied[name] = amax[name]
    unused = [name for name in amax if name not in tensors]
    if missing:
        logger.warning(
            "%d of %d network tensors have no scale and will not run in INT8: %s",
            len(missing),
            len(tensors),
            ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""),
        )
    return DynamicRangeReport(applied, missing, unused, skipped)


# -- building ------------------------------------------------------------------------------------
def build_engine(
    model: str | os.PathLike,
    *,
    calibrator: Any = None,
    dynamic_ranges: Any = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    fp16: bool = False,
) -> bytes:
    """Parse an ONNX model with TensorRT and build an INT8 engine; return the serialized engine.

    Parameters
    ----------
    model : path
        The ONNX model (external data next to it is found by TensorRT's parser).
    calibrator : optional
        From :func:`make_calibrator`; set as ``config.int8_calibrator``. Its kept error, if any,
        is raised once the build returns.
    dynamic_ranges : optional
        A cache or ``{name: amax}`` for :func:`apply_dynamic_ranges`.
    shapes : mapping, optional
        Input name -> shape for inputs with dynamic dimensions; used as min = opt = max of the
        optimization profile and as the calibration profile (TensorRT calibrates at opt).
    fp16 : bool
        Also allow FP16 kernels (for layers left without a scale).

    Raises
    ------
    CalibkitError
        If the parser rejects the model, a dynamic input has no shape, or the build fails.
    """
    trt = import_tensorrt()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = _create(trt, "builder", trt.Builder, trt_logger)
    flags = 0
    if trt_version(trt)[0] < 10:  # explicit batch is the only mode from 10.0 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = _create(trt, "ONNX parser", trt.OnnxParser, network, trt_logger)
    if not parser.parse_from_file(os.fspath(model)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        msg = f"TensorRT's ONNX parser rejected {model}: {'; '.join(errors) or 'no reason given'}"
        raise CalibkitError(msg)
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    _set_profile(builder, network, config, dict(shapes or {}), calibrating=calibrator is not None)
    if calibrator is not None:
        config.int8_calibrator = calibrator
    if dynamic_ranges is not None:
        apply_dynamic_ranges(network, dynamic_ranges)
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None:
        calibrator.raise_if_failed()
    if serialized is None:
        msg = f"TensorRT failed to build an engine for {model}; its log above says why"
        raise CalibkitError(msg)
    return bytes(memoryview(serialized))


def _create(trt: ModuleType, what: str, factory: Any, *args: Any) -> Any:
    """Call a TensorRT factory; the bindings raise TypeError when TensorRT's C++ returns null."""
    try:
        return factory(*args)
    except TypeError as err:
        msg = (
            f"TensorRT {trt.__version__} could not create a {what} ({err}): no usable CUDA "
            "GPU or driver, or TensorRT's libraries do not match its Python bindings; "
            "TensorRT's log above says which"
        )
        raise CalibkitError(msg) from err


def _set_profile(builder: Any, network: Any, config: Any, shapes: dict, calibrating: bool) -> None:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    unknown = sorted(set(shapes) - {t.name for t in inputs})
    if unknown:
        msg = f"shapes given for {unknown}, which are not inputs of the network"
        raise CalibkitError(msg)
    dynamic = [t for t in inputs if any(int(d) < 0 for d in t.shape)]
    if not dynamic:
        return
    lacking = [t.name for t in dynamic if t.name not in shapes]
    if lacking:
        msg = f"inputs {lacking} have dynamic dimensions; give their shapes (NAME=1x3x224x224)"
        raise CalibkitError(msg)
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        shape = tuple(int(d) for d in shapes[tensor.name])
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    if calibrating:
        config.set_calibration_profile(profile)


# -- cross-check ---------------------------------------------------------------------------------
@dataclasses.dataclass
class CrossCheck:
    """TensorRT's cache and calibkit's, computed from the same batches, and their diff."""

    trt_cache: Any  # CalibrationCache written by TensorRT's own calibrator
    calibkit_cache: Any  # CalibrationCache from calibkit.calibrate_onnx
    diff: Any  # calibkit.cache.diff.CacheDiff, rows in TensorRT's order
    num_batches: int
    stats_path: Path | None = None  # calibkit's histograms, saved next to calibkit's cache


def _fixed_shape_batches(data: Iterable[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Materialise the batches (both sides must see the very same arrays) at one shape."""
    batches = [{k: np.asarray(v) for k, v in batch.items()} for batch in data]
    if not batches:
        msg = "the calibration data yielded no batches"
        raise NotCollectedError(msg)
    shapes = {k: v.shape for k, v in batches[0].items()}
    kept = [b for b in batches if {k: v.shape for k, v in b.items()} == shapes]
    if len(kept) < len(batches):
        # TensorRT calibrates at one shape; a short last batch would end its calibration
        logger.warning(
            "using %d of %d batches on both sides: the others differ from the first batch's "
            "shapes %s, and TensorRT calibrates at one fixed shape",
            len(kept),
            len(batches),
            shapes,
        )
    return kept


def crosscheck(
    model: str | os.PathLike,
    data: Any,
    *,
    algorithm: str = "entropy2",
    batch_size: int | None = None,
    max_samples: int | None = None,
    preprocess: Any = None,
    device: str = "auto",
    trt_cache: str | os.PathLike | None = None,
    calibkit_cache: str | os.PathLike | None = None,
) -> CrossCheck:
    """Calibrate `model` with TensorRT's own calibrator and with calibkit on identical batches.

    Parameters
    ----------
    model : path
        The ONNX model.
    data : path, "loader.py[:function]", or iterable of dicts
        Calibration inputs (see :func:`~calibkit.data.open_data`); read once, then fed to both.
    algorithm : str
        A TensorRT calibrator: ``entropy2``, ``entropy``, ``minmax`` or ``legacy:<q>:<cutoff>``
        (calibkit's side uses the same spec, e.g. ``entropy2:pytorch`` for a variant).
    batch_size, max_samples, preprocess
        Passed to :func:`~calibkit.data.open_data`.
    device : str
        Device-memory library for TensorRT's batches (see :func:`make_calibrator`).
    trt_cache, calibkit_cache : path, optional
        Where to write the two caches (atomically); calibkit's histograms go next to its cache
        (``calibkit.stats.npz``), for differences in bins and for ``calibkit select``.

    Returns
    -------
    CrossCheck
    """
    trt = import_tensorrt()
    algo = _parse_algorithm(algorithm)
    if not algo.native:
        msg = f"TensorRT has no {algo.spec!r} calibrator to compare with"
        raise InvalidInputError(msg)
    from ..cache.diff import diff_caches
    from ..cache.format import read_cache
    from ..data.sources import open_data
    from ..onnx.calibrate import calibrate_onnx
    from ..onnx.model import OnnxModel

    loaded = OnnxModel.load(model)  # read once for the input specs and the calibration
    source = open_data(
        data, loaded.inputs, batch_size=batch_size, max_samples=max_samples, preprocess=preprocess
    )
    batches = _fixed_shape_batches(source)
    shapes = {k: v.shape for k, v in batches[0].items()}
    calibrator = make_calibrator(algo.spec, data=batches, cache=trt_cache, device=device)
    build_engine(model, calibrator=calibrator, shapes=shapes)
    if calibrator.cache_bytes is None:
        msg = "TensorRT built the engine without writing a calibration cache"
        raise CalibkitError(msg)
    theirs = read_cache(calibrator.cache_bytes)
    ours = calibrate_onnx(loaded, batches, algorithm=algo.spec, trt_version=trt_version(trt))
    stats = None if calibkit_cache is None else ours.write(calibkit_cache)
    diff = diff_caches(theirs, ours.cache, histograms=ours.histograms)
    return CrossCheck(theirs, ours.cache, diff, len(batches), stats)
