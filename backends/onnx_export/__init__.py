"""ONNX export: ``export(graph, path, opset=19)`` writes a validated ONNX model.

Each op's mapping is its ``OpDef.onnx`` (in ``cnnir/ops/<family>.py``); ``builder`` turns
those plain descriptions into nodes and ``export`` into a checked ``ModelProto``.
"""

from .export import DEFAULT_OPSET, LARGE_MODEL_BYTES, export, to_model, validate

__all__ = ["DEFAULT_OPSET", "LARGE_MODEL_BYTES", "export", "to_model", "validate"]
