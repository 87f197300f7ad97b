"""Lowerings of the activation family: elementwise activations, prelu, rrelu, dropout and
dropout2d, softmax and log_softmax.

Elementwise activations run one parallel Numba kernel over the flat tensor (codes of
``epilogue.ACTIVATIONS``); random ops draw from the program's generator each call;
softmax runs numpy with ``out=`` into the planned buffer, max-subtracted.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.epilogue import ACTIVATIONS, activation_code, as3d
from cnnir.backends.numba_cpu.kernels import activation as ak
from cnnir.backends.numba_cpu.kernels.activation import Act
from cnnir.backends.numba_cpu.program import lower, unary
from cnnir.ir import Node


def activation_step(x: np.ndarray, out: np.ndarray, code: Act, alpha: float) -> Step:
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    kernel = ak.activation.sized(out.size)
    return lambda: kernel(flat_x, flat_out, int(code), float(alpha))


def elementwise(b: Builder, node: Node) -> Step:
    return activation_step(*unary(b, node), *activation_code(node.op, node.attrs))


for _op in ACTIVATIONS:
    lower(_op)(elementwise)


def channels_view(a: np.ndarray) -> np.ndarray:
    """[N, C, ...] as [N, C, P]; [N] or scalars as [N, 1, 1]."""
    return as3d(a) if a.ndim >= 2 else a.reshape(-1, 1, 1)


@lower(ops.prelu)
def prelu(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    weight = node.inputs[1]
    x3, out3 = channels_view(x), channels_view(out)
    w = b.array(weight)
    slope = b.derived([weight], ("prelu", x3.shape[1]), lambda: np.ascontiguousarray(
        np.broadcast_to(w, (x3.shape[1],)), b.dtype))
    kernel = ak.slopes.sized(out.size)
    return lambda: kernel(x3, out3, slope, True)


@lower(ops.rrelu)
def rrelu(b: Builder, node: Node) -> Step:
    """Eval: leaky ReLU with the mean slope. Training: a fresh slope per element per call."""
    x, out = unary(b, node)
    a = node.attrs
    if not a.training:
        return activation_step(x, out, Act.LEAKY_RELU, (a.lower + a.upper) / 2)
    x3, out3 = channels_view(x), channels_view(out)

    def sampled() -> None:
        slope = b.rng.uniform(a.lower, a.upper, x.size).astype(b.dtype)
        ak.slopes(x3, out3, slope, False)

    return sampled


def dropout_step(b: Builder, node: Node, per_channel: bool) -> Step:
    """Eval: a copy. Training: zero with probability p (per element, or per channel for
    dropout2d) and scale the survivors by 1/(1 − p)."""
    x, out = unary(b, node)
    p = node.attrs.p
    if not node.attrs.training:
        return lambda: np.copyto(out, x)
    mask_shape = x.shape[:2] + (1,) * (x.ndim - 2) if per_channel else x.shape

    def step() -> None:
        if p >= 1.0:
            out.fill(0)
            return
        keep = b.rng.random(mask_shape) >= p
        np.multiply(x, keep, out=out)
        np.multiply(out, out.dtype.type(1.0 / (1.0 - p)), out=out)

    return step


lower(ops.dropout)(lambda b, node: dropout_step(b, node, per_channel=False))
lower(ops.dropout2d)(lambda b, node: dropout_step(b, node, per_channel=True))


def softmax_step(b: Builder, node: Node, log: bool) -> Step:
    x, out = unary(b, node)
    dim = node.attrs.dim % max(x.ndim, 1)

    def step() -> None:
        np.subtract(x, x.max(axis=dim, keepdims=True), out=out)
        if log:
            np.subtract(out, np.log(np.exp(out).sum(axis=dim, keepdims=True)), out=out)
        else:
            np.exp(out, out=out)
            np.divide(out, out.sum(axis=dim, keepdims=True), out=out)

    return step


lower(ops.softmax)(lambda b, node: softmax_step(b, node, log=False))
lower(ops.log_softmax)(lambda b, node: softmax_step(b, node, log=True))


@lower(ops.activation_grad)
def activation_grad(b: Builder, node: Node) -> Step:
    """``f'(x)·g`` element by element, the derivative chosen by the activation's code."""
    x, g = (b.array(v).reshape(-1) for v in node.inputs)
    out = b.array(node.output).reshape(-1)
    code, alpha = activation_code(node.attrs.activation, node.attrs.activation_attrs)
    kernel = ak.activation_grad.sized(out.size)
    return lambda: kernel(x, g, out, int(code), alpha)
