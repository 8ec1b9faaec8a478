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
from conftest import TESTDATA

import calibkit as ck
from calibkit.cache.format import read_cache
from calibkit.cli import main
from calibkit.data.activations import iter_recorded_batches

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
