"""Selectors: known answers, the documented entropy variants, parameters, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import calibkit as ck

TRT7000 = "trt_triples/trt7000_ec2_conv3x3_ones/activations.npz"
CONV = "(Unnamed Layer* 0) [Convolution]_output"


@pytest.fixture(scope="module")
def conv_histogram(shared_testdata):
    """TensorRT 7.0's only non-trivial histogram: 10 batches, one range doubling."""
    acts = np.load(shared_testdata / TRT7000)[CONV]
    h = ck.Histogram()
    for b in acts:
        h.fill(b)
    return h


def chosen_bin(amax: float, hist: ck.Histogram, offset: float = 0.5) -> int:
    i = amax / hist.upper * hist.num_bins - offset
    assert abs(i - round(i)) < 1e-6
    return round(i)


def test_minmax_is_the_exact_max(rng):
    x = rng.standard_normal(1000).astype(np.float32)
    h = ck.Histogram(64).fill(x)
    assert ck.MinMaxSelector().select(h) == float(np.abs(x).max())
    assert ck.MinMaxSelector().select(3.5) == 3.5
    assert ck.MinMaxSelector().select(ck.Histogram(64).fill(np.array([1.0, np.inf]))) == math.inf
    with pytest.raises(ValueError, match=">= 0"):
        ck.MinMaxSelector().select(-1.0)


def test_percentile_50_on_uniform_lands_mid_range():
    h = ck.Histogram.from_arrays(np.full(2048, 10, np.int64), 2.0, max_abs=2.0)
    assert ck.PercentileSelector(50).select(h) == pytest.approx(1.0)
    assert ck.PercentileSelector(100).select(h) == 2.0


def test_percentile_counts_inf_above_everything():
    h = ck.Histogram(8).fill(np.array([1.0] * 9 + [np.inf]))
    assert ck.PercentileSelector(90).select(h) == 1.0
    assert ck.PercentileSelector(99).select(h) == math.inf


def test_legacy_quantile_and_cutoff():
    h = ck.Histogram.from_arrays(np.full(128, 1, np.int64), 128.0, max_abs=128.0)
    assert ck.LegacySelector(0.5, 1.0).select(h) == pytest.approx(64.0)
    assert ck.LegacySelector(0.99, 0.25).select(h) == pytest.approx(32.0)  # capped by the cutoff


def test_all_zero_tensor_gives_zero_amax():
    h = ck.Histogram().fill(np.zeros(10, np.float32))
    for spec in ("entropy2", "minmax", "percentile:99.9", "legacy", "mse"):
        assert ck.make_selector(spec).select(h) == 0.0, spec


@pytest.mark.parametrize("spec", ["entropy2", "entropy", "legacy", "mse", "minmax"])
def test_inf_gives_inf(spec):
    h = ck.Histogram().fill(np.array([1.0, -np.inf], np.float32))
    assert ck.make_selector(spec).select(h) == math.inf


@settings(max_examples=40, deadline=None)
@given(
    first=arrays(np.float32, st.integers(1, 300), elements=st.floats(-50, 50, width=32)),
    later=arrays(np.float32, st.integers(1, 300), elements=st.floats(-400, 400, width=32)),
)
def test_entropy_amax_bounded_by_final_range(first, later):
    """amax <= (2048.5 / 2048) R of the final histogram; it may exceed max |x| after growth."""
    h = ck.Histogram().fill(first).fill(later)
    amax = ck.EntropySelector().select(h)
    assert 0 <= amax <= h.upper * 2048.5 / 2048


def test_single_batch_is_never_clipped(impl, rng):
    """TensorRT evidence: when the top bin holds the max, i = 2048 (every trivial triple line)."""
    x = rng.random(60).astype(np.float32)
    h = ck.Histogram().fill(x)
    assert ck.EntropySelector().select(h) == pytest.approx(h.upper * 2048.5 / 2048)


# i chosen on the TensorRT 7.0 conv histogram by variants of the search, from the brute-force
# study in TRT_CALIBRATION.md §1.6 ("Named variants"); only candidate A (and B) give 1219.
VARIANTS = [
    pytest.param({}, 1219, id="candidate-A"),
    pytest.param({"grouping": "fractional", "threshold": "last-center"}, 1219, id="candidate-B"),
    pytest.param({"normalization": "separate"}, 286, id="separate-norm"),
    pytest.param({"spread": "all"}, 1137, id="spread-all"),
    pytest.param({"num_quant_bins": 127, "start_bin": 128}, 1210, id="127-levels"),
    pytest.param({"grouping": "floor"}, 1152, id="floor-grouping"),
    pytest.param(
        {"normalization": "separate", "first_bin": "copy-next", "ties": "last"},
        286,
        id="pytorch-quantization",
    ),
]


@pytest.mark.parametrize(("options", "expected_i"), VARIANTS)
def test_documented_variants_on_trt7000_conv(impl, conv_histogram, options, expected_i):
    amax = ck.EntropySelector(**options).select(conv_histogram)
    assert chosen_bin(amax, conv_histogram) == expected_i


def test_candidate_a_margin_on_trt7000_conv(conv_histogram):
    """D(1219) = 0.016794 and the runner-up D(1220) = 0.017575 (TRT_CALIBRATION.md §1.6)."""
    d = ck.EntropySelector().divergences(conv_histogram)
    assert d[1219] == pytest.approx(0.016794, abs=1e-6)
    assert d[1220] == pytest.approx(0.017575, abs=1e-6)
    assert np.argmin(d) == 1219


def test_presets_and_threshold_edge(conv_histogram):
    pt = ck.make_selector("entropy2:pytorch")
    assert chosen_bin(pt.select(conv_histogram), conv_histogram, offset=0.0) == 286
    mx = ck.make_selector("entropy2:mxnet")
    assert mx.smoothing == 1e-4 and mx.grouping == "floor"
    assert ck.make_selector("entropy2:candidate-b").grouping == "fractional"


def test_stride_and_start_restrict_candidates(conv_histogram):
    amax = ck.EntropySelector(stride=128).select(conv_histogram)
    assert (chosen_bin(amax, conv_histogram) - 128) % 128 == 0


def test_first_bin_options_do_not_mutate_the_histogram(conv_histogram):
    before = conv_histogram.counts.copy()
    ck.EntropySelector(first_bin="copy-next").select(conv_histogram)
    ck.EntropySelector(first_bin="zero").select(conv_histogram)
    np.testing.assert_array_equal(conv_histogram.counts, before)


def test_ties_first_and_last(conv_histogram):
    """Floor grouping gives equal KL on whole blocks of unclipped i (TRT_CALIBRATION.md §1.6):
    "first" takes the block's start, "last" its end, and both are true minima."""
    first = ck.EntropySelector(grouping="floor", ties="first")
    last = ck.EntropySelector(grouping="floor", ties="last")
    i_first = chosen_bin(first.select(conv_histogram), conv_histogram)
    i_last = chosen_bin(last.select(conv_histogram), conv_histogram)
    assert i_first == 1152 and i_last > i_first
    assert i_first // 128 == i_last // 128  # the same i // 128 block
    d = first.divergences(conv_histogram)
    np.testing.assert_allclose(d[i_first : i_last + 1], d[i_first], rtol=1e-9)


def test_mse_kernel_and_twin_choose_the_same(impl, rng):
    h = ck.Histogram().fill(rng.laplace(size=20000).astype(np.float32))
    amax = ck.MSESelector().select(h)
    errors = ck.MSESelector().errors(h)
    assert errors[chosen_bin(amax, h)] == np.min(errors[np.isfinite(errors)])
    assert amax < h.max_abs  # heavy tails: clipping pays off


def test_compute_amax_keeps_order(rng):
    c = ck.HistogramCollector(64).update({"b": rng.random(10), "a": rng.random(10)})
    assert list(ck.compute_amax(c.histograms_, ck.MinMaxSelector())) == ["b", "a"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("entropy2", "entropy2"),
        ("entropy", "entropy"),
        ("entropy2:ties=last", "entropy2:ties=last"),
        ("minmax", "minmax"),
        ("percentile:99.999", "percentile:99.999"),
        ("legacy:0.99:0.5", "legacy:0.99:0.5"),
        ("mse", "mse"),
    ],
)
def test_spec_round_trip(spec, expected):
    sel = ck.make_selector(spec)
    assert sel.spec == expected
    assert ck.make_selector(sel.spec) == sel


@pytest.mark.parametrize(
    ("spec", "algorithm"),
    [
        ("entropy2", "EntropyCalibration2"),
        ("entropy", "EntropyCalibration"),
        ("minmax", "MinMaxCalibration"),
        ("legacy", "LegacyCalibration"),
        ("percentile:99", None),  # no TensorRT calibrator: header_algorithm decides
        ("mse", None),
    ],
)
def test_trt_algorithm_words(spec, algorithm):
    assert ck.make_selector(spec).trt_algorithm == algorithm


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("kl", "unknown algorithm"),
        ("minmax:3", "minmax takes no parameters"),
        ("percentile:abc", "percentile must be a number, got 'abc'"),
        ("percentile:0", r"in \(0, 100\]"),
        ("legacy:1.5", r"in \(0, 1\]"),
        ("legacy:0.9:1:2", "legacy:<quantile>:<cutoff>"),
        ("entropy2:foo", "unknown entropy preset"),
        ("entropy2:colour=red", "unknown entropy option"),
        ("entropy2:grouping=odd", "grouping must be one of"),
        ("entropy2:start-bin=64", "start_bin"),
        ("mse:0", ">= 1"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        ck.make_selector(spec)


def test_spec_must_be_a_string():
    with pytest.raises(TypeError, match="string"):
        ck.make_selector(2)


def test_start_bin_beyond_histogram():
    with pytest.raises(ValueError, match="exceeds"):
        ck.EntropySelector().select(ck.Histogram(64).fill(np.ones(3)))


def test_bin_zero_is_emptied_by_default(rng):
    """ReLU-like data (80 % exact zeros): with bin 0 kept the search clips far below the tail.

    NVIDIA's MLPerf notes say TensorRT discards the first bin (TRT_CALIBRATION.md §1.7); every
    triple matches either way, and the labelled Fashion-MNIST check (docs/qdq.md) decides.
    """
    x = np.maximum(rng.standard_normal(200_000), 0).astype(np.float32)
    x[rng.random(x.size) < 0.6] = 0  # ~80 % zeros in all
    h = ck.Histogram().fill(x)
    default = ck.EntropySelector().select(h)
    kept = ck.EntropySelector(first_bin="keep").select(h)
    assert ck.EntropySelector() == ck.EntropySelector(first_bin="zero")
    assert default > 0.5 * h.max_abs
    assert kept < 0.25 * default


@pytest.mark.parametrize("scale", [1e-300, 1e-30, 1.0, 1e150, 1e154, 1e200, 1e300])
def test_mse_amax_is_within_the_range_at_any_magnitude(impl, scale):
    """Near 1e154 every squared error overflowed and argmin picked -1: a negative amax."""
    x = np.random.default_rng(0).standard_normal(20_000)
    h = ck.Histogram().fill(x * scale)
    amax = ck.MSESelector().select(h)
    assert 0 < amax <= h.upper
    assert amax / scale == pytest.approx(ck.MSESelector().select(ck.Histogram().fill(x)), rel=1e-9)
