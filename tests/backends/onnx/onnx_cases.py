"""What the ONNX export and round-trip tests share beyond the op table of ``tests/op_cases.py``:
the cases that table marks exportable (``EXPORTED``) and re-importable (``REIMPORTED``), a
runner for onnxruntime, and the example models with input sizes ONNX can express.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import onnxruntime as ort
from op_cases import CASES

import cnnir
from cnnir import nn

EXPORTED = [c for c in CASES if c.onnx]
REIMPORTED = [c for c in EXPORTED if c.reimports]


def run_ort(path: str, inputs: list[np.ndarray], optimize: bool = True) -> list[np.ndarray]:
    """The model at ``path`` run by onnxruntime on the CPU; ``optimize=False`` turns ORT's
    graph optimizations off (see ``Case.ort_optimize``)."""
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


# -- the example models ----------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

# Smallest convenient input sizes: AlexNet and VGG end in adaptive pools to 6×6 and 7×7,
# which ONNX can express only when the feature map divides them (224 inputs).
EXAMPLE_SIZES = {"alexnet": 224, "vgg": 224, "inception": 96, "unet": 32, "siamese": None,
                 "digits": None, "mnist5k": None, "siamese_digits": None}
EXAMPLE_FILES = sorted(p.stem for p in EXAMPLES.glob("*.py"))


def example_specs(name: str) -> tuple[cnnir.nn.Module, list[tuple]]:
    ns = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__cnnir_model__")
    obj = ns["model"]
    model = obj if isinstance(obj, nn.Module) else obj()
    shapes = ns["input_shape"]
    shapes = shapes if isinstance(shapes, list) else [shapes]
    size = EXAMPLE_SIZES.get(name, 64)
    specs = [("N", s[1], *(s[2:] if size is None else (size, size))) for s in shapes]
    return model.eval(), specs
