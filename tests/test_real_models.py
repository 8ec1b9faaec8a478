"""End to end on real models: the bundled Fashion-MNIST CNN, EfficientNet-Lite0 and MiniLM.

The real models come from benchmarks/models.py (exported once into $CALIBKIT_MODEL_CACHE by
``bash benchmarks/prepare_models.sh``; exported on first use if torch is installed). Every check
against calibkit's output uses values computed here independently: onnxruntime is run directly
with the tensors exposed, and the maxima are taken with NumPy.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calibkit.cache.format import read_cache
from calibkit.cli import main
from calibkit.data.sources import open_data
from calibkit.onnx.calibrate import calibrate_onnx
from calibkit.onnx.source import OnnxActivationSource
from calibkit.rules.names import constant_values, trt_cache_names
from calibkit.scale import scale_from_amax
from calibkit.stats import load_stats

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fashion_mnist"
TRT_VERSION = "10.16"
ALGORITHMS = {"entropy2": "EntropyCalibration2", "minmax": "MinMaxCalibration"}


def _load_models():
    """benchmarks/models.py, loaded by path (benchmarks/ is not an installed package)."""
    spec = importlib.util.spec_from_file_location(
        "calibkit_benchmark_models", ROOT / "benchmarks" / "models.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


models = _load_models()


# --- independent helpers ----------------------------------------------------------------------


def float_tensors(path: Path) -> list[str]:
    """Graph inputs and node outputs that ONNX shape inference types as float32."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*graph.input, *graph.value_info, *graph.output)
    }
    names = [v.name for v in graph.input] + [o for node in graph.node for o in node.output]
    return [n for n in names if types.get(n) == onnx.TensorProto.FLOAT]


def run_exposed(path: Path, names: list[str], batches: Iterable[Mapping[str, np.ndarray]]):
    """Yield ``{name: value}`` per batch, from onnxruntime with `names` as extra graph outputs."""
    model = onnx.load(str(path))
    inputs = {v.name for v in model.graph.input}
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present and name not in inputs:
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    fetch = [n for n in names if n not in inputs]
    for batch in batches:
        # an empty fetch list would make onnxruntime return every output instead of none
        values = dict(zip(fetch, session.run(fetch, dict(batch)) if fetch else [], strict=True))
        values.update({n: batch[n] for n in names if n in inputs})
        yield values


def max_abs(path: Path, names: list[str], batches) -> dict[str, float]:
    """Exact max |x| of every tensor over all batches, computed here with NumPy."""
    out = dict.fromkeys(names, 0.0)
    for values in run_exposed(path, names, batches):
        for name, x in values.items():
            out[name] = max(out[name], float(np.max(np.abs(x))))
    return out


def activation_lines(cache, path: Path) -> list[str]:
    """Cache lines that are ONNX activations (TensorRT 10 also writes constants and aliases)."""
    lines = trt_cache_names(onnx.load(str(path)), trt_version=(10, 16, 0)).lines
    return [line.name for line in lines if line.kind in ("input", "activation")]


def check_names(cache, path: Path, algorithm: str) -> None:
    """The cache holds exactly TensorRT's lines; its activation lines are ONNX tensor names that
    the activation source exposes (all of them, except tensors TensorRT gives no line)."""
    names = list(cache.scales)
    model = onnx.load(str(path))
    expected = trt_cache_names(model, trt_version=(10, 16, 0))
    assert names == [line.name for line in expected.lines]
    activations = activation_lines(cache, path)
    onnx_names = {v.name for v in model.graph.input}
    onnx_names |= {o for node in model.graph.node for o in node.output}
    assert set(activations) <= onnx_names, sorted(set(activations) - onnx_names)
    exposed = OnnxActivationSource(path).tensor_names
    assert activations == [n for n in exposed if n not in expected.no_line]
    assert cache.algorithm == ALGORITHMS[algorithm]
    assert cache.version == (10, 16, 0)


# The entropy threshold can reach (2048.5 / 2048) x the histogram range, which overflows float32
# when a tensor reaches float32's limit (HF BERT masks padding with -3.4028e38). TensorRT then
# writes an infinite scale too: its own 10.10 Entropy2 cache of a BERT model
# (shared/testdata/trt_caches/trt101000_entropy2_bert_inf_hanner123.cache) has 7f800000 for
# exactly these tensors (attention-score Add, mask Where).
OVERFLOW = float(np.finfo(np.float32).max) * 2048 / 2048.5


def check_scales(cache, path: Path, batches, algorithm: str) -> None:
    """Scale 0 only for a tensor that is all zeros on this data; inf only (entropy) where the
    tensor reaches float32's limit, as TensorRT; otherwise finite and > 0."""
    names = activation_lines(cache, path)
    seen = max_abs(path, names, batches)

    def expected(name, scale) -> bool:
        if scale == 0:
            return seen[name] == 0
        if math.isinf(scale):
            return algorithm.startswith("entropy") and seen[name] > OVERFLOW
        return math.isfinite(scale) and scale > 0

    bad = {
        name: (float(cache.scales[name]), seen[name])
        for name in names
        if not expected(name, cache.scales[name])
    }
    assert not bad, bad
    constants = constant_values(
        onnx.load(str(path)), trt_cache_names(onnx.load(str(path)), trt_version=(10, 16, 0))
    )
    for name, values in constants.items():  # calibrated like activations (TensorRT 10 lines)
        top = float(np.max(np.abs(values)))
        if algorithm == "minmax":
            assert cache.scales[name] == scale_from_amax(top), name
        else:
            assert 0 < cache.scales[name] <= scale_from_amax(top * 2048.5 / 2048), name
    if algorithm == "minmax":  # the cache holds exactly fl32(max |x| / 127)
        expected = {n: scale_from_amax(seen[n]) for n in names}
        np.testing.assert_allclose(
            [cache.scales[n] for n in names], [expected[n] for n in names], rtol=1e-6
        )


# --- the bundled example ----------------------------------------------------------------------


def test_readme_command_calibrates_the_bundled_example(tmp_path, capsys):
    out = tmp_path / "fashion.cache"
    model, calib = EXAMPLE / "model.onnx", EXAMPLE / "calib.npz"
    argv = ["calibrate", str(model), "--data", str(calib), "--algorithm", "entropy2"]
    assert main([*argv, "--trt-version", TRT_VERSION, "-o", str(out), "--no-progress"]) == 0
    assert str(out) in capsys.readouterr().out
    cache = read_cache(out)
    # every float tensor of the example is data: the input and all 18 node outputs
    assert list(cache.scales) == float_tensors(model)
    assert len(cache.scales) == 19
    with np.load(calib) as data:
        batches = [{"image": data["image"][i : i + 100]} for i in range(0, 500, 100)]
    check_names(cache, model, "entropy2")
    check_scales(cache, model, batches, "entropy2")
    stats = load_stats(tmp_path / "fashion.stats.npz")  # saved next to the cache by default
    assert list(stats.histograms) == list(cache.scales)


# --- real models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def efficientnet() -> tuple[Path, list[dict[str, np.ndarray]]]:
    """EfficientNet-Lite0 and 16 real photo crops in batches of 4 (CI-sized)."""
    path = models.efficientnet_lite0_onnx()
    x = models.efficientnet_inputs("calib", 16, seed=0)
    return path, [{"image": x[i : i + 4]} for i in range(0, len(x), 4)]


@pytest.fixture(scope="module")
def minilm() -> tuple[Path, list[dict[str, np.ndarray]]]:
    """all-MiniLM-L6-v2 and 16 real sentences (padded to the longest) in batches of 4."""
    path = models.minilm_onnx()
    tokens = models.minilm_inputs("calib", 16, seed=0)
    return path, [{k: v[i : i + 4] for k, v in tokens.items()} for i in range(0, 16, 4)]


@pytest.fixture(scope="module")
def results() -> dict:
    """(model, algorithm) -> CalibrationResult, so each calibration runs once per module."""
    return {}


def calibrated(request, model: str, algorithm: str):
    """Calibrate `model` (a fixture name) once per algorithm; return (path, batches, result)."""
    path, batches = request.getfixturevalue(model)
    done = request.getfixturevalue("results")
    if (model, algorithm) not in done:
        done[model, algorithm] = calibrate_onnx(
            path, batches, algorithm=algorithm, trt_version=TRT_VERSION
        )
    return path, batches, done[model, algorithm]


CASES = [(model, algorithm) for model in ("efficientnet", "minilm") for algorithm in ALGORITHMS]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "algorithm"), CASES)
def test_cache_names_are_the_onnx_tensors(request, model, algorithm):
    path, _, result = calibrated(request, model, algorithm)
    check_names(result.cache, path, algorithm)
    lines = trt_cache_names(onnx.load(str(path)), trt_version=(10, 16, 0)).lines
    # every line has its own histogram except TensorRT's aliases of another tensor
    assert {n for n in result.histograms if n in result.cache.scales} == {
        line.name for line in lines if line.kind != "alias"
    }
    if model == "efficientnet":
        # every float tensor of this CNN (input, Conv, Clip, Add, ReduceMean, Gemm) is data
        assert list(result.cache.scales) == float_tensors(path)
        assert len(result.cache.scales) == 95
    else:
        assert not set(models.MINILM_INPUTS) & set(result.cache.scales)  # int64 inputs


@pytest.mark.slow
@pytest.mark.parametrize(("model", "algorithm"), CASES)
def test_scales_are_finite_and_positive_unless_all_zero(request, model, algorithm):
    path, batches, result = calibrated(request, model, algorithm)
    check_scales(result.cache, path, batches, algorithm)


@pytest.mark.slow
def test_minilm_leaves_out_only_tensors_that_ignore_the_input_values(minilm):
    """A float tensor missing from the cache must not depend on the data: two batches of the
    same shape but different sentences (and padding) must give it the same value."""
    path, batches = minilm
    calibrated = set(OnnxActivationSource(path).tensor_names)
    left_out = [n for n in float_tensors(path) if n not in calibrated]
    assert len(left_out) < 5  # position embeddings and the like, not whole layers
    first, second = run_exposed(path, left_out, batches[:2])
    assert not np.array_equal(batches[0]["attention_mask"], batches[1]["attention_mask"])
    for name in left_out:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@pytest.mark.slow
def test_a_folder_of_real_photos_calibrates_through_the_cli(tmp_path, capsys, efficientnet):
    """The issue's done-when: ``calibkit calibrate`` on EfficientNet-Lite0 with a folder of
    photos; the folder pipeline must see exactly the samples MODELS.md's preprocessing gives."""
    path, _ = efficientnet
    folder = models.write_photo_folder(tmp_path / "photos", "eval", 6, seed=1)
    expected = models.efficientnet_inputs("eval", 6, seed=1)
    source = OnnxActivationSource(path)
    data = open_data(folder, source.inputs, preprocess="efficientnet-lite", batch_size=3)
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in data]), expected)

    out = tmp_path / "efficientnet.cache"
    argv = ["calibrate", str(path), "--data", str(folder), "--preprocess", "efficientnet-lite"]
    argv += ["--batch-size", "3", "--trt-version", TRT_VERSION, "-o", str(out), "--no-progress"]
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out
    cache = read_cache(out)
    assert list(cache.scales) == float_tensors(path)
    direct = calibrate_onnx(
        path, [{"image": expected[:3]}, {"image": expected[3:]}], trt_version=TRT_VERSION
    )
    assert cache.scales == direct.cache.scales
