"""A stand-in ``tensorrt`` module that enforces the Python binding contract calibkit relies on.

Only what calibkit touches is modelled, each piece after a TensorRT source read for it (NVIDIA/
TensorRT at the tags of 8.6-10.16; TRT_CALIBRATION.md §7-8):

- ``python/src/infer/pyInt8.cpp`` (``bindInt8``): the classes ``IInt8Calibrator``,
  ``IInt8LegacyCalibrator``, ``IInt8EntropyCalibrator``, ``IInt8EntropyCalibrator2``,
  ``IInt8MinMaxCalibrator`` (each ``py::init<>()``), the enum ``CalibrationAlgoType`` with
  ``LEGACY_CALIBRATION``, ``ENTROPY_CALIBRATION``, ``ENTROPY_CALIBRATION_2``,
  ``MINMAX_CALIBRATION``; the trampoline ``pyCalibratorTrampoline``:

  * ``getBatch`` calls ``get_batch(names)`` with a list of ``nbBindings`` names; a ``None`` or
    empty answer ends calibration, anything else is cast to ``std::vector<size_t>`` and exactly
    ``nbBindings`` pointers are ``memcpy``-ed out of it (a shorter list is read past its end);
  * ``readCalibrationCache`` takes ``None`` as "no cache", otherwise ``py::buffer{result}``
    (an object with the buffer protocol: bytes yes, str no);
  * ``writeCalibrationCache`` passes a read-only ``py::memoryview`` of ``length`` uint8 over
    TensorRT's own memory, which is freed after the call;
  * ``getAlgorithm`` reaches Python only for plain ``IInt8Calibrator`` (``pyIInt8Calibrator``);
    the four subclasses answer from C++, so a Python override there is never called;
  * ``IInt8LegacyCalibrator``: ``get_quantile``, ``get_regression_cutoff`` (doubles),
    ``read_histogram_cache(length)`` (``length`` passed by value, result cast to ``const void*``:
    ``None`` or a capsule), ``write_histogram_cache(ptr, length)`` (``ptr`` arrives as a capsule);
  * every method is ``noexcept``: early trampolines let a Python exception terminate the
    process; those of 8.6.1, 10.0.1 and 10.16.1 catch it, print ``[ERROR] Exception caught in
    get_batch()`` and answer false / nullptr (tests/trt_real). Either way TensorRT goes on
    without the reason, so the stand-in raises ContractViolation.
- ``python/docstrings/infer/pyInt8Doc.h``: subclasses must call the base ``__init__`` explicitly
  (pybind11 raises ``TypeError: tensorrt.tensorrt.IInt8X.__init__() must be called when
  overriding __init__``, naming the registered TensorRT class).

What tests/trt_real checks against the real bindings (classes, enums, signatures, trampolines)
is listed in docs/tensorrt.md; the builder below is what only this stand-in models.
- ``python/src/infer/pyCore.cpp``: ``Builder(logger)``, ``create_network(flags)``,
  ``create_builder_config()``, ``create_optimization_profile()``, ``platform_has_fast_int8``,
  ``build_serialized_network(network, config)`` (``None`` on failure); ``IBuilderConfig``:
  ``set_flag``/``get_flag``/``clear_flag``, ``int8_calibrator``, ``add_optimization_profile``,
  ``set_calibration_profile``/``get_calibration_profile``, ``set_quantization_flag``.
- ``python/src/infer/pyGraph.cpp``: ``ITensor.name/shape/dtype``, ``set_dynamic_range(min, max)``
  returning bool, the ``dynamic_range`` property; ``INetworkDefinition.num_inputs/get_input/
  num_layers/get_layer/num_outputs/get_output``, ``ILayer.num_outputs/get_output``.
- ``python/src/parsers/pyOnnx.cpp``: ``OnnxParser(network, logger)``, ``parse(model)``,
  ``parse_from_file(path)``, ``num_errors``, ``get_error(i)``; tensors keep their ONNX names.
- ``include/NvInfer.h`` (10.16): ``setDynamicRange`` needs finite bounds with ``min <= max``;
  ``NV_TENSORRT_VERSION`` is ``M*1000+m*100+p`` up to 9.x and ``M*10000+m*100+p`` from 10.0.
- TensorRT 11.0 removed the calibrator classes, ``CalibrationAlgoType``, ``BuilderFlag.INT8``
  and ``FP16``, ``ITensor.set_dynamic_range``/``dynamic_range``, ``IBuilderConfig.int8_calibrator``,
  its calibration profile and quantization flags (checked against the 11.4 bindings).

The builder's calling sequence (sampleINT8 README, Polygraphy's calibrator tests): it calls
``get_batch_size``, then ``read_calibration_cache``; a cache whose header is exactly
``TRT-<NV_TENSORRT_VERSION>-<algorithm word>`` (legacy: ``0 <cutoff> <quantile>`` matching the
getters) is used and calibration is skipped; any other cache is *silently* ignored (TensorRT
issue #1378). Otherwise ``get_batch(names)`` repeats until ``None``; zero batches fail the build
("Calibration failure occurred with no scaling factors detected"); then
``write_calibration_cache(memoryview)`` and ``get_algorithm``. The order of the legacy getters and
histogram-cache calls relative to these is not documented; the stand-in calls them after reading
the cache and after the last batch.

What the stand-in does NOT reproduce: TensorRT's calibration maths. Its own "calibration" writes
only the network inputs, each with ``scale = fl32(max|x|) / 127`` (MinMax on inputs, which is what
TensorRT's MinMaxCalibrator writes for an input); layer outputs are not computed.
"""

from __future__ import annotations

import ctypes
import enum
import math
import struct
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .device import ContractViolation, DeviceMemory

_WORDS = {
    "IInt8EntropyCalibrator2": ("ENTROPY_CALIBRATION_2", "EntropyCalibration2"),
    "IInt8EntropyCalibrator": ("ENTROPY_CALIBRATION", "EntropyCalibration"),
    "IInt8MinMaxCalibrator": ("MINMAX_CALIBRATION", "MinMaxCalibration"),
    "IInt8LegacyCalibrator": ("LEGACY_CALIBRATION", None),
}


class CalibrationAlgoType(enum.IntEnum):
    """``nvinfer1::CalibrationAlgoType`` (values from NvInfer.h)."""

    LEGACY_CALIBRATION = 0
    ENTROPY_CALIBRATION = 1
    ENTROPY_CALIBRATION_2 = 2
    MINMAX_CALIBRATION = 3


class DataType(enum.IntEnum):
    """The ``nvinfer1::DataType`` members an ONNX input can have here."""

    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    INT64 = 10


_NUMPY = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.INT64: np.int64,
}


def version_number(version: tuple[int, int, int]) -> int:
    """``NV_TENSORRT_VERSION`` (NvInferVersion.h)."""
    major, minor, patch = version
    return major * (1000 if major < 10 else 10000) + minor * 100 + patch


def _double_hex(value: float) -> str:
    return format(struct.unpack(">Q", struct.pack(">d", value))[0], "x")


@dataclass
class BuildRecord:
    """What one ``build_serialized_network`` call saw, for tests to inspect."""

    calls: list[str] = field(default_factory=list)
    names: list[list[str]] = field(default_factory=list)  # names passed to each get_batch
    batches: list[dict[str, np.ndarray]] = field(default_factory=list)  # data read from device
    cache_used: bool = False  # the served cache was accepted
    scales: dict[str, float] = field(default_factory=dict)  # scales the engine got (cache)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # set_dynamic_range
    log: list[str] = field(default_factory=list)
    ok: bool = False


def make_tensorrt(
    version: str = "10.16.0.72", memory: DeviceMemory | None = None
) -> types.ModuleType:
    """Return a fresh stand-in ``tensorrt`` module reporting `version`.

    Parameters
    ----------
    version : str
        ``tensorrt.__version__``; from "11" on the calibrator API is absent, as in TensorRT 11.
    memory : DeviceMemory
        The stand-in GPU that ``get_batch`` pointers are read from.
    """
    memory = memory if memory is not None else DeviceMemory()
    parts = [int(p) for p in version.split(".")[:3]]
    vtuple = [*parts, 0, 0][:3]
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__file__ = str(Path(__file__))
    trt.CALIBKIT_STANDIN = True  # real TensorRT has no such attribute: the GPU test checks it
    trt.standin_memory = memory
    trt.standin_builds = []
    trt.DataType = DataType
    _add_graph(trt, vtuple)
    _add_builder(trt, vtuple, memory)
    if vtuple[0] < 11:
        _add_calibrators(trt)
    return trt


# -- calibrator classes --------------------------------------------------------------------------
class _PybindMeta(type):
    """pybind11 refuses an instance whose Python ``__init__`` skipped the base ``__init__``.

    Its message names the registered (TensorRT) class, fully qualified, not the subclass.
    """

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        if not obj.__dict__.get("_standin_base_init", False):
            registered = next(k for k in cls.__mro__ if "_standin_algo" in k.__dict__)
            msg = (
                f"tensorrt.tensorrt.{registered.__name__}.__init__() must be called when "
                "overriding __init__"
            )
            raise TypeError(msg)
        return obj


def _add_calibrators(trt: types.ModuleType) -> None:
    trt.CalibrationAlgoType = CalibrationAlgoType

    class IInt8Calibrator(metaclass=_PybindMeta):
        _standin_algo = None  # registered with the binding (see _PybindMeta)

        def __init__(self) -> None:  # py::init<>(): no arguments
            self._standin_base_init = True

        # documentation-only bindings (pyInt8.cpp: "the bindings here will never be called")
        def get_batch(self, names):
            return []

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            return None

        def get_batch_size(self):
            msg = "get_batch_size is pure virtual: override it"
            raise ContractViolation(msg)

        def get_algorithm(self):
            msg = "IInt8Calibrator.get_algorithm is pure virtual: override it"
            raise ContractViolation(msg)

    def subclass(name: str, parent: type) -> type:
        algo = getattr(CalibrationAlgoType, _WORDS[name][0])
        return type(name, (parent,), {"get_algorithm": lambda self: algo, "_standin_algo": algo})

    trt.IInt8Calibrator = IInt8Calibrator
    trt.IInt8LegacyCalibrator = subclass("IInt8LegacyCalibrator", IInt8Calibrator)
    for name in ("IInt8EntropyCalibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator"):
        setattr(trt, name, subclass(name, IInt8Calibrator))
    trt.standin_bases = {getattr(trt, n) for n in ("IInt8Calibrator", *_WORDS)}


def _override(trt: types.ModuleType, cal: object, name: str):
    """The Python override of `name`, as ``utils::getOverride`` finds it; pure virtual if none."""
    for klass in type(cal).__mro__:
        if klass in trt.standin_bases or klass is object:
            break
        if name in klass.__dict__:
            return getattr(cal, name)
    msg = f"{type(cal).__name__} does not override {name}(): pure virtual in the binding"
    raise ContractViolation(msg)


def _call(record: BuildRecord, name: str, method, *args):
    """Call a Python callback the way the noexcept trampoline does: no exception may escape."""
    record.calls.append(name)
    try:
        return method(*args)
    except ContractViolation:
        raise
    except Exception as err:
        msg = f"{name}() raised {type(err).__name__}: {err} -- it would cross into TensorRT's C++"
        raise ContractViolation(msg) from err


# -- network, parser -----------------------------------------------------------------------------
def _add_graph(trt: types.ModuleType, vtuple: tuple[int, int, int]) -> None:
    class ITensor:
        def __init__(self, name: str, dtype: DataType, shape: tuple[int, ...]) -> None:
            self._name, self.dtype, self._shape = name, dtype, tuple(shape)
            self._range: tuple[float, float] | None = None
            self.is_network_input = False

        # properties of the class, as in the bindings (pyGraph.cpp def_property)
        @property
        def name(self) -> str:
            return self._name

        @name.setter
        def name(self, value: str) -> None:
            self._name = value

        @property
        def shape(self) -> tuple[int, ...]:
            return self._shape

        def set_dynamic_range(self, min: float, max: float) -> bool:
            if not isinstance(min, (int, float)) or not isinstance(max, (int, float)):
                msg = "set_dynamic_range(min: float, max: float): incompatible function arguments"
                raise TypeError(msg)
            if not (math.isfinite(min) and math.isfinite(max) and min <= max):
                return False  # NvInfer.h: finite bounds, min <= max; TensorRT logs and says false
            self._range = (float(np.float32(min)), float(np.float32(max)))
            return True

        @property
        def dynamic_range(self):
            return self._range

    class ILayer:
        def __init__(self, name: str, outputs: list[ITensor]) -> None:
            self.name, self._outputs = name, outputs

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

    class INetworkDefinition:
        def __init__(self, explicit_batch: bool) -> None:
            self.explicit_batch = explicit_batch
            self._inputs: list[ITensor] = []
            self._layers: list[ILayer] = []
            self._outputs: list[ITensor] = []

        def add_input(self, name: str, dtype: DataType, shape) -> ITensor:
            tensor = ITensor(name, dtype, shape)
            tensor.is_network_input = True
            self._inputs.append(tensor)
            return tensor

        num_inputs = property(lambda self: len(self._inputs))
        num_layers = property(lambda self: len(self._layers))
        num_outputs = property(lambda self: len(self._outputs))

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_layer(self, index: int) -> ILayer:
            return self._layers[index]

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

        def mark_output(self, tensor: ITensor) -> None:
            self._outputs.append(tensor)

    class ParserError:
        """``get_error`` answers an object (``desc()``, ``__str__``), not a string."""

        def __init__(self, text: str) -> None:
            self._text = text

        def desc(self) -> str:
            return self._text

        def __str__(self) -> str:
            return self._text

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: object) -> None:
            self.network, self._errors = network, []

        num_errors = property(lambda self: len(self._errors))

        def get_error(self, index: int) -> ParserError:
            return ParserError(self._errors[index])

        def parse_from_file(self, model: str) -> bool:
            if not isinstance(model, str):
                msg = "parse_from_file(model: str): incompatible function arguments"
                raise TypeError(msg)
            return self.parse(Path(model).read_bytes())

        def parse(self, model: bytes, path: str | None = None) -> bool:
            import onnx

            if vtuple[0] < 10 and not self.network.explicit_batch:
                self._errors.append("the ONNX parser needs an explicit-batch network (TRT < 10)")
                return False
            try:
                graph = onnx.load_from_string(bytes(model)).graph
            except Exception as err:  # noqa: BLE001 - the parser reports, never raises
                self._errors.append(f"ModelImporter: failed to parse the ONNX model: {err}")
                return False
            _import_graph(graph, self.network, ILayer, ITensor)
            return True

    trt.ITensor, trt.ILayer, trt.INetworkDefinition = ITensor, ILayer, INetworkDefinition
    trt.OnnxParser, trt.ParserError = OnnxParser, ParserError
    if vtuple[0] >= 11:  # TensorRT 11 removed dynamic ranges with the calibrators
        del ITensor.set_dynamic_range, ITensor.dynamic_range


_ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32}
_ONNX_TYPES.update({9: DataType.BOOL, 7: DataType.INT64})


def _import_graph(graph, network, layer_cls, tensor_cls) -> None:
    initializers = {init.name for init in graph.initializer}
    for value in graph.input:
        if value.name in initializers:
            continue
        ttype = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim)
        network.add_input(value.name, _ONNX_TYPES[ttype.elem_type], dims)
    by_name = {}
    for i, node in enumerate(graph.node):
        outputs = [tensor_cls(out, DataType.FLOAT, ()) for out in node.output]
        by_name.update((t.name, t) for t in outputs)
        network._layers.append(layer_cls(node.name or f"(Unnamed Layer* {i})", outputs))
    for value in graph.output:
        if value.name in by_name:
            network.mark_output(by_name[value.name])


# -- builder -------------------------------------------------------------------------------------
def _add_builder(trt: types.ModuleType, vtuple: tuple[int, int, int], memory: DeviceMemory) -> None:
    class _Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class Logger:
        Severity = _Severity
        INTERNAL_ERROR, ERROR = _Severity.INTERNAL_ERROR, _Severity.ERROR
        WARNING, INFO, VERBOSE = _Severity.WARNING, _Severity.INFO, _Severity.VERBOSE

        def __init__(self, min_severity: _Severity = _Severity.WARNING) -> None:
            self.min_severity = min_severity

    flags = {"FP16": 0, "INT8": 1, "DEBUG": 2} if vtuple[0] < 11 else {"DEBUG": 2}
    BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 5}
    )
    QuantizationFlag = enum.IntEnum("QuantizationFlag", {"CALIBRATE_BEFORE_FUSION": 0})

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, input: str, min, opt, max) -> None:
            self.shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class IBuilderConfig:
        def __init__(self) -> None:
            self._flags: set = set()
            self._calibrator = None
            self.profiles: list[IOptimizationProfile] = []
            self._calibration_profile = None
            self.quantization_flags: set = set()

        def set_flag(self, flag) -> None:
            self._flags.add(BuilderFlag(flag))

        def clear_flag(self, flag) -> None:
            self._flags.discard(BuilderFlag(flag))

        def get_flag(self, flag) -> bool:
            return BuilderFlag(flag) in self._flags

        def set_quantization_flag(self, flag) -> None:
            self.quantization_flags.add(QuantizationFlag(flag))

        @property
        def int8_calibrator(self):
            return self._calibrator

        @int8_calibrator.setter
        def int8_calibrator(self, calibrator) -> None:
            if calibrator is not None and not isinstance(calibrator, trt.IInt8Calibrator):
                msg = "(): incompatible function arguments: expected tensorrt.IInt8Calibrator"
                raise TypeError(msg)
            self._calibrator = calibrator

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
            self._calibration_profile = profile
            return True

        def get_calibration_profile(self):
            return self._calibration_profile

    class IHostMemory(bytes):
        """Stands for the buffer-protocol ``IHostMemory`` holding a serialized engine."""

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger
            self.platform_has_fast_int8 = True

        def create_network(self, flags: int = 0):
            explicit = bool(flags & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
            return trt.INetworkDefinition(explicit or vtuple[0] >= 10)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            record = BuildRecord()
            trt.standin_builds.append(record)
            record.ok = _build(trt, vtuple, memory, network, config, record)
            return IHostMemory(b"standin engine\n") if record.ok else None

    trt.Logger, trt.Builder, trt.IBuilderConfig = Logger, Builder, IBuilderConfig
    trt.BuilderFlag = BuilderFlag
    if vtuple[0] < 11:
        trt.QuantizationFlag = QuantizationFlag
    else:  # TensorRT 11: no calibrator, calibration profile or quantization flags
        for name in ("int8_calibrator", "set_calibration_profile", "get_calibration_profile"):
            delattr(IBuilderConfig, name)
        del IBuilderConfig.set_quantization_flag
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    trt.IOptimizationProfile, trt.IHostMemory = IOptimizationProfile, IHostMemory


def _calibration_shape(tensor, config) -> tuple[int, ...] | None:
    if all(d >= 0 for d in tensor.shape):
        return tensor.shape
    # the calibration profile's opt shape, else the first optimization profile's (NvInfer.h)
    profile = config.get_calibration_profile() or (config.profiles or [None])[0]
    if profile is None or tensor.name not in profile.shapes:
        return None
    return profile.shapes[tensor.name][1]


def _build(trt, vtuple, memory, network, config, record: BuildRecord) -> bool:
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        tensors += [layer.get_output(j) for j in range(layer.num_outputs)]
    if vtuple[0] >= 11:  # no ranges, no INT8 flag, no calibrator: nothing to calibrate
        return True
    record.ranges = {t.name: t.dynamic_range for t in tensors if t.dynamic_range is not None}
    calibrator = config.int8_calibrator
    if not config.get_flag(trt.BuilderFlag.INT8) or calibrator is None:
        return True
    return _calibrate(trt, vtuple, memory, network, config, calibrator, record)


def _calibrate(trt, vtuple, memory, network, config, cal, record: BuildRecord) -> bool:
    size = _call(record, "get_batch_size", _override(trt, cal, "get_batch_size"))
    if not isinstance(size, int) or isinstance(size, bool):
        msg = f"get_batch_size() returned {size!r}; the binding casts it to int"
        raise ContractViolation(msg)
    cache = _call(record, "read_calibration_cache", _override(trt, cal, "read_calibration_cache"))
    if cache is not None:
        try:
            cache = memoryview(cache).cast("B").tobytes()  # py::buffer{result}
        except TypeError as err:
            msg = f"read_calibration_cache() returned a {type(cache).__name__}: not a buffer"
            raise ContractViolation(msg) from err
    legacy = isinstance(cal, trt.IInt8LegacyCalibrator)
    if legacy:
        params = {}
        for getter in ("get_quantile", "get_regression_cutoff"):
            value = _call(record, getter, _override(trt, cal, getter))
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                msg = f"{getter}() returned {value!r}; expected a float in [0, 1]"
                raise ContractViolation(msg)
            params[getter] = float(value)
        cutoff, quantile = params["get_regression_cutoff"], params["get_quantile"]
        expected = f"0 {_double_hex(cutoff)} {_double_hex(quantile)}"
    else:
        word = _WORDS[_base_of(trt, cal).__name__][1]
        expected = f"TRT-{version_number(vtuple)}-{word}"
    if cache:
        header, _, body = cache.decode("utf-8").partition("\n")
        if header.rstrip("\r") == expected:
            record.cache_used = True
            for line in body.splitlines():
                name, _, hex_text = line.rpartition(": ")
                bits = np.array([int(hex_text, 16)], np.uint32)
                record.scales[name] = float(bits.view(np.float32)[0])
            _algorithm(trt, cal, record)
            return True
        record.log.append(f"calibration cache header {header!r} != {expected!r}: recalibrating")
    if legacy:
        answer = _call(
            record, "read_histogram_cache", _override(trt, cal, "read_histogram_cache"), 0
        )
        if answer is not None:
            msg = "read_histogram_cache() must return None (the binding casts it to void*)"
            raise ContractViolation(msg)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    names = [t.name for t in inputs]  # TensorRT's binding order, not the caller's dict order
    shapes = {t.name: _calibration_shape(t, config) for t in inputs}
    if any(s is None for s in shapes.values()):
        record.log.append("dynamic input without a calibration or optimization profile")
        return False
    amax = dict.fromkeys(names, 0.0)
    get_batch = _override(trt, cal, "get_batch")
    while True:
        record.names.append(list(names))
        pointers = _call(record, "get_batch", get_batch, list(names))
        if pointers is None or len(pointers) == 0:
            break
        if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pointers):
            msg = f"get_batch() returned {pointers!r}; the binding casts it to vector<size_t>"
            raise ContractViolation(msg)
        if len(pointers) != len(names):
            msg = f"get_batch() returned {len(pointers)} pointers for {len(names)} bindings"
            raise ContractViolation(msg)
        batch = {}
        for tensor, ptr in zip(inputs, pointers, strict=True):
            dtype = np.dtype(_NUMPY[tensor.dtype])
            shape = shapes[tensor.name]
            raw = memory.read(ptr, int(np.prod(shape)) * dtype.itemsize)
            batch[tensor.name] = np.frombuffer(raw, dtype).reshape(shape)
            if dtype.kind == "f" and batch[tensor.name].size:
                amax[tensor.name] = max(amax[tensor.name], float(np.abs(batch[tensor.name]).max()))
        record.batches.append(batch)
    if not record.batches:
        record.log.append(
            "Calibration failure occurred with no scaling factors detected. This could be due to "
            "no int8 calibrator or insufficient custom scales for network layers."
        )
        return False
    if legacy:
        histograms = ctypes.create_string_buffer(b"standin histograms", 18)
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = (
            ctypes.py_object,
            [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p],
        )
        capsule = new(ctypes.addressof(histograms), None, None)
        _call(
            record,
            "write_histogram_cache",
            _override(trt, cal, "write_histogram_cache"),
            capsule,
            18,
        )
    lines = [expected]
    for name in names:
        if np.dtype(_NUMPY[inputs[names.index(name)].dtype]).kind == "f":
            bits = np.array([np.float32(amax[name]) / np.float32(127)], np.float32).view(np.uint32)
            lines.append(f"{name}: {int(bits[0]):x}")
    content = bytearray(("\n".join(lines) + "\n").encode())
    # a read-only uint8 view over TensorRT's buffer (memoryview::from_buffer of a const pointer),
    # valid only during the call
    view = memoryview(content).toreadonly()
    _call(record, "write_calibration_cache", _override(trt, cal, "write_calibration_cache"), view)
    try:
        view.release()
    except BufferError as err:
        msg = "write_calibration_cache() kept a view of TensorRT's memory instead of copying it"
        raise ContractViolation(msg) from err
    content[:] = b"\0" * len(content)  # TensorRT reuses / frees the memory afterwards
    _algorithm(trt, cal, record)
    return True


def _base_of(trt, cal) -> type:
    """The TensorRT class `cal` derives from (the C++ object behind the trampoline)."""
    return next(k for k in type(cal).__mro__ if k in trt.standin_bases)


def _algorithm(trt, cal, record: BuildRecord) -> CalibrationAlgoType:
    # only pyIInt8Calibrator forwards getAlgorithm to Python; the subclasses answer in C++
    base = _base_of(trt, cal)
    if base is trt.IInt8Calibrator:
        algo = _call(record, "get_algorithm", _override(trt, cal, "get_algorithm"))
    else:
        record.calls.append("get_algorithm")
        algo = base._standin_algo
    if not isinstance(algo, CalibrationAlgoType):
        msg = f"get_algorithm() returned {algo!r}; expected a CalibrationAlgoType"
        raise ContractViolation(msg)
    return algo
