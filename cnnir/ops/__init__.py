"""The op registry. Each family file declares its ops once, as ``OpDef`` constants:

    from cnnir import ops
    ops.conv2d.infer, ops.conv2d.cost, ops.REGISTRY["conv2d"]
"""

from cnnir.ops.registry import GLOBAL, REGISTRY, Cost, OpDef, Window, register  # noqa: I001
from cnnir.ops.tensor import (
    add, amax, cat, channel_shuffle, clamp, compare, div, exp, expand, flatten, gather,
    identity, log, mean, mul, pad, pow_, reshape, slice_, split, sqrt, sub, sum_, transpose,
    where,
)
from cnnir.ops.conv import conv2d, conv_transpose2d, deform_conv2d
from cnnir.ops.linear import linear, matmul
from cnnir.ops.norm import batch_norm, group_norm, layer_norm
from cnnir.ops.activation import (
    abs_, activation_grad, dropout, dropout2d, elu, gelu, hardsigmoid, hardswish, hardtanh,
    leaky_relu, log_softmax, mish, prelu, relu, relu6, rrelu, sigmoid, silu, softmax, softplus,
    tanh,
)
from cnnir.ops.pool import (
    adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, interpolate, max_pool2d,
)
from cnnir.ops.loss import (
    binary_cross_entropy, binary_cross_entropy_with_logits, contrastive_loss, cross_entropy,
    huber_loss, l1_loss, mse_loss, nll_loss, smooth_l1_loss, triplet_margin_loss,
)

__all__ = [
    "GLOBAL", "REGISTRY", "Cost", "OpDef", "Window", "abs_", "activation_grad", "register",
    "adaptive_avg_pool2d", "adaptive_max_pool2d", "add", "amax", "avg_pool2d", "batch_norm",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cat", "channel_shuffle",
    "contrastive_loss", "conv2d", "conv_transpose2d", "cross_entropy", "deform_conv2d", "div",
    "dropout", "dropout2d", "elu", "expand", "flatten", "gelu", "group_norm", "hardsigmoid",
    "hardswish", "hardtanh", "huber_loss", "mish", "softplus",
    "identity", "interpolate", "l1_loss", "layer_norm", "leaky_relu", "linear", "log_softmax",
    "matmul",
    "max_pool2d", "mean", "mse_loss", "mul", "nll_loss", "pad", "prelu", "relu", "relu6",
    "reshape", "rrelu", "sigmoid", "silu", "smooth_l1_loss", "softmax", "split", "sub", "sum_",
    "tanh", "transpose", "triplet_margin_loss",
    "clamp", "compare", "exp", "gather", "log", "pow_", "slice_", "sqrt", "where",
]
from cnnir.ops import optim  # noqa: E402, F401  (update ops register on import)
from cnnir.ops.fused import conv2d_fused, linear_fused  # noqa: E402, F401
