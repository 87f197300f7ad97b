"""cnnir: a compiler for convolutional neural networks.

    import cnnir
    from cnnir import nn
    g = cnnir.trace(model, (1, 3, 224, 224))
    rep = cnnir.analyze(model, (1, 3, 224, 224))

``import cnnir`` imports no numba and no onnx; backends load them lazily.
"""

from __future__ import annotations

from cnnir._checkout import map_checkout_packages as _map_checkout_packages

_map_checkout_packages()

from cnnir import data, nn, optim  # noqa: E402
from cnnir.api import (  # noqa: E402
    analyze,
    compile,
    export_onnx,
    load_onnx,
    optimize,
    trace,
)
from cnnir.errors import (  # noqa: E402
    CnnirError,
    LoweringError,
    ModelFormatError,
    PassError,
    ShapeError,
    UserCodeError,
    VerificationError,
)
from cnnir.frontend.functional import (  # noqa: E402
    add,
    amax,
    cat,
    div,
    flatten,
    matmul,
    mean,
    mul,
    relu,
    sigmoid,
    sub,
    tanh,
)
from cnnir.frontend.tensor import Tensor  # noqa: E402
from cnnir.frontend.weights import load, save  # noqa: E402
from cnnir.grad import grad_graph, value_and_grad  # noqa: E402
from cnnir.ir import Graph, Node, TensorType, Value, verify  # noqa: E402
from cnnir.train import compile_train  # noqa: E402

__all__ = [
    "CnnirError", "Graph", "LoweringError", "ModelFormatError", "Node", "PassError", "ShapeError",
    "Tensor", "TensorType", "UserCodeError", "Value", "VerificationError", "add", "amax",
    "analyze", "cat", "compile", "compile_train", "data", "div", "export_onnx", "flatten",
    "grad_graph", "load", "load_onnx", "matmul",
    "mean", "mul", "nn", "optim", "optimize", "relu", "save", "sigmoid", "sub", "tanh", "trace",
    "value_and_grad", "verify",
]
__version__ = "0.1.0"
