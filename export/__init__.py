"""ONNX export of a trained controller, parity checks, metadata and the onnxruntime session factory."""
