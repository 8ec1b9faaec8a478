"""TensorRT's scale sharing: which tensors TensorRT gives a neighbour's scale instead of their own.

Two rules explain every shared scale in nine real ONNX/cache pairs (docs/sharing.md,
``../shared/testdata/onnx_cache_pairs/README.md``); nothing else propagates:

- **P** (pooling, TensorRT 7.1–10.12 seen): the output of each MaxPool, AveragePool or
  GlobalAveragePool takes its input's scale (forward). Chains follow in topological order.
- **C** (concatenation, TensorRT ≤ 8.0 seen): every Concat input takes the Concat output's scale
  (backward). A tensor feeding several Concats takes the topologically last one's. Applied after
  P, so a pooling output keeps its input's own scale even when C later overwrites that input.

From TensorRT 8.5 Concat propagates nothing. 8.1–8.4 and 9.x are not settled; there calibkit
applies P only (each tensor keeps the scale of its own data, the choice that cannot widen a range
wrongly) and warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import InvalidInputError
from ..onnx.graph import Graph

__all__ = [
    "POOLING_OPS",
    "RULES",
    "ScaleMove",
    "SharingResult",
    "UnsettledVersionWarning",
    "rules_for_version",
    "share_scales",
]

T = TypeVar("T")

RULES = ("P", "C")
POOLING_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool"})

# Last TensorRT version whose caches show rule C, first one whose caches show it absent.
_LAST_WITH_C = (8, 0, 99)
_FIRST_WITHOUT_C = (8, 5, 0)


class UnsettledVersionWarning(UserWarning):
    """The target TensorRT version is one whose sharing rules no real cache has settled."""


@dataclass(frozen=True)
class ScaleMove(Generic[T]):
    """One change made by a rule: `name` took `source`'s value at `node`."""

    rule: str
    node: str
    name: str
    source: str
    old: T
    new: T


@dataclass(frozen=True)
class SharingResult(Generic[T]):
    """Output of :func:`share_scales`.

    Attributes
    ----------
    amax : dict
        The adjusted values, same keys and order as the input mapping.
    moves : tuple of ScaleMove
        Every change, in the order applied (a tensor can move twice: P then C).
    skipped : tuple of (rule, node, name, reason)
        Rule applications that could not happen because a tensor has no value.
    rules : tuple of str
        The rules applied.
    """

    amax: dict[str, T]
    moves: tuple[ScaleMove[T], ...]
    skipped: tuple[tuple[str, str, str, str], ...]
    rules: tuple[str, ...]

    def moved_by(self, rule: str) -> dict[str, str]:
        """Map each tensor moved by `rule` to the tensor whose value it finally took."""
        return {m.name: m.source for m in self.moves if m.rule == rule}


def rules_for_version(trt_version: tuple[int, ...] | None) -> tuple[str, ...]:
    """Return the rules TensorRT applies at `trt_version` (``(major, minor, patch)``).

    ``None`` (version unknown, e.g. a header-less ``1`` cache) gives P only. Versions from 8.1 to
    8.4 and 9.x give P only with an :class:`UnsettledVersionWarning`: no real cache from them
    shows whether Concat shares.

    Examples
    --------
    >>> rules_for_version((7, 2, 1)), rules_for_version((10, 3, 0))
    (('P', 'C'), ('P',))
    """
    if trt_version is None:
        return ("P",)
    version = tuple(trt_version) + (0,) * (3 - len(trt_version))
    if version <= _LAST_WITH_C:
        return ("P", "C")
    if version < _FIRST_WITHOUT_C or version[0] == 9:
        shown = ".".join(map(str, trt_version))
        msg = (
            f"TensorRT {shown}: no real cache settles whether Concat inputs share the Concat"
            " output's scale in 8.1-8.4 and 9.x; calibkit applies the pooling rule only."
            " Pass rules='P,C' (CLI: --share-scales P,C) to share Concat scales as"
            " TensorRT <= 8.0 does, or rules='P' to silence this warning"
        )
        warnings.warn(msg, UnsettledVersionWarning, stacklevel=3)
    return ("P",)


def share_scales(
    graph: Graph,
    amax: Mapping[str, T],
    *,
    trt_version: tuple[int, ...] | None,
    rules: str | Iterable[str] = "trt",
) -> SharingResult[T]:
    """Give tensors the scale TensorRT would give them, following its sharing rules.

    Parameters
    ----------
    graph : Graph
        The network, in topological order (``OnnxModel.load(path).graph``, or a saved form
        read by ``Graph.from_json``).
    amax : Mapping[str, T]
        Each tensor's own amax (or scale: values are only copied, never computed with).
    trt_version : tuple of int or None
        Target TensorRT version; selects the rules when ``rules="trt"``.
    rules : {"trt", "none"} or iterable of {"P", "C"}
        ``"trt"``: the rules of `trt_version` (:func:`rules_for_version`); ``"none"``: no change;
        or an explicit selection such as ``("P", "C")`` or ``"P,C"`` (the CLI's
        ``--share-scales`` value is passed through as is). They always run in the order P, C.

    Returns
    -------
    SharingResult
        New values and the record of which rule moved which tensor.

    Raises
    ------
    ValueError
        If `rules` names an unknown rule.

    Examples
    --------
    >>> from calibkit.onnx.graph import Graph, Node
    >>> g = Graph((Node("Relu", ("x",), ("r",)), Node("MaxPool", ("r",), ("p",))), ("x",))
    >>> share_scales(g, {"x": 2.0, "r": 1.5, "p": 1.2}, trt_version=(10, 3, 0)).amax
    {'x': 2.0, 'r': 1.5, 'p': 1.5}
    """
    selected = _select(rules, trt_version)
    values = dict(amax)
    moves: list[ScaleMove[T]] = []
    skipped: list[tuple[str, str, str, str]] = []
    if "P" in selected:
        _pooling(graph, values, moves, skipped)
    if "C" in selected:
        _concat(graph, values, moves, skipped)
    return SharingResult(values, tuple(moves), tuple(skipped), selected)


def _select(rules: str | Iterable[str], trt_version: tuple[int, ...] | None) -> tuple[str, ...]:
    if rules == "trt":
        return rules_for_version(trt_version)
    if rules == "none":
        return ()
    chosen = rules.split(",") if isinstance(rules, str) else list(rules)
    unknown = [r for r in chosen if r not in RULES]
    if unknown:
        msg = f"unknown sharing rule(s) {unknown}; choose 'trt', 'none' or a subset of {RULES}"
        raise InvalidInputError(msg)
    return tuple(r for r in RULES if r in chosen)


def _move(rule, node, name, source, values, moves, skipped) -> None:
    missing = [t for t in (name, source) if t not in values]
    if missing:
        skipped.append((rule, node.label, name, f"no value for {missing[0]!r}"))
        return
    # Recorded even when the values happen to be equal: the record says what TensorRT ties.
    moves.append(ScaleMove(rule, node.label, name, source, values[name], values[source]))
    values[name] = values[source]


def _pooling(graph, values, moves, skipped) -> None:
    # Forward in topological order, so a pooling chain carries the first input's value.
    for node in graph.nodes:
        if node.op_type in POOLING_OPS and node.inputs and node.outputs:
            _move("P", node, node.outputs[0], node.inputs[0], values, moves, skipped)


def _concat(graph, values, moves, skipped) -> None:
    # Backward: visiting Concats from the last, a Concat's output already holds its final value
    # (any Concat reading it comes later and was visited before), and the first Concat to claim
    # an input is the topologically last one reading it, which is the one that wins.
    claimed: set[str] = set()
    for node in reversed(graph.nodes):
        if node.op_type != "Concat" or not node.outputs:
            continue
        for name in dict.fromkeys(node.inputs):
            if name and name not in claimed:
                claimed.add(name)
                _move("C", node, name, node.outputs[0], values, moves, skipped)
