"""Read a Q/DQ ONNX model back into a TensorRT calibration cache plus the float model.

This is the direction of NVIDIA's qdq-translator (Deep-Learning-Accelerator-SW): a QAT or
calibkit Q/DQ model becomes a ``*.cache`` that TensorRT <= 10 (and DLA) read, and a float model
without Q/DQ nodes. The activation scale is the ``y_scale`` of each QuantizeLinear, unchanged
(float32 bit for bit); zero points must be 0; weight Q/DQ are removed (TensorRT's implicit mode
quantizes weights itself), and pre-quantized int8 weights (DQ only) are dequantized.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import require
from ..cache.format import ALGORITHMS, CalibrationCache, parse_trt_version
from ..errors import CacheFormatError, InvalidInputError
from .model import OnnxModel
from .qdq import META_ALGORITHM, META_HEADER, META_VERSION

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = ["from_qdq", "qdq_to_cache"]

logger = logging.getLogger(__name__)

_META_KEYS = (META_VERSION, META_HEADER, META_ALGORITHM)


def _qparams(node, constants: OnnxModel, where: str) -> tuple[np.ndarray, int | None]:
    """Return (scale, axis) of a Q or DQ node after checking the zero point is int8 0."""
    label = node.name or node.output[0]
    if len(node.input) < 2 or not constants.is_constant(node.input[1]):
        msg = f"{where}: {node.op_type} '{label}' has no constant scale input"
        raise CacheFormatError(msg)
    scale = np.asarray(constants.constant(node.input[1]))
    if scale.dtype == np.float16:
        # ModelOpt's default (--high_precision_dtype fp16) stores float16 scales. Every float16
        # is a float32 exactly, so the cache holds that same value: no rounding here. (The
        # rounding happened when the exporter stored amax/127 as float16: up to 2**-11
        # relative to a float32 calibration.)
        scale = scale.astype(np.float32)
    if scale.dtype != np.float32:
        msg = (
            f"{where}: {node.op_type} '{label}' scale is {scale.dtype}, expected float32 or float16"
        )
        raise CacheFormatError(msg)
    if len(node.input) > 2 and node.input[2]:
        if not constants.is_constant(node.input[2]):
            msg = f"{where}: {node.op_type} '{label}' zero point is not a constant"
            raise CacheFormatError(msg)
        zp = np.asarray(constants.constant(node.input[2]))
        if zp.dtype != np.int8 or np.any(zp != 0):
            msg = (
                f"{where}: {node.op_type} '{label}' has zero point {zp.ravel()[:4]} of type "
                f"{zp.dtype}; TensorRT INT8 needs a symmetric int8 zero point of 0"
            )
            raise CacheFormatError(msg)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        msg = f"{where}: {node.op_type} '{label}' has scale {scale.ravel()[:4]}; expected > 0"
        raise CacheFormatError(msg)
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    return scale, (axis if scale.ndim else None)


def from_qdq(
    model: str | os.PathLike | ModelProto | OnnxModel,
) -> tuple[dict[str, np.float32], ModelProto]:
    """Return the activation scales of a Q/DQ model and the model with every Q/DQ removed.

    Parameters
    ----------
    model : path, onnx.ModelProto or OnnxModel
        A model with QuantizeLinear -> DequantizeLinear pairs (per-tensor on activations).
        Scales may be float32 or float16 (ModelOpt's default); float16 converts exactly.

    Returns
    -------
    (dict, onnx.ModelProto)
        Activation tensor name -> float32 scale (graph order), and the float model: every
        consumer of a DQ output reads the original tensor again.

    Raises
    ------
    CacheFormatError
        For a non-zero or non-int8 zero point, a per-channel activation scale, Q and DQ
        scales that differ, or one tensor quantized with two different scales.
    """
    onnx = require("onnx", "Q/DQ import")
    from onnx import numpy_helper

    loaded = OnnxModel.of(model)  # constants are read from it; the copy below is edited
    where = str(loaded.path) if loaded.path is not None else "<model>"
    model = loaded.with_weights()
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    replace: dict[str, str] = {}  # DQ output -> tensor it stands for
    new_weights: list[Any] = []
    removed: set[int] = set()
    scales: dict[str, np.float32] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        dq_scale, dq_axis = _qparams(node, loaded, where)
        q = producer.get(node.input[0])
        label = node.name or node.output[0]
        if q is None or q.op_type != "QuantizeLinear":
            if not loaded.is_constant(node.input[0]):
                msg = f"{where}: DequantizeLinear '{label}' reads '{node.input[0]}', not a Q node"
                raise CacheFormatError(msg)
            # Pre-quantized weights: store the dequantized float values instead.
            wq = loaded.constant(node.input[0]).astype(np.float32)
            shape = [1] * wq.ndim
            if dq_axis is not None:
                shape[dq_axis] = -1
            w = (wq * dq_scale.reshape(shape)).astype(np.float32)
            new_weights.append(numpy_helper.from_array(w, node.output[0]))
            removed.add(id(node))
            continue
        q_scale, q_axis = _qparams(q, loaded, where)
        if q_scale.shape != dq_scale.shape or q_scale.tobytes() != dq_scale.tobytes():
            msg = f"{where}: QuantizeLinear and DequantizeLinear '{label}' have different scales"
            raise CacheFormatError(msg)
        source = q.input[0]
        replace[node.output[0]] = source
        removed.update((id(node), id(q)))
        if loaded.is_constant(source):
            continue  # a weight: TensorRT's implicit mode quantizes weights itself
        if q_scale.size != 1:
            msg = (
                f"{where}: activation '{source}' is quantized per channel (axis {q_axis}); "
                "a calibration cache holds one scale per tensor"
            )
            raise CacheFormatError(msg)
        s = np.float32(q_scale.reshape(()))
        if source in scales and scales[source].tobytes() != s.tobytes():
            msg = (
                f"{where}: tensor '{source}' is quantized with two scales, {scales[source]!r} "
                f"and {s!r}; a calibration cache holds one scale per tensor"
            )
            raise CacheFormatError(msg)
        scales[source] = s

    def resolve(name: str) -> str:
        while name in replace:
            name = replace[name]
        return name

    kept = [n for n in graph.node if id(n) not in removed]
    for node in kept:
        for k, name in enumerate(node.input):
            node.input[k] = resolve(name)
    identities = []
    for out in graph.output:
        if out.name in replace:  # keep the graph output's name: copy the float tensor into it
            identities.append(onnx.helper.make_node("Identity", [resolve(out.name)], [out.name]))
    used = {i for n in kept + identities for i in n.input} | {o.name for o in graph.output}
    kept = [n for n in kept if n.op_type != "Constant" or n.output[0] in used]  # old scales
    del graph.node[:]
    graph.node.extend(kept + identities)
    graph.initializer.extend(new_weights)
    keep_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    props = [p for p in model.metadata_props if p.key not in _META_KEYS]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # checker raises ValidationError
        msg = f"{where}: the model without Q/DQ fails onnx.checker: {err}"
        raise CacheFormatError(msg) from err
    return scales, model


def qdq_to_cache(
    model: str | os.PathLike | ModelProto | OnnxModel,
    *,
    trt_version: str | tuple[int, ...],
    algorithm: str | None = None,
) -> tuple[CalibrationCache, ModelProto]:
    """Return a TensorRT calibration cache with the Q/DQ model's activation scales.

    Parameters
    ----------
    model : path or onnx.ModelProto
        The Q/DQ model.
    trt_version : str or tuple
        TensorRT (<= 10) that will read the cache, e.g. ``"8.6"``.
    algorithm : str, optional
        Header word; default: the algorithm calibkit recorded in the model's metadata, else
        ``"EntropyCalibration2"`` (what qdq-translator writes, and what DLA needs).

    Returns
    -------
    (CalibrationCache, onnx.ModelProto)
        The cache (scales bit for bit from the Q nodes) and the float model.
    """
    version = parse_trt_version(trt_version)
    if version[0] >= 11:
        msg = f"TensorRT {version[0]} reads no calibration cache; use the Q/DQ model directly"
        raise InvalidInputError(msg)
    if algorithm is not None and algorithm not in ALGORITHMS:
        msg = f"unknown algorithm {algorithm!r}; choose one of {list(ALGORITHMS)}"
        raise InvalidInputError(msg)
    model = OnnxModel.of(model)
    if algorithm is None:
        recorded = {p.key: p.value for p in model.proto.metadata_props}.get(META_ALGORITHM)
        algorithm = recorded if recorded in ALGORITHMS else "EntropyCalibration2"
    scales, float_model = from_qdq(model)
    return CalibrationCache(version, algorithm, scales), float_model
