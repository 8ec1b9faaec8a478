"""Bit-exactness against real TensorRT output: every case in ../shared/testdata/trt_triples/.

Each case holds the activations TensorRT calibrated on and the cache it wrote. The test walks
the folder, so a case added later is covered automatically. Every cache line is asserted:
all of them are reproduced today (including the TensorRT 7.0 conv output, i = 1219 after one
range doubling); a line that stops matching is a regression, not an open question.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import calibkit as ck
from calibkit.cache.format import read_cache
from calibkit.cli import main
from calibkit.data.activations import iter_recorded_batches
from conftest import TESTDATA

CASES = sorted(p for p in (TESTDATA / "trt_triples").glob("*") if (p / "expected.cache").is_file())
ALGORITHMS = {
    "EntropyCalibration2": "entropy2",
    "EntropyCalibration": "entropy",
    "MinMaxCalibration": "minmax",
}


def test_the_triples_are_there():
    assert len(CASES) >= 4, f"expected the TensorRT triples under {TESTDATA / 'trt_triples'}"


def lines(case: Path):
    expected = read_cache(case / "expected.cache")
    return [pytest.param(case, name, id=f"{case.name}:{name}") for name in expected.scales]


@pytest.mark.parametrize(("case", "name"), [p for c in CASES for p in lines(c)])
def test_every_cache_line_is_bit_exact(impl, case, name):
    expected = read_cache(case / "expected.cache")
    selector = ck.make_selector(ALGORITHMS[expected.algorithm])
    collector = ck.HistogramCollector()
    for batch in iter_recorded_batches(case / "activations.npz"):
        collector.update({name: batch[name]})
    amax = selector.select(collector.histograms_[name])
    got = ck.scale_from_amax(amax)
    want = expected.scales[name]
    assert got.view(np.uint32) == want.view(np.uint32), (
        f"{name}: calibkit {got.view(np.uint32):x} vs TensorRT {want.view(np.uint32):x}"
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_writes_tensorrt_cache_byte_for_byte(case, tmp_path, capsys):
    expected = read_cache(case / "expected.cache")
    version = ".".join(map(str, expected.version))
    out = tmp_path / "out.cache"
    argv = ["calibrate", str(case / "activations.npz"), "--trt-version", version, "-o", str(out)]
    argv += ["--algorithm", ALGORITHMS[expected.algorithm]]
    assert main(argv) == 0
    got, want = read_cache(out), expected
    assert {k: v.view(np.uint32) for k, v in got.scales.items()} == {
        k: v.view(np.uint32) for k, v in want.scales.items()
    }
    assert (
        out.read_bytes().splitlines()[0] == (case / "expected.cache").read_bytes().splitlines()[0]
    )
    if list(got.scales) == list(want.scales):  # same line order: the whole file is identical
        assert out.read_bytes() == (case / "expected.cache").read_bytes()
    assert "tensors from" in capsys.readouterr().out


# -- partial triples: caches where only some lines can be rebuilt --------------------------------
PARTIAL = sorted(
    p for p in (TESTDATA / "trt_partial_triples").glob("*") if (p / "generate.py").is_file()
)


@pytest.fixture(scope="module")
def partial_activations(tmp_path_factory):
    """Run each case's generate.py (it rebuilds the inputs TensorRT calibrated on)."""
    import subprocess
    import sys

    out = {}
    for case in PARTIAL:
        path = tmp_path_factory.mktemp(case.name) / "activations.npz"
        subprocess.run(
            [sys.executable, str(case / "generate.py"), str(path)], check=True, capture_output=True
        )
        out[case.name] = path
    return out


def test_the_partial_triples_are_there():
    assert PARTIAL, f"expected cases under {TESTDATA / 'trt_partial_triples'}"


def _partial_lines():
    # generate.py's keys are the rebuildable lines; listed here so each is its own test
    # (the README of trt8600_ec2_constants_glibcrand names the four Constant outputs).
    names = [f"(Unnamed Layer* {i}) [Constant]_output" for i in (7, 9, 12, 14)]
    return [pytest.param(c, n, id=f"{c.name}:{n}") for c in PARTIAL for n in names]


@pytest.mark.parametrize(("case", "name"), _partial_lines())
def test_partial_triple_lines_are_bit_exact(impl, case, name, partial_activations):
    expected = read_cache(case / "expected.cache")
    data = np.load(partial_activations[case.name])
    assert name in data.files, f"generate.py no longer rebuilds {name}"
    collector = ck.HistogramCollector()
    collector.update({name: data[name]})  # one batch: TensorRT calibrates constants as activations
    amax = ck.make_selector(ALGORITHMS[expected.algorithm]).select(collector.histograms_[name])
    got, want = ck.scale_from_amax(amax), expected.scales[name]
    assert got.view(np.uint32) == want.view(np.uint32), (
        f"{name}: calibkit {got.view(np.uint32):x} vs TensorRT {want.view(np.uint32):x}"
    )


@pytest.mark.parametrize(
    "spec",
    [
        "entropy2:candidate-b",
        "entropy2:pytorch",
        "entropy2:mxnet",
        "entropy2:threshold=edge",
        "entropy2:normalization=separate",
        "entropy2:spread=all",
        "minmax",
    ],
)
def test_partial_triple_rules_out_the_other_variants(spec, partial_activations):
    # Each variant misses at least one of the four Constant lines (docs/fidelity.md §1b lists
    # which): the evidence that settles calibkit's default.
    case = PARTIAL[0]
    expected = read_cache(case / "expected.cache")
    data = np.load(partial_activations[case.name])
    missed = None
    for name in sorted(data.files, key=lambda n: data[n].size):  # small first: stop at a miss
        collector = ck.HistogramCollector()
        collector.update({name: data[name]})
        amax = ck.make_selector(spec).select(collector.histograms_[name])
        if ck.scale_from_amax(amax).view(np.uint32) != expected.scales[name].view(np.uint32):
            missed = name
            break
    assert missed is not None, f"{spec} reproduces every line: not ruled out"
