"""The ONNX calibration pipeline and the `calibrate MODEL.onnx` / `select` commands."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest

import calibkit as ck
from calibkit import HistogramCollector, compute_amax, load_stats, make_selector
from calibkit.cache.format import read_cache
from calibkit.cli import main
from calibkit.data.sources import DataError
from calibkit.onnx.calibrate import calibrate_onnx
from calibkit.pipeline import ALL_ALGORITHMS, select_all, select_from_stats
from calibkit.scale import scale_from_amax
from calibkit.stats import default_stats_path

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from test_onnx_source import CNN_TENSORS, cnn_reference, make_cnn  # noqa: E402

BATCH = 4


@pytest.fixture
def cnn(rng, tmp_path):
    """The test CNN on disk, 10 calibration samples, and NumPy's histograms of its tensors."""
    model, w = make_cnn(rng)
    path = tmp_path / "cnn.onnx"
    onnx.save(model, str(path))
    x = rng.normal(size=(10, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    reference = HistogramCollector(num_bins=2048)
    for start in range(0, len(x), BATCH):
        reference.update(cnn_reference(x[start : start + BATCH], w))
    return path, tmp_path / "calib.npy", reference.histograms_


def _calibrate(cnn, **kwargs):
    kwargs = {"trt_version": "10.16", "batch_size": BATCH, "num_threads": 1, **kwargs}
    return calibrate_onnx(cnn[0], cnn[1], **kwargs)


def _assert_same_histograms(got, want):
    assert list(got) == list(want)
    for name, hist in want.items():
        assert got[name].upper == pytest.approx(hist.upper, rel=1e-5), name
        # onnxruntime and NumPy round differently: allow a handful of values on bin edges
        assert np.abs(got[name].counts - hist.counts).sum() <= 4, name


def test_histograms_match_numpy_and_amax_follows(cnn):
    result = _calibrate(cnn, names="onnx")  # one line per ONNX activation, no TensorRT extras
    _assert_same_histograms(result.histograms, cnn[2])
    assert result.amax == compute_amax(result.histograms, make_selector("entropy2"))
    assert result.cache.version == (10, 16, 0)
    assert result.cache.algorithm == "EntropyCalibration2"
    assert list(result.cache.scales) == CNN_TENSORS
    for name, amax in result.amax.items():
        assert result.cache.scales[name] == scale_from_amax(amax)


def test_minmax_is_the_exact_max(cnn):
    result = _calibrate(cnn, algorithm="minmax")
    assert result.cache.algorithm == "MinMaxCalibration"
    for name, hist in cnn[2].items():
        assert result.amax[name] == pytest.approx(hist.max_abs, rel=1e-6)


def test_minmax_without_histograms_is_a_max_pass_with_the_same_cache(cnn, tmp_path):
    full = _calibrate(cnn, algorithm="minmax")
    lean = _calibrate(cnn, algorithm="minmax", histograms=False)
    assert lean.histograms == {} and full.histograms  # no 2048-bin histogram was filled
    assert lean.amax == full.amax
    full.write(tmp_path / "full.cache", save_stats_file=False)
    lean.write(tmp_path / "lean.cache", save_stats_file=False)
    assert (tmp_path / "lean.cache").read_bytes() == (tmp_path / "full.cache").read_bytes()
    with pytest.raises(ValueError, match="no histograms"):
        lean.write(tmp_path / "x.cache")
    assert not (tmp_path / "x.cache").exists()
    # other algorithms need the histograms whatever the flag says
    assert _calibrate(cnn, histograms=False).histograms.keys() == full.histograms.keys()


def test_reshaped_tensors_are_binned_once_with_the_same_histograms(cnn):
    """'flat' = Reshape(relu): its histogram is copied from relu's; a direct fill agrees."""
    from calibkit.onnx.calibrate import _same_values
    from calibkit.onnx.model import OnnxModel
    from calibkit.onnx.source import OnnxActivationSource

    source = OnnxActivationSource(cnn[0])
    assert _same_values(OnnxModel.of(cnn[0]).graph, source.tensor_names) == {"flat": "relu"}
    x = np.load(cnn[1])
    direct = HistogramCollector()
    for batch in source.run([{"x": x[i : i + BATCH]} for i in range(0, len(x), BATCH)]):
        direct.update(batch)
    result = _calibrate(cnn, names="onnx")
    assert list(result.histograms) == list(direct.histograms_)
    for name, hist in direct.histograms_.items():
        assert result.histograms[name] == hist, name
    assert result.histograms["flat"] is not result.histograms["relu"]


def test_overlapped_and_sequential_runs_give_the_same_result(cnn):
    ahead, serial = _calibrate(cnn, overlap=True), _calibrate(cnn, overlap=False)
    assert ahead.histograms == serial.histograms and ahead.cache == serial.cache
    assert ahead.settings.num_batches == serial.settings.num_batches == 3


def test_an_error_while_binning_stops_the_inference_thread(cnn, rng, tmp_path):
    x = rng.normal(size=(10, 3, 4, 4)).astype(np.float32)
    x[9, 0, 0, 0] = np.nan  # the last batch: inference of earlier ones is already under way
    np.save(tmp_path / "nan.npy", x)
    before = threading.active_count()
    with pytest.raises(ck.NonFiniteError, match="batch 2"):
        calibrate_onnx(cnn[0], tmp_path / "nan.npy", trt_version="10.16", batch_size=BATCH)
    assert threading.active_count() == before


def test_settings_record_the_run(cnn):
    result = _calibrate(cnn, max_samples=9, tensors="relu|logits")
    s = result.settings
    assert s.algorithm == "entropy2"
    assert s.num_bins == 2048
    assert s.trt_version == "10.16.0"
    assert s.batch_size == BATCH
    assert s.num_samples == 9
    assert s.num_batches == 3
    assert s.tensors == "relu|logits"
    assert "calib.npy" in s.data
    assert s.source_sha256 == hashlib.sha256(cnn[0].read_bytes()).hexdigest()
    assert s.calibkit_version
    assert list(result.amax) == ["relu", "logits"]


def test_input_ranges_are_reported(cnn):
    x = np.load(cnn[1])
    r = _calibrate(cnn).inputs["x"]
    assert (r.min, r.max) == (float(x.min()), float(x.max()))
    assert r.mean == pytest.approx(float(x.mean()), rel=1e-6)


def test_raw_pixels_fed_as_floats_are_flagged(cnn, tmp_path, rng, caplog):
    pixels = rng.integers(0, 256, size=(4, 3, 4, 4)).astype(np.float32)
    pixels.flat[:2] = 0, 255
    np.save(tmp_path / "pixels.npy", pixels)
    with caplog.at_level(logging.WARNING, logger="calibkit.onnx.calibrate"):
        calibrate_onnx(cnn[0], tmp_path / "pixels.npy", trt_version="10.16", num_threads=1)
    assert "input 'x' holds whole numbers in [0, 255], like raw 8-bit pixels" in caplog.text


def test_scaled_data_is_not_flagged(cnn, caplog):
    with caplog.at_level(logging.WARNING, logger="calibkit.onnx.calibrate"):
        _calibrate(cnn)
    assert "raw 8-bit pixels" not in caplog.text


def test_bad_arguments_fail_before_the_model_runs(cnn):
    with pytest.raises(ValueError, match="a TensorRT version is needed"):
        calibrate_onnx(cnn[0], cnn[1])
    with pytest.raises(ValueError, match="unknown algorithm 'kl'"):
        calibrate_onnx(cnn[0], cnn[1], algorithm="kl", trt_version="10.16")
    with pytest.raises(ValueError, match="TensorRT 11 removed implicit INT8 calibration"):
        calibrate_onnx(cnn[0], cnn[1], trt_version="11.0")
    with pytest.raises(ValueError, match="names must be 'trt' or 'onnx'"):
        calibrate_onnx(cnn[0], "no-such-data.npy", trt_version="10.16", names="tensorrt")


def test_legacy_needs_no_version(cnn):
    result = calibrate_onnx(cnn[0], cnn[1], algorithm="legacy:0.999:1", num_threads=1)
    assert result.cache.algorithm == "LegacyCalibration"
    assert result.settings.trt_version is None
    given = calibrate_onnx(cnn[0], cnn[1], algorithm="legacy", trt_version="8.6", num_threads=1)
    assert given.settings.trt_version == "8.6.0"  # kept for `select` with other algorithms
    assert result.cache.legacy.quantile == 0.999


def test_data_that_does_not_fit_the_model(cnn, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(DataError, match="dimension 2 is 5, expected 4"):
        calibrate_onnx(cnn[0], tmp_path / "wrong.npy", trt_version="10.16", num_threads=1)


def test_write_puts_the_stats_next_to_the_cache(cnn, tmp_path):
    result = _calibrate(cnn)
    stats_path = result.write(tmp_path / "cnn.cache")
    assert stats_path == tmp_path / "cnn.stats.npz" == default_stats_path(tmp_path / "cnn.cache")
    assert read_cache(tmp_path / "cnn.cache") == result.cache
    stats = load_stats(stats_path)
    assert stats.settings == result.settings
    assert stats.histograms == result.histograms


def test_select_from_stats_equals_calibrating_again(cnn, tmp_path):
    stats_path = _calibrate(cnn).write(tmp_path / "cnn.cache")
    for spec in ("minmax", "percentile:99.9", "entropy"):
        header = "MinMaxCalibration" if spec.startswith("percentile") else None
        direct = _calibrate(cnn, algorithm=spec, header_algorithm=header).cache
        assert select_from_stats(stats_path, spec, header_algorithm=header) == direct, spec


def test_select_takes_another_version(cnn, tmp_path):
    stats_path = _calibrate(cnn).write(tmp_path / "cnn.cache")
    assert select_from_stats(stats_path, "minmax", trt_version="8.6.1").version == (8, 6, 1)


def test_select_all_writes_one_cache_per_algorithm(cnn, tmp_path):
    stats_path = _calibrate(cnn).write(tmp_path / "cnn.cache")
    with pytest.warns(ck.selectors.HeaderAlgorithmWarning, match="is not a TensorRT calibrator"):
        written = select_all(stats_path, tmp_path / "all")
    assert list(written) == list(ALL_ALGORITHMS)
    assert written["percentile:99.99"].name == "percentile_99.99.cache"
    for spec, path in written.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ck.selectors.HeaderAlgorithmWarning)
            assert read_cache(path) == select_from_stats(stats_path, spec)


# -- command line ---------------------------------------------------------------------------


def _cli_calibrate(cnn, out, *extra):
    argv = ["calibrate", str(cnn[0]), "--data", str(cnn[1]), "--trt-version", "10.16"]
    return main([*argv, "-o", str(out), "--batch-size", str(BATCH), "--threads", "1", *extra])


def test_cli_calibrate_writes_cache_and_stats(cnn, tmp_path, capsys):
    assert _cli_calibrate(cnn, tmp_path / "m.cache", "--no-progress") == 0
    out = capsys.readouterr().out
    cache = read_cache(tmp_path / "m.cache")
    assert cache == _calibrate(cnn).cache
    assert load_stats(tmp_path / "m.stats.npz").settings.algorithm == "entropy2"
    assert "/conv/Conv_output_0" in out  # the per-tensor table
    assert "10 samples in 3 batches of 4" in out
    assert "wrote" in out


def test_cli_calibrate_options(cnn, tmp_path):
    argv = ["--algorithm", "minmax", "--tensors", "^relu$", "--no-save-histograms", "--no-overlap"]
    assert _cli_calibrate(cnn, tmp_path / "m.cache", *argv, "--no-progress") == 0
    assert list(read_cache(tmp_path / "m.cache").scales) == ["relu"]
    assert not (tmp_path / "m.stats.npz").exists()
    stats = tmp_path / "elsewhere.npz"
    argv = ["--save-histograms", str(stats), "--names", "onnx"]
    assert _cli_calibrate(cnn, tmp_path / "n.cache", *argv) == 0
    assert load_stats(stats).histograms.keys() == set(CNN_TENSORS)
    assert not (tmp_path / "n.stats.npz").exists()


def test_cli_calibrate_without_data(cnn, tmp_path, capsys):
    argv = ["calibrate", str(cnn[0]), "--trt-version", "10.16", "-o", str(tmp_path / "m.cache")]
    assert main(argv) == 1
    assert "an ONNX model needs calibration inputs: --data DATA" in capsys.readouterr().err


def test_cli_calibrate_checks_the_output_folder_first(cnn, tmp_path, capsys):
    assert _cli_calibrate(cnn, tmp_path / "missing" / "m.cache") == 1
    assert "folder" in capsys.readouterr().err
    assert _cli_calibrate(cnn, tmp_path / "m.cache", "--save-histograms", "nope/s.npz") == 1
    assert "cannot write nope/s.npz: folder nope does not exist" in capsys.readouterr().err


def test_cli_calibrate_data_error_is_one_line(cnn, tmp_path, capsys):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 5, 5), np.float32))
    argv = ["calibrate", str(cnn[0]), "--data", str(tmp_path / "wrong.npy"), "--trt-version", "9.0"]
    assert main([*argv, "-o", str(tmp_path / "m.cache")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("calibkit calibrate: error: ")
    assert "dimension 2 is 5, expected 4" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.cache").exists()


def test_cli_image_preprocessing_options(cnn, tmp_path, capsys):
    pil = pytest.importorskip("PIL.Image")
    images = tmp_path / "images"
    images.mkdir()
    pil.new("RGB", (6, 6), (255, 0, 51)).save(images / "a.png")
    argv = ["calibrate", str(cnn[0]), "--data", str(images), "--trt-version", "10.16"]
    argv += ["--algorithm", "minmax", "--preprocess", "unit", "--mean", "0.5", "--std", "0.5,1,2"]
    assert main([*argv, "-o", str(tmp_path / "m.cache"), "--threads", "1", "--no-progress"]) == 0
    x_amax = read_cache(tmp_path / "m.cache").amax["x"]
    # channels: (1 - 0.5) / 0.5 = 1, (0 - 0.5) / 1 = -0.5, (0.2 - 0.5) / 2 = -0.15
    assert x_amax == pytest.approx(1.0, rel=1e-6)
    assert main([*argv, "-o", str(tmp_path / "m.cache"), "--preprocess", "vgg"]) == 1
    assert "unknown --preprocess 'vgg'" in capsys.readouterr().err


def test_cli_select(cnn, tmp_path, capsys):
    _cli_calibrate(cnn, tmp_path / "m.cache", "--no-progress")
    stats = str(tmp_path / "m.stats.npz")
    assert main(["select", stats, "--algorithm", "minmax", "-o", str(tmp_path / "mm.cache")]) == 0
    assert read_cache(tmp_path / "mm.cache") == select_from_stats(stats, "minmax")
    assert main(["select", stats, "--all", "-o", str(tmp_path / "all")]) == 0
    assert len(list((tmp_path / "all").glob("*.cache"))) == len(ALL_ALGORITHMS)
    assert main(["select", stats, "-o", str(tmp_path / "x.cache")]) == 1
    assert "give either --algorithm SPEC" in capsys.readouterr().err
    assert main(["select", stats, "-a", "kl", "-o", str(tmp_path / "x.cache")]) == 1
    assert "unknown algorithm 'kl'" in capsys.readouterr().err


def test_cli_select_does_not_import_onnxruntime(cnn, tmp_path):
    _calibrate(cnn).write(tmp_path / "m.cache")
    script = textwrap.dedent(
        f"""
        import sys
        from calibkit.cli import main
        status = main(["select", {str(tmp_path / "m.stats.npz")!r}, "--all",
                       "-o", {str(tmp_path / "all")!r}])
        heavy = sorted(m for m in ("onnx", "onnxruntime") if m in sys.modules)
        print(status, heavy)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[-2] == "0 []"
