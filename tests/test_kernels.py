"""Numba kernels against their NumPy twins (the twins are the specification)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from calibkit import _kernels, _reference
from calibkit.histogram import bin_scale, raw_bits

values = st.floats(-1e4, 1e4, width=32) | st.sampled_from([np.nan, np.inf, -np.inf, 0.0])
# adversarial magnitudes: subnormals, tiny and huge normals, the float32 maximum, edges
wide = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [5e-324, 1e-310, 1e-300, 2.0**-1000, 3.4e38, 1.7e308, 0.0, -0.0]
)


def both(name, x, *args):
    """Run kernel `name` and its twin on x's raw bits; return both results and both counts."""
    bits, fmt, mask, inf_bits = raw_bits(x)
    out = []
    for module in (_kernels, _reference):
        if name == "bin_clamped":  # the float array itself, or the bits of a 16-bit float
            values = bits if bits.dtype == np.uint16 else bits.view(x.dtype)
            counts = np.zeros(args[0], np.int64)
            out.append((module.bin_clamped(values, fmt, counts, *args[1:]), counts))
        elif args:
            counts = np.zeros(args[0], np.int64)
            result = getattr(module, name)(bits, fmt, mask, inf_bits, counts, *args[1:])
            out.append((result, counts))
        else:
            out.append((getattr(module, name)(bits, fmt, mask, inf_bits), None))
    return out


@settings(max_examples=200, deadline=None)
@given(
    x=arrays(
        st.sampled_from([np.float16, np.float32, np.float64]), st.integers(0, 300), elements=values
    )
)
def test_scan_matches_reference(x):
    (fast, _), (slow, _) = both("scan", x)
    assert fast == slow


@settings(max_examples=200, deadline=None)
@given(x=arrays(np.float64, st.integers(0, 200), elements=wide))
def test_scan_matches_reference_on_any_float64(x):
    (fast, _), (slow, _) = both("scan", x)
    assert fast == slow


@settings(max_examples=200, deadline=None)
@given(
    x=arrays(
        st.sampled_from([np.float16, np.float32, np.float64]), st.integers(0, 300), elements=values
    ),
    upper=st.sampled_from([1.0, 3.0, 1e-3, 1e4, 5e-324, 1e-300, 1e300]),
)
def test_bin_values_matches_reference(x, upper):
    with np.errstate(over="ignore"):  # the range itself, at the top (inf in float16: skipped)
        x = np.concatenate([x, np.array([upper, -upper], np.float64).astype(x.dtype)])
    (fast, cf), (slow, cs) = both("bin_values", x, 64, *bin_scale(upper, 64))
    assert fast == slow
    np.testing.assert_array_equal(cf, cs)
    assert cf.sum() + fast[3] == np.isfinite(x).sum()  # every finite value once


@settings(max_examples=200, deadline=None)
@given(
    x=arrays(
        st.sampled_from([np.float16, np.float32, np.float64]),
        st.integers(0, 300),
        elements=st.floats(-1e4, 1e4, width=16),
    ),
    upper=st.floats(1e-3, 1e4),
)
def test_bin_clamped_matches_reference(x, upper):
    (_, cf), (_, cs) = both("bin_clamped", x, 64, *bin_scale(upper, 64))
    np.testing.assert_array_equal(cf, cs)
    assert cf.sum() == x.size


def test_bin_clamped_never_writes_outside_on_non_finite_values():
    """The caller sends inf/NaN batches to bin_values; clamping still keeps them in bounds."""
    x = np.array([1.0, np.nan, np.inf, -np.inf, 2.0], np.float32)
    (_, fast), _ = both("bin_clamped", x, 64, *bin_scale(4.0, 64))
    assert fast.sum() == 5 and fast[-1] == 3


def test_bin_index_float64_arithmetic_at_edges():
    """Bin index = floor(float64(|x|) * (num_bins / upper)) in both: equal at exact edges."""
    upper = 3.0
    edges = (np.arange(2048) * (upper / 2048)).astype(np.float32)
    (_, fast), (_, slow) = both("bin_clamped", edges, 2048, *bin_scale(upper, 2048))
    np.testing.assert_array_equal(fast, slow)
    want = np.bincount(
        np.minimum((np.abs(edges.astype(np.float64)) * (2048 / upper)).astype(np.int64), 2047),
        minlength=2048,
    )
    np.testing.assert_array_equal(fast, want)


def test_tiny_ranges_count_every_value_once():
    """A range below ~1e-305 overflowed num_bins / upper to inf and lost counts (issue 12)."""
    for upper in (5e-324, 1e-310, 1e-306, 1e-300):
        x = np.array([upper, upper / 2, 0.0, -upper, upper * 0.999], np.float64)
        (fast, cf), (_, cs) = both("bin_values", x, 2048, *bin_scale(upper, 2048))
        np.testing.assert_array_equal(cf, cs)
        assert cf.sum() + fast[3] == x.size


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
def test_half_precision_bits_decode_exactly(dtype):
    """Every float16 / bfloat16 bit pattern decodes to the value NumPy (ml_dtypes) gives it."""
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dtype = ml_dtypes.bfloat16
    every = np.arange(1 << 16, dtype=np.uint16).view(dtype)
    with np.errstate(invalid="ignore"):  # NaN patterns
        finite = every[np.isfinite(every.astype(np.float64))]
    (fast, _), (slow, _) = both("scan", finite)
    assert fast == slow == (float(np.abs(finite.astype(np.float64)).max()), 0, 0)
    (_, cf), (_, cs) = both("bin_clamped", finite, 4096, *bin_scale(fast[0], 4096))
    np.testing.assert_array_equal(cf, cs)
    assert cf.sum() == finite.size


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
        _reference.bin_clamped(x, 3, h, *bin_scale(float(x.max()), 512))
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


def test_importing_calibkit_changes_no_numba_setting():
    """No global state: the threading layer stays Numba's (or the user's) choice."""
    code = (
        "import numba; before = numba.config.THREADING_LAYER; import calibkit, numpy as np; "
        "calibkit.Histogram().fill(np.ones(10, np.float32)); "
        "assert numba.config.THREADING_LAYER == before, numba.config.THREADING_LAYER"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


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
