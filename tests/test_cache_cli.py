"""`calibkit cache show|diff|convert|edit|check` through main(), as scripts and CI use it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from calibkit.cache.format import read_cache
from calibkit.cli import main
from calibkit.scale import scale_from_amax

HERE = Path(__file__).resolve().parent
BUNDLED = HERE / "data" / "caches"
EXAMPLES = HERE.parent / "examples" / "caches"
SHARED = HERE.parents[1] / "shared" / "testdata"
TINY = EXAMPLES / "trt8204_entropy2_tiny_trtcookbook.cache"
LEGACY_A = EXAMPLES / "legacy_cut1_q0.99999_3dunet_mlperf07nv.cache"
LEGACY_B = EXAMPLES / "legacy_cut1_q0.99999_3dunet_mlperf10dellemc.cache"
REAL = sorted(BUNDLED.glob("*.cache")) + sorted((SHARED / "trt_caches").glob("*.cache"))


@pytest.mark.parametrize("path", REAL, ids=[f"{p.parent.name}/{p.name}" for p in REAL])
def test_show_json_and_convert_copy(path, tmp_path, capsys):
    assert main(["cache", "show", str(path), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)  # exactly one JSON object
    cache = read_cache(path)
    assert obj["version"] == (None if cache.version is None else list(cache.version))
    assert obj["algorithm"] == cache.algorithm
    assert list(obj["entries"]) == list(cache.scales)
    for name, entry in obj["entries"].items():
        assert int(entry["hex"], 16) == int(np.float32(cache.scales[name]).view(np.uint32))
    out = tmp_path / path.name
    assert main(["cache", "convert", str(path), "-o", str(out)]) == 0
    assert out.read_bytes() == path.read_bytes()


def test_show_legacy_json(capsys):
    assert main(["cache", "show", str(LEGACY_A), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["legacy"] == {"regression_cutoff": 1.0, "quantile": 0.99999}
    assert obj["version"] is None and obj["algorithm"] == "LegacyCalibration"


def test_show_table(capsys):
    assert main(["cache", "show", str(TINY), "--sort", "name"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "'TRT-8204-EntropyCalibration2', TensorRT 8.2.4" in out[0]
    assert out[2].split(None, 3) == [
        "3f4014c9",
        "0.750317",
        "95.2903",
        "(Unnamed Layer* 0) [PluginV2DynamicExt]_output_0",
    ]
    assert out[-1] == "3 tensors, 0 zero, 0 infinite"


def test_diff_rtol_gate(capsys):
    assert main(["cache", "diff", str(LEGACY_A), str(LEGACY_A), "--rtol", "0"]) == 0
    assert "-> ok" in capsys.readouterr().out
    assert main(["cache", "diff", str(LEGACY_A), str(LEGACY_B), "--rtol", "0.2"]) == 1
    out = capsys.readouterr().out
    assert "only in a: ConvTranspose_36_pixelshuffle_plugin_out" in out
    assert "51 common tensors, 0 equal, 5 only in a, 6 only in b" in out
    args = ["cache", "diff", str(LEGACY_A), str(LEGACY_B), "--rtol", "0.2", "--ignore-missing"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args[:-1], "--json"]) == 1
    obj = json.loads(capsys.readouterr().out)
    assert obj["passed"] is False and obj["summary"]["common"] == 51
    row = next(r for r in obj["rows"] if r["name"] == "input")
    a, b = read_cache(LEGACY_A), read_cache(LEGACY_B)
    assert row["scale_a"] == float(a.scales["input"]) and row["scale_b"] == float(b.scales["input"])


def test_convert_between_formats_and_back(tmp_path, capsys):
    fb = tmp_path / "calibration.flatbuffers"
    assert main(["cache", "convert", str(TINY), "-o", str(fb)]) == 0
    back = tmp_path / "back.cache"
    assert main(["cache", "convert", str(fb), "-o", str(back)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"calibkit cache: error: {fb} (ort) has no TensorRT header; pass --trt-version and "
        "--algorithm to write a TensorRT cache or calibkit JSON"
    ]
    args = ["cache", "convert", str(fb), "-o", str(back), "--trt-version", "8.2.4"]
    assert main([*args, "--algorithm", "EntropyCalibration2"]) == 0
    assert read_cache(back).scales == read_cache(TINY).scales
    assert read_cache(back).version == (8, 2, 4)


def test_convert_ort_text_with_a_header_writes_tensorrt(tmp_path, capsys):
    # The command: onnxruntime's text table (suffix .cache, as the output's) plus an
    # explicit TensorRT header means a TensorRT cache, not a copy in onnxruntime's format.
    src = tmp_path / "calibration.cache"
    src.write_text("conv2d 1.4358896017074585\nimage 1.0\n")
    out = tmp_path / "trt.cache"
    args = ["cache", "convert", str(src), "-o", str(out), "--trt-version", "10.16"]
    assert main([*args, "--algorithm", "MinMaxCalibration"]) == 0
    assert "trt.cache: trt, 2 tensors" in capsys.readouterr().out
    cache = read_cache(out)
    assert (cache.version, cache.algorithm) == ((10, 16, 0), "MinMaxCalibration")
    assert cache.scales == {
        "conv2d": scale_from_amax(1.4358896017074585),
        "image": scale_from_amax(1.0),
    }
    # a header with a format that cannot hold one is a contradiction, not silently dropped
    other = tmp_path / "other.cache"
    assert (
        main([*args, "--algorithm", "MinMaxCalibration", "--to", "ort-text", "-o", str(other)]) == 1
    )
    err = capsys.readouterr().err
    assert "format 'ort-text' does not hold" in err and not other.exists()
    json_out = tmp_path / "c.json"  # calibkit JSON holds the header: kept
    assert (
        main(
            [
                "cache",
                "convert",
                str(src),
                "-o",
                str(json_out),
                "--trt-version",
                "10.16",
                "--algorithm",
                "MinMaxCalibration",
            ]
        )
        == 0
    )
    assert json.loads(json_out.read_text())["version"] == [10, 16, 0]


def test_convert_retarget_warns_on_stderr(tmp_path, capsys):
    out = tmp_path / "dla.cache"
    args = ["cache", "convert", str(TINY), "-o", str(out), "--algorithm", "MinMaxCalibration"]
    assert main([*args, "--trt-version", "8.6"]) == 0
    err = capsys.readouterr().err
    assert "warning: header algorithm changed from EntropyCalibration2 to MinMaxCalibration" in err
    assert "warning: header version changed from TensorRT 8.2.4 to 8.6.0" in err
    assert out.read_bytes().startswith(b"TRT-8600-MinMaxCalibration\n")


def test_edit(tmp_path, capsys):
    src = tmp_path / "in.cache"
    src.write_bytes(b"TRT-8601-EntropyCalibration2\na=b: 3C010204\nconv/1: 3f800000\nconv/2: 0\n")
    out = tmp_path / "out.cache"
    args = ["cache", "edit", str(src), "-o", str(out), "--set", "conv/2=2.5", "--drop", "conv/1"]
    assert main([*args, "--add", "new=1"]) == 0
    assert "1 changed, 1 added, 1 dropped" in capsys.readouterr().out
    # the untouched line keeps its spelling (upper-case hex); TensorRT's 2.5/127 in float32 bits
    bits = struct.pack(">f", np.float32(2.5) / np.float32(127)).hex().encode()
    expected = (
        b"TRT-8601-EntropyCalibration2\na=b: 3C010204\nconv/2: " + bits + b"\nnew: 3c010204\n"
    )
    assert out.read_bytes() == expected
    assert read_cache(out).scales["conv/2"] == scale_from_amax(2.5)
    args = ["cache", "edit", str(src), "-o", str(out), "--select", "conv/.*", "--clamp-max", "1"]
    assert main(args) == 0
    assert read_cache(out).scales["conv/1"] == scale_from_amax(1.0)
    overrides = tmp_path / "o.txt"
    overrides.write_text("a=b:127\n")
    assert main(["cache", "edit", str(src), "-o", str(out), "--overrides", str(overrides)]) == 0
    assert read_cache(out).scales["a=b"] == np.float32(1.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "nope=1"], "1 name(s) not in the cache, e.g. 'nope'; use add to append"),
        (["--set", "conv/1"], "--set 'conv/1': expected NAME=AMAX"),
        (
            ["--drop", "conv"],
            "pattern 'conv' matches no tensor name (it must match the whole name)",
        ),
        (["--select", "a.*"], "--select chooses tensors for --clamp-min/--clamp-max"),
        (["--trt-version", "11.0"], "TensorRT 11 removed implicit INT8 calibration"),
    ],
    ids=["unknown", "no-equals", "no-match", "select-alone", "trt11"],
)
def test_edit_errors_are_one_line(tmp_path, capsys, extra, message):
    src = tmp_path / "in.cache"
    src.write_bytes(b"TRT-8601-EntropyCalibration2\nconv/1: 3f800000\n")
    assert main(["cache", "edit", str(src), "-o", str(tmp_path / "o.cache"), *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("calibkit cache: error: ") and message in err[0]


def test_bad_cache_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.cache"
    bad.write_bytes(b"TRT-8601-EntropyCalibration2\nx: 1\nx: 2\n")
    assert main(["cache", "show", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"calibkit cache: error: {bad}:3: duplicate tensor name 'x' (first on line 2)"]


def test_check_against_graph_json(tmp_path, capsys):
    graph = {
        "inputs": ["x"],
        "outputs": ["z"],
        "nodes": [
            {"op": "Relu", "name": "relu", "inputs": ["x"], "outputs": ["y"]},
            {"op": "MaxPool", "name": "pool", "inputs": ["y"], "outputs": ["z"]},
            {"op": "Relu", "name": "relu2", "inputs": ["z"], "outputs": ["w"]},
        ],
    }
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    cache = tmp_path / "c.cache"
    cache.write_bytes(
        b"TRT-8601-EntropyCalibration2\nx: 3c010204\ny: 3d000000\nz: 3d000000\nw: 0\n"
    )
    args = ["cache", "check", str(cache), "--model", str(tmp_path / "graph.json")]
    assert main(args) == 1  # a zero scale is an issue: non-zero exit by default
    out = capsys.readouterr().out
    assert "1 zero scale" in out and "equal scale across MaxPool pool: y -> z" in out
    assert main([*args, "--strict", "--json"]) == 1
    obj = json.loads(capsys.readouterr().out)
    assert obj["zero"] == ["w"] and obj["missing"] == [] and not obj["ok"]
    assert main([*args, "--report-only"]) == 0
    assert "-> issues" in capsys.readouterr().out
    cache.write_bytes(
        b"TRT-8601-EntropyCalibration2\nx: 3c010204\ny: 3d000000\nz: 3d000000\nw: 1\n"
    )
    assert main(args) == 0  # clean
    assert "-> ok" in capsys.readouterr().out


def test_diff_in_bins_with_saved_statistics(tmp_path, capsys):
    from calibkit.histogram import Histogram
    from calibkit.stats import save_stats

    stats = tmp_path / "stats.npz"
    save_stats(stats, {"inputT0": Histogram(num_bins=2048).fill(np.array([0.0, 127.0]))})
    edited = tmp_path / "e.cache"
    assert main(["cache", "edit", str(TINY), "-o", str(edited), "--set", "inputT0=96.29"]) == 0
    capsys.readouterr()
    assert main(["cache", "diff", str(TINY), str(edited), "--stats", str(stats), "--json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out)["rows"] if r["name"] == "inputT0"]
    assert row["bins"] == pytest.approx((row["amax_b"] - row["amax_a"]) * 2048 / 127.0)
    assert row["bins"] == pytest.approx(16.1, abs=0.1)  # one unit of amax = 2048/127 bins
