"""TensorRT's real Python bindings in the tests: see kit.py."""
