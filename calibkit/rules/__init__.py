"""TensorRT's graph-level rules, without TensorRT: which tensors share a scale, and cache names.

``sharing`` moves scales between neighbours as TensorRT does; ``names`` decides which tensors get a
cache line and under what name. Both work on the plain-data :class:`calibkit.onnx.graph.Graph`.
"""
