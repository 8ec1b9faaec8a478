"""The bundled Fashion-MNIST example: the committed files load, agree with each other and with
the accuracy recorded when the model was trained (examples/fashion_mnist/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"
ONNX_FLOAT = onnx.TensorProto.FLOAT


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(str(EXAMPLE / "model.onnx"))


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((EXAMPLE / "model.json").read_text())


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread: the same summation order on every machine
    return ort.InferenceSession(
        str(EXAMPLE / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )


def _inputs(model: onnx.ModelProto) -> dict[str, onnx.TypeProto.Tensor]:
    initializers = {t.name for t in model.graph.initializer}
    return {i.name: i.type.tensor_type for i in model.graph.input if i.name not in initializers}


def test_model_passes_the_onnx_checker(model):
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13


def test_model_has_the_documented_interface(model, meta):
    inputs = _inputs(model)
    assert list(inputs) == [meta["input"]]
    tensor = inputs[meta["input"]]
    assert tensor.elem_type == ONNX_FLOAT
    dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
    assert isinstance(dims[0], str)  # dynamic batch
    assert dims[1:] == [1, 28, 28]
    assert [o.name for o in model.graph.output] == [meta["output"]]


def test_model_has_the_operators_a_calibration_study_needs(model):
    ops = {node.op_type for node in model.graph.node}
    assert {"Conv", "Relu", "MaxPool", "Add", "Concat", "Gemm"} <= ops


def test_calib_npz_is_keyed_by_the_model_inputs(model, meta):
    with np.load(EXAMPLE / "calib.npz") as calib:
        assert sorted(calib.files) == sorted(_inputs(model))
        images = calib[meta["input"]]
    assert images.dtype == np.float32
    assert images.shape == (meta["calib_npz_samples"], 1, 28, 28)
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    # pixels / 255 exactly: the scaling the model was trained with
    np.testing.assert_array_equal(np.round(images * 255) / np.float32(255), images)


def test_test_npz_holds_labelled_uint8_images(model, meta):
    with np.load(EXAMPLE / "test.npz") as test:
        assert sorted(test.files) == sorted([*_inputs(model), "label"])
        images, labels = test[meta["input"]], test["label"]
    assert images.dtype == np.uint8
    assert images.shape == (meta["test_npz_samples"], 1, 28, 28)
    assert labels.shape == (meta["test_npz_samples"],)
    assert set(np.unique(labels)) == set(range(10))


def test_fp32_accuracy_reproduces_the_recorded_count(session, meta):
    with np.load(EXAMPLE / "test.npz") as test:
        images, labels = test[meta["input"]], test["label"]
    x = images.astype(np.float32) / np.float32(255)
    logits = session.run(None, {meta["input"]: x})[0]
    correct = int((logits.argmax(axis=1) == labels).sum())
    # recorded by train.py with torch; onnxruntime must agree exactly
    assert correct == meta["test_npz_correct_fp32"]
    assert correct / len(labels) > 0.88


def test_batch_axis_is_dynamic(session, meta):
    with np.load(EXAMPLE / "calib.npz") as calib:
        x = calib[meta["input"]][:7]
    whole = session.run(None, {meta["input"]: x})[0]
    single = np.concatenate([session.run(None, {meta["input"]: x[i : i + 1]})[0] for i in range(7)])
    assert whole.shape == (7, 10)
    np.testing.assert_allclose(single, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["model.onnx", "calib.npz", "test.npz"])
def test_bundled_files_stay_small(name):
    assert (EXAMPLE / name).stat().st_size < 1_000_000
