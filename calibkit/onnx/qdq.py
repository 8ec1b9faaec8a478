"""Write TensorRT INT8 scales into an ONNX model as QuantizeLinear / DequantizeLinear pairs.

TensorRT 11 has no calibrators: INT8 is only reachable through explicit Q/DQ nodes. This module
turns a calibration cache (or calibkit's own amax values) into such a model, following
TensorRT's ``IQuantizeLayer`` semantics (TRT_CALIBRATION.md §8.2): ``q = clamp(round_half_even(
x / s), -128, 127)``, zero point int8 0, scale strictly positive; activations per tensor with
the cache scale itself, weights per output channel with ``max|W_c| / 127``.

Placement (which tensors get a Q/DQ pair) follows TensorRT's "Q/DQ layer-placement
recommendations" (developer guide, explicit quantization):

- ``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul``: quantize all inputs of weighted operations
  (activations with the cache scale, initializer weights per channel). Outputs are not quantized.
- ``Add``: "quantize the residual input in skip connections". TensorRT fuses an Add into the
  weighted op that produces one of its inputs; the *other* input (the residual) gets Q/DQ, so the
  fused kernel can run and write INT8. An Add with a constant input (a bias) or with no weighted
  producer is left alone: an unfused INT8 Add needs INT8 on every input and on its output.
- ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``: the input is quantized. MaxPool commutes
  with Q/DQ, AveragePool is a "quantizable layer" fused with its input DQ; both then run in INT8.
- ``Concat`` (opt-in): every input gets its own Q/DQ, and only when every input has a scale.
  TensorRT's implicit mode gave concat inputs their own scales from 8.5 on (the shared caches'
  "no rule C"), so this mirrors what the cache was calibrated for; it is off by default because
  the guide asks to "be conservative" with Q/DQ on layers that are not weighted.

Each tensor gets one Q/DQ pair, shared by all the consumers that quantize it. A tensor whose
scale is missing, 0, inf or NaN stays float; :class:`QdqReport` lists it with the reason.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .. import __version__
from .._optional import require
from ..errors import CacheFormatError, InvalidInputError
from ..rules.names import trt_internal_names
from ..scale import FloatLike
from .graph import Node
from .model import OnnxModel

if TYPE_CHECKING:
    import os

    from onnx import ModelProto, NodeProto, TensorProto

    from ..cache.format import CalibrationCache
    from ..pipeline import ScaleResult

__all__ = [
    "DEFAULT_OP_TYPES",
    "MIN_OPSET",
    "SUPPORTED_OP_TYPES",
    "FloatTensor",
    "QdqReport",
    "load_model",
    "save_model",
    "shift_numeric_names",
    "to_qdq",
    "weight_scales",
    "write_qdq",
]

_S = TypeVar("_S", bound=FloatLike)

logger = logging.getLogger(__name__)

# annotated: modules in an import cycle with this one read them before inference could
WEIGHTED_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
POOL_OP_TYPES: tuple[str, ...] = ("MaxPool", "AveragePool", "GlobalAveragePool")
DEFAULT_OP_TYPES: tuple[str, ...] = (*WEIGHTED_OP_TYPES, "Add", *POOL_OP_TYPES)
SUPPORTED_OP_TYPES: tuple[str, ...] = (*DEFAULT_OP_TYPES, "Concat")
#: QuantizeLinear's ``axis`` attribute (per-channel) exists from opset 13.
MIN_OPSET = 13
#: Ops that only move data: output values equal input values, so TensorRT's scales are equal.
SHAPE_OP_TYPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose")
# Ops TensorRT fuses into the weighted op before an Add (bias add with a constant, folded BN).
_FUSED_EPILOGUE = ("BatchNormalization",)
#: Metadata keys written into the Q/DQ model.
META_VERSION: str = "calibkit_version"
META_HEADER: str = "calibkit_source_header"
META_ALGORITHM: str = "calibkit_algorithm"
_FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass
class FloatTensor:
    """A tensor that a quantized op wanted in INT8 but that stays float, and why."""

    name: str
    reason: str
    consumers: list[str] = field(default_factory=list)


@dataclass
class QdqReport:
    """What :func:`to_qdq` quantized, what it left in float, and why.

    Attributes
    ----------
    activations : dict
        Activation tensor -> float32 scale of its Q/DQ pair.
    consumers : dict
        Activation tensor -> names of the nodes that read its DequantizeLinear output.
    inherited : dict
        Activation tensor -> tensor whose scale it took (``inherit_scales=True`` only).
    weights : dict
        Weight initializer -> ``(axis, number of channels)`` of its per-channel scales.
    zero_weight_channels : dict
        Weight initializer -> number of all-zero channels (given scale 1.0: any scale keeps 0).
    float_tensors : list of FloatTensor
        Tensors left in float although a quantized op reads them.
    float_nodes : dict
        Node (of a requested op type) -> why it runs without INT8 inputs although the placement
        rules quantize it (excluded, or an input has no valid scale).
    skipped_nodes : dict
        Node (of a requested op type) -> why the placement rules do not apply to it (an Add
        with a bias constant, an Add with no weighted producer, a weight computed at run time).
    unused_scales : dict
        Cache name -> why it got no Q/DQ pair (not in the model, or not read by a quantized op).
    source : dict
        Metadata written into the model (calibkit version, cache header, algorithm).
    warnings : list of str
        Problems that make the result doubtful (e.g. numeric names shifted between exports).
    """

    activations: dict[str, float] = field(default_factory=dict)
    consumers: dict[str, list[str]] = field(default_factory=dict)
    inherited: dict[str, str] = field(default_factory=dict)
    weights: dict[str, tuple[int, int]] = field(default_factory=dict)
    zero_weight_channels: dict[str, int] = field(default_factory=dict)
    float_tensors: list[FloatTensor] = field(default_factory=list)
    float_nodes: dict[str, str] = field(default_factory=dict)
    skipped_nodes: dict[str, str] = field(default_factory=dict)
    unused_scales: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (scales as floats and as cache hex)."""
        hexes = {
            n: format(int(np.float32(s).view(np.uint32)), "x") for n, s in self.activations.items()
        }
        return {
            "summary": self.summary(),
            "source": dict(self.source),
            "activations": {
                name: {
                    "scale": float(scale),
                    "hex": hexes[name],
                    "consumers": self.consumers.get(name, []),
                    **({"inherited_from": self.inherited[name]} if name in self.inherited else {}),
                }
                for name, scale in self.activations.items()
            },
            "weights": {n: {"axis": a, "channels": c} for n, (a, c) in self.weights.items()},
            "zero_weight_channels": dict(self.zero_weight_channels),
            "float_tensors": [vars(t) for t in self.float_tensors],
            "float_nodes": dict(self.float_nodes),
            "skipped_nodes": dict(self.skipped_nodes),
            "unused_scales": dict(self.unused_scales),
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        """Return a one-line count of quantized and float tensors."""
        not_in_model = sum(r.startswith("not a tensor") for r in self.unused_scales.values())
        return (
            f"{len(self.activations)} activation tensors and {len(self.weights)} weights "
            f"quantized; {len(self.float_tensors)} tensors read by quantizable ops stay float; "
            f"{len(self.float_nodes)} nodes that the rules quantize keep float inputs; "
            f"{not_in_model} cache names are not tensors of the model"
        )

    def write(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON, atomically."""
        import json

        from ..atomic import write_atomic

        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        write_atomic(path, text.encode("utf-8"))


# -- model I/O -------------------------------------------------------------------------------
def load_model(model: str | os.PathLike | ModelProto | OnnxModel) -> ModelProto:
    """Return a copy of `model` (a path, ``ModelProto`` or ``OnnxModel``) with its external data.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        For a path that is not a file.
    ModelFormatError
        For a file that is not an ONNX model.
    """
    return OnnxModel.of(model).with_weights()


def save_model(path: str | os.PathLike, model: ModelProto) -> None:
    """Write `model` to `path` atomically (models over 2 GB are not supported)."""
    from ..atomic import write_atomic

    write_atomic(path, model.SerializeToString())


def _opset(model: ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _ensure_opset(model: ModelProto, where: str) -> ModelProto:
    """Return `model` at opset >= 13, converting with onnx.version_converter when lower."""
    onnx = require("onnx", "Q/DQ export")
    opset = _opset(model)
    if opset >= MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(converted)
    except Exception as err:  # the converter raises bare RuntimeErrors from C++
        msg = (
            f"{where}: opset {opset} is below {MIN_OPSET} (needed for per-channel Q/DQ) and "
            f"onnx.version_converter could not upgrade it: {err}; re-export the model at "
            f"opset >= {MIN_OPSET}"
        )
        raise CacheFormatError(msg) from err
    logger.info("%s: upgraded opset %d -> %d", where, opset, MIN_OPSET)
    return converted


# -- scales ----------------------------------------------------------------------------------
def weight_scales(weight: np.ndarray, axis: int | None) -> np.ndarray:
    """Return the float32 symmetric INT8 scales ``fl32(max|W_c|) / 127`` along `axis`.

    Parameters
    ----------
    weight : ndarray
        Float weights.
    axis : int or None
        Output-channel axis; None for one per-tensor scale (returned with shape ``()``).

    Returns
    -------
    ndarray
        float32 scales; all-zero channels get 0 here (the caller replaces them).
    """
    w = np.abs(np.asarray(weight, dtype=np.float32))
    if axis is None:
        amax = w.max(initial=0.0)
    else:
        amax = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).max(axis=1, initial=0.0)
    return (np.asarray(amax, np.float32) / np.float32(127)).astype(np.float32)


def _scale_problem(scale: FloatLike) -> str | None:
    s = float(scale)
    if math.isnan(s):
        return "cache scale is NaN"
    if math.isinf(s):
        return "cache scale is inf (TensorRT saw inf in this tensor)"
    if s == 0:
        return "cache scale is 0 (an all-zero tensor); a Q/DQ scale must be > 0"
    if s < 0:
        return f"cache scale {s} is negative"
    return None


def _weight_axis(node: Node, index: int, weight: np.ndarray) -> int | None:
    """Output-channel axis of a weight input, or None for per-tensor."""
    if node.op_type == "Conv":
        return 0  # [M, C/group, k...]
    if node.op_type == "ConvTranspose":
        return 1  # [C, M/group, k...]: per (M/group) channel, shared across groups
    if node.op_type == "Gemm":
        trans_b = node.attrs.get("transB", 0)
        return 0 if trans_b else 1  # B is [N, K] with transB, else [K, N]
    if node.op_type == "MatMul" and index == 1 and weight.ndim >= 2:
        return weight.ndim - 1  # [..., K, N]: the output feature is the last axis
    return None


# -- the graph -------------------------------------------------------------------------------
class _Placement:
    """The lookups Q/DQ placement needs, over the one graph and types of an OnnxModel.

    ``nodes[i]`` is the plain-data view of ``model.proto.graph.node[i]``; nothing is re-read.
    """

    def __init__(self, model: OnnxModel):
        self.model = model
        graph = model.graph
        self.nodes = graph.nodes
        self.initializers = graph.initializers
        self.constants = model.constant_names
        self.producer = graph.producers()
        self.order = {out: i for i, node in enumerate(self.nodes) for out in node.outputs if out}
        self.graph_inputs = set(graph.inputs)
        self.elem_type = model.types

    def is_activation(self, name: str) -> bool:
        return bool(name) and name not in self.constants

    def weighted_producer(self, name: str) -> Node | None:
        """Return the weighted op whose output reaches `name` through fused epilogues, or None."""
        node = self.producer.get(name)
        for _ in range(4):
            if node is None:
                return None
            if node.op_type in WEIGHTED_OP_TYPES:
                return node
            if node.op_type in _FUSED_EPILOGUE or (
                node.op_type == "Add" and any(i in self.constants for i in node.inputs)
            ):
                source = [i for i in node.inputs if i and i not in self.constants]
                node = self.producer.get(source[0]) if len(source) == 1 else None
                continue
            return None
        return None


def _node_label(node: Node) -> str:
    return node.name or f"<{node.op_type} -> {node.outputs[0] if node.outputs else ''}>"


def _activation_requests(node: Node, g: _Placement) -> tuple[list[str], str | None]:
    """Activation inputs `node` needs quantized, or ([], reason it is not quantizable)."""
    op = node.op_type
    inputs = list(node.inputs)
    if op in ("Conv", "ConvTranspose"):
        if len(inputs) < 2 or inputs[1] not in g.initializers:
            return [], "weight is not an initializer (computed at run time)"
        return [inputs[0]], None
    if op in ("Gemm", "MatMul"):
        acts = [t for t in inputs[:2] if g.is_activation(t)]
        if not acts:
            return [], "both inputs are constants"
        folded = [t for t in inputs[:2] if t in g.constants and t not in g.initializers]
        if folded:
            return [], f"weight '{folded[0]}' is a Constant node output, not an initializer"
        if op == "Gemm" and inputs[0] not in acts:
            return [], "input A is a constant; only B may be a weight"
        return acts, None
    if op in POOL_OP_TYPES:
        return [inputs[0]], None
    if op == "Concat":
        acts = [t for t in inputs if g.is_activation(t)]
        if len(acts) != len([t for t in inputs if t]):
            return [], "a Concat input is a constant"
        return acts, None
    if op == "Add":
        if len(inputs) != 2 or not all(g.is_activation(t) for t in inputs):
            return [], "Add with a constant input (a bias: TensorRT fuses it into its producer)"
        fused = [g.weighted_producer(t) for t in inputs]
        if fused[0] is None and fused[1] is None:
            return [], "not a residual Add: no input comes from Conv/ConvTranspose/Gemm/MatMul"
        if fused[0] is not None and fused[1] is not None:
            # Both branches end in weighted ops: TensorRT fuses the Add into the later one.
            later = 0 if g.order[fused[0].outputs[0]] > g.order[fused[1].outputs[0]] else 1
        else:
            later = 0 if fused[0] is not None else 1
        return [inputs[1 - later]], None
    return [], f"op type {op} is not quantized by calibkit"


def _missing_reason(
    name: str, g: _Placement, scales: Mapping[str, FloatLike]
) -> tuple[str, str | None]:
    """Why `name` has no scale, and a tensor with the same data that has one (or None)."""
    node = g.producer.get(name)
    if node is not None and node.op_type in SHAPE_OP_TYPES and node.inputs:
        source = node.inputs[0]
        if source in scales and _scale_problem(scales[source]) is None:
            why = (
                f"missing from the cache; its producer {node.op_type} '{_node_label(node)}' only "
                f"moves data (TensorRT removes such layers, so it wrote no line), and its input "
                f"'{source}' has a scale: pass inherit_scales=True (--inherit-scales) to use it"
            )
            return why, source
    if name in g.graph_inputs:
        return "network input missing from the cache", None
    return "missing from the cache (no line for this name: renamed or fused by TensorRT?)", None


def _unused_reason(name: str, g: _Placement, internal: set[str]) -> str:
    if name in g.constants:
        return "a constant of the model (weights get per-channel scales instead)"
    if name in g.producer or name in g.graph_inputs:
        return "not read by a quantized op (no Q/DQ needed; scale kept only in the cache)"
    if name in internal:
        return "not a tensor of the model: a TensorRT-internal layer output (no ONNX name)"
    return "not a tensor of the model (renamed by TensorRT or from another export?)"


# -- building the Q/DQ graph -----------------------------------------------------------------
class _Names:
    """Fresh tensor / node names that collide with nothing in the model."""

    def __init__(self, model: ModelProto):
        graph = model.graph
        self.used = {t.name for t in graph.initializer}
        self.used.update(i.name for i in graph.input)
        self.used.update(o.name for o in graph.output)
        for node in graph.node:
            self.used.update(node.output)
            self.used.update(node.input)
            self.used.add(node.name)

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _qdq_nodes(
    tensor: str, scale: np.ndarray | np.float32, axis: int | None, names: _Names, tag: str
) -> tuple[list[TensorProto], list[NodeProto], str]:
    """Return initializers, QuantizeLinear -> DequantizeLinear nodes, DQ output for a tensor."""
    from onnx import helper, numpy_helper

    scale = np.asarray(scale, np.float32)
    scale_name = names(f"{tensor}_{tag}scale")
    zp_name = names(f"{tensor}_{tag}zero_point")
    inits = [
        numpy_helper.from_array(scale, scale_name),
        numpy_helper.from_array(np.zeros(scale.shape, np.int8), zp_name),
    ]
    # Any: typed int, make_node's stub would take ``**attrs`` as filling its str parameters
    attrs: dict[str, Any] = {} if axis is None else {"axis": axis}
    q_out, dq_out = (
        names(f"{tensor}_QuantizeLinear_Output"),
        names(f"{tensor}_DequantizeLinear_Output"),
    )
    q = helper.make_node(
        "QuantizeLinear",
        [tensor, scale_name, zp_name],
        [q_out],
        names(f"{tensor}_QuantizeLinear"),
        **attrs,
    )
    dq = helper.make_node(
        "DequantizeLinear",
        [q_out, scale_name, zp_name],
        [dq_out],
        names(f"{tensor}_DequantizeLinear"),
        **attrs,
    )
    return inits, [q, dq], dq_out


def _compile_exclude(exclude_nodes: str | re.Pattern | None) -> re.Pattern | None:
    if exclude_nodes is None or isinstance(exclude_nodes, re.Pattern):
        return exclude_nodes
    try:
        return re.compile(exclude_nodes)
    except re.error as err:
        msg = f"exclude_nodes {exclude_nodes!r} is not a valid regular expression: {err}"
        raise InvalidInputError(msg) from err


def _check_op_types(op_types: Iterable[str]) -> tuple[str, ...]:
    if isinstance(op_types, str):
        op_types = [t for t in re.split(r"[,\s]+", op_types) if t]
    op_types = tuple(op_types)
    unknown = sorted(set(op_types) - set(SUPPORTED_OP_TYPES))
    if unknown:
        msg = f"unknown op types {unknown}; choose from {list(SUPPORTED_OP_TYPES)}"
        raise InvalidInputError(msg)
    if not op_types:
        msg = f"op_types is empty; choose from {list(SUPPORTED_OP_TYPES)}"
        raise InvalidInputError(msg)
    return op_types


def to_qdq(
    model: str | os.PathLike | ModelProto | OnnxModel,
    scales: Mapping[str, FloatLike],
    *,
    exclude_nodes: str | re.Pattern | None = None,
    op_types: Iterable[str] = DEFAULT_OP_TYPES,
    inherit_scales: bool = False,
    quantize_weights: bool = True,
    source_header: str | None = None,
    algorithm: str | None = None,
) -> tuple[ModelProto, QdqReport]:
    """Return `model` with Q/DQ pairs for `scales`, and a report of what stayed float.

    Parameters
    ----------
    model : path, onnx.ModelProto or OnnxModel
        The float model (not modified; opset < 13 is upgraded in the copy). An
        :class:`~calibkit.onnx.model.OnnxModel` is used as loaded: its graph, and the types of
        its one shape inference, also for the opset-upgraded copy.
    scales : mapping
        Tensor name -> TensorRT float32 scale (``CalibrationCache.scales``); use
        ``scale_from_amax`` for amax values.
    exclude_nodes : str or re.Pattern, optional
        Nodes whose name matches (``re.search``) keep float inputs.
    op_types : iterable of str
        Op types whose inputs are quantized (see the module docstring for the rules).
    inherit_scales : bool
        Give a tensor without a cache line the scale of the input of its producer when that
        producer only moves data (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Transpose).
    quantize_weights : bool
        Add per-channel weight Q/DQ to the weights of quantized Conv/ConvTranspose/Gemm/MatMul.
    source_header, algorithm : str, optional
        Recorded in the model's metadata (the cache header line, the calibration algorithm).

    Returns
    -------
    (onnx.ModelProto, QdqReport)

    Raises
    ------
    ValueError
        For unknown op types, a bad regex, or non-finite weights.
    CacheFormatError
        If the model cannot be upgraded to opset 13 or the result fails ``onnx.checker``.
    """
    onnx = require("onnx", "Q/DQ export")
    op_types = _check_op_types(op_types)
    exclude = _compile_exclude(exclude_nodes)
    source = OnnxModel.of(model)
    where = str(source.path) if source.path is not None else "<model>"
    copy = source.with_weights()
    model = _ensure_opset(copy, where)
    # the copy has the source's nodes in the same order: its graph and types are the source's
    g = _Placement(source if model is copy else source.derived(model))
    report = QdqReport()

    # 1. Decide, node by node, which activation inputs get Q/DQ.
    wanted: dict[str, list] = {}  # tensor -> [(node index, node, input index)]
    weight_uses: list[tuple[int, Node, int]] = []
    float_reasons: dict[str, str] = {}
    for index, node in enumerate(g.nodes):
        if node.op_type not in op_types:
            continue
        label = _node_label(node)
        if exclude is not None and exclude.search(label):
            report.float_nodes[label] = f"excluded by exclude_nodes {exclude.pattern!r}"
            continue
        acts, why = _activation_requests(node, g)
        if why is not None:
            report.skipped_nodes[label] = why
            continue
        bad = []
        for t in acts:
            if t in float_reasons:
                bad.append(t)
                continue
            dtype = g.elem_type.get(t, _FLOAT)
            if dtype != _FLOAT:
                float_reasons[t] = (
                    f"tensor type is {onnx.TensorProto.DataType.Name(dtype)}, not FLOAT"
                )
            elif t not in scales:
                reason, same = _missing_reason(t, g, scales)
                if inherit_scales and same is not None:
                    report.inherited[t] = same
                    continue
                float_reasons[t] = reason
            elif (problem := _scale_problem(scales[t])) is not None:
                float_reasons[t] = problem
            else:
                continue
            bad.append(t)
        if bad:
            report.float_nodes[label] = "input " + ", ".join(f"'{t}'" for t in bad) + " stays float"
            for t in bad:
                _add_float(report, t, float_reasons[t], label)
            continue
        for t in acts:
            wanted.setdefault(t, [])
            wanted[t].extend((index, node, i) for i, name in enumerate(node.inputs) if name == t)
        if quantize_weights and node.op_type in WEIGHTED_OP_TYPES:
            weight_uses.extend(
                (index, node, i) for i, name in enumerate(node.inputs[:2]) if name in g.initializers
            )

    # 2. Build one Q/DQ pair per activation tensor and per (weight, axis).
    names = _Names(model)
    new_inits: list[TensorProto] = []
    head_nodes: list[NodeProto] = []
    after: dict[int, list[NodeProto]] = {}  # producer's index -> its Q/DQ nodes
    rewire: dict[tuple[int, int], str] = {}  # (node index, input index) -> new input name
    for tensor, uses in wanted.items():
        scale = np.float32(scales[report.inherited.get(tensor, tensor)])
        inits, nodes, dq_out = _qdq_nodes(tensor, scale, None, names, "")
        new_inits += inits
        if tensor in g.producer:
            after.setdefault(g.order[tensor], []).extend(nodes)
        else:
            head_nodes += nodes
        report.activations[tensor] = float(scale)
        report.consumers[tensor] = sorted({_node_label(n) for _, n, _ in uses})
        for index, _, i in uses:
            rewire[(index, i)] = dq_out
    done: dict[tuple[str, int | None], str] = {}
    for index, node, i in weight_uses:
        wname = node.inputs[i]
        if g.model.constant_type(wname) != _FLOAT:
            report.float_nodes[_node_label(node)] = f"weight '{wname}' is not FLOAT; kept as is"
            continue
        w = g.model.constant(wname)
        axis = _weight_axis(node, i, w)
        key = (wname, axis)
        if key not in done:
            if not np.isfinite(w).all():
                msg = f"weight '{wname}' of node '{_node_label(node)}' holds inf or NaN"
                raise InvalidInputError(msg)
            s = weight_scales(w, axis)
            zero = int(np.count_nonzero(s == 0))
            if zero:
                report.zero_weight_channels[wname] = zero
            s = np.where(s == 0, np.float32(1.0), s).astype(np.float32)
            inits, nodes, dq_out = _qdq_nodes(wname, s, axis, names, "weight_")
            new_inits += inits
            head_nodes += nodes
            done[key] = dq_out
            report.weights[wname] = (-1 if axis is None else axis, int(s.size))
        rewire[(index, i)] = done[key]

    # 3. Assemble: rewire consumers, insert Q/DQ right after each producer.
    ordered = list(head_nodes)
    for i, node in enumerate(list(model.graph.node)):
        for k in range(len(node.input)):
            new = rewire.get((i, k))
            if new is not None:
                node.input[k] = new
        ordered.append(node)
        ordered.extend(after.get(i, []))
    graph = model.graph
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(new_inits)

    # 4. Report what the cache held that the model did not use.
    internal = trt_internal_names(scales, g.model.graph)
    for name in scales:
        if name not in report.activations:
            report.unused_scales[name] = _unused_reason(name, g, internal)
    if scales and not any(n in g.producer or n in g.graph_inputs for n in scales):
        # Not one name in common: the cache belongs to another model (or another export).
        msg = (
            f"{where}: none of the {len(scales)} scales names a tensor of this model (e.g. "
            f"{next(iter(scales))!r}); is the cache for another model?"
        )
        raise CacheFormatError(msg)
    shift = _numeric_shift(g, scales)
    if shift is not None:
        report.warnings.append(shift)
        logger.warning("%s: %s", where, shift)
    report.source = {META_VERSION: __version__}
    if source_header is not None:
        report.source[META_HEADER] = source_header
    if algorithm is not None:
        report.source[META_ALGORITHM] = algorithm
    _set_metadata(model, report.source)
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # checker raises ValidationError
        msg = f"{where}: the Q/DQ model fails onnx.checker: {err}"
        raise CacheFormatError(msg) from err
    logger.info("%s: %s", where, report.summary())
    return model, report


def _numeric_shift(g: _Placement, scales: Mapping[str, FloatLike]) -> str | None:
    """Warn when numeric tensor names match the cache better after a constant shift.

    Old PyTorch exports name tensors by number; another export of the same network can number
    them differently, and then the names still match -- the wrong tensors.
    """
    model = {int(n) for n in [*g.producer, *g.graph_inputs] if n.isdigit()}
    cache = {int(n) for n in scales if n.isdigit()}
    if len(model) < 4 or len(cache) < 4:
        return None
    hits = {k: len({m + k for m in model} & cache) for k in range(-64, 65)}
    best = max(hits, key=lambda k: (hits[k], -abs(k)))
    if best == 0 or hits[best] <= hits[0]:
        return None
    return (
        f"numeric tensor names match the cache best when shifted by {best:+d} ({hits[best]} of "
        f"{len(model)} names) rather than as they are ({hits[0]}): the cache was probably "
        "written for another export of this network, so scales given to numeric names may "
        "belong to other tensors; check, then convert with "
        f"shift_numeric_names(scales, {-best}) (--shift-numeric-names {-best})"
    )


def shift_numeric_names(scales: Mapping[str, _S], offset: int) -> dict[str, _S]:
    """Return `scales` with every purely numeric name ``n`` renamed to ``n + offset``.

    For a cache written for another export of the same network whose tensor numbering is
    shifted (see :attr:`QdqReport.warnings`). Other names are kept.

    Examples
    --------
    >>> shift_numeric_names({"101": 0.5, "input0": 0.25}, -8)
    {'93': 0.5, 'input0': 0.25}
    """
    return {(str(int(n) + offset) if n.isdigit() else n): s for n, s in scales.items()}


def _add_float(report: QdqReport, name: str, reason: str, consumer: str) -> None:
    for entry in report.float_tensors:
        if entry.name == name:
            entry.consumers.append(consumer)
            return
    report.float_tensors.append(FloatTensor(name, reason, [consumer]))


def _set_metadata(model: ModelProto, values: Mapping[str, str]) -> None:
    keep = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in values.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, str(value)


def cache_header(cache: CalibrationCache) -> str:
    """Return the header line a cache is written with (``TRT-8601-EntropyCalibration2``)."""
    return cache.to_bytes().split(b"\n", 1)[0].decode("utf-8").rstrip("\r")


def write_qdq(
    path: str | os.PathLike,
    model: str | os.PathLike | ModelProto,
    cache: CalibrationCache | Mapping[str, FloatLike] | ScaleResult,
    *,
    report_path: str | os.PathLike | None = None,
    **options: Any,
) -> QdqReport:
    """Write the Q/DQ model for `cache` to `path`.

    `cache` is a CalibrationCache, a name -> scale mapping, or the scale pipeline's
    :class:`~calibkit.pipeline.ScaleResult` (statistics + any selector: the scales the cache of
    the same selection would hold, bit for bit). Keyword options are those of :func:`to_qdq`;
    the header and algorithm are taken from a CalibrationCache or ScaleResult. The report is
    returned and, with `report_path`, written as JSON.

    Examples
    --------
    >>> import calibkit as ck  # doctest: +SKIP
    >>> cache = ck.read_cache("model.cache")  # doctest: +SKIP
    >>> report = ck.write_qdq("model.qdq.onnx", "model.onnx", cache)  # doctest: +SKIP
    >>> result = ck.scales_from_stats("model.stats.npz", "percentile:99.99")  # doctest: +SKIP
    >>> report = ck.write_qdq("model.qdq.onnx", "model.onnx", result)  # doctest: +SKIP
    """
    from ..cache.format import CalibrationCache
    from ..pipeline import ScaleResult

    scales: Mapping[str, FloatLike]
    if isinstance(cache, ScaleResult):
        options.setdefault("source_header", f"scale pipeline {cache.selector.spec}")
        options.setdefault("algorithm", cache.header_algorithm)
        scales = cache.scales()
    elif isinstance(cache, CalibrationCache):
        options.setdefault("source_header", cache_header(cache))
        options.setdefault("algorithm", cache.algorithm)
        scales = cache.scales
    else:
        scales = cache
    qdq_model, report = to_qdq(model, scales, **options)
    if not report.activations:
        # Writing a "Q/DQ model" without one activation Q/DQ is never what was asked for.
        msg = (
            f"{model if not hasattr(model, 'graph') else '<model>'}: no activation quantized: "
            f"{len(scales)} scales, but no quantizable op reads a tensor that has one (see "
            f"op_types / exclude_nodes); {path} not written"
        )
        raise CacheFormatError(msg)
    save_model(Path(path), qdq_model)
    if report_path is not None:
        report.write(report_path)
    return report
