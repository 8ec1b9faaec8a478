"""``calibkit calibrate ACTIVATIONS.npz``: the first form of the main command, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

import calibkit as ck
from calibkit.cache.format import read_cache
from calibkit.cli import main

EXAMPLE = "examples/trt7000_conv"


@pytest.fixture
def example(request):
    return request.config.rootpath / EXAMPLE


def test_bundled_example_reproduces_tensorrt(example, tmp_path, capsys):
    out = tmp_path / "out.cache"
    argv = ["calibrate", str(example / "activations.npz"), "--trt-version", "7.0.0"]
    assert main([*argv, "-o", str(out)]) == 0
    assert out.read_bytes() == (example / "tensorrt.cache").read_bytes()
    assert "2 tensors from 10 batches" in capsys.readouterr().out
    stats = ck.load_stats(tmp_path / "out.stats.npz")  # saved next to the cache by default
    assert list(stats.histograms) == list(read_cache(out).scales)


def test_no_save_histograms(example, tmp_path):
    out = tmp_path / "out.cache"
    argv = ["calibrate", str(example / "activations.npz"), "--trt-version", "7.0.0"]
    assert main([*argv, "-o", str(out), "--no-save-histograms"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.cache"]


@pytest.mark.parametrize(
    ("algorithm", "header"),
    [
        ("minmax", b"TRT-8601-MinMaxCalibration"),
        ("entropy", b"TRT-8601-EntropyCalibration"),
        ("percentile:99.9", b"TRT-8601-EntropyCalibration2"),
        ("mse", b"TRT-8601-EntropyCalibration2"),
        ("legacy:0.99999:1", b"0 3ff0000000000000 3fefffeb074a771d"),
    ],
)
def test_algorithms_and_headers(example, tmp_path, algorithm, header):
    out = tmp_path / "out.cache"
    argv = ["calibrate", str(example / "activations.npz"), "--trt-version", "8.6.1"]
    assert main([*argv, "-a", algorithm, "-o", str(out)]) == 0
    assert out.read_bytes().split(b"\n")[0] == header
    assert len(read_cache(out).scales) == 2


def test_minmax_is_the_exact_max(example, tmp_path):
    out = tmp_path / "out.cache"
    argv = ["calibrate", str(example / "activations.npz"), "--trt-version", "10.16"]
    assert main([*argv, "-a", "minmax", "-o", str(out)]) == 0
    acts = np.load(example / "activations.npz")
    for name, scale in read_cache(out).scales.items():
        assert scale == ck.scale_from_amax(float(np.abs(acts[name]).max()))


def test_save_histograms_then_select(example, tmp_path):
    stats, out = tmp_path / "s.npz", tmp_path / "out.cache"
    argv = ["calibrate", str(example / "activations.npz"), "--trt-version", "7.0.0"]
    assert main([*argv, "-o", str(out), "--save-histograms", str(stats)]) == 0
    loaded = ck.load_stats(stats)
    assert loaded.settings.num_batches == 10
    again = tmp_path / "again.cache"
    assert main(["select", str(stats), "-a", "entropy2", "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(
    ("make", "extra", "match"),
    [
        (lambda p: np.savez(p, x=np.ones((2, 3))), ["--trt-version", "11.0"], "TensorRT 11"),
        (lambda p: np.savez(p, x=np.ones((2, 3))), ["--trt-version", "x.y"], "version"),
        (lambda p: np.savez(p, x=np.ones((2, 3))), ["-a", "kl"], "unknown algorithm"),
        (lambda p: np.savez(p, x=np.ones((2, 3)), y=np.ones((3, 3))), [], "disagree"),
        (lambda p: np.savez(p, x=np.arange(6).reshape(2, 3)), [], "expected a float array"),
        (lambda p: np.savez(p, x=np.array([[1.0, np.nan]])), [], "tensor 'x', batch 0: 1 NaN"),
        (lambda p: p.write_text("not a zip"), [], "not a readable .npz"),
    ],
    ids=["trt11", "bad-version", "bad-algorithm", "ragged", "integer", "nan", "not-npz"],
)
def test_errors_are_one_line(tmp_path, capsys, make, extra, match):
    src = tmp_path / "acts.npz"
    make(src)
    argv = ["calibrate", str(src), "-o", str(tmp_path / "o.cache")]
    if "--trt-version" not in extra:
        argv += ["--trt-version", "8.6"]
    assert main([*argv, *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("calibkit calibrate: error:")
    assert match in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.cache").exists()


def test_unsupported_source(tmp_path, capsys):
    src = tmp_path / "model.pb"
    src.write_text("x")
    assert main(["calibrate", str(src), "--trt-version", "8.6", "-o", str(tmp_path / "o")]) == 1
    assert "unsupported source" in capsys.readouterr().err


def test_statistics_file_points_to_select(example, tmp_path, capsys):
    argv = ["calibrate", str(example / "activations.npz"), "--trt-version", "7.0.0"]
    assert main([*argv, "-o", str(tmp_path / "a.cache")]) == 0
    capsys.readouterr()
    stats = str(tmp_path / "a.stats.npz")
    argv = ["calibrate", stats, "--trt-version", "7.0.0", "-o", str(tmp_path / "b.cache")]
    assert main(argv) == 1
    assert "use 'calibkit select'" in capsys.readouterr().err
