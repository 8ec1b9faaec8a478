"""The statistics format's schema: golden files of the old format, versions, damaged files."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import calibkit as ck
from calibkit.cache.format import read_cache
from calibkit.cli import main
from calibkit.onnx.graph import Graph, Node
from calibkit.rules.names import CacheLine
from calibkit.stats import FORMAT_VERSION, StatsFormatError

GOLDEN = Path(__file__).parent / "data" / "golden_stats"


@pytest.mark.parametrize("name", ["fashion", "trt7000"])
@pytest.mark.parametrize("spec", ["entropy2", "minmax", "percentile:99.99", "mse"])
def test_golden_files_of_format_1_give_the_same_caches(name, spec):
    """Files written before the schema (commit 8a278ed) read, and give the caches they gave."""
    stats = ck.load_stats(GOLDEN / f"{name}.stats.npz")
    assert stats.format_version == 1
    suffix = "" if spec == "entropy2" else "." + spec.replace(":", "_")
    # that code wrote EntropyCalibration2 for percentile and mse; name it to get the same header
    header = "EntropyCalibration2" if spec in ("percentile:99.99", "mse") else None
    cache = ck.select_from_stats(stats, spec, header_algorithm=header)
    assert cache == read_cache(GOLDEN / f"{name}{suffix}.cache")


def test_golden_settings_map_onto_one_schema():
    onnx_path = ck.load_stats(GOLDEN / "fashion.stats.npz").settings
    recorded = ck.load_stats(GOLDEN / "trt7000.stats.npz").settings
    assert type(onnx_path) is type(recorded) is ck.StatsSettings
    assert onnx_path.trt_version == "10.16.0"
    assert recorded.trt_version == "7.0.0"  # typed as "7.0": one spelling now
    assert (onnx_path.source_kind, recorded.source_kind) == ("onnx", "activations")
    assert onnx_path.source.endswith("model.onnx") and recorded.source.endswith("activations.npz")
    assert len(onnx_path.source_sha256) == 64
    assert isinstance(onnx_path.graph, Graph) and recorded.graph is None
    assert onnx_path.trt_lines[0] == CacheLine("image", "image", "input")
    assert (onnx_path.num_bins, recorded.num_bins) == (2048, 2048)


def test_both_paths_write_the_same_schema(tmp_path):
    """The recorded-activations path records the version as the ONNX path does."""
    out = tmp_path / "a.cache"
    src = Path(__file__).parents[1] / "examples" / "trt7000_conv" / "activations.npz"
    assert main(["calibrate", str(src), "--trt-version", "7.0", "-o", str(out)]) == 0
    stats = ck.load_stats(tmp_path / "a.stats.npz")
    assert stats.format_version == FORMAT_VERSION
    assert stats.settings.trt_version == "7.0.0"
    assert stats.settings.source_kind == "activations"
    with np.load(tmp_path / "a.stats.npz") as z:
        keys = set(json.loads(str(z["settings"])))
    assert keys == set(ck.StatsSettings().to_dict())  # every field, always


def test_settings_round_trip_with_graph_and_lines(tmp_path):
    graph = Graph((Node("MaxPool", ("x",), ("p",), name="pool"),), ("x",))
    settings = ck.StatsSettings(
        source_kind="onnx",
        trt_version="8.6",
        graph=graph,
        trt_lines=(CacheLine("x", "x", "input"), CacheLine("p", "p", "activation")),
        calibration_shapes={"x": (1, 3)},
        shuffle=True,
        seed=4,
    )
    hists = {"x": ck.Histogram(8).fill(np.ones(3, np.float32))}
    loaded = ck.load_stats(ck.save_stats(tmp_path / "s.npz", hists, settings=settings))
    assert loaded.settings == settings
    assert loaded.settings.trt_version == "8.6.0"


def _rewrite(path: Path, **changes) -> Path:
    """Copy a statistics file with some members replaced (None: removed)."""
    with np.load(path) as z:
        arrays = dict(z)
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    out = path.with_name("tampered.npz")
    np.savez(out, **arrays)
    return out


def _settings(path: Path) -> dict:
    with np.load(path) as z:
        return json.loads(str(z["settings"]))


@pytest.fixture
def good(tmp_path):
    hists = {"a": ck.Histogram(8).fill(np.arange(5, dtype=np.float32))}
    settings = ck.StatsSettings(trt_version="10.16", graph=Graph((), ("a",)))
    return ck.save_stats(tmp_path / "good.npz", hists, settings=settings)


def test_newer_format_is_a_clear_error(good):
    newer = _rewrite(good, format=np.array(f"calibkit-stats-{FORMAT_VERSION + 1}"))
    with pytest.raises(
        StatsFormatError, match=f"format {FORMAT_VERSION + 1} was written by a newer"
    ):
        ck.load_stats(newer)


def _tampered(good: Path):
    settings = _settings(good)
    yield "wrong dtype", {"counts": np.zeros((1, 8))}, r"'counts' must be a 2-d array of integers"
    yield "0-d names", {"names": np.array("a")}, r"'names' must be a 1-d array of strings"
    yield "0-d upper", {"upper": np.array(1.0)}, r"'upper' must be a 1-d array of floats"
    yield "missing key", {"max_abs": None}, r"no 'max_abs' array"
    yield "format not text", {"format": np.array(2)}, r"'format' must be a 0-d array of strings"
    yield "settings not JSON", {"settings": np.array("{")}, r"'settings' is not JSON"
    yield "settings a list", {"settings": np.array("[]")}, r"settings: expected a JSON object"
    bad = {**settings, "num_bins": "many"}
    yield "wrong type", {"settings": np.array(json.dumps(bad))}, r"settings.num_bins: expected"
    bad = {**settings, "graph": {"nodes": 3}}
    yield "bad graph", {"settings": np.array(json.dumps(bad))}, r"settings.graph: .*'inputs'"
    bad = {k: v for k, v in settings.items() if k != "trt_version"}
    yield "missing field", {"settings": np.array(json.dumps(bad))}, r"missing field\(s\) \['trt_v"
    bad = {**settings, "trt_version": "ten"}
    yield "bad version", {"settings": np.array(json.dumps(bad))}, r"settings.trt_version"
    yield "negative", {"num_inf": np.array([-1])}, r"tensor 'a': num_inf and num_nan must be >= 0"
    yield "duplicate", {"names": np.array(["a", "a"])}, r"disagree|twice"


def test_tampered_files_give_one_clear_line(good, capsys):
    for what, changes, match in _tampered(good):
        path = _rewrite(good, **changes)
        with pytest.raises(StatsFormatError, match=match) as info:
            ck.load_stats(path)
        assert str(path) in str(info.value), what
        assert main(["select", str(path), "-a", "minmax", "-o", str(path) + ".cache"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, what
        assert err.startswith("calibkit select: error: ") and str(path) in err, what


def test_truncated_and_empty_files(good, tmp_path, capsys):
    data = good.read_bytes()
    for name, content in [("empty.npz", b""), ("half.npz", data[: len(data) // 2])]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(StatsFormatError, match=str(path)):
            ck.load_stats(path)
        assert main(["compare", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err


def test_damaged_member_inside_a_valid_zip(good, tmp_path):
    """A zip whose member is corrupt (bad CRC) reads as a damaged file, not a traceback."""
    path = tmp_path / "crc.npz"
    shutil.copy(good, path)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename == "counts.npy":
                raw = raw[:-8] + b"\xff" * 8
            dst.writestr(info, raw)
    with pytest.raises(StatsFormatError, match=str(path)):
        ck.load_stats(path)
