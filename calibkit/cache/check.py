"""Check a calibration cache against the network it is meant for.

What is reported, and why it matters to TensorRT (TRT_CALIBRATION.md §5.5):

- model tensors with no cache line: TensorRT logs "Missing scale and zero-point for tensor X" and
  runs the layers around X in FP16/FP32;
- cache names not in the model: TensorRT-internal tensors (``(Unnamed Layer* N) [...]``,
  ``ONNXTRT_*``, ``<constant>_output``) are normal; anything else suggests another model version;
- zero scales (the tensor was all zeros during calibration) and infinite scales (it overflowed);
- equal scales across a node: TensorRT shares a scale across pooling (and, up to 8.0, Concat),
  and identical data (Reshape, Transpose) gives identical scales; elsewhere it is a hint worth a
  look.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._optional import require
from ..onnx.graph import Graph
from .format import CalibrationCache

__all__ = ["CheckReport", "check_cache", "read_model_graph"]

_TRT_INTERNAL = re.compile(r"\(Unnamed (Layer|ITensor)\* \d+\).*|ONNXTRT_.*")
_OUTPUT_SUFFIX = re.compile(r"_output(_\d+)?$")
_FLOAT_TYPES = {1, 10, 11, 16}  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass
class CheckReport:
    """Findings of :func:`check_cache`; each list is in model or file order."""

    missing: list[str] = field(default_factory=list)
    trt_internal: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    zero: list[str] = field(default_factory=list)
    infinite: list[str] = field(default_factory=list)
    shared: list[dict] = field(default_factory=list)  # {"op", "node", "input", "output"}

    @property
    def ok(self) -> bool:
        """True when nothing is missing or unknown and every scale is finite and non-zero."""
        return not (self.missing or self.unknown or self.zero or self.infinite)

    def to_dict(self) -> dict:
        """Plain data (for ``--json``)."""
        return {
            "ok": self.ok,
            "missing": self.missing,
            "trt_internal": self.trt_internal,
            "unknown": self.unknown,
            "zero": self.zero,
            "infinite": self.infinite,
            "shared": self.shared,
        }


def read_model_graph(path: str | Path) -> tuple[Graph, set[str] | None]:
    """Read an ONNX model (needs ``onnx``) or a ``graph.json``; return the graph and float tensors.

    The second item is the set of tensors known to be floating point (from ONNX shape
    inference), or None when types are unknown (``graph.json``).
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return Graph.from_json(path), None
    onnx = require("onnx", "Checking a cache against an ONNX model")
    model = onnx.load(str(path), load_external_data=False)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is a refinement; fall back to declared types
        inferred = model
    g = inferred.graph
    float_tensors = {
        v.name
        for v in [*g.input, *g.value_info, *g.output]
        if v.type.tensor_type.elem_type in _FLOAT_TYPES
    }
    return Graph.from_onnx(model), float_tensors


def check_cache(
    cache: CalibrationCache, graph: Graph, *, float_tensors: set[str] | None = None
) -> CheckReport:
    """Compare `cache` with `graph` (see the module docstring for what is reported).

    Parameters
    ----------
    float_tensors : set of str, optional
        Tensors known to be floating point; others (shapes, indices, masks) are never reported
        missing. Without it every graph input and node output counts.
    """
    report = CheckReport()
    model = graph.tensors
    model_set = set(model) | set(graph.initializers)
    # TensorRT names tensors it creates after the ONNX tensor or node they come from
    owners = model_set | {node.name for node in graph.nodes if node.name}
    for name in model:
        if name not in cache.scales and (float_tensors is None or name in float_tensors):
            report.missing.append(name)
    for name, scale in cache.scales.items():
        if name not in model_set:
            base = _OUTPUT_SUFFIX.sub("", name)
            internal = _TRT_INTERNAL.fullmatch(name) or (base != name and base in owners)
            (report.trt_internal if internal else report.unknown).append(name)
        if scale == 0:
            report.zero.append(name)
        elif np.isinf(scale):
            report.infinite.append(name)
    for node in graph.nodes:
        for src in dict.fromkeys(node.inputs):
            for dst in node.outputs:
                if src in cache.scales and dst in cache.scales:
                    if cache.scales[src] == cache.scales[dst]:
                        entry = {"op": node.op_type, "node": node.label, "input": src}
                        report.shared.append({**entry, "output": dst})
    return report
