"""TensorRT's graph-level rules, without TensorRT: which tensors share a scale, and cache names.

``sharing`` moves scales between neighbours as TensorRT does; ``names`` decides which tensors get a
cache line and under what name (and which names TensorRT creates itself). Both work on the
plain-data :class:`calibkit.onnx.graph.Graph`; names also reads types, shapes and constants from
:class:`calibkit.onnx.model.OnnxModel`.
"""
