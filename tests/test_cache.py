"""The TensorRT calibration cache format: real caches round-trip byte for byte, errors are clear."""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibkit.cache.format import (
    CalibrationCache,
    LegacyHeader,
    parse_trt_version,
    read_cache,
    trt_version_from_number,
    trt_version_number,
    write_cache,
)
from calibkit.errors import CacheFormatError
from calibkit.scale import scale_from_amax

HERE = Path(__file__).resolve().parent
BUNDLED = HERE / "data" / "caches"
SHARED = HERE.parents[1] / "shared" / "testdata"


def _real_caches() -> list[Path]:
    """Every real cache: bundled copies and, when present, the whole shared corpus."""
    shared = sorted((SHARED / "trt_caches").glob("*.cache"))
    shared += sorted(SHARED.glob("onnx_cache_pairs/*/calibration.cache"))
    shared += sorted(SHARED.glob("trt_triples/*/expected.cache"))
    return sorted(BUNDLED.glob("*.cache")) + shared


REAL = _real_caches()
REAL_IDS = [f"{p.parent.name}/{p.name}" for p in REAL]
SMALL = [p for p in sorted(BUNDLED.glob("*.cache")) if p.stat().st_size < 5000]


@pytest.mark.parametrize("path", REAL, ids=REAL_IDS)
def test_real_cache_round_trips_byte_for_byte(path, tmp_path):
    data = path.read_bytes()
    cache = read_cache(path)
    assert cache.to_bytes() == data
    write_cache(tmp_path / "out.cache", cache)
    assert (tmp_path / "out.cache").read_bytes() == data
    assert read_cache(data) == cache


def test_shared_corpus_is_walked(shared_testdata):
    # The parametrized test above walks the folder; this one fails if the folder went missing.
    caches = list((shared_testdata / "trt_caches").glob("*.cache"))
    assert len(caches) >= 42
    assert set(caches) <= set(REAL)


def _manifest_rows(shared: Path) -> list[dict[str, str]]:
    lines = (shared / "trt_caches" / "MANIFEST.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    keys = [k.strip() for k in table[0].strip("|").split("|")]
    return [
        dict(zip(keys, (v.strip() for v in row.strip("|").split("|")), strict=True))
        for row in table[2:]
    ]


def test_headers_and_counts_match_the_manifest(shared_testdata):
    rows = _manifest_rows(shared_testdata)
    assert len(rows) >= 42
    for row in rows:
        cache = read_cache(shared_testdata / "trt_caches" / row["file"])
        assert len(cache.scales) == int(row["tensor lines"]), row["file"]
        implied = row["TRT version implied by header"]
        if implied.startswith("none"):
            assert cache.version is None, row["file"]
        else:
            expected = tuple(int(p) for p in implied.split()[0].split("."))
            assert cache.version == expected, row["file"]
        if "inf scales" in row["unusual"]:
            n_inf = int(re.search(r"(\d+) inf scales", row["unusual"]).group(1))
            assert sum(np.isinf(s) for s in cache.scales.values()) == n_inf, row["file"]
        if "zero scales" in row["unusual"]:
            n_zero = int(re.search(r"(\d+) zero scales", row["unusual"]).group(1))
            assert sum(s == 0 for s in cache.scales.values()) == n_zero, row["file"]


def test_legacy_header_decodes_cutoff_and_quantile():
    # MLPerf 3D-UNet's calibrator returns get_regression_cutoff() 1.0 and get_quantile() 0.99999.
    cache = read_cache(BUNDLED / "legacy_cut1_q0.99999_3dunet_mlperf07nv.cache")
    assert cache.legacy == LegacyHeader(regression_cutoff=1.0, quantile=0.99999)
    assert cache.algorithm == "LegacyCalibration"
    assert cache.version is None


def test_bare_one_header_and_crlf():
    old = read_cache(BUNDLED / "trt4_entropy1hdr_resnet_modricwang.cache")
    assert (old.version, old.algorithm, old.legacy) == (None, None, None)
    crlf = read_cache(BUNDLED / "trt7200_entropy2_resnet50_crlf_mlperf10inspur.cache")
    assert crlf.newline == "\r\n"
    assert crlf.version == (7, 2, 0)
    assert all("\r" not in name for name in crlf.scales)


def test_names_split_at_the_last_colon_space():
    data = b"TRT-8501-EntropyCalibration2\ninput_tensor:0: 3f955020\n%3 : Tensor = f(x): 0\n"
    cache = read_cache(data)
    assert list(cache.scales) == ["input_tensor:0", "%3 : Tensor = f(x)"]
    assert cache.scales["%3 : Tensor = f(x)"] == 0


def test_known_hex_values():
    data = b"TRT-8400-MinMaxCalibration\na: 3c010204\nb: 7f800000\nc: 0\nd: 3f800000\ne: 1\n"
    cache = read_cache(data)
    assert cache.scales["a"] == scale_from_amax(1.0)
    assert cache.amax["d"] == 127.0
    assert math.isinf(cache.amax["b"])
    assert cache.scales["e"] == np.float32(1.401298464324817e-45)  # smallest subnormal
    assert cache.dynamic_range["d"] == (-127.0, 127.0)
    assert list(cache.scales) == list("abcde")


def test_non_canonical_hex_is_kept_until_the_value_changes():
    data = b"TRT-8601-EntropyCalibration2\na: 3C010204\nb: 03c01020\nc: 00000000\n"
    cache = read_cache(data)
    assert cache.to_bytes() == data
    assert cache.scales["a"] == scale_from_amax(1.0)
    cache.scales["a"] = np.float32(0.5)
    assert (
        cache.to_bytes() == b"TRT-8601-EntropyCalibration2\na: 3f000000\nb: 03c01020\nc: 00000000\n"
    )
    assert cache.hex["c"] == "00000000"


def test_non_canonical_legacy_header_is_kept_until_it_changes():
    data = b"0 3FF0000000000000 3fe0000000000000\nx: 1\n"
    cache = read_cache(data)
    assert cache.legacy == LegacyHeader(1.0, 0.5)
    assert cache.to_bytes() == data
    cache.legacy = LegacyHeader(1.0, 0.25)
    assert cache.to_bytes().startswith(b"0 3ff0000000000000 3fd0000000000000\n")


@pytest.mark.parametrize(
    ("version", "number"),
    [
        ((5, 1, 0), 5100),
        ((7, 1, 3), 7103),
        ((8, 6, 1), 8601),
        ((8, 0, 16), 8016),
        ((10, 0, 1), 100001),
        ((10, 3, 0), 100300),
        ((10, 13, 3), 101303),
        ((10, 16, 0), 101600),
    ],
    ids=str,
)
def test_version_numbers(version, number):
    # Headers seen in the wild (TRT_CALIBRATION.md §5.2 table) and the corpus's TRT-8016.
    assert trt_version_number(version) == number
    assert trt_version_from_number(number) == version


def test_parse_trt_version():
    assert parse_trt_version("10.16") == (10, 16, 0)
    assert parse_trt_version("8.6.1.6") == (8, 6, 1)
    assert parse_trt_version("10") == (10, 0, 0)
    assert parse_trt_version((8, 6)) == (8, 6, 0)
    with pytest.raises(ValueError, match="expected 'major"):
        parse_trt_version("ten")
    with pytest.raises(ValueError, match="minor <= 9"):
        parse_trt_version("8.10")
    with pytest.raises(ValueError, match="is not a TensorRT version number"):
        trt_version_from_number(12345)


def test_from_amax_uses_trt_scale_arithmetic_and_reads_back(tmp_path):
    amax = {"input": 1.0, "conv/out:0": 2.5, "zero": 0.0, "inf": math.inf}
    cache = CalibrationCache.from_amax(amax, trt_version="10.16", algorithm="EntropyCalibration2")
    assert cache.to_bytes().splitlines()[0] == b"TRT-101600-EntropyCalibration2"
    assert cache.scales == {k: scale_from_amax(v) for k, v in amax.items()}
    write_cache(tmp_path / "m.cache", cache)
    assert read_cache(tmp_path / "m.cache") == cache
    assert b"zero: 0\n" in cache.to_bytes()
    assert b"inf: 7f800000\n" in cache.to_bytes()


def test_from_amax_legacy_writes_the_legacy_header():
    cache = CalibrationCache.from_amax(
        {"x": 1.0},
        trt_version=None,
        algorithm="LegacyCalibration",
        quantile=0.99999,
        regression_cutoff=1.0,
    )
    assert cache.to_bytes() == b"0 3ff0000000000000 3fefffeb074a771d\nx: 3c010204\n"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(trt_version="10.16", algorithm="Entropy"), "unknown algorithm"),
        (dict(trt_version=None, algorithm="MinMaxCalibration"), "explicit TensorRT version"),
        (dict(trt_version="11.0", algorithm="MinMaxCalibration"), "removed implicit INT8"),
        (dict(trt_version=None, algorithm="LegacyCalibration"), "needs quantile"),
        (dict(trt_version="8.6", algorithm="MinMaxCalibration", quantile=0.5), "only to 'Legacy"),
    ],
    ids=["bad-word", "no-version", "trt11", "legacy-no-params", "params-not-legacy"],
)
def test_from_amax_rejects_bad_headers(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CalibrationCache.from_amax({"x": 1.0}, **kwargs)


@pytest.mark.parametrize(
    ("amax", "match"),
    [({"x": math.nan}, "expected a number >= 0"), ({"x": -1.0}, "expected a number >= 0")],
    ids=["nan", "negative"],
)
def test_from_amax_rejects_bad_values(amax, match):
    with pytest.raises(ValueError, match=match):
        CalibrationCache.from_amax(amax, trt_version="8.6", algorithm="MinMaxCalibration")


@pytest.mark.parametrize("name", ["", "a\nb", "a\r"], ids=["empty", "lf", "cr"])
def test_unwritable_names_are_rejected_before_writing(name, tmp_path):
    target = tmp_path / "keep.cache"
    target.write_bytes(b"old")
    cache = CalibrationCache((8, 6, 1), "MinMaxCalibration", {name: 1.0})
    with pytest.raises(ValueError, match="empty or holds a line break"):
        write_cache(target, cache)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


H = b"TRT-8601-EntropyCalibration2\n"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", r"<bytes>: empty file"),
        (b"TRT-8601-Entropy\nx: 1\n", r"<bytes>:1: unknown algorithm 'Entropy'"),
        (b"TRT-86a1-EntropyCalibration2\n", r"<bytes>:1: expected a header"),
        (b"TRT-12345-MinMaxCalibration\n", r"<bytes>:1: bad version .* 12345"),
        (b"trt-8601-EntropyCalibration2\n", r"<bytes>:1: expected a header"),
        (H + b"x 3f800000\n", r"<bytes>:2: expected '<tensor name>: <1-8 hex digits>', got 'x 3f"),
        (H + b": 3f800000\n", r"<bytes>:2: expected '<tensor name>"),
        (H + b"x: 0x3f80\n", r"<bytes>:2: bad hex '0x3f80' for tensor 'x'"),
        (H + b"x: 3f8000000\n", r"<bytes>:2: bad hex '3f8000000'"),
        (H + b"x: 3f80 \n", r"<bytes>:2: bad hex '3f80 '"),
        (H + b"x: 7fc00000\n", r"<bytes>:2: tensor 'x' has a NaN scale \(7fc00000\)"),
        (H + b"x: bf800000\n", r"<bytes>:2: tensor 'x' has a negative scale -1.0"),
        (H + b"x: 80000000\n", r"<bytes>:2: tensor 'x' has a negative scale -0.0"),
        (H + b"x: 1\ny: 2\nx: 3\n", r"<bytes>:4: duplicate tensor name 'x' \(first on line 2\)"),
        (H + b"x: 1\ny: 2", r"<bytes>:3: truncated last line b'y: 2' \(no final newline\)"),
        (H + b"x: 1\n\n", r"<bytes>:3: expected '<tensor name>"),
        (H + b"x: 1\r\n", r"<bytes>:2: stray carriage return"),
        (b"TRT-8601-EntropyCalibration2\r\nx: 1\n", r"<bytes>:2: line ends with LF but the header"),
        (H + b"\xff: 1\n", r"<bytes>:2: expected UTF-8 text, got b'\\xff: 1'"),
        (b"0 7ff8000000000000 3fe0000000000000\n", r"<bytes>:1: legacy header .* non-finite"),
    ],
    ids=[
        "empty",
        "bad-word",
        "bad-number",
        "version-gap",
        "lower-case-trt",
        "no-colon",
        "empty-name",
        "0x",
        "nine-digits",
        "trailing-space",
        "nan",
        "negative",
        "negative-zero",
        "duplicate",
        "truncated",
        "blank-line",
        "cr-in-lf-file",
        "lf-in-crlf-file",
        "not-utf8",
        "legacy-nan",
    ],
)
def test_bad_input_names_line_text_and_expectation(data, match):
    with pytest.raises(CacheFormatError, match=match):
        read_cache(data)


def test_error_names_the_file(tmp_path):
    path = tmp_path / "bad.cache"
    path.write_bytes(H + b"x: zz\n")
    with pytest.raises(CacheFormatError, match=re.escape(f"{path}:2: bad hex 'zz'")):
        read_cache(path)


# -- property tests --------------------------------------------------------------------------
_HEADER = re.compile(
    r"TRT-([1-9][0-9]*)-(EntropyCalibration2|EntropyCalibration|MinMaxCalibration)"
)
_LEGACY = re.compile(r"0 ([0-9a-fA-F]{1,16}) ([0-9a-fA-F]{1,16})")
_ENTRY = re.compile(r"(.+): ([0-9a-fA-F]{1,8})", re.DOTALL)


def _strict_reading(data: bytes):
    """An independent reading of the grammar: (header, [(name, bits)]) or None if invalid."""
    if not data.endswith(b"\n"):
        return None
    try:
        lines = data.decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError:
        return None
    if lines[0].endswith("\r"):
        if not all(line.endswith("\r") for line in lines):
            return None
        lines = [line[:-1] for line in lines]
    if any("\r" in line for line in lines):
        return None
    if lines[0] == "1":
        header = ("1",)
    elif m := _LEGACY.fullmatch(lines[0]):
        values = [struct.unpack(">d", struct.pack(">Q", int(g, 16)))[0] for g in m.groups()]
        if not all(math.isfinite(v) for v in values):
            return None
        header = ("legacy", *values)
    elif m := _HEADER.fullmatch(lines[0]):
        number = int(m.group(1))
        if 10000 <= number < 100000 or number < 1000:
            return None
        header = (number, m.group(2))
    else:
        return None
    entries = []
    for line in lines[1:]:
        m = _ENTRY.fullmatch(line)
        if m is None:
            return None
        bits = int(m.group(2), 16)
        value = struct.unpack(">f", struct.pack(">I", bits))[0]
        if math.isnan(value) or bits >> 31:
            return None
        entries.append((m.group(1), bits))
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        return None
    return header, entries


def _header_of(cache: CalibrationCache):
    if cache.legacy is not None:
        return ("legacy", cache.legacy.regression_cutoff, cache.legacy.quantile)
    if cache.version is None:
        return ("1",)
    return (trt_version_number(cache.version), cache.algorithm)


_WHITESPACE = [b" ", b"\t", b"\r", b"\n", b"\r\n", b"  ", b"\xc2\xa0", b"\x0b"]


@st.composite
def mutated_caches(draw):
    data = bytearray(draw(st.sampled_from(SMALL)).read_bytes())
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(["flip", "truncate", "duplicate", "whitespace", "delete", "case"])
        )
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
            data = bytearray(b"\n".join(lines))
        elif kind == "whitespace":
            data[at:at] = draw(st.sampled_from(_WHITESPACE))
        elif kind == "delete" and data:
            del data[at]
        elif kind == "case":
            data[at : at + 8] = bytes(data[at : at + 8]).upper()
    return bytes(data)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_caches())
def test_mutated_caches_parse_strictly_or_raise_cache_format_error(data):
    expected = _strict_reading(data)
    try:
        cache = read_cache(data)
    except CacheFormatError:
        assert expected is None
        return
    assert expected is not None
    assert (_header_of(cache), [(n, int(cache.hex[n], 16)) for n in cache.scales]) == expected
    assert cache.to_bytes() == data


_names = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), min_size=1
)


@given(
    amax=st.dictionaries(_names, st.floats(0, allow_nan=False), max_size=20),
    version=st.sampled_from(["5.1", "7.2.3", "8.6.1", "10.0.1", "10.16"]),
    algorithm=st.sampled_from(["EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration"]),
)
def test_written_caches_read_back_equal(amax, version, algorithm):
    cache = CalibrationCache.from_amax(amax, trt_version=version, algorithm=algorithm)
    again = read_cache(cache.to_bytes())
    assert again == cache
    assert list(again.scales) == list(amax)
    assert again.to_bytes() == cache.to_bytes()


def test_name_that_is_not_unicode_text_is_refused():
    from calibkit.cache.format import CalibrationCache

    cache = CalibrationCache.from_amax(
        {"\ud800": 1.0}, trt_version="10.16", algorithm="MinMaxCalibration"
    )
    with pytest.raises(ValueError, match="cannot be written as UTF-8"):
        cache.to_bytes()
