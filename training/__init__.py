"""Training library: pure functions from a model spec to a verified ONNX artifact and its card."""
