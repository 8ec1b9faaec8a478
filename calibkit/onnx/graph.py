"""Graph: a plain-data description of a network's dataflow (op types and tensor names).

Graph-level passes (scale sharing, TensorRT's cache names) need only which node reads and writes
which tensor, in topological order. ``Graph`` holds exactly that. It is built from an ONNX model
by :class:`calibkit.onnx.model.OnnxModel` (``OnnxModel.load(path).graph``; types, shapes and
constants live there), saved with the statistics as :meth:`Graph.to_dict`, and read back from
that form or from the ``graph.json`` files of the ONNX/cache pairs in the shared test
data (``{"inputs": [...], "outputs": [...], "nodes": [{"op", "name", "inputs", "outputs",
"attrs"}]}``; weights and shape-only nodes dropped).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CacheFormatError, InvalidInputError

if TYPE_CHECKING:
    import onnx

__all__ = ["Graph", "Node"]


@dataclass(frozen=True)
class Node:
    """One operator: its ONNX op type, input and output tensor names ("" = omitted optional)."""

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    name: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        """The node name, or ``op_type(first output)`` when the node is unnamed."""
        return self.name or f"{self.op_type}({self.outputs[0] if self.outputs else ''})"


@dataclass(frozen=True)
class Graph:
    """A dataflow graph in topological order.

    Parameters
    ----------
    nodes : tuple of Node
        Every node, each after the producers of its inputs.
    inputs, outputs : tuple of str
        Graph input and output tensor names (initializers are not inputs).
    initializers : frozenset of str
        Names of constant tensors (ONNX initializers); ``Constant`` nodes stay nodes.

    Raises
    ------
    ValueError
        If a node reads a tensor that is neither a graph input, an initializer nor the output of an
        earlier node, or if two nodes write the same tensor.
    """

    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    initializers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        known = set(self.inputs) | set(self.initializers)
        for index, node in enumerate(self.nodes):
            for name in node.inputs:
                if name and name not in known:
                    msg = (
                        f"node {index} ({node.label}) reads tensor {name!r} before any node writes"
                        " it: nodes must be in topological order and every tensor must be a graph"
                        " input, an initializer or a node output"
                    )
                    raise InvalidInputError(msg)
            for name in node.outputs:
                if name and name in known - set(self.inputs) - set(self.initializers):
                    msg = f"node {index} ({node.label}) writes tensor {name!r} a second time"
                    raise InvalidInputError(msg)
                known.add(name)

    @property
    def tensors(self) -> list[str]:
        """Graph inputs then node outputs, in topological order (no initializers)."""
        names = list(self.inputs)
        names += [name for node in self.nodes for name in node.outputs if name]
        return names

    def producers(self) -> dict[str, Node]:
        """Map each node output to the node that writes it."""
        return {name: node for node in self.nodes for name in node.outputs if name}

    def consumers(self) -> dict[str, list[Node]]:
        """Map each tensor to the nodes that read it, in topological order."""
        readers: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.inputs):  # a node reading x twice is one reader
                if name:
                    readers.setdefault(name, []).append(node)
        return readers

    @classmethod
    def from_onnx(cls, model: onnx.ModelProto | str | Path) -> Graph:
        """Return the graph of an ONNX model (a ModelProto, a path or an ``OnnxModel``).

        Only the main graph is read: subgraphs of If/Loop/Scan are not entered. A command that
        reads more of the model uses :class:`calibkit.onnx.model.OnnxModel`, whose ``graph`` this
        is, so the model is read once.
        """
        from .model import OnnxModel

        return OnnxModel.of(model).graph

    def to_dict(self) -> dict[str, Any]:
        """Return the plain-data form :meth:`from_json` reads (node attributes left out)."""
        return {
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "initializers": sorted(self.initializers),
            "nodes": [
                {
                    "op": n.op_type,
                    "name": n.name,
                    "inputs": list(n.inputs),
                    "outputs": list(n.outputs),
                }
                for n in self.nodes
            ],
        }

    @classmethod
    def from_json(
        cls, source: str | Path | Mapping[str, Any], *, rename_rewrites: bool = False
    ) -> Graph:
        """Build a graph from a ``graph.json`` file (or its parsed dict).

        Parameters
        ----------
        source : path or Mapping
            The file, or its parsed content.
        rename_rewrites : bool
            If a node writes a tensor an earlier node wrote, rename its output to the exporter's
            ``<node name>_output_<k>`` and let later readers read the new name, instead of
            raising. Two regenerated graphs of the pairs need it (a Slice that rewrites Split
            outputs); TensorRT's caches for them hold the renamed tensors.

        Raises
        ------
        CacheFormatError
            If a required key is missing or has the wrong type (the message names file and node).
        """
        where = str(source) if not isinstance(source, Mapping) else "graph description"
        if isinstance(source, Mapping):
            data = source
        else:
            try:
                data = json.loads(Path(source).read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                msg = f"{where}: not valid JSON: {err}"
                raise CacheFormatError(msg) from err
        nodes = []
        written, renamed = set(_list(data, "inputs", where)), {}
        for index, raw in enumerate(_list(data, "nodes", where, Mapping)):
            if "op" not in raw:
                msg = f"{where}: nodes[{index}] has no 'op' key: {raw!r}"
                raise CacheFormatError(msg)
            at = f"{where}: nodes[{index}]"
            name = str(raw.get("name", ""))
            node_outputs = list(_list(raw, "outputs", at))
            for k, out in enumerate(node_outputs):
                if rename_rewrites and out in written:
                    renamed[out] = node_outputs[k] = f"{name}_output_{k}"
                written.add(node_outputs[k])
            nodes.append(
                Node(
                    op_type=str(raw["op"]),
                    inputs=tuple(renamed.get(t, t) for t in _list(raw, "inputs", at)),
                    outputs=tuple(node_outputs),
                    name=name,
                    attrs=dict(raw.get("attrs", {})),
                )
            )
        inputs = tuple(_list(data, "inputs", where))
        outputs = tuple(data.get("outputs", ()))
        try:
            return cls(tuple(nodes), inputs, outputs, frozenset(data.get("initializers", ())))
        except ValueError as err:
            msg = f"{where}: {err}"
            raise CacheFormatError(msg) from err


def _list(data: Mapping[str, Any], key: str, where: str, kind: type = str) -> Sequence[Any]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        what = "objects" if kind is Mapping else "tensor names"
        msg = f"{where}: {key!r} must be a list of {what}, got {value!r:.200}"
        raise CacheFormatError(msg)
    return value
