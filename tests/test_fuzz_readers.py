"""Bounded fuzzing of every reader: any input gives a result or a CalibkitError, nothing else.

The long campaign (>= 100,000 inputs per reader) is ``scripts/fuzz.py``; these tests use its
seeds and mutations, driven by hypothesis, with a budget that keeps the suite fast.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibkit.errors import CalibkitError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("calibkit_fuzz", ROOT / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["calibkit_fuzz"] = fuzz
_spec.loader.exec_module(fuzz)

SEEDS = fuzz.seeds()
READERS = sorted(SEEDS)
KNOWN_ESCAPES: dict[str, str] = {}  # reader -> why it may still escape (none today)


def _parse_or_reject(name: str, data: bytes) -> None:
    parse = fuzz.reader(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning on bad input is an escape too
        try:
            parse(data)
        except CalibkitError:
            pass


def _marks(name):
    if name in KNOWN_ESCAPES:
        return [
            pytest.mark.xfail(reason=KNOWN_ESCAPES[name], strict=True),
            pytest.mark.filterwarnings("ignore::ResourceWarning"),
        ]
    return []


@pytest.fixture(autouse=True)
def _close_leaked_files():
    """Close the files a failed ``np.load`` leaves to the garbage collector, inside the test."""
    yield
    fuzz.collect_quietly()


PARAMS = [pytest.param(name, marks=_marks(name)) for name in READERS]
FAST = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_every_reader_has_valid_seeds():
    for name in READERS:
        assert SEEDS[name], name
        fuzz.reader(name)(SEEDS[name][0])  # the seeds themselves parse


@pytest.mark.parametrize("name", PARAMS)
@FAST
@given(data=st.data())
def test_mutated_seeds_parse_or_raise_calibkit_error(name, data):
    seed = data.draw(st.sampled_from(SEEDS[name]), label="seed")
    rnd = random.Random(data.draw(st.integers(0, 2**32 - 1), label="mutation seed"))
    _parse_or_reject(name, fuzz.mutate(seed, rnd, SEEDS[name]))


@pytest.mark.parametrize("name", PARAMS)
@FAST
@given(blob=st.binary(max_size=512))
def test_random_bytes_parse_or_raise_calibkit_error(name, blob):
    _parse_or_reject(name, blob)


@pytest.mark.parametrize("name", PARAMS)
def test_fixed_campaign_has_no_escapes(name):
    """A fixed 400-input slice of the long campaign, reproducible without hypothesis."""
    tally = fuzz.run_reader(name, 400, seed=1)
    assert tally["escapes"] == 0, tally["examples"]


@pytest.mark.parametrize(
    ("name", "blob"),
    [
        ("json", b"[" * 100_000 + b"]" * 100_000),
        ("ranges-json", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("ort-json", b"{" * 50_000),
        ("json", b'{"entries": {"a": {"amax": ' + b"9" * 400 + b"}}}"),
        ("csv", b"name,hex\n\x00,zz\n"),
        ("csv", b"name,hex\n\xff,1\n"),
        ("trt", b"TRT-" + b"9" * 4300 + b"-EntropyCalibration2\nx: 3c000000\n"),
        ("trt", b"TRT-" + b"9" * 4301 + b"-EntropyCalibration2\nx: 3c000000\n"),
        ("ort", b"\x0c\x00\x00\x00" + b"\xff" * 60),
    ],
    ids=[
        "deep-json",
        "deep-ranges-json",
        "deep-ort-json",
        "huge-int",
        "csv-nul",
        "csv-utf8",
        "version-4300",
        "version-4301",
        "ort-offsets",
    ],
)
def test_found_reader_escapes_are_one_error(name, blob):
    """The inputs issue 12 found (RecursionError, int digit limit, flatbuffer offsets)."""
    with pytest.raises(CalibkitError):
        fuzz.reader(name)(blob)


@pytest.mark.parametrize("damage", ["encrypted", "compression-99", "version-25.5"])
def test_zip_features_zipfile_refuses_are_stats_errors(damage):
    """What atheris found in the statistics reader: zipfile's RuntimeError/NotImplementedError."""
    data = bytearray(SEEDS["stats"][0])
    central = data.find(b"PK\x01\x02")
    if damage == "encrypted":  # general-purpose flag bit 0, local and central headers
        data[6] |= 1
        data[central + 8] |= 1
    elif damage == "compression-99":
        data[8:10] = data[central + 10 : central + 12] = (99).to_bytes(2, "little")
    else:  # version needed to extract: 25.5
        data[4:6] = data[central + 6 : central + 8] = (255).to_bytes(2, "little")
    with pytest.raises(CalibkitError):
        fuzz.reader("stats")(bytes(data))


def test_a_member_that_is_not_an_array_is_a_stats_error(tmp_path):
    """np.load returns raw bytes for a zip member without the .npy magic (found by atheris)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(SEEDS["stats"][0])) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, b"not an array" if info.filename == "names.npy" else data)
    with pytest.raises(CalibkitError, match=r"'names' is not a \.npy array"):
        fuzz.reader("stats")(buf.getvalue())
