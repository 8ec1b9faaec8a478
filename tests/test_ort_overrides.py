"""calibkit's TensorRT scales drive onnxruntime's quantize_static through TensorQuantOverrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibkit.cache.format import read_cache
from calibkit.cache.formats import ort_tensor_quant_overrides, read_scales
from calibkit.cli import main

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
quantization = pytest.importorskip("onnxruntime.quantization")

FASHION = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"
MODEL = FASHION / "model.onnx"


@pytest.fixture(scope="module")
def fashion_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("ort") / "fashion.cache"
    args = ["calibrate", str(MODEL), "--data", str(FASHION / "calib.npz"), "--trt-version", "10.16"]
    assert main([*args, "--max-samples", "64", "-o", str(out)]) == 0
    return out


class _Reader(quantization.CalibrationDataReader):
    def __init__(self):
        images = np.load(FASHION / "calib.npz")["image"][:16]
        self.batches = iter([{"image": images[i : i + 8]} for i in range(0, 16, 8)])

    def get_next(self):
        return next(self.batches, None)


def _qdq_scales(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{quantized tensor: (scale, zero point)} of every QuantizeLinear onnxruntime wrote."""
    model = onnx.load(str(path))
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        node.input[0]: (init[node.input[1]], init[node.input[2]])
        for node in model.graph.node
        if node.op_type == "QuantizeLinear"
    }


def _check_written(path: Path, cache) -> int:
    written = _qdq_scales(path)
    checked = 0
    for name, (scale, zero_point) in written.items():
        if name in cache.scales:
            assert scale.dtype == np.float32 and scale.shape == ()
            assert scale == cache.scales[name], name  # bit for bit: float32 == float32
            assert zero_point.dtype == np.int8 and zero_point == 0, name
            checked += 1
    return checked


def test_quantize_static_writes_calibkits_scales(fashion_cache, tmp_path):
    cache = read_cache(fashion_cache)
    tensors = {t.name for t in onnx.load(str(MODEL)).graph.value_info} | {"image", "logits"}
    overrides = ort_tensor_quant_overrides(cache, tensors)
    out = tmp_path / "ort.qdq.onnx"
    quantization.quantize_static(
        str(MODEL),
        str(out),
        _Reader(),
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
        extra_options={"TensorQuantOverrides": overrides},
    )
    checked = _check_written(out, cache)
    # every activation onnxruntime quantizes comes from the cache: most of the model's tensors
    assert checked >= len(cache.scales) // 2, checked
    # and without the overrides onnxruntime's own min-max scales differ (the test can fail)
    plain = tmp_path / "plain.qdq.onnx"
    quantization.quantize_static(
        str(MODEL),
        str(plain),
        _Reader(),
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
    )
    ours = _qdq_scales(plain)
    assert any(ours[n][0] != cache.scales[n] for n in ours if n in cache.scales)


def test_cli_json_loads_with_onnxruntimes_own_loader(fashion_cache, tmp_path):
    runner = pytest.importorskip("onnxruntime.quantization.static_quantize_runner")
    path = tmp_path / "overrides.json"
    args = ["cache", "convert", str(fashion_cache), "-o", str(path), "--to", "ort-overrides"]
    assert main([*args, "--model", str(MODEL)]) == 0
    overrides = runner.get_tensor_quant_overrides(
        str(path)
    )  # what its --tensor_quant_overrides does
    cache = read_cache(fashion_cache)
    assert {n: o[0]["scale"] for n, o in overrides.items()} == dict(cache.scales)
    out = tmp_path / "ort.qdq.onnx"
    quantization.quantize_static(
        str(MODEL),
        str(out),
        _Reader(),
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
        extra_options={"TensorQuantOverrides": overrides},
    )
    assert _check_written(out, cache) >= len(cache.scales) // 2
    # the file reads back as a scale file, bit for bit
    again, fmt = read_scales(path)
    assert fmt == "ort-overrides" and again.scales == cache.scales


def test_overrides_leave_out_what_onnxruntime_cannot_take(tmp_path):
    text = b"TRT-101600-EntropyCalibration2\nx: 3c010a14\nzero: 0\ninf: 7f800000\n"
    text += b"(Unnamed Layer* 3) [Constant]_output: 3c010a14\n"
    path = tmp_path / "c.cache"
    path.write_bytes(text)
    cache = read_cache(path)
    with pytest.warns(UserWarning, match="left out") as caught:
        overrides = ort_tensor_quant_overrides(cache, ["x", "zero", "inf"])
    assert list(overrides) == ["x"]
    assert len(caught) == 2
    with pytest.warns(UserWarning, match="not in the model"):
        plain = ort_tensor_quant_overrides(cache, ["x"], as_numpy=False)
    assert json.loads(json.dumps(plain)) == {
        "x": [{"scale": float(cache.scales["x"]), "zero_point": 0}]
    }


def test_reading_refuses_asymmetric_and_per_channel(tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"x": [{"scale": 0.5, "zero_point": 3}]}))
    with pytest.raises(ValueError, match=r"o.json: tensor 'x': zero_point 3"):
        read_scales(path)
    path.write_text(
        json.dumps({"x": [{"scale": 0.5, "zero_point": 0}, {"scale": 1.0, "zero_point": 0}]})
    )
    with pytest.raises(ValueError, match=r"o.json: tensor 'x': expected one per-tensor override"):
        read_scales(path)
