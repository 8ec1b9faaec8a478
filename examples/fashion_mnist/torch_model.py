"""The bundled CNN as a ``torch.nn.Module`` with its trained weights (a PyTorch SOURCE).

``calibkit calibrate examples/fashion_mnist/torch_model.py:make_model --data
examples/fashion_mnist/torch_loader.py ...`` calls :func:`make_model`. The network is
``train.py``'s ``build_model()``; the weights are read back from ``model.onnx``, which
``train.py`` exported from it with ``torch.onnx.export(..., dynamo=True)``: its initializers are
named by parameter path (``stem.weight``), and its nodes carry the module scopes
``calibkit calibrate ... --onnx model.onnx`` maps names with. Needs torch and onnx.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent


def _build_model():
    """``train.py``'s ``build_model`` (imported by path: no module named ``train`` is assumed)."""
    spec = importlib.util.spec_from_file_location("fashion_mnist_train", HERE / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    return train.build_model()


def make_model() -> torch.nn.Module:
    """Return the trained Fashion-MNIST CNN (weights from ``model.onnx``)."""
    model = _build_model()
    proto = onnx.load(str(HERE / "model.onnx"))
    weights = {t.name: np.array(numpy_helper.to_array(t)) for t in proto.graph.initializer}
    model.load_state_dict({name: torch.from_numpy(weights[name]) for name in model.state_dict()})
    return model
