"""Lowerings of the activation family: elementwise activations, prelu, rrelu, dropout and
dropout2d, softmax and log_softmax. Hardtanh and softplus (two parameters each) and mish,
which no fused kernel takes, run kernels of their own, codes ``ParamAct``.

Elementwise activations run one parallel Numba kernel over the flat tensor (codes of
``epilogue.ACTIVATIONS``); random ops draw from the program's generator each call;
softmax runs numpy with ``out=`` into the planned buffer, max-subtracted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.epilogue import ACTIVATIONS, activation_code, as3d
from cnnir.backends.numba_cpu.kernels import activation as ak
from cnnir.backends.numba_cpu.kernels.activation import Act, ParamAct
from cnnir.backends.numba_cpu.kernels.jit import bound
from cnnir.backends.numba_cpu.program import lower, unary
from cnnir.ir import Node
from cnnir.ops import OpDef
from cnnir.ops import activation as activation_ops


def activation_step(x: np.ndarray, out: np.ndarray, code: Act, alpha: float) -> Step:
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    kernel = ak.activation.sized(out.size)
    return bound(kernel, flat_x, flat_out, int(code), float(alpha))


def elementwise(b: Builder, node: Node) -> Step:
    return activation_step(*unary(b, node), *activation_code(node.op, node.attrs))


for _op in ACTIVATIONS:
    lower(_op)(elementwise)


# Per two-parameter activation: its attributes -> (ParamAct code, a, b).
PARAM_ACTIVATIONS: dict[OpDef, Callable[[Any], tuple[ParamAct, float, float]]] = {
    ops.hardtanh: lambda a: (ParamAct.HARDTANH, a.min_val, a.max_val),
    ops.softplus: lambda a: (ParamAct.SOFTPLUS, a.beta, a.threshold),
    ops.mish: lambda a: (ParamAct.MISH, 0.0, 0.0),
}


def param_code(op: OpDef, attrs: Any) -> tuple[int, float, float]:
    """The kernels' code and two parameters of hardtanh, softplus or mish (None: defaults)."""
    code, a, b = PARAM_ACTIVATIONS[op](attrs if attrs is not None else op.attrs())
    return int(code), float(a), float(b)


def param_elementwise(b: Builder, node: Node) -> Step:
    x, out = (a.reshape(-1) for a in unary(b, node))
    kernel = ak.param_activation.sized(out.size)
    args = param_code(node.op, node.attrs)
    return bound(kernel, x, out, *args)


for _op in PARAM_ACTIVATIONS:
    lower(_op)(param_elementwise)


@lower(activation_ops.param_activation_grad)
def param_activation_grad(b: Builder, node: Node) -> Step:
    x, g = (b.array(v).reshape(-1) for v in node.inputs)
    out = b.array(node.output).reshape(-1)
    args = param_code(node.attrs.activation, node.attrs.activation_attrs)
    kernel = ak.param_activation_grad.sized(out.size)
    return lambda: kernel(x, g, out, *args)


def channels_view(a: np.ndarray) -> np.ndarray:
    """[N, C, ...] as [N, C, P]; [N] or scalars as [N, 1, 1]."""
    return as3d(a) if a.ndim >= 2 else a.reshape(-1, 1, 1)


@lower(ops.prelu)
def prelu(b: Builder, node: Node) -> Step:
    """One slope per channel, a derived form of the weight (``Builder.derived``)."""
    x, out = unary(b, node)
    weight = node.inputs[1]
    x3, out3 = channels_view(x), channels_view(out)
    w = b.array(weight)
    channels = x3.shape[1]
    slope = b.derived([weight], ("prelu", channels), lambda: np.ascontiguousarray(
        np.broadcast_to(w, (channels,)), b.dtype))
    kernel = ak.slopes.sized(out.size)
    return bound(kernel, x3, out3, slope, True)


@lower(ops.rrelu)
def rrelu(b: Builder, node: Node) -> Step:
    """Eval: leaky ReLU with the mean slope. Training: a fresh slope per element per call,
    drawn as the reference backend draws it; the second output is the multiplier applied
    (1 where x > 0, the slope elsewhere), which the backward multiplies the gradient by."""
    x, out = unary(b, node)
    a = node.attrs
    if not a.training:
        return activation_step(x, out, Act.LEAKY_RELU, (a.lower + a.upper) / 2)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    multiplier = b.array(node.outputs[1]).reshape(-1)
    kernel = ak.sampled_slopes.sized(out.size)

    def sampled() -> None:
        slope = b.rng.uniform(a.lower, a.upper, x.size).astype(b.dtype)
        kernel(flat_x, slope, flat_out, multiplier)

    return sampled


def dropout_step(b: Builder, node: Node) -> Step:
    """Eval: a copy. Training: the scaled mask (second output; per element, or per
    (sample, channel) for dropout2d) is ``keep/(1 − p)`` with P(keep) = 1 − p, drawn as the
    reference backend draws it, and ``y = x·mask``."""
    x, out = unary(b, node)
    p = node.attrs.p
    if not node.attrs.training:
        return lambda: np.copyto(out, x)
    mask = b.array(node.outputs[1])
    scale = mask.dtype.type(0.0 if p >= 1.0 else 1.0 / (1.0 - p))

    def step() -> None:
        if p >= 1.0:
            out.fill(0)
            mask.fill(0)
            return
        np.multiply(b.rng.random(mask.shape) >= p, scale, out=mask)
        np.multiply(x, mask, out=out)

    return step


lower(ops.dropout)(dropout_step)
lower(ops.dropout2d)(dropout_step)


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


@lower(activation_ops.prelu_grad)
def prelu_grad(b: Builder, node: Node) -> Step:
    """One parallel pass over the channels: the input's gradient, and the slopes' summed in
    float64 per channel (then over the channels for a shared slope)."""
    x, w, g = (b.array(v) for v in node.inputs)
    wanted = node.attrs.outputs
    outs = dict(zip(wanted, (b.array(v) for v in node.outputs)))
    x3, g3 = channels_view(x), channels_view(g)
    channels = x3.shape[1]
    gx3 = channels_view(outs["input"]) if "input" in outs else np.zeros((1, 1, 1), b.dtype)
    slope = b.scratch((channels,), owner=("prelu_grad", node.name))
    sums = b.scratch((channels,), np.float64, owner=("prelu_grad", node.name))
    gw = outs.get("weight")
    kernel = ak.prelu_grad.sized(x3.size)

    def step() -> None:
        np.copyto(slope, w)  # one slope broadcast to every channel, or one per channel
        kernel(x3, g3, slope, gx3, sums, "input" in outs, gw is not None)
        if gw is not None:
            gw[...] = sums.sum() if gw.size == 1 else sums

    return step
