"""Histogram: TensorRT-style range growth, exact merging, counts, and every deliberate error."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import ml_dtypes
except ImportError:  # bfloat16 comes with onnx
    ml_dtypes = None
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import calibkit as ck
from calibkit.histogram import fold

finite32 = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False)
batch = arrays(np.float32, st.integers(1, 200), elements=finite32)


def rebin(values: np.ndarray, num_bins: int, upper: float) -> np.ndarray:
    """Independent binning of |values| on [0, upper) with the last bin closed."""
    a = np.abs(values.astype(np.float64))
    idx = np.minimum((a * (num_bins / upper)).astype(np.int64), num_bins - 1)
    return np.bincount(idx, minlength=num_bins)


def test_first_batch_sets_the_range_and_max_lands_in_last_bin(impl):
    h = ck.Histogram(16).fill(np.array([0.0, -0.25, 1.0, 0.5], np.float32))
    assert h.upper == 1.0
    assert h.counts[0] == 1 and h.counts[4] == 1 and h.counts[8] == 1 and h.counts[15] == 1
    assert h.total == 4 and h.max_abs == 1.0


def test_growth_doubles_range_and_merges_pairs(impl):
    h = ck.Histogram(8).fill(np.array([1.0, 0.1])).fill(np.array([2.5]))
    # 2.5 > 1 -> range 1 -> 2 -> 4 (two doublings: runs of 4 bins merge)
    assert h.upper == 4.0
    expected = rebin(np.array([1.0, 0.1]), 8, 1.0)
    np.testing.assert_array_equal(h.counts, fold(expected, 4) + rebin(np.array([2.5]), 8, 4.0))


def test_equal_to_range_does_not_grow(impl):
    h = ck.Histogram(8).fill(np.array([2.0])).fill(np.array([-2.0]))
    assert h.upper == 2.0 and h.counts[7] == 2


@settings(max_examples=60, deadline=None)
@given(x=batch, y=batch)
def test_streaming_equals_one_shot_without_growth(x, y):
    """fill(x); fill(y) equals fill(concat) when the first batch holds the max."""
    x = np.concatenate([x, [np.float32(1e4)]])  # the first batch holds the largest value
    a = ck.Histogram(64).fill(x).fill(y)
    b = ck.Histogram(64).fill(np.concatenate([x, y]))
    assert a == b


@settings(max_examples=60, deadline=None)
@given(x=batch, y=batch, boost=st.integers(1, 40))
def test_growth_equals_rebinning_at_final_range(x, y, boost):
    """After growth, counts equal x binned at the first range then folded, plus y at the final."""
    y = y * np.float32(boost)
    h = ck.Histogram(64).fill(x)
    r0 = h.upper
    h.fill(y)
    if r0 == 0:
        return
    k = round(math.log2(h.upper / r0))
    assert h.upper == r0 * 2.0**k
    expected = fold(rebin(x, 64, r0), 2**k) + rebin(y, 64, h.upper)
    np.testing.assert_array_equal(h.counts, expected)
    assert h.total == x.size + y.size


@settings(max_examples=60, deadline=None)
@given(x=batch, y=batch, z=batch)
def test_merge_is_associative_and_commutative(x, y, z):
    base = ck.Histogram(32, upper=1e4)  # same starting range: every merge is exact
    a, b, c = (ck.Histogram(32, upper=1e4).fill(v) for v in (x, y, z))
    assert a + b == b + a
    assert (a + b) + c == a + (b + c)
    assert sum([a, b, c]) == base.fill(np.concatenate([x, y, z]))


def test_merge_folds_smaller_range_up():
    a = ck.Histogram(8, upper=1.0).fill(np.array([0.99, 0.5]))
    b = ck.Histogram(8).fill(np.array([4.0, 0.5]))
    m = a + b
    assert m.upper == 4.0 and m.total == 4 and m.max_abs == 4.0
    np.testing.assert_array_equal(m.counts, fold(a.counts, 4) + b.counts)
    assert m == ck.Histogram(8, upper=4.0).fill(np.array([0.99, 0.5, 4.0, 0.5]))


def test_merge_of_incompatible_ranges_is_an_error():
    a = ck.Histogram(8).fill(np.array([1.0]))
    b = ck.Histogram(8).fill(np.array([3.0]))
    with pytest.raises(ck.HistogramMergeError, match="power-of-two multiples"):
        a + b
    with pytest.raises(ck.HistogramMergeError, match="8 and 16 bins"):
        a + ck.Histogram(16)


def test_zero_plus_histogram_and_sum():
    h = ck.Histogram(8).fill(np.array([1.0]))
    assert 0 + h == h and sum([h]) == h
    assert (h + 0) is not h


def test_all_zero_tensor_is_valid_and_keeps_its_counts(impl):
    h = ck.Histogram(8).fill(np.zeros(5, np.float32))
    assert h.upper == 0.0 and h.counts[0] == 5 and h.max_abs == 0.0
    h.fill(np.array([2.0, 0.0]))  # the range starts at the first non-zero batch
    assert h.upper == 2.0 and h.counts[0] == 6 and h.counts[7] == 1


def test_nan_is_an_error_or_counted(impl):
    x = np.array([1.0, np.nan, 2.0])
    with pytest.raises(ck.NonFiniteError, match="1 NaN"):
        ck.Histogram(8).fill(x)
    h = ck.Histogram(8).fill(x, nan_policy="skip")
    assert h.num_nan == 1 and h.total == 2 and h.upper == 2.0


def test_inf_is_recorded_not_binned(impl):
    h = ck.Histogram(8).fill(np.array([1.0, -np.inf, np.inf]))
    assert h.num_inf == 2 and h.total == 1 and h.upper == 1.0 and h.max_abs == 1.0


def test_fixed_range_mode_is_order_independent(rng):
    batches = [rng.standard_normal(100) * s for s in (1, 5, 2, 9)]
    top = max(np.abs(b).max() for b in batches)
    forward = ck.Histogram(64, upper=top)
    backward = ck.Histogram(64, upper=top)
    for b in batches:
        forward.fill(b)
    for b in reversed(batches):
        backward.fill(b)
    assert forward == backward
    grown = [ck.Histogram(64).fill(batches[0]).fill(batches[1]), ck.Histogram(64)]
    grown[1].fill(batches[1]).fill(batches[0])
    assert grown[0] != grown[1]  # TensorRT's default mode does depend on the order


def test_half_precision_is_read_exactly_and_integers_are_refused(impl, rng):
    x = (rng.standard_normal(5000) * 3).astype(np.float32)
    x[:3] = [6e-8, 1e-40, 65504.0]  # float16 subnormal, zero in float16, float16 max
    for dtype in [np.float16, *([ml_dtypes.bfloat16] if ml_dtypes else [])]:
        half = x.astype(dtype)
        got = ck.Histogram(64).fill(half[:100]).fill(half)
        want = ck.Histogram(64).fill(half[:100].astype(np.float64)).fill(half.astype(np.float64))
        assert got == want, dtype
    with pytest.raises(TypeError, match="floating-point"):
        ck.Histogram(8).fill(np.array([1, 2]))


@pytest.mark.parametrize(
    ("num_bins", "error", "match"),
    [(3, ValueError, "power of two"), (1, ValueError, "power of two"), (2.0, TypeError, "int")],
    ids=["odd", "one", "float"],
)
def test_bad_num_bins(num_bins, error, match):
    with pytest.raises(error, match=match):
        ck.Histogram(num_bins)


@pytest.mark.parametrize("upper", [-1.0, math.inf, math.nan], ids=["negative", "inf", "nan"])
def test_bad_upper(upper):
    with pytest.raises(ValueError, match="upper must be finite"):
        ck.Histogram(8, upper)


def test_bad_nan_policy():
    with pytest.raises(ValueError, match="nan_policy"):
        ck.Histogram(8).fill(np.ones(2), nan_policy="ignore")


def test_from_arrays_checks_consistency():
    with pytest.raises(ValueError, match="1-D integer"):
        ck.Histogram.from_arrays(np.ones(8), 1.0, max_abs=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        ck.Histogram.from_arrays(-np.ones(8, np.int64), 1.0, max_abs=1.0)
    with pytest.raises(ValueError, match="positive upper"):
        ck.Histogram.from_arrays(np.ones(8, np.int64), 0.0, max_abs=0.0)
    with pytest.raises(ValueError, match="inconsistent"):
        ck.Histogram.from_arrays(np.ones(8, np.int64), 1.0, max_abs=2.0)


def test_to_numpy_matches_np_histogram_layout(rng):
    x = rng.random(1000)
    h = ck.Histogram(16).fill(x)
    counts, edges = h.to_numpy()
    assert edges.size == 17 and edges[0] == 0 and edges[-1] == h.upper
    ref, _ = np.histogram(np.abs(x), bins=edges)
    np.testing.assert_array_equal(counts, ref)  # identical except for floating-point edge ties


def test_growth_by_many_doublings_folds_everything_into_bin_zero(impl):
    h = ck.Histogram(8).fill(np.array([1e-30, 5e-31])).fill(np.array([1e30]))
    assert h.upper >= 1e30  # about 200 doublings: the fold factor far exceeds 8 bins
    assert h.counts.tolist() == [2, 0, 0, 0, 1, 0, 0, 0]


def _one_by_one(batches, num_bins=64):
    """The specification: each value binned at the final range of its batch, in Python."""
    counts, upper = [0] * num_bins, 0.0
    for batch in batches:
        finite = [abs(float(v)) for v in batch if np.isfinite(v)]
        m = max(finite, default=0.0)
        if upper == 0.0:
            upper = m
        elif m > upper:
            k = 0
            while upper < m:
                upper, k = upper * 2.0, k + 1
            folded = [0] * num_bins
            for j, c in enumerate(counts):
                folded[j >> min(k, 62)] += c
            counts = folded
        factor, scale = ck.histogram.bin_scale(upper, num_bins) if upper else (0.0, 0.0)
        for a in finite:
            counts[min(int((a * factor) * scale), num_bins - 1)] += 1
    return counts, upper


magnitudes = st.sampled_from(
    [5e-324, 1e-310, 1e-300, 1e-30, 1.0, 3.4e38, 1e154, 1e300]
) | st.floats(-1e300, 1e300)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # `impl` swaps the module once per test; it holds no state between examples
@given(batches=st.lists(st.lists(magnitudes, min_size=1, max_size=20), min_size=1, max_size=6))
def test_every_value_counted_once_whatever_the_magnitude(impl, batches):
    """Subnormal, tiny and huge ranges, thousands of doublings: nothing lost (issue 12)."""
    h = ck.Histogram(64)
    for batch in batches:
        h.fill(np.array(batch, np.float64))
    counts, upper = _one_by_one(batches)
    assert h.total == sum(len(b) for b in batches)
    assert h.counts.tolist() == counts and h.upper == upper


def test_thousands_of_doublings_from_a_subnormal(impl):
    h = ck.Histogram(2048).fill(np.array([5e-324, -5e-324, 0.0])).fill(np.array([1e300]))
    assert h.total == 4 and h.counts[0] == 3 and h.upper >= 1e300
    h = ck.Histogram(2048).fill(np.full(10, 1e-306)).fill(np.arange(2048) * 1e-306)
    assert h.total == 2058


def test_range_past_the_float64_maximum_is_an_error(impl):
    h = ck.Histogram(8).fill(np.array([1.0]))
    with pytest.raises(ck.errors.HistogramRangeError, match="float64 maximum"):
        h.fill(np.array([1.7e308]))
    assert h.total == 1 and h.upper == 1.0  # unchanged


def test_all_denormal_tensor_is_not_all_zeros(impl):
    x = np.array([1e-40, -3e-41, 0.0], np.float32)
    h = ck.Histogram(2048).fill(x)
    assert h.max_abs == float(np.float32(1e-40)) and h.upper > 0
    assert h.counts[0] == 1 and h.counts[-1] == 1


def test_threads_filling_their_own_histograms_equal_the_serial_result(rng):
    """Kernels release the GIL and launch no parallel region: safe from any number of threads."""
    data = [
        [rng.standard_normal(50_000).astype(np.float32) * (k + 1) for k in range(8)]
        for _ in range(4)
    ]

    def run(batches):
        h = ck.Histogram()
        for x in batches:
            h.fill(x)
        return h

    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(run, data))
    assert threaded == [run(batches) for batches in data]
