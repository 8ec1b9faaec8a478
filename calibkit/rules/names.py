"""Which ONNX tensors get a line in TensorRT's calibration cache, and under what name.

TensorRT names cache lines after its network tensors, which its ONNX parser creates from the
ONNX graph (TRT_CALIBRATION.md §5.4; ``../shared/testdata/onnx_cache_pairs/README.md``):

- graph inputs and node outputs keep their ONNX names;
- shape computations (``Shape`` and everything computed from shapes and constants only) and
  integer tensors get no line; a ``Reshape`` to the shape its input already has is removed and
  its output gets no line (8.4.1 pair);
- constants that feed an elementwise layer (Add, Sub, Mul, Div, Pow, Max, Min, PRelu, ...) are
  materialised and calibrated like activations: in the 8.4.1 Entropy2 pair each of 8 constants
  has the scale of an activation whose one batch holds the weights (``max|w|·(1 + 2⁻¹²)/127``);
  convolution and normalisation weights are layer weights and get no line. TensorRT 10 names a
  constant ``<ONNX name>_output``; earlier versions ``(Unnamed Layer* N) [Constant]_output``,
  whose layer number N calibkit cannot know. A constant of lower rank than the other operand is
  broadcast through a Shuffle whose output (``(Unnamed Layer* N) [Shuffle]_output``, TensorRT 10
  ``ONNXTRT_Broadcast[_N]_output``) holds the same values under an unknowable name;
- TensorRT 10 writes a second line ``<node name>_output`` for each Softmax, with the Softmax
  output's values, and an ``ONNXTRT_flattenTensor[_N]_output`` line for its input (unknowable).

:func:`trt_cache_names` lists the lines calibkit can write (`CacheNames.lines`, with the ONNX
tensor whose values give each scale) and reports the ones it cannot name (`CacheNames.unknown`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..onnx.graph import Graph, Node
from ..onnx.model import FLOAT_TYPES, OnnxModel

if TYPE_CHECKING:
    import onnx

__all__ = [
    "ELEMENTWISE_OPS",
    "TRT_INTERNAL_NAME",
    "CacheLine",
    "CacheNames",
    "UnknownLine",
    "constant_values",
    "trt_amax",
    "trt_cache_names",
    "trt_internal_names",
]

# ONNX ops TensorRT imports as elementwise layers whose constant operands become tensors.
ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "PRelu"})
_SHAPE_SOURCES = frozenset({"Shape", "Size"})
#: Names TensorRT gives tensors it creates itself: unnamed layers and its ONNX parser's helpers.
TRT_INTERNAL_NAME = re.compile(r"\(Unnamed (Layer|ITensor)\* \d+\).*|ONNXTRT_.*")
_OUTPUT_SUFFIX = re.compile(r"_output(_\d+)?$")


@dataclass(frozen=True)
class CacheLine:
    """A cache line calibkit can write: TensorRT's `name`, scale from the values of `source`.

    `kind` is ``"input"``, ``"activation"``, ``"constant"`` (an initializer or Constant output
    calibrated like an activation) or ``"alias"`` (an extra TensorRT tensor holding `source`'s
    values, e.g. TensorRT 10's ``<Softmax node>_output``).
    """

    name: str
    source: str
    kind: str


@dataclass(frozen=True)
class UnknownLine:
    """A line TensorRT writes under a name calibkit cannot know.

    `pattern` is a regular expression for TensorRT's name; `source` is the ONNX tensor whose
    values the line holds (its scale is computable, only the name is not).
    """

    pattern: str
    source: str
    node: str
    reason: str

    def matches(self, name: str) -> bool:
        """Whether a cache name has this line's form."""
        return re.fullmatch(self.pattern, name) is not None


@dataclass(frozen=True)
class CacheNames:
    """The cache lines TensorRT will look up for a model.

    Attributes
    ----------
    lines : tuple of CacheLine
        Lines calibkit writes, in topological order.
    unknown : tuple of UnknownLine
        Lines TensorRT writes that calibkit cannot name (TensorRT-internal tensors).
    no_line : dict
        ONNX tensor -> why TensorRT gives it no line.
    """

    lines: tuple[CacheLine, ...]
    unknown: tuple[UnknownLine, ...]
    no_line: dict[str, str]

    @property
    def names(self) -> list[str]:
        """TensorRT's names of the lines calibkit writes."""
        return [line.name for line in self.lines]

    @property
    def sources(self) -> dict[str, str]:
        """TensorRT name -> ONNX tensor whose values give its scale."""
        return {line.name: line.source for line in self.lines}


def trt_cache_names(
    model: OnnxModel | onnx.ModelProto | str | Path | Graph, *, trt_version: tuple[int, ...]
) -> CacheNames:
    """Return the cache lines TensorRT `trt_version` writes for `model`.

    Parameters
    ----------
    model : OnnxModel, onnx.ModelProto, path or Graph
        The ONNX model TensorRT parses (an :class:`~calibkit.onnx.model.OnnxModel` already
        loaded is used as it is). A :class:`~calibkit.onnx.graph.Graph` carries no shapes,
        types or constants: every tensor in it is taken to be an activation, identity Reshapes
        cannot be detected, and no constant lines are produced.
    trt_version : tuple of int
        ``(major, minor, patch)`` of the TensorRT that reads the cache.

    Returns
    -------
    CacheNames
    """
    if isinstance(model, Graph):
        return _from_graph(model, tuple(trt_version), {}, {}, lambda name: None, opset=None)
    model = OnnxModel.of(model)

    def constant(name: str) -> np.ndarray | None:
        return model.constant(name) if model.is_constant(name) else None

    return _from_graph(
        model.graph, tuple(trt_version), model.types, model.shapes, constant, opset=model.opset
    )


def constant_values(
    model: OnnxModel | onnx.ModelProto | str | Path, names: CacheNames
) -> dict[str, np.ndarray]:
    """Return ``{cache name: values}`` of the constant lines, for the normal calibration path.

    TensorRT calibrates a constant like an activation (every batch shows the same values), so
    feed these arrays through the same collector and selector as the activations.
    """
    model = OnnxModel.of(model)
    return {
        line.name: model.constant(line.source).astype(np.float32)
        for line in names.lines
        if line.kind == "constant"
    }


def trt_internal_names(names: Iterable[str], graph: Graph) -> set[str]:
    """Return the names in `names` that TensorRT creates itself for `graph` (no ONNX tensor).

    These are its unnamed layers (``(Unnamed Layer* N) [...]``), its ONNX parser's helpers
    (``ONNXTRT_*``) and ``<tensor or node>_output[_N]`` for a tensor, initializer or node of the
    graph (TensorRT 10's constants and Softmax aliases). A cache line of any other name that is
    not a tensor of the graph belongs to another model or export.
    """
    owners = set(graph.tensors) | set(graph.initializers)
    owners |= {node.name for node in graph.nodes if node.name}
    found = set()
    for name in names:
        base = _OUTPUT_SUFFIX.sub("", name)
        if TRT_INTERNAL_NAME.fullmatch(name) or (base != name and base in owners):
            found.add(name)
    return found


def trt_amax(amax: Mapping[str, float], names: CacheNames) -> tuple[dict[str, float], list[str]]:
    """Key `amax` by TensorRT's names: one entry per line of `names`, in its order.

    Parameters
    ----------
    amax : Mapping[str, float]
        Per ONNX tensor (activations, after :func:`calibkit.rules.sharing.share_scales`), plus the
        constants' values keyed by their cache name (as :func:`constant_values` keys them).
    names : CacheNames
        From :func:`trt_cache_names`.

    Returns
    -------
    amax : dict
        TensorRT name -> amax. Tensors TensorRT gives no line (``names.no_line``) are left out.
    missing : list of str
        TensorRT names whose value `amax` lacks (e.g. tensors left out of the collection).
    """
    out, missing = {}, []
    for line in names.lines:
        key = line.name if line.kind == "constant" else line.source
        if key in amax:
            out[line.name] = amax[key]
        else:
            missing.append(line.name)
    return out, missing


# --- the rules ----------------------------------------------------------------------------------


def _from_graph(graph, version, types, shapes, read_constant, *, opset) -> CacheNames:
    lines: dict[str, CacheLine] = {}
    unknown: list[UnknownLine] = []
    no_line: dict[str, str] = {}
    constant = {n.outputs[0] for n in graph.nodes if n.op_type == "Constant" and n.outputs}
    constant |= set(graph.initializers)
    shape_like: set[str] = set()

    def is_float(name: str) -> bool:
        return name not in types or types[name] in FLOAT_TYPES

    for name in graph.inputs:
        if is_float(name):
            lines[name] = CacheLine(name, name, "input")
        else:
            no_line[name] = "integer graph input (shape or index data)"
    for node in graph.nodes:
        data_inputs = [t for t in node.inputs if t]
        if node.op_type == "Constant":
            continue
        if node.op_type in _SHAPE_SOURCES or (
            data_inputs
            and all(t in shape_like or t in constant for t in data_inputs)
            and any(t in shape_like for t in data_inputs)
        ):
            shape_like.update(t for t in node.outputs if t)
            no_line.update({t: "shape computation" for t in node.outputs if t})
            continue
        if data_inputs and all(t in constant for t in data_inputs):
            for t in node.outputs:
                no_line[t] = "computed from constants only (TensorRT folds or names it itself)"
            continue
        if node.op_type == "Reshape" and _is_identity_reshape(node, shapes, read_constant):
            no_line[node.outputs[0]] = "Reshape to the shape it already has: TensorRT removes it"
            continue
        for t in node.outputs:
            if not t:
                continue
            if is_float(t):
                lines[t] = CacheLine(t, t, "activation")
            else:
                no_line[t] = "integer tensor"
        if node.op_type in ELEMENTWISE_OPS:
            _constant_lines(node, version, constant, shapes, types, lines, unknown)
        if node.op_type == "Softmax" and version >= (10,):
            _softmax_lines(node, opset, lines, unknown)
    return CacheNames(tuple(lines.values()), tuple(unknown), no_line)


def _constant_lines(node: Node, version, constant, shapes, types, lines, unknown) -> None:
    ranks = [len(shapes[t]) for t in node.inputs if t in shapes and t not in constant]
    for c in dict.fromkeys(t for t in node.inputs if t in constant):
        if c in types and types[c] not in FLOAT_TYPES:
            continue
        if version >= (10,):
            lines.setdefault(f"{c}_output", CacheLine(f"{c}_output", c, "constant"))
            broadcast = r"ONNXTRT_Broadcast(_\d+)?_output"
        else:
            unknown.append(
                UnknownLine(
                    r"\(Unnamed Layer\* \d+\) \[Constant\]_output",
                    c,
                    node.label,
                    "constant layer named by TensorRT's layer counter",
                )
            )
            broadcast = r"\(Unnamed Layer\* \d+\) \[Shuffle\]_output"
        if c in shapes and ranks and len(shapes[c]) < max(ranks):
            unknown.append(
                UnknownLine(broadcast, c, node.label, "broadcast copy of a lower-rank constant")
            )


def _softmax_lines(node: Node, opset, lines, unknown) -> None:
    if node.name:
        alias = f"{node.name}_output"
        lines.setdefault(alias, CacheLine(alias, node.outputs[0], "alias"))
    else:
        unknown.append(
            UnknownLine(r".*_output", node.outputs[0], node.label, "Softmax of an unnamed node")
        )
    # Seen for 3 of 4 Softmaxes in TensorRT 10 pairs; presumably the 2-D coercion of opset < 13
    # Softmax, so it is reported unless the model's opset says otherwise.
    if opset is None or opset < 13:
        unknown.append(
            UnknownLine(
                r"ONNXTRT_flattenTensor(_\d+)?_output",
                node.inputs[0],
                node.label,
                "Softmax input flattened to 2-D by TensorRT's ONNX parser (opset < 13)",
            )
        )


def _is_identity_reshape(node: Node, shapes: Mapping, read_constant: Callable) -> bool:
    """Return whether the Reshape target resolves to the input's own shape."""
    if len(node.inputs) < 2 or node.inputs[0] not in shapes:
        return False
    value = read_constant(node.inputs[1])
    if value is None:
        return False
    source = shapes[node.inputs[0]]
    target = [int(v) for v in np.asarray(value).ravel()]
    if len(target) != len(source) or target.count(-1) > 1:
        return False
    allowzero = int(node.attrs.get("allowzero", 0))
    unresolved = 0
    for want, have in zip(target, source, strict=True):
        if want == have or (want == 0 and not allowzero):
            continue
        if want == -1:
            unresolved += 1
            continue
        return False
    # A single -1 is forced to the input's own extent once every other dimension matches.
    return unresolved <= 1
