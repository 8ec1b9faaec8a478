"""Every piece of TensorRT evidence we hold, and what calibkit reproduces of it: docs/fidelity.md.

Sections: (1) the triples — TensorRT caches with the exact activations — per tensor TensorRT's
hex, calibkit's, the chosen bin i and the histogram range, with candidate A and the published
variants side by side; (1b) the partial triples — caches where only some lines can be rebuilt
(each case's generate.py), with every entropy variant checked against them; (2) the real
caches — every file parsed and written back byte for byte; (3) the ONNX/cache pairs —
shared-scale groups and cache names (benchmarks/fidelity_pairs.py).

Regenerate the document::

    python benchmarks/fidelity.py -o docs/fidelity.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import calibkit as ck
from calibkit.atomic import write_atomic
from calibkit.cache.format import read_cache
from calibkit.data.activations import iter_recorded_batches

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT.parent / "shared" / "testdata"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fidelity_pairs import pairs_markdown  # noqa: E402

ALGORITHMS = {
    "EntropyCalibration2": "entropy2",
    "EntropyCalibration": "entropy",
    "MinMaxCalibration": "minmax",
}
VARIANTS = ["entropy2", "entropy2:candidate-b", "entropy2:pytorch", "entropy2:mxnet"]


def _bits(scale) -> str:
    return format(int(np.float32(scale).view(np.uint32)), "x")


def triples_rows(root: Path = TESTDATA / "trt_triples"):
    """(case, tensor, TensorRT hex, {variant: (hex, i)}, R, max |x|, batches) per cache line."""
    for case in sorted(p for p in root.glob("*") if (p / "expected.cache").is_file()):
        expected = read_cache(case / "expected.cache")
        collector = ck.HistogramCollector()
        for batch in iter_recorded_batches(case / "activations.npz"):
            collector.update(batch)
        default = ALGORITHMS[expected.algorithm]
        for name, scale in expected.scales.items():
            h = collector.histograms_[name]
            found = {}
            for spec in [default, *(v for v in VARIANTS if v != default)]:
                sel = ck.make_selector(spec)
                amax = sel.select(h)
                offset = {"center": 0.5, "edge": 0.0, "last-center": -0.5}[
                    getattr(sel, "threshold", "center")
                ]
                i = round(amax / h.upper * h.num_bins - offset) if h.upper else 0
                found[spec] = (_bits(ck.scale_from_amax(amax)), i)
            yield case.name, name, _bits(scale), found, h.upper, h.max_abs, collector.n_batches_


def triples_markdown() -> str:
    rows = list(triples_rows())
    exact = sum(found[next(iter(found))][0] == want for _, _, want, found, *_ in rows)
    out = [
        "## 1. TensorRT triples (cache + the exact activations)",
        "",
        f"**{exact} of {len(rows)} cache lines bit-exact** with calibkit's defaults "
        "(`tests/test_fidelity.py` asserts every one, with the Numba kernels and with the NumPy "
        "twins). i is the number of kept bins, amax = (i + 0.5) R / 2048.",
        "",
        "| case | tensor | batches | max abs x | R | TensorRT | calibkit (i) | "
        + " | ".join(f"`{v}` (i)" for v in VARIANTS[1:])
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * (len(VARIANTS) - 1),
    ]
    for case, name, want, found, upper, max_abs, n in rows:
        default_hex, default_i = next(iter(found.values()))
        mark = "✔" if default_hex == want else "✘"
        cells = [
            f"{found[v][0]} ({found[v][1]}){' ✔' if found[v][0] == want else ''}"
            for v in VARIANTS[1:]
        ]
        out.append(
            f"| {case} | `{name}` | {n} | {max_abs:.6g} | {upper:.6g} | `{want}` | "
            f"`{default_hex}` ({default_i}) {mark} | " + " | ".join(cells) + " |"
        )
    out += [
        "",
        "Only the TensorRT 7.0 conv output discriminates: a later batch doubles the range, and "
        "TensorRT's threshold (i = 1219) lies above every value seen. The published variants "
        "(pytorch-quantization, MXNet/ONNX Runtime) clip it to i = 286. Candidate B "
        "(fractional-overlap levels, threshold at the centre of the last kept bin; its i column "
        "counts kept bins) also gives `3e0a9eac` there, so A and B are not yet separated by "
        "evidence; on the single-batch lines B needs a bin of its own for values equal to the "
        "range, which calibkit's histogram (like TensorRT's, as far as the evidence shows) does "
        "not keep, so the preset misses them by one bin.",
        "",
        "Still open (named knobs, defaults chosen because every triple agrees with them, not "
        "because a triple forces them): bin-0 handling, first vs last minimum, float32 vs float64 "
        "KL, candidate A vs B. MinMax, EntropyCalibration (v1) and Legacy have no triple.",
    ]
    return "\n".join(out)


# Every named knob of the entropy search moved off its default, plus the presets and the other
# calibrators: which of them the partial triples rule out.
PARTIAL_VARIANTS = [
    "entropy2:candidate-b",
    "entropy2:pytorch",
    "entropy2:mxnet",
    "entropy2:threshold=edge",
    "entropy2:normalization=separate",
    "entropy2:spread=all",
    "entropy2:grouping=floor",
    "entropy2:num_quant_bins=127",
    "entropy2:first_bin=keep",
    "entropy2:ties=last",
    "entropy2:precision=float32",
    "minmax",
]


def partial_rows(root: Path = TESTDATA / "trt_partial_triples"):
    """(case, tensor, n values, R, TensorRT hex, calibkit hex, i, {variant: matches}) per line."""
    for case in sorted(p for p in root.glob("*") if (p / "generate.py").is_file()):
        expected = read_cache(case / "expected.cache")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "activations.npz"
            cmd = [sys.executable, str(case / "generate.py"), str(out)]
            subprocess.run(cmd, check=True, capture_output=True)
            with np.load(out) as data:
                arrays = {name: data[name] for name in data.files}
        for name, values in arrays.items():
            collector = ck.HistogramCollector()
            collector.update({name: values})  # one batch: constants are calibrated as activations
            h = collector.histograms_[name]
            want = _bits(expected.scales[name])
            amax = ck.make_selector(ALGORITHMS[expected.algorithm]).select(h)
            i = round(amax / h.upper * h.num_bins - 0.5)
            found = {
                v: _bits(ck.scale_from_amax(ck.make_selector(v).select(h))) == want
                for v in PARTIAL_VARIANTS
            }
            got = _bits(ck.scale_from_amax(amax))
            yield case.name, name, values.size, h.upper, want, got, i, found


def partial_markdown() -> str:
    rows = list(partial_rows())
    exact = sum(want == got for *_, want, got, _i, _f in rows)
    short = {v: v.replace("entropy2:", "") for v in PARTIAL_VARIANTS}
    out = [
        "## 1b. Partial triples (TensorRT caches where only some lines can be rebuilt)",
        "",
        f"**{exact} of {len(rows)} rebuildable lines bit-exact** with calibkit's defaults "
        "(`tests/test_fidelity.py` rebuilds the inputs with each case's `generate.py` and asserts "
        "every line, with the Numba kernels and with the NumPy twins). The other lines of these "
        "caches come from inputs nobody can know (uninitialised memory) and are structural "
        "evidence only. ✔ = the variant gives TensorRT's scale.",
        "",
        "| case | tensor | values | R | TensorRT | calibkit (i) | "
        + " | ".join(f"`{short[v]}`" for v in PARTIAL_VARIANTS)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(PARTIAL_VARIANTS),
    ]
    for case, name, n, upper, want, got, i, found in rows:
        mark = "✔" if got == want else "✘"
        cells = ["✔" if found[v] else "✘" for v in PARTIAL_VARIANTS]
        out.append(
            f"| {case} | `{name}` | {n} | {upper:.7g} | `{want}` | `{got}` ({i}) {mark} | "
            + " | ".join(cells)
            + " |"
        )
    ruled_out = [short[v] for v in PARTIAL_VARIANTS if not all(r[-1][v] for r in rows)]
    out += [
        "",
        "Ruled out by these lines (each misses at least one): "
        + ", ".join(f"`{v}`" for v in ruled_out)
        + ". The four lines are all i = 2048 (amax = 2048.5 R / 2048): the half-bin offset rules "
        "out min-max and every `threshold=edge` variant (pytorch-quantization, MXNet/ONNX "
        "Runtime); calibkit's candidate-B preset lands one bin low on all four, and the "
        "evidence README finds candidate B proper (with its extra bin for values equal to the "
        "range) at bin 2047 on layers 7 and 12; on the 10-value bias, renormalising Q on its "
        "own (`normalization=separate`) and spreading over empty bins (`spread=all`) pick "
        "other bins. Together with the TensorRT 7.0 conv line, candidate A (calibkit's "
        "default) is the only variant consistent with every public case. Constants are "
        "calibrated like activations (one batch, EntropyCalibration2 on the histogram of "
        "|x|: for layers 9 and 12 the largest magnitude is a negative value).",
        "",
        "Structural evidence in the same cache (TensorRT 8.6, network API): the pooling output "
        "carries its activation input's scale (rule P). Each MatMul output carries the same "
        "scale as the bias add TensorRT fuses with it, and `[TopK]_output_1` the Softmax "
        "output's; here both are explained by identical histograms, not a sharing rule: the "
        "MatMul outputs reach 2.6e38 (uninitialised inputs), so the histogram bins are 1.3e35 "
        "wide and adding a bias of magnitude < 1 moves no value to another bin; a saturated "
        "Softmax gives rows of exact 0 and 1, whose top-1 values are all 1.0 (the same R and "
        "bin). Where a bias add can change the data, TensorRT does not share: in the "
        "TensorRT 10.10 BERT cache "
        "(`trt101000_entropy2_bert_inf_hanner123.cache`) all 12 `.../MatMul_output_0` lines "
        "differ from their bias `.../Add_output_0`. So calibkit's sharing rules "
        "(calibkit.rules.sharing) stay P (and C up to 8.0), with no MatMul-bias or TopK rule.",
    ]
    return "\n".join(out)


def caches_markdown(root: Path = TESTDATA / "trt_caches") -> str:
    files = sorted(p for p in root.glob("*") if p.suffix != ".md")
    rows, same = [], 0
    for path in files:
        cache = read_cache(path)
        identical = cache.to_bytes() == path.read_bytes()
        same += identical
        header = path.read_bytes().splitlines()[0].decode()
        rows.append(
            f"| {path.name} | `{header}` | {len(cache.scales)} | {'✔' if identical else '✘'} |"
        )
    return "\n".join(
        [
            "## 2. Real TensorRT caches (TensorRT 4 to 10)",
            "",
            f"**{same} of {len(files)} files read and write back byte for byte** "
            "(`tests/test_cache.py` walks the folder).",
            "",
            "| file | header | lines | round trip |",
            "|---|---|---|---|",
            *rows,
        ]
    )


def document() -> str:
    return (
        "\n\n".join(
            [
                "# Fidelity: what calibkit reproduces of TensorRT",
                "Generated by `python benchmarks/fidelity.py -o docs/fidelity.md` from "
                "`shared/testdata/` (the evidence beside the checkout). Do not edit by hand.",
                triples_markdown(),
                partial_markdown(),
                caches_markdown(),
                pairs_markdown(),
            ]
        )
        + "\n"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write the markdown here (default: print)")
    args = parser.parse_args(argv)
    text = document()
    if args.output:
        write_atomic(args.output, text.encode())
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
