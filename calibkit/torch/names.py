"""Key PyTorch statistics by the ONNX tensor names TensorRT will use.

``torch.onnx.export(..., dynamo=True)`` (the default exporter since torch 2.9) writes, on every
node, the module path that produced it (``pkg.torch.onnx.name_scopes``). A module call's output
is the one value that leaves the group of nodes exported from that call. Limits, each reported
per name in :attr:`OnnxNames.unmapped` rather than guessed:

- modules that export to no node (Identity, Dropout in eval, a BatchNorm's convolution once the
  exporter folds the BatchNorm into it: the folded Conv carries the BatchNorm's scope, so the
  BatchNorm's histogram is the one its output gets);
- modules whose nodes leave several values, and modules returning several tensors;
- a module called several times where calls are not separate node groups (``f(f(x))``);
- the TorchScript exporter (``dynamo=False``) writes no scopes and is refused: it folds a
  BatchNorm into the convolution's scope, where the convolution's histogram would be wrong.

The ONNX tensor's values are those of the PyTorch tensor up to the exporter's rewrites (a
folded BatchNorm rounds differently), so the statistics match to float rounding, not bit for bit.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field

from .._optional import require

__all__ = ["OnnxNames", "onnx_names"]

_SCOPES = "pkg.torch.onnx.name_scopes"


@dataclass
class OnnxNames:
    """Recorded name -> ONNX tensor name, and why the others have none."""

    mapping: dict[str, str] = field(default_factory=dict)
    unmapped: dict[str, str] = field(default_factory=dict)


def _module_of(node) -> str | None:
    for prop in node.metadata_props:
        if prop.key == _SCOPES:
            scopes = ast.literal_eval(prop.value)
            return scopes[-2] if len(scopes) >= 2 else ""
    return None


def _groups(nodes: list, members: list[int]) -> list[list[int]]:
    """Split node indices into groups connected by values flowing between them, in order."""
    parent = {i: i for i in members}

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    producer = {out: i for i in members for out in nodes[i].output if out}
    for i in members:
        for name in nodes[i].input:
            j = producer.get(name)
            if j is not None:
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in members:
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def onnx_names(model, origins: Mapping[str, tuple[str, int, str]]) -> OnnxNames:
    """Map recorded names to the tensor names of `model`, the same network exported to ONNX.

    Parameters
    ----------
    model : str, path or onnx.ModelProto
        The model written by ``torch.onnx.export(..., dynamo=True)``.
    origins : mapping
        ``TorchCollector.origins_``: recorded name -> (module path, call, output key); inputs
        have the module path ``None`` and their position or keyword as output key.

    Returns
    -------
    OnnxNames
        ``mapping`` (pass it to ``TorchCollector.save(..., names=...)``) and ``unmapped``.

    Raises
    ------
    ValueError
        If the model's nodes carry no module scopes (TorchScript exporter).
    """
    onnx = require("onnx", "mapping PyTorch names to ONNX names")
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    graph = proto.graph
    nodes = list(graph.node)
    modules = [_module_of(n) for n in nodes]
    if nodes and any(m is None for m in modules):
        msg = (
            "the ONNX model's nodes carry no module scopes ('pkg.torch.onnx.name_scopes'): "
            "export it with torch.onnx.export(..., dynamo=True)"
        )
        raise ValueError(msg)
    initializers = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    outputs = {o.name for o in graph.output}
    consumers: dict[str, set[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, set()).add(i)

    result = OnnxNames()
    calls: dict[str, int] = {}
    for path, call, _ in origins.values():
        if path is not None:
            calls[path] = max(calls.get(path, 0), call + 1)
    group_cache: dict[str, list[list[int]]] = {}
    taken: dict[str, str] = {}

    def assign(name: str, tensor: str) -> None:
        if tensor in taken:
            result.unmapped[name] = f"same ONNX tensor {tensor!r} as {taken[tensor]!r}"
        else:
            taken[tensor] = name
            result.mapping[name] = tensor

    for name, (path, call, key) in origins.items():
        if path is None:  # a model input: by keyword, else by position
            if key in inputs:
                assign(name, key)
            elif key.isdigit() and int(key) < len(inputs):
                assign(name, inputs[int(key)])
            else:
                result.unmapped[name] = f"the ONNX model has no input {key!r}"
            continue
        if key:
            result.unmapped[name] = "one of several outputs of a module"
            continue
        if path == "":
            if len(outputs) == 1:
                assign(name, next(iter(outputs)))
            else:
                result.unmapped[name] = f"the model has {len(outputs)} outputs"
            continue
        groups = group_cache.get(path)
        if groups is None:
            prefix = path + "."  # the module and the modules inside it
            members = [i for i, m in enumerate(modules) if f"{m}.".startswith(prefix)]
            groups = group_cache[path] = _groups(nodes, members)
        if len(groups) != calls[path]:
            result.unmapped[name] = (
                f"{len(groups)} ONNX node group(s) for {calls[path]} call(s) of the module"
                + (" (exported to no node, or folded into a neighbour)" if not groups else "")
            )
            continue
        group = set(groups[call])
        leaving = [
            out
            for i in sorted(group)
            for out in nodes[i].output
            if out and (out in outputs or consumers.get(out, set()) - group)
        ]
        if len(leaving) == 1:
            assign(name, leaving[0])
        else:
            result.unmapped[name] = f"{len(leaving)} values leave the module's ONNX nodes"
    return result
