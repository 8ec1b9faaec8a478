"""Retarget, set, clamp and drop: new caches, untouched lines unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from calibkit.cache.edit import clamp_amax, drop_tensors, retarget, select_tensors, set_scales
from calibkit.cache.format import read_cache
from calibkit.scale import scale_from_amax

DATA = b"TRT-8402-MinMaxCalibration\ninput: 3C010204\nconv:0: 3f800000\nrelu: 3e000000\n"


@pytest.fixture
def cache():
    return read_cache(DATA)


def test_retarget_for_dla_warns_and_keeps_scales(cache):
    with pytest.warns(UserWarning, match="DLA requires EntropyCalibration2"):
        new = retarget(cache, algorithm="EntropyCalibration2")
    assert new.scales == cache.scales
    assert new.to_bytes() == DATA.replace(b"MinMaxCalibration", b"EntropyCalibration2")
    assert cache.algorithm == "MinMaxCalibration"  # the argument is untouched


def test_retarget_version_warns_about_silent_recalibration(cache):
    with pytest.warns(UserWarning, match="TensorRT silently recalibrates"):
        new = retarget(cache, trt_version="10.3")
    assert new.to_bytes().startswith(b"TRT-100300-MinMaxCalibration\n")
    assert retarget(cache, trt_version="8.4.2").to_bytes() == DATA  # same version: no warning


def test_retarget_errors(cache):
    with pytest.raises(ValueError, match="removed implicit INT8 calibration"):
        retarget(cache, trt_version="11.0")
    with pytest.raises(ValueError, match="cannot retarget to 'Legacy"):
        retarget(cache, algorithm="LegacyCalibration")
    old = read_cache(b"1\nx: 1\n")
    with pytest.raises(ValueError, match="needs an explicit TensorRT version"):
        retarget(old, algorithm="EntropyCalibration")


def test_set_clamp_drop_keep_other_lines(cache):
    new = set_scales(cache, {"relu": 2.0})
    assert new.scales["relu"] == scale_from_amax(2.0)
    assert new.to_bytes().split(b"\n")[1] == b"input: 3C010204"
    clamped = clamp_amax(cache, ["conv:0", "relu", "input"], lower=10.0, upper=100.0)
    assert clamped.amax["conv:0"] == pytest.approx(100.0, rel=1e-6)  # was 127
    assert clamped.amax["relu"] == pytest.approx(15.875)  # 0.125 * 127 is inside the bounds
    assert clamped.amax["input"] == pytest.approx(10.0, rel=1e-6)  # was 1.0
    dropped = drop_tensors(cache, select_tensors(cache, ["conv:.*", "relu"]))
    assert list(dropped.scales) == ["input"]


def test_set_scales_raw_and_add(cache):
    new = set_scales(cache, {"extra": 0.5}, from_amax=False, add=True)
    assert list(new.scales)[-1] == "extra" and new.scales["extra"] == np.float32(0.5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: set_scales(c, {"nope": 1.0}), "not in the cache, e.g. 'nope'; use add"),
        (lambda c: set_scales(c, {"relu": -1.0}), "expected a number >= 0"),
        (lambda c: set_scales(c, {"a\nb": 1.0}, add=True), "empty or holds a line break"),
        (lambda c: clamp_amax(c, ["relu"], lower=2, upper=1), "clamp bounds are reversed"),
        (lambda c: drop_tensors(c, ["nope"]), "not in the cache, e.g. 'nope'"),
        (lambda c: select_tensors(c, ["("]), "bad regular expression"),
        (lambda c: select_tensors(c, ["con"]), "matches no tensor name"),
    ],
    ids=["unknown", "negative", "newline", "reversed", "drop-unknown", "bad-regex", "partial"],
)
def test_edit_errors(cache, call, match):
    with pytest.raises(ValueError, match=match):
        call(cache)
