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

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..onnx.graph import Graph
from .format import CalibrationCache

if TYPE_CHECKING:
    from ..onnx.model import OnnxModel

__all__ = ["CheckReport", "check_cache", "read_model_graph"]


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

    The second item is the set of tensors known to be floating point (from the model's one ONNX
    shape inference, :class:`calibkit.onnx.model.OnnxModel`), or None when types are unknown
    (``graph.json``).
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return Graph.from_json(path), None
    from ..onnx.model import OnnxModel

    model = OnnxModel.load(path)
    return model.graph, set(model.float_tensors)


def check_cache(
    cache: CalibrationCache,
    graph: Graph | OnnxModel,
    *,
    float_tensors: set[str] | frozenset[str] | None = None,
) -> CheckReport:
    """Compare `cache` with `graph` (see the module docstring for what is reported).

    Parameters
    ----------
    graph : Graph or OnnxModel
        The network; an :class:`~calibkit.onnx.model.OnnxModel` also gives `float_tensors`.
    float_tensors : set of str, optional
        Tensors known to be floating point; others (shapes, indices, masks) are never reported
        missing. Without it every graph input and node output counts.
    """
    from ..rules.names import trt_internal_names

    if not isinstance(graph, Graph):  # an OnnxModel: its graph and its inferred types
        float_tensors = graph.float_tensors if float_tensors is None else float_tensors
        graph = graph.graph
    report = CheckReport()
    model = graph.tensors
    model_set = set(model) | set(graph.initializers)
    for name in model:
        if name not in cache.scales and (float_tensors is None or name in float_tensors):
            report.missing.append(name)
    internal = trt_internal_names((n for n in cache.scales if n not in model_set), graph)
    for name, scale in cache.scales.items():
        if name not in model_set:
            (report.trt_internal if name in internal else report.unknown).append(name)
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
