"""Elementwise ops on the GPU: the activations (one thread per element, codes shared with the
CPU backend's ``epilogue.ACTIVATIONS``, and for hardtanh, softplus and mish and their
gradients ``lower_activation.PARAM_ACTIVATIONS``) and add, sub, mul, div with numpy broadcasting.

``activate`` is a device function, so convolution and linear kernels apply the same
activation in their epilogue. Broadcasting reads each operand through its own element
strides over the output's index, padded to ``MAX_RANK`` dims (a stride of 0 repeats).
"""

from __future__ import annotations

import math

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.epilogue import ACTIVATIONS, activation_code
from cnnir.backends.numba_cpu.kernels.activation import SQRT_2_OVER_PI, SQRT_HALF, Act, ParamAct
from cnnir.backends.numba_cpu.lower_activation import PARAM_ACTIVATIONS, param_code
from cnnir.backends.numba_cuda.runtime import cuda, flat, launch, lower, unary
from cnnir.ir import Node
from cnnir.ops import activation as activation_ops

MAX_RANK = 6
RELU, RELU6, LEAKY_RELU, ELU = int(Act.RELU), int(Act.RELU6), int(Act.LEAKY_RELU), int(Act.ELU)
SIGMOID, TANH, SILU = int(Act.SIGMOID), int(Act.TANH), int(Act.SILU)
HARDSIGMOID, HARDSWISH, GELU = int(Act.HARDSIGMOID), int(Act.HARDSWISH), int(Act.GELU)
GELU_TANH, ABS = int(Act.GELU_TANH), int(Act.ABS)


@cuda.jit(device=True, inline=True)
def clamp6(u):
    return 0.0 if u < 0 else (6.0 if u > 6.0 else u)


@cuda.jit(device=True)
def activate(v, code, alpha):
    """Activation ``code`` of one value (docs/semantics.md §1.5); NaN passes through."""
    if code == RELU:
        return 0.0 if v < 0 else v
    if code == RELU6:
        return clamp6(v)
    if code == LEAKY_RELU:
        return v if v > 0 else v * alpha
    if code == ELU:
        return v if v > 0 else alpha * (math.exp(v) - 1.0)
    if code == SIGMOID:
        return 1.0 / (1.0 + math.exp(-v))
    if code == TANH:
        return math.tanh(v)
    if code == SILU:
        return v / (1.0 + math.exp(-v))
    if code == HARDSIGMOID:
        return clamp6(v + 3.0) / 6.0
    if code == HARDSWISH:
        return v * clamp6(v + 3.0) / 6.0
    if code == GELU:
        return 0.5 * v * (1.0 + math.erf(v * SQRT_HALF))
    if code == GELU_TANH:
        return 0.5 * v * (1.0 + math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)))
    if code == ABS:
        return abs(v)
    return v


@cuda.jit
def activation_kernel(x, out, code, alpha):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = activate(x[i], code, alpha)


def elementwise(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    code, alpha = activation_code(node.op, node.attrs)
    return launch(activation_kernel, out.size, flat(x), flat(out), int(code), alpha)


for _op in ACTIVATIONS:
    lower(_op)(elementwise)


HARDTANH, SOFTPLUS = int(ParamAct.HARDTANH), int(ParamAct.SOFTPLUS)


@cuda.jit(device=True)
def param_value(v, code, a, b):
    """Hardtanh (a, b the bounds), softplus (a = β, b = threshold) or mish of one value."""
    if code == HARDTANH:
        return a if v < a else (b if v > b else v)
    if code == SOFTPLUS:
        return v if a * v > b else math.log1p(math.exp(a * v)) / a
    return v * math.tanh(math.log1p(math.exp(v)))


@cuda.jit(device=True)
def param_derivative(v, code, a, b):
    if code == HARDTANH:
        return 1.0 if (v > a and v < b) else 0.0
    if code == SOFTPLUS:
        return 1.0 if a * v > b else 1.0 / (1.0 + math.exp(-a * v))
    t = math.tanh(math.log1p(math.exp(v)))
    return t + v / (1.0 + math.exp(-v)) * (1.0 - t * t)


@cuda.jit
def param_activation_kernel(x, out, code, a, b):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = param_value(x[i], code, a, b)


@cuda.jit
def param_activation_grad_kernel(x, g, out, code, a, b):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = param_derivative(x[i], code, a, b) * g[i]


def param_elementwise(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    args = param_code(node.op, node.attrs)
    return launch(param_activation_kernel, out.size, flat(x), flat(out), *args)


for _op in PARAM_ACTIVATIONS:
    lower(_op)(param_elementwise)


@lower(activation_ops.param_activation_grad)
def param_activation_grad(b: Builder, node: Node) -> Step:
    x, g = (flat(b.array(v)) for v in node.inputs)
    out = flat(b.array(node.output))
    args = param_code(node.attrs.activation, node.attrs.activation_attrs)
    return launch(param_activation_grad_kernel, out.size, x, g, out, *args)


ADD, SUB, MUL, DIV = 0, 1, 2, 3


@cuda.jit
def binary_kernel(a, b, out, shape, a_strides, b_strides, kind):
    """``out[i] = a[·] ∘ b[·]``: the output's flat index split over ``shape`` (row-major),
    each operand read at its own strides."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    rest, ia, ib = i, 0, 0
    for d in range(MAX_RANK - 1, -1, -1):
        k = rest % shape[d]
        rest //= shape[d]
        ia += k * a_strides[d]
        ib += k * b_strides[d]
    x, y = a[ia], b[ib]
    if kind == ADD:
        out[i] = x + y
    elif kind == SUB:
        out[i] = x - y
    elif kind == MUL:
        out[i] = x * y
    else:
        out[i] = x / y


def broadcast_strides(shape: tuple[int, ...]) -> np.ndarray:
    """Element strides reading an operand of ``shape`` at the output's index (numpy
    broadcasting: missing leading dims and dims of size 1 read with stride 0), padded to
    ``MAX_RANK``."""
    padded = (1,) * (MAX_RANK - len(shape)) + tuple(shape)
    strides, step = [], 1
    for size in reversed(padded):
        strides.append(0 if size == 1 else step)
        step *= size
    return np.array(strides[::-1], np.int64)


def binary(kind: int):
    def lowering(b: Builder, node: Node) -> Step:
        x, y = (b.array(v) for v in node.inputs)
        out = b.array(node.output)
        shape = np.array((1,) * (MAX_RANK - out.ndim) + tuple(out.shape), np.int64)
        args = (flat(x), flat(y), flat(out), cuda.to_device(shape),
                cuda.to_device(broadcast_strides(tuple(x.shape))),
                cuda.to_device(broadcast_strides(tuple(y.shape))), kind)
        return launch(binary_kernel, out.size, *args)

    return lowering


for _op, _kind in ((ops.add, ADD), (ops.sub, SUB), (ops.mul, MUL), (ops.div, DIV)):
    lower(_op)(binary(_kind))
