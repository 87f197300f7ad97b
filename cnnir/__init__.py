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

from cnnir import data, jit, nn, optim, utils  # noqa: E402
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
from cnnir.frontend.functional import matmul, relu, sigmoid, tanh  # noqa: E402
from cnnir.frontend.tensor import Tensor  # noqa: E402
from cnnir.frontend.torch_functions import (  # noqa: E402  (the torch.* functions)
    ConstTensor,
    abs,
    add,
    amax,
    arange,
    as_tensor,
    cat,
    ceil,
    chunk,
    clamp,
    clip,
    concat,
    div,
    divide,
    empty,
    eq,
    exp,
    flatten,
    float32,
    float64,
    floor,
    full,
    ge,
    gt,
    int32,
    int64,
    is_tensor,
    le,
    linspace,
    log,
    lt,
    max,
    maximum,
    mean,
    min,
    minimum,
    mul,
    multiply,
    ne,
    numel,
    ones,
    permute,
    pow,
    reshape,
    round,
    split,
    sqrt,
    squeeze,
    stack,
    sub,
    subtract,
    sum,
    tensor,
    transpose,
    true_divide,
    unsqueeze,
    where,
    zeros,
)
from cnnir.frontend.weights import load, save  # noqa: E402
from cnnir.grad import grad_graph, value_and_grad  # noqa: E402
from cnnir.ir import Graph, Node, TensorType, Value, verify  # noqa: E402
from cnnir.train import compile_train  # noqa: E402

__all__ = [
    "CnnirError", "ConstTensor", "Graph", "LoweringError", "ModelFormatError", "Node",
    "PassError", "ShapeError", "Tensor", "TensorType", "UserCodeError", "Value",
    "VerificationError", "abs", "add", "amax", "analyze", "arange", "as_tensor", "cat", "ceil",
    "chunk", "clamp", "clip", "compile", "compile_train", "concat", "data", "div", "divide",
    "empty", "eq", "exp", "export_onnx", "flatten", "float32", "float64", "floor", "full", "ge",
    "grad_graph", "gt", "int32", "int64", "is_tensor", "jit", "le", "linspace", "load",
    "load_onnx", "log", "lt", "matmul", "max", "maximum", "mean", "min", "minimum", "mul",
    "multiply", "ne", "nn", "numel", "ones", "optim", "optimize", "permute", "pow", "relu",
    "reshape", "round", "save", "sigmoid", "split", "sqrt", "squeeze", "stack", "sub",
    "subtract", "sum", "tanh", "tensor", "trace", "transpose", "true_divide", "unsqueeze",
    "utils", "value_and_grad", "verify", "where", "zeros",
]
__version__ = "0.1.0"
