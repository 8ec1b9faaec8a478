"""ONNX models: graph, onnxruntime activation source, calibration, Q/DQ export and reverse.

Nothing here imports ``onnx`` or ``onnxruntime`` at import time; the functions that need them do.
"""
