"""ONNX models: the model read once, graph, activation source, calibration, Q/DQ and reverse.

``model.OnnxModel`` is the one reader of a model file; every other module takes that object.

Nothing here imports ``onnx`` or ``onnxruntime`` at import time; the functions that need them do.
"""
