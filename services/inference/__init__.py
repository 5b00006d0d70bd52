"""Inference service: a local tritonserver (the binary of the nvidia-pytriton wheel) serving the model
repository kept in the object store, and the Python-based ``onnxruntime`` backend it runs ``model.onnx`` with."""
