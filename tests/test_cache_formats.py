"""Conversions, checked against what the real consumers read and write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibkit.cache.format import CalibrationCache, read_cache
from calibkit.cache.formats import (
    FORMATS,
    detect_format,
    range_for_scale,
    read_scales,
    to_format_bytes,
    to_json_dict,
    write_scales,
)
from calibkit.errors import CacheFormatError
from calibkit.scale import scale_from_amax

BUNDLED = Path(__file__).resolve().parent / "data" / "caches"
YOLO = BUNDLED / "trt8016hdr_entropy2_yolov3_ds61tuanhe.cache"  # 258 names, 254 with spaces
SEGFORMER = BUNDLED / "trt8401_entropy2_segformer_backup_zhsky.cache"  # zero and inf scales
LEGACY = BUNDLED / "legacy_cut1_q0.99999_3dunet_mlperf07nv.cache"
SUFFIX = {
    "trt": ".cache",
    "json": ".json",
    "csv": ".csv",
    "ranges": ".txt",
    "ranges-json": ".json",
    "ort": ".flatbuffers",
    "ort-text": ".cache",
    "ort-overrides": ".json",
}
WRITABLE = [f for f, (_, writable, _) in FORMATS.items() if writable]


def _ort_calibration_table(tmp_path, ranges):
    """Run onnxruntime's own write_calibration_table on {name: (lowest, highest)}."""
    calibrate = pytest.importorskip("onnxruntime.quantization.calibrate")
    quant_utils = pytest.importorskip("onnxruntime.quantization.quant_utils")
    table = {
        name: calibrate.TensorData(lowest=np.float32(lo), highest=np.float32(hi))
        for name, (lo, hi) in ranges.items()
    }
    quant_utils.write_calibration_table(table, dir=str(tmp_path))
    return tmp_path


def test_reads_what_onnxruntime_writes(tmp_path, rng):
    names = ["input", "onnx::MatMul_12", "a b: c", "/m.0/Conv_output_0", "zero"]
    highest = rng.uniform(0.01, 50, len(names)).astype(np.float32)
    highest[-1] = 0
    ranges = {n: (-h * np.float32(0.9), h) for n, h in zip(names, highest, strict=True)}
    out = _ort_calibration_table(tmp_path, ranges)
    expected = {n: scale_from_amax(h) for n, h in zip(names, highest, strict=True)}
    for file, fmt in [
        ("calibration.flatbuffers", "ort"),
        ("calibration.cache", "ort-text"),
        ("calibration.json", "ort-json"),
    ]:
        cache, detected = read_scales(out / file)
        assert detected == fmt
        assert cache.scales == expected, fmt
        assert (cache.version, cache.algorithm) == (None, None)


def test_onnxruntime_reads_what_we_write(tmp_path):
    # The TensorRT EP reads calibration.flatbuffers with the generated TrtTable classes and
    # std::stof(value); emulate exactly that with onnxruntime's own Python TrtTable.
    trt_table = pytest.importorskip("onnxruntime.quantization.CalTableFlatBuffers.TrtTable")
    cache = read_cache(YOLO)
    path = tmp_path / "calibration.flatbuffers"
    assert write_scales(path, cache) == "ort"
    table = trt_table.TrtTable.GetRootAsTrtTable(path.read_bytes(), 0)
    got = {}
    for i in range(table.DictLength()):
        item = table.Dict(i)
        dynamic_range = np.float32(item.Value().decode())  # std::stof: nearest float32
        got[item.Key().decode()] = scale_from_amax(dynamic_range)  # setDynamicRange(-r, r)
    assert got == cache.scales
    assert list(got) == sorted(cache.scales)  # sorted like write_calibration_table


def _sample_int8_api_read(text: str) -> dict[str, np.float32]:
    """sampleINT8API::readPerTensorDynamicRangeValues: getline(':') twice, then std::stof."""
    out = {}
    for line in text.splitlines():
        name, value = line.split(":")[:2]
        out[name] = np.float32(value)
    return out


def test_sample_int8_api_reads_our_ranges():
    cache = read_cache(YOLO)  # no ':' in these names
    ranges = _sample_int8_api_read(to_format_bytes(cache, "ranges").decode())
    assert {n: scale_from_amax(r) for n, r in ranges.items()} == cache.scales


@pytest.mark.parametrize("fmt", WRITABLE)
def test_every_format_round_trips_real_scales_bit_for_bit(fmt, tmp_path):
    cache = read_cache(YOLO)
    path = tmp_path / f"out{SUFFIX[fmt]}"
    write_scales(path, cache, fmt)
    again, detected = read_scales(path, None if fmt != "ort-text" else "ort-text")
    assert detected == fmt
    assert again.scales == cache.scales
    if fmt == "ort":
        assert list(again.scales) == sorted(cache.scales)
    else:
        assert list(again.scales) == list(cache.scales)
    if FORMATS[fmt][2]:
        assert (again.version, again.algorithm) == (cache.version, cache.algorithm)


def test_json_keeps_legacy_header_and_writes_back_the_same_cache(tmp_path):
    cache = read_cache(LEGACY)
    write_scales(tmp_path / "c.json", cache)
    again, _ = read_scales(tmp_path / "c.json")
    assert again.to_bytes() == LEGACY.read_bytes()


def test_json_object_shape():
    obj = to_json_dict(read_cache(SEGFORMER))
    assert set(obj) == {"version", "algorithm", "legacy", "entries"}
    assert obj["version"] == [8, 4, 1]
    zero = [e for e in obj["entries"].values() if e["hex"] == "0"]
    inf = [e for e in obj["entries"].values() if e["hex"] == "7f800000"]
    assert len(zero) == 2 and zero[0]["scale"] == 0 and zero[0]["amax"] == 0
    assert len(inf) == 53 and inf[0]["scale"] == "inf"  # JSON has no infinity
    json.dumps(obj, allow_nan=False)


def test_infinite_ranges_warn(tmp_path):
    cache = read_cache(SEGFORMER)
    with pytest.warns(UserWarning, match="53 tensor.*infinite scale.*setDynamicRange rejects"):
        write_scales(tmp_path / "r.txt", cache)
    again, _ = read_scales(tmp_path / "r.txt")
    assert again.scales == cache.scales


def test_ranges_with_colons_warn_and_read_back_at_the_last_colon(tmp_path):
    cache = CalibrationCache((8, 5, 1), "EntropyCalibration2", {"input_tensor:0": 0.5, "x": 1})
    with pytest.warns(UserWarning, match="sampleINT8API splits each line at the first ':'"):
        write_scales(tmp_path / "r.txt", cache)
    again, _ = read_scales(tmp_path / "r.txt")
    assert again.scales == cache.scales


def test_range_for_scale_is_what_set_dynamic_range_turns_back_into_the_scale():
    for amax in [1.0, 95.29028, 1e-30, 3.4e38, 0.0]:
        scale = scale_from_amax(amax)
        assert scale_from_amax(range_for_scale(scale)) == scale


def test_ranges_json_accepts_min_max_pairs(tmp_path):
    path = tmp_path / "ranges.json"
    path.write_text(json.dumps({"a": [-2.0, 1.0], "b": 3.0, "c": "inf"}))
    cache, fmt = read_scales(path)
    assert fmt == "ranges-json"
    assert cache.scales == {
        "a": scale_from_amax(2.0),
        "b": scale_from_amax(3.0),
        "c": np.float32(np.inf),
    }


@pytest.mark.parametrize(
    ("name", "content", "fmt", "match"),
    [
        ("r.txt", b"a:1.0\nb 2.0\n", None, r"r.txt:2: expected '<tensor name>:<dynamic range>'"),
        ("r.txt", b"a:1.0\na:2.0\n", None, r"r.txt:2: duplicate tensor name 'a'"),
        ("r.txt", b"a:-1\n", None, r"r.txt:1: dynamic range '-1' must be a number >= 0"),
        ("r.txt", b"a:nan\n", None, r"r.txt:1: dynamic range 'nan' must be a number >= 0"),
        ("r.txt", b"a:x1\n", None, r"r.txt:1: expected a decimal dynamic range, got 'x1'"),
        ("o.cache", b"a 1.0\nb\n", "ort-text", r"o.cache:2: expected '<tensor name> <dynamic"),
        ("r.json", b"{bad", None, r"r.json: not valid JSON"),
        ("r.json", b'{"a": true}', None, r"r.json: tensor 'a': expected a number, got True"),
        ("c.json", b'{"entries": {"a": {"hex": "zz"}}}', None, r"c.json: tensor 'a': bad hex"),
        ("t.flatbuffers", b"\x04\x00\x00\x00\xff\xff", None, r"t.flatbuffers: not an ONNX Runtime"),
        ("t.csv", b"name,hex\na,-1\n", None, r"t.csv:2: bad hex '-1'"),
    ],
    ids=[
        "ranges-no-colon",
        "ranges-dup",
        "ranges-negative",
        "ranges-nan",
        "ranges-text",
        "ort-text-no-space",
        "json-syntax",
        "json-bool",
        "json-hex",
        "flatbuffer",
        "csv-hex",
    ],
)
def test_bad_files_raise_cache_format_error(tmp_path, name, content, fmt, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CacheFormatError, match=match):
        read_scales(path, fmt)


def test_detect_format(tmp_path):
    (tmp_path / "a.cache").write_bytes(b"TRT-8601-MinMaxCalibration\nx: 1\n")
    (tmp_path / "b.cache").write_bytes(b"x 1.5\n")
    (tmp_path / "c.table").write_bytes(b"x:1.5\n")
    assert detect_format(tmp_path / "a.cache") == "trt"
    assert detect_format(tmp_path / "b.cache") == "ort-text"
    assert detect_format(tmp_path / "c.table") == "ranges"
    (tmp_path / "d.cache").write_bytes(b"onnx::MatMul_1 2.5\n")  # ':' in an ORT-text name
    assert detect_format(tmp_path / "d.cache") == "ort-text"
    (tmp_path / "e.cache").write_bytes(b"(Unnamed Layer* 0) [Conv]_output:2.5\n")
    assert detect_format(tmp_path / "e.cache") == "ranges"


def test_unknown_format_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        read_scales(BUNDLED / "trt8204_entropy2_tiny_trtcookbook.cache", "xml")
    with pytest.raises(ValueError, match="cannot write format 'ort-json'"):
        to_format_bytes(read_cache(YOLO), "ort-json")


def test_every_real_scale_survives_the_dynamic_range_path(shared_testdata):
    # What docs/cache.md claims: fl32(fl32(fl32(127 s)) / 127) == s for every real finite scale.
    scales = [
        s
        for path in sorted((shared_testdata / "trt_caches").glob("*.cache"))
        for s in read_cache(path).scales.values()
        if np.isfinite(s)
    ]
    assert len(scales) == 14577
    assert all(scale_from_amax(range_for_scale(s)) == s for s in scales)


def test_scales_no_range_reaches(rng):
    # About 0.8 % of arbitrary float32 scales are not fl32(a / 127) for any float32 a: neither
    # fl32(127 s) nor its neighbours map back to them.
    scales = rng.integers(0x30000000, 0x45000000, 20000).astype(np.uint32).view(np.float32)
    missed = [s for s in scales if scale_from_amax(range_for_scale(s)) != s]
    assert 0.005 < len(missed) / len(scales) < 0.011
    for s in missed[:50]:
        r = range_for_scale(s)
        for direction in (np.float32(np.inf), np.float32(0)):
            near = r
            for _ in range(3):
                near = np.nextafter(near, direction)
                assert scale_from_amax(near) != s


FASHION = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"


@pytest.mark.parametrize("method", ["MinMax", "Entropy", "Percentile"])
def test_reads_a_real_onnxruntime_calibration(method, tmp_path):
    # Not a fixture: onnxruntime's own calibrator on the bundled model, then its own writer. Its
    # TensorsData JSON wraps the tensors and stores lowest/highest as numpy arrays or numbers.
    calibrate = pytest.importorskip("onnxruntime.quantization.calibrate")
    quant_utils = pytest.importorskip("onnxruntime.quantization.quant_utils")
    images = np.load(FASHION / "calib.npz")["image"][:64]

    class Reader(calibrate.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": images[i : i + 32]} for i in range(0, 64, 32)])

        def get_next(self):
            return next(self.batches, None)

    calibrator = calibrate.create_calibrator(
        str(FASHION / "model.onnx"),
        calibrate_method=getattr(calibrate.CalibrationMethod, method),
        augmented_model_path=str(tmp_path / "augmented.onnx"),
    )
    calibrator.collect_data(Reader())
    data = calibrator.compute_data()
    quant_utils.write_calibration_table(data, dir=str(tmp_path))
    # what write_calibration_table itself writes: max(highest, lowest) of each tensor
    expected = {
        name: scale_from_amax(max(np.asarray(t.highest).item(), np.asarray(t.lowest).item()))
        for name, t in data.items()
    }
    assert len(expected) > 10
    raw = json.loads((tmp_path / "calibration.json").read_text())
    assert raw["CLS"] == "TensorsData"  # the shape that used to be refused
    for file, fmt in [
        ("calibration.flatbuffers", "ort"),
        ("calibration.cache", "ort-text"),
        ("calibration.json", "ort-json"),
    ]:
        cache, detected = read_scales(tmp_path / file)
        assert detected == fmt
        assert cache.scales == expected, (method, fmt)


def test_ort_json_refuses_arrays_of_several_values(tmp_path):
    obj = {
        "CLS": "TensorsData",
        "data": {
            "x": {
                "lowest": {"data": [-1.0, -2.0], "dtype": "float32", "CLS": "numpy.array"},
                "highest": 3.0,
                "CLS": "TensorData",
            }
        },
    }
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(CacheFormatError, match=r"calibration.json: tensor 'x' lowest: .*2 values"):
        read_scales(path)
