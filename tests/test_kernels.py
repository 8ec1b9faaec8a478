"""Numba kernels against their NumPy twins (the twins are the specification)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from calibkit import _kernels, _reference

values = st.floats(-1e4, 1e4, width=32) | st.sampled_from([np.nan, np.inf, -np.inf, 0.0])


@settings(max_examples=200, deadline=None)
@given(x=arrays(np.float32, st.integers(0, 300), elements=values))
def test_scan_matches_reference(x):
    assert _kernels.scan(x) == _reference.scan(x)


@settings(max_examples=200, deadline=None)
@given(
    x=arrays(np.float32, st.integers(0, 300), elements=st.floats(-1e4, 1e4, width=32)),
    upper=st.floats(1e-3, 1e4),
)
def test_accumulate_matches_reference(x, upper):
    x = np.clip(x, -upper, upper).astype(np.float32)
    fast, slow = np.zeros(64, np.int64), np.zeros(64, np.int64)
    _kernels.accumulate(x, fast, upper)
    _reference.accumulate(x, slow, upper)
    np.testing.assert_array_equal(fast, slow)


def test_accumulate_float64_bin_arithmetic_at_edges():
    """Bin index = floor(float64(|x|) * (num_bins / upper)) in both: equal at exact edges."""
    upper = 3.0
    edges = (np.arange(2048) * (upper / 2048)).astype(np.float32)
    fast, slow = np.zeros(2048, np.int64), np.zeros(2048, np.int64)
    _kernels.accumulate(edges, fast, upper)
    _reference.accumulate(edges, slow, upper)
    np.testing.assert_array_equal(fast, slow)


def histograms():
    """A spread of histogram shapes: dense, sparse, spiky, with empty stretches."""
    rng = np.random.default_rng(1)
    out = []
    for kind in ("normal", "laplace", "relu", "sparse", "two-bumps", "single-bin"):
        h = np.zeros(512, np.int64)
        if kind == "normal":
            x = np.abs(rng.standard_normal(20000))
        elif kind == "laplace":
            x = np.abs(rng.laplace(size=20000))
        elif kind == "relu":
            x = np.maximum(rng.standard_normal(20000), 0)
        elif kind == "sparse":
            x = np.abs(rng.standard_normal(60))
        elif kind == "two-bumps":
            x = np.abs(np.concatenate([rng.normal(1, 0.05, 900), rng.normal(6, 0.1, 30)]))
        else:
            x = np.full(50, 2.0)
        _reference.accumulate(x, h, float(x.max()))
        out.append(pytest.param(h, id=kind))
    return out


OPTIONS = [
    pytest.param(g, s, n, id=f"{gname}-{sname}-{nname}")
    for g, gname in ((_kernels.GROUP_PROPORTIONAL, "prop"), (_kernels.GROUP_FLOOR, "floor"))
    for s, sname in ((True, "nonzero"), (False, "all"))
    for n, nname in ((True, "total"), (False, "separate"))
]


@pytest.mark.parametrize("counts", histograms())
@pytest.mark.parametrize(("grouping", "spread", "total"), OPTIONS)
def test_kl_sweep_fast_matches_reference(counts, grouping, spread, total):
    args = (counts, 32, counts.size, 32, grouping, spread, total)
    fast, slow = _kernels.kl_sweep_fast(*args), _reference.kl_sweep_fast(*args)
    np.testing.assert_array_equal(np.isfinite(fast), np.isfinite(slow))
    ok = np.isfinite(slow)
    np.testing.assert_allclose(fast[ok], slow[ok], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("counts", histograms())
@pytest.mark.parametrize(
    ("grouping", "eps", "single"),
    [
        (_kernels.GROUP_FRACTIONAL, 0.0, False),
        (_kernels.GROUP_FLOOR, 1e-4, False),
        (_kernels.GROUP_PROPORTIONAL, 0.0, True),
    ],
    ids=["fractional", "smoothed", "float32"],
)
def test_kl_sweep_general_matches_reference(counts, grouping, eps, single):
    args = (counts, 32, counts.size, 32, grouping, True, True, eps, single)
    fast, slow = _kernels.kl_sweep_general(*args), _reference.kl_sweep_general(*args)
    np.testing.assert_array_equal(np.isfinite(fast), np.isfinite(slow))
    ok = np.isfinite(slow)
    tol = 1e-5 if single else 1e-9
    np.testing.assert_allclose(fast[ok], slow[ok], rtol=tol, atol=tol * 1e-3)


@pytest.mark.parametrize("counts", histograms())
def test_general_kernel_agrees_with_fast_kernel(counts):
    args = (counts, 32, counts.size, 32, _kernels.GROUP_PROPORTIONAL, True, True)
    fast = _kernels.kl_sweep_fast(*args)
    general = _kernels.kl_sweep_general(*args, 0.0, False)
    ok = np.isfinite(general)
    np.testing.assert_allclose(fast[ok], general[ok], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("counts", histograms())
def test_mse_sweep_matches_reference(counts):
    fast = _kernels.mse_sweep(counts, 3.0, 32, counts.size)
    slow = _reference.mse_sweep(counts, 3.0, 32, counts.size)
    np.testing.assert_allclose(fast, slow, rtol=1e-9)


def test_slides_expansion_example():
    """GTC 2017 slides: [1,0,2,3,5,3,1,7] in 2 levels expands to [2,0,2,2,4,4,4,4]."""
    h = np.array([1, 0, 2, 3, 5, 3, 1, 7])
    q = _reference.expand(h, 8, 2, _kernels.GROUP_PROPORTIONAL, True)
    np.testing.assert_array_equal(q, [2, 0, 2, 2, 4, 4, 4, 4])
    out = np.zeros(8)
    _kernels._expand(h, 8, 2, _kernels.GROUP_PROPORTIONAL, True, out)
    np.testing.assert_array_equal(out, q)


def test_threading_layer_defaults_to_workqueue():
    import numba

    assert numba.config.THREADING_LAYER == "workqueue"


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    log_bins=st.integers(4, 9),
    nq=st.integers(2, 16),
    grouping=st.sampled_from([_kernels.GROUP_PROPORTIONAL, _kernels.GROUP_FLOOR]),
    spread=st.booleans(),
    total=st.booleans(),
)
def test_kl_sweep_fast_matches_reference_on_random_histograms(
    data, log_bins, nq, grouping, spread, total
):
    nbins = 2**log_bins
    nq = min(nq, nbins)
    counts = data.draw(
        arrays(np.int64, nbins, elements=st.integers(0, 50) | st.just(0)), label="counts"
    )
    start = data.draw(st.integers(nq, nbins), label="start")
    args = (counts, start, nbins, nq, grouping, spread, total)
    fast, slow = _kernels.kl_sweep_fast(*args), _reference.kl_sweep_fast(*args)
    np.testing.assert_array_equal(np.isfinite(fast), np.isfinite(slow))
    ok = np.isfinite(slow)
    np.testing.assert_allclose(fast[ok], slow[ok], rtol=1e-9, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    x=arrays(np.float32, st.integers(0, 300), elements=values),
    upper=st.sampled_from([1.0, 3.0, 1e-3, 1e4]),
)
def test_fill_within_matches_reference(x, upper):
    x = np.where(np.abs(x) > 2 * upper, np.float32(upper), x).astype(np.float32)  # hit the top
    fast, slow = np.zeros(64, np.int64), np.zeros(64, np.int64)
    assert _kernels.fill_within(x, fast, upper) == _reference.fill_within(x, slow, upper)
    np.testing.assert_array_equal(fast, slow)


def test_fill_within_splits_work_in_chunks(rng):
    """More than one 64k chunk: the per-chunk counts and statistics add up."""
    x = rng.standard_normal(300_000).astype(np.float32)
    x[[5, 70_000, 250_000]] = [np.nan, np.inf, 9.0]
    fast, slow = np.zeros(2048, np.int64), np.zeros(2048, np.int64)
    assert _kernels.fill_within(x, fast, 4.0) == _reference.fill_within(x, slow, 4.0)
    np.testing.assert_array_equal(fast, slow)


@settings(max_examples=100, deadline=None)
@given(x=arrays(np.float32, st.integers(0, 300), elements=st.floats(-1e4, 1e4, width=32)))
def test_accumulate_above_matches_reference(x):
    fast, slow = np.zeros(64, np.int64), np.zeros(64, np.int64)
    _kernels.accumulate_above(x, fast, 2e4, 1e2)
    _reference.accumulate_above(x, slow, 2e4, 1e2)
    np.testing.assert_array_equal(fast, slow)
