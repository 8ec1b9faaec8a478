"""Fidelity on the ONNX/cache pairs: shared-scale groups and cache names, graph vs TensorRT.

For each pair in ``../shared/testdata/onnx_cache_pairs`` (TensorRT's own cache + the graph):

- **sharing**: the groups of graph tensors with bit-identical scales in TensorRT's cache versus
  the groups ``share_scales`` predicts from the graph alone. Every tie the pass
  predicts must be in the cache; every other tie in the cache must be a data coincidence the
  pairs' README lists (same data, same maximum, same saturation) or it is reported unexplained.
- **names**: the cache names calibkit produces (``calibkit.rules.names``) versus TensorRT's.

``pairs_markdown()`` returns the markdown section merged into docs/fidelity.md. Regenerate with::

    python benchmarks/fidelity_pairs.py            # prints markdown
    python benchmarks/fidelity_pairs.py -o pairs.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibkit.cache.format import read_cache
from calibkit.errors import CacheFormatError
from calibkit.onnx.graph import Graph
from calibkit.rules.names import trt_cache_names
from calibkit.rules.sharing import POOLING_OPS, UnsettledVersionWarning, share_scales

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT.parent / "shared" / "testdata" / "onnx_cache_pairs"

# Saturated scales: a Sigmoid reaching 1.0, or an input scaled to [0, 1] (README "same saturation").
SATURATED = {"EntropyCalibration2": "3c010a14", "MinMaxCalibration": "3c010204"}
# Ops whose output holds the same values as the input (README "same data").
SAME_DATA = {"Reshape", "Transpose", "Shuffle", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
# Ops whose output can keep the input's largest |x| (README "same maximum").
SAME_MAX = {"Relu", "LeakyRelu", "PRelu", "Split", "Slice", "Concat", "Pad", "Clip"}


# --- cache reading ------------------------------------------------------------------------------


def _read_cache(path: Path) -> tuple[tuple[int, int, int] | None, str, dict[str, str]]:
    """Return (version, algorithm, {name: scale bits as 8 lower-case hex digits})."""
    cache = read_cache(path)
    bits = {n: format(int(np.float32(s).view(np.uint32)), "08x") for n, s in cache.scales.items()}
    return cache.version, cache.algorithm, bits


# --- pairs --------------------------------------------------------------------------------------


@dataclass
class Pair:
    """One folder: TensorRT's cache and the graph it was written for."""

    name: str
    folder: Path
    graph: Graph
    version: tuple[int, int, int] | None
    algorithm: str
    scales: dict[str, str]
    repairs: list[str] = field(default_factory=list)

    @property
    def model(self) -> Path | None:
        path = self.folder / "model.onnx"
        return path if path.is_file() else None


def load_pair(folder: Path) -> Pair:
    """Read one pair folder; repair a graph.json that writes a tensor twice (see `repairs`)."""
    version, algorithm, scales = _read_cache(folder / "calibration.cache")
    strict = Graph.from_json(folder / "graph.json", rename_rewrites=True)
    repairs = []
    try:
        Graph.from_json(folder / "graph.json")
    except CacheFormatError:  # report which tensors the lenient read renamed
        renamed = sorted(set(strict.tensors) - set(_raw_tensors(folder)))
        found = sum(t in scales for t in renamed)
        repairs.append(
            "graph.json writes a tensor twice (a Slice rewrites the Split outputs); read with"
            f" `rename_rewrites=True`, giving {', '.join(f'`{t}`' for t in renamed)}"
            f" ({found} of {len(renamed)} are lines of TensorRT's cache)"
        )
    return Pair(folder.name, folder, strict, version, algorithm, scales, repairs)


def _raw_tensors(folder: Path) -> set[str]:
    data = json.loads((folder / "graph.json").read_text(encoding="utf-8"))
    return set(data["inputs"]) | {t for n in data["nodes"] for t in n["outputs"]}


def pair_folders(root: Path = PAIRS) -> list[Path]:
    """The pair folders under `root`, oldest TensorRT first."""
    folders = [p for p in root.iterdir() if (p / "graph.json").is_file()]
    return sorted(folders, key=lambda p: (read_cache(p / "calibration.cache").version, p.name))


# --- sharing ------------------------------------------------------------------------------------


@dataclass
class SharingCheck:
    """Predicted versus observed ties of one pair."""

    rules: tuple[str, ...]
    tensors: int  # graph tensors with a cache line
    rule_ties: dict[str, tuple[int, int]]  # rule -> (moves confirmed by the cache, moves)
    concat_inputs_equal: tuple[int, int]  # (Concat inputs equal to their output, Concat inputs)
    pool_after_c: tuple[int, int]  # (pool outputs differing from a C-overwritten input, such)
    observed_groups: int
    predicted_groups: int
    exact_groups: int  # observed groups equal to a predicted group
    coincidence_groups: int  # observed groups = predicted groups joined by listed coincidences
    coincidences: Counter  # kind -> number of joins
    unexplained: list[list[str]]
    contradicted: list[tuple[str, str, str]]  # (rule, tensor, source) ties the cache does not have

    @property
    def explained_groups(self) -> int:
        return self.exact_groups + self.coincidence_groups

    @property
    def agrees(self) -> bool:
        return not self.unexplained and not self.contradicted


def check_sharing(pair: Pair, rules: str = "trt") -> SharingCheck:
    """Compare the pass's ties (from the graph alone) with the cache's bit-identical scales."""
    graph, scales = pair.graph, pair.scales
    tensors = [t for t in graph.tensors if t in scales]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsettledVersionWarning)  # reported per pair instead
        values = {t: t for t in tensors}
        result = share_scales(graph, values, trt_version=pair.version, rules=rules)
    token = result.amax  # each tensor's token = the tensor whose own scale it ends with

    # A move is checkable when another tensor ends with the same token (value); a pooling
    # output whose input C then overwrote carries a value no other line shows.
    holders: dict[str, list[str]] = defaultdict(list)
    for t in tensors:
        holders[token[t]].append(t)
    rule_ties, contradicted = {}, []
    for rule in result.rules:
        ok = total = 0
        for move in (m for m in result.moves if m.rule == rule):
            peers = [t for t in holders[token[move.name]] if t != move.name]
            if not peers:
                continue
            total += 1
            bad = [t for t in peers if scales[t] != scales[move.name]]
            ok += not bad
            contradicted += [(rule, move.name, t) for t in bad]
        rule_ties[rule] = (ok, total)

    observed = _groups(tensors, scales.__getitem__)
    predicted = _groups(tensors, token.__getitem__)
    adjacency = _coincidence_edges(graph, pair.algorithm)
    graph_ops = {t: n.op_type for n in graph.nodes for t in n.outputs}
    exact = coincidental = 0
    kinds: Counter = Counter()
    unexplained = []
    predicted_sets = {frozenset(g) for g in predicted}
    for group in observed:
        if frozenset(group) in predicted_sets:
            exact += 1
            continue
        saturated = _saturated(group, graph_ops, scales, pair.algorithm)
        joined, used = _join(group, token, adjacency, saturated)
        if joined:
            coincidental += 1
            kinds.update(used)
        else:
            unexplained.append(group)
    return SharingCheck(
        rules=result.rules,
        tensors=len(tensors),
        rule_ties=rule_ties,
        concat_inputs_equal=_concat_inputs(graph, scales),
        pool_after_c=_pool_after_c(graph, result, scales),
        observed_groups=len(observed),
        predicted_groups=len(predicted),
        exact_groups=exact,
        coincidence_groups=coincidental,
        coincidences=kinds,
        unexplained=unexplained,
        contradicted=contradicted,
    )


def _groups(tensors, key) -> list[list[str]]:
    """Tensors with equal `key`, groups of two or more, in first-appearance order."""
    by_key: dict[str, list[str]] = defaultdict(list)
    for t in tensors:
        by_key[key(t)].append(t)
    return [g for g in by_key.values() if len(g) > 1]


def _coincidence_edges(graph: Graph, algorithm: str) -> dict[str, dict[str, str]]:
    """Neighbouring tensors that the README's data coincidences can make equal, with the kind.

    Returned as a directed adjacency map ``{input: {output: kind}}`` over all graph tensors.
    """
    adjacency: dict[str, dict[str, str]] = defaultdict(dict)

    def add(a, b, kind):
        if a and b and a != b:
            adjacency[a].setdefault(b, kind)

    for node in graph.nodes:
        op = node.op_type
        data_in = [t for t in node.inputs if t]
        if op in SAME_DATA or (op == "Resize" and node.attrs.get("mode", "nearest") == "nearest"):
            kind = f"same data ({op})"
        elif op in SAME_MAX:
            kind = f"same maximum ({op})"
        elif op == "Mul" and algorithm == "MinMaxCalibration":
            kind = "same maximum (SiLU Mul, MinMax)"
        else:
            continue
        for a in data_in:
            for b in node.outputs:
                add(a, b, kind)
    return adjacency


def _saturated(group, graph_ops, scales, algorithm) -> bool:
    """Every member is a graph input or Sigmoid output whose amax is 1.0 up to the top bin."""
    amax = 127 * float(np.uint32(int(scales[group[0]], 16)).view(np.float32))
    top = 2048.5 / 2048 if algorithm == "EntropyCalibration2" else 1.0
    ops = {graph_ops.get(t) for t in group}
    return ops <= {None, "Sigmoid"} and 1 - 1e-6 <= amax <= top * (1 + 2**-12) * (1 + 1e-6)


def _join(group, token, adjacency, saturated) -> tuple[bool, list[str]]:
    """Can the predicted sub-groups of an observed group be joined by listed coincidences?

    A member joins a later member it reaches through a forward chain of coincidence ops (the
    chain can pass through a tensor with another scale: Split then Concat keeps the maximum
    even where the half itself was requantised). Returns (joined, kinds of the joins used).
    """
    if saturated:
        return True, ["same saturation (Sigmoid or input at 1.0)"] * (
            len({token[t] for t in group}) - 1
        )
    parent = {token[t]: token[t] for t in group}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    members, used = set(group), []
    for start in group:
        paths = {start: []}
        queue = [start]
        while queue:
            here = queue.pop(0)
            for nxt, kind in adjacency.get(here, {}).items():
                if nxt not in paths:
                    paths[nxt] = [*paths[here], kind]
                    queue.append(nxt)
        for other in members & paths.keys():
            ra, rb = find(token[start]), find(token[other])
            if ra != rb:
                parent[ra] = rb
                chain = paths[other]
                used.append(chain[0] if len(chain) == 1 else " → ".join(chain))
    return len({find(x) for x in parent}) == 1, used


def _concat_inputs(graph: Graph, scales) -> tuple[int, int]:
    equal = total = 0
    for node in graph.nodes:
        if node.op_type == "Concat" and node.outputs[0] in scales:
            for t in node.inputs:
                if t in scales:
                    total += 1
                    equal += scales[t] == scales[node.outputs[0]]
    return equal, total


def _pool_after_c(graph: Graph, result, scales) -> tuple[int, int]:
    """Pool outputs whose input rule C overwrote: P-then-C says they keep the old value."""
    overwritten = result.moved_by("C")
    cases = [n for n in graph.nodes if n.op_type in POOLING_OPS and n.inputs[0] in overwritten]
    differ = sum(scales[n.outputs[0]] != scales[n.inputs[0]] for n in cases)
    return differ, len(cases)


# --- names --------------------------------------------------------------------------------------

# TensorRT-internal names: no ONNX tensor carries them (TRT_CALIBRATION.md §5.4).
INTERNAL = r"\(Unnamed Layer\* \d+\) \[[^\]]+\]_output(_\d+)?|ONNXTRT_\w+_output"
# TensorRT 10 lines of ONNX Constant nodes; graph.json has no constants, so none are predicted.
CONSTANT_T10 = r".*Constant(_\d+)?_output_0_output"


@dataclass
class NamesCheck:
    """calibkit's cache names versus TensorRT's for one pair."""

    source: str  # what calibkit read: "model.onnx" or "graph.json"
    ours: int
    trt: int
    common: int
    reported: int  # TensorRT names not produced that match calibkit's unknown-name report
    reported_expected: int  # lines calibkit reported as unknowable
    internal: int  # other TensorRT-internal names
    constants: int  # TensorRT 10 Constant lines (graph.json holds no constants)
    outside_graph: list[str]  # ONNX-named lines of tensors the graph description lacks
    extra: list[str]  # calibkit names TensorRT did not write
    unmatched: list[str]  # lines calibkit reported as unknowable that TensorRT did not write


def _numeric_shift(shift: int):
    return lambda name: str(int(name) + shift) if name.isdigit() else name


# Pairs whose model.onnx is the one TensorRT parsed (up to a documented renaming, source.md).
ONNX_SOURCES = {
    "muqadas2_cnndepthwise_trt8401_ec2": None,
    "lannyyip_resunet_trt8001_ec2": _numeric_shift(8),
}


def check_names(pair: Pair) -> NamesCheck:
    """Compare ``trt_cache_names`` with the names in TensorRT's cache."""
    if pair.name in ONNX_SOURCES and pair.model is not None:
        names, source = trt_cache_names(pair.model, trt_version=pair.version), "model.onnx"
        rename = ONNX_SOURCES[pair.name] or (lambda n: n)
    else:
        names, source = trt_cache_names(pair.graph, trt_version=pair.version), "graph.json"
        rename = lambda n: n  # noqa: E731
    ours = {rename(n) for n in names.names}
    trt = set(pair.scales)
    missing = sorted(trt - ours)
    reported, unmatched = [], []
    for unknown in names.unknown:  # each reported line accounts for at most one TensorRT name
        found = next((n for n in missing if n not in reported and unknown.matches(n)), None)
        if found is None:
            unmatched.append(f"{unknown.reason} at `{unknown.node}`")
        else:
            reported.append(found)
    rest = [n for n in missing if n not in reported]
    internal = [n for n in rest if re.fullmatch(INTERNAL, n)]
    constants = [n for n in rest if n not in internal and re.fullmatch(CONSTANT_T10, n)]
    outside = [n for n in rest if n not in internal and n not in constants]
    return NamesCheck(
        source=source,
        ours=len(ours),
        trt=len(trt),
        common=len(ours & trt),
        reported=len(reported),
        reported_expected=len(names.unknown),
        internal=len(internal),
        constants=len(constants),
        outside_graph=outside,
        extra=sorted(ours - trt),
        unmatched=unmatched,
    )


# Why a graph description lacks some of TensorRT's ONNX-named lines (from each source.md).
OUTSIDE_GRAPH = {
    "invigilo_yolov5l_trt8502_ec2": "the Detect head (model.24) is left out of graph.json",
    "dataprodigy_yolo11_trt100300_ec2": "the Detect-head tail is left out of graph.json",
    "goldentiger_yolo11m_trt101200_ec2": "the Detect-head tail of graph.json differs from the"
    " export TensorRT parsed",
}


# --- report -------------------------------------------------------------------------------------


def _version(v) -> str:
    return ".".join(map(str, v)) if v else "?"


def pairs_markdown(root: Path = PAIRS) -> str:
    """The pairs section of docs/fidelity.md, computed now from the shared test data."""
    pairs = [load_pair(folder) for folder in pair_folders(root)]
    checks = {p.name: check_sharing(p) for p in pairs}
    out = [
        "## ONNX/cache pairs: shared scales and cache names",
        "",
        f"Source: `{root.relative_to(ROOT.parent) if root.is_relative_to(ROOT.parent) else root}`"
        " (TensorRT's own caches with the graph they were written for). Regenerate with"
        " `python benchmarks/fidelity_pairs.py`.",
        "",
        "### Scale sharing (calibkit.rules.sharing, `--share-scales trt`)",
        "",
        "A *group* is a set of two or more graph tensors with bit-identical scales. *Exact*:"
        " the cache group is a group the pass predicts from the graph alone. *Coincidence*: the"
        " group is predicted groups joined only by data coincidences the pairs' README lists"
        " (same data, same maximum, same saturation). Rule ties: moves made by the pass that the"
        " cache confirms.",
        "",
        "| pair | TensorRT | rules | tensors | P ties | C ties | cache groups | exact |"
        " coincidence | unexplained | agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in pairs:
        c = checks[p.name]
        ties = ["{}/{}".format(*c.rule_ties[r]) if r in c.rule_ties else "–" for r in ("P", "C")]
        out.append(
            f"| {p.name} | {_version(p.version)} | {'+'.join(c.rules) or 'none'} | {c.tensors}"
            f" | {ties[0]} | {ties[1]} | {c.observed_groups} | {c.exact_groups}"
            f" | {c.coincidence_groups} | {len(c.unexplained) + len(c.contradicted)}"
            f" | {c.explained_groups}/{c.observed_groups}"
            f"{'' if c.agrees else ' ✗'} |"
        )
    out += _totals(pairs, checks)
    out += _details(pairs, checks)
    out += _alternatives(pairs)
    out += _names_section(pairs)
    return "\n".join(out) + "\n"


def _alternatives(pairs) -> list[str]:
    """The same check with other rule sets: each pair needs exactly its version's rules."""
    choices = ["none", "P", "P,C"]
    out = [
        "",
        "Other rule sets on the same pairs (cache groups left unexplained + predicted ties the"
        " cache contradicts; 0 = consistent):",
        "",
        "| pair | " + " | ".join(f"rules {c}" for c in choices) + " |",
        "|---|" + "---|" * len(choices),
    ]
    for p in pairs:
        cells = []
        for choice in choices:
            c = check_sharing(p, rules=choice)
            cells.append(f"{len(c.unexplained)} + {len(c.contradicted)}")
        out.append(f"| {p.name} | " + " | ".join(cells) + " |")
    return out


def _names_section(pairs) -> list[str]:
    out = [
        "",
        "### Cache names (calibkit.rules.names)",
        "",
        "*Produced*: TensorRT's names that calibkit writes. *Reported*: TensorRT names not written"
        " but matching a line calibkit reports as unknowable (found/reported). *Internal*: other"
        " TensorRT-internal names (`(Unnamed Layer* N)`, `ONNXTRT_*`, plugins). *Constants*:"
        " TensorRT 10 `<Constant>_output` lines, unpredictable from a graph.json (no constants)."
        " *Outside graph*: ONNX-named lines of tensors the regenerated graph lacks.",
        "",
        "| pair | read | TensorRT lines | calibkit lines | produced | calibkit names TensorRT had"
        " | reported | internal | constants | outside graph |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for p in pairs:
        n = check_names(p)
        out.append(
            f"| {p.name} | {n.source} | {n.trt} | {n.ours} | {n.common}/{n.trt}"
            f" ({n.common / n.trt:.0%}) | {n.common}/{n.ours} ({n.common / n.ours:.0%})"
            f" | {n.reported}/{n.reported_expected} | {n.internal} | {n.constants}"
            f" | {len(n.outside_graph)} |"
        )
        if n.outside_graph:
            why = OUTSIDE_GRAPH.get(p.name, "unexplained")
            notes.append(f"- {p.name}: {len(n.outside_graph)} outside the graph: {why}.")
        if n.unmatched:
            notes.append(f"- {p.name}: reported but not in the cache: {'; '.join(n.unmatched)}.")
        if n.extra:
            shown = ", ".join(f"`{e}`" for e in n.extra[:5])
            notes.append(f"- {p.name}: calibkit names TensorRT did not write: {shown}.")
    return [*out, "", *notes] if notes else out


def _totals(pairs, checks) -> list[str]:
    p_ok = sum(c.rule_ties.get("P", (0, 0))[0] for c in checks.values())
    p_all = sum(c.rule_ties.get("P", (0, 0))[1] for c in checks.values())
    c_ok = sum(c.rule_ties.get("C", (0, 0))[0] for c in checks.values())
    c_all = sum(c.rule_ties.get("C", (0, 0))[1] for c in checks.values())
    after_c = [c.pool_after_c for c in checks.values()]
    no_c = [checks[p.name].concat_inputs_equal for p in pairs if "C" not in checks[p.name].rules]
    kinds: Counter = sum((c.coincidences for c in checks.values()), Counter())
    return [
        "",
        f"- Rule P: {p_ok} of {p_all} pooling outputs carry their input's final scale"
        f" (the pass predicts all). Pooling outputs whose input rule C overwrote:"
        f" {sum(a for a, _ in after_c)} of {sum(b for _, b in after_c)} differ from it,"
        " as P-then-C predicts.",
        f"- Rule C (TensorRT ≤ 8.0): {c_ok} of {c_all} Concat inputs carry the Concat output's"
        " scale.",
        f"- Without C (later versions): {sum(a for a, _ in no_c)} of {sum(b for _, b in no_c)}"
        " Concat inputs equal their Concat output (rule C would make all of them equal).",
        f"- Cache groups: {sum(c.exact_groups for c in checks.values())} predicted exactly +"
        f" {sum(c.coincidence_groups for c in checks.values())} joined by listed coincidences ="
        f" {sum(c.explained_groups for c in checks.values())} of"
        f" {sum(c.observed_groups for c in checks.values())} explained; predicted ties missing"
        f" from a cache: {sum(len(c.contradicted) for c in checks.values())}.",
        f"- Coincidence joins used: {_join_summary(kinds)}.",
    ]


def _join_summary(kinds: Counter) -> str:
    direct = {k: v for k, v in kinds.items() if " → " not in k}
    chains = {k: v for k, v in kinds.items() if " → " in k}
    text = ", ".join(f"{k} {v}" for k, v in sorted(direct.items(), key=lambda kv: -kv[1]))
    if chains:
        steps = [k.count(" → ") + 1 for k in chains]
        text += (
            f"; chains of {min(steps)} to {max(steps)} such steps {sum(chains.values())}"
            " (e.g. Split → Concat in C2f/C3k2 blocks, Concat → Reshape → … in Detect heads)"
        )
    return text


def _details(pairs, checks) -> list[str]:
    out = []
    for p in pairs:
        c = checks[p.name]
        notes = list(p.repairs)
        notes += [f"unexplained tie: {', '.join(f'`{t}`' for t in g)}" for g in c.unexplained]
        notes += [
            f"rule {r} tie missing in the cache: `{a}` vs `{b}`" for r, a, b in c.contradicted
        ]
        if notes:
            out += ["", f"**{p.name}**:", ""] + [f"- {n}" for n in notes]
    return out


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=PAIRS, help="the onnx_cache_pairs folder")
    parser.add_argument("-o", "--output", type=Path, help="write the markdown here")
    args = parser.parse_args(argv)
    text = pairs_markdown(args.root)
    if args.output:
        _write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
