"""Converters for activations, softmax and dropout.

Patterns that cnnir's exporter writes for ops ONNX lacks are folded back into one op:
``Mul(x, Sigmoid(x))`` is silu, ``Clip(x, 0, 6)`` relu6 (any other finite Clip hardtanh),
``HardSigmoid(1/6, 0.5)`` hardsigmoid. A PRelu slope that is not per channel
(``(C, 1, …)``, ``(C,)`` or ``(1,)``) is decomposed as ``relu(x) − slope·relu(−x)``.
"""

from __future__ import annotations

import math

import numpy as np

from cnnir import ops
from cnnir.ir import Value
from cnnir.ops.activation import (
    DropoutAttrs,
    EluAttrs,
    GeluAttrs,
    HardtanhAttrs,
    LeakyReluAttrs,
    SoftmaxAttrs,
)
from cnnir.ops.registry import OpDef
from cnnir.ops.tensor import ClampAttrs, ReshapeAttrs

from .context import ImportContext, OnnxNode, converter


def _unary(ctx: ImportContext, n: OnnxNode, op: OpDef, attrs: object = None) -> None:
    ctx.bind(n.output(0), ctx.emit(n, op, [ctx.tensor(n.input(0))], attrs))


@converter("Relu", 6)
def relu(ctx: ImportContext, n: OnnxNode) -> None:
    _unary(ctx, n, ops.relu)


@converter("Abs", 6)
def abs_(ctx: ImportContext, n: OnnxNode) -> None:
    _unary(ctx, n, ops.abs_)


@converter("Tanh", 6)
def tanh(ctx: ImportContext, n: OnnxNode) -> None:
    _unary(ctx, n, ops.tanh)


@converter("HardSwish", 14)
def hardswish(ctx: ImportContext, n: OnnxNode) -> None:
    _unary(ctx, n, ops.hardswish)


@converter("Sigmoid", 6)
def sigmoid(ctx: ImportContext, n: OnnxNode) -> None:
    """Sigmoid, or silu when its only consumer is ``Mul(x, Sigmoid(x))``."""
    x = n.input(0)
    mul = ctx.sole_consumer(n.output(0))
    if mul is not None and mul.op_type == "Mul" and sorted(mul.inputs) == sorted([x, n.output(0)]):
        ctx.skip(mul)
        ctx.bind(mul.output(0), ctx.emit(mul, ops.silu, [ctx.tensor(x)]))
        return
    _unary(ctx, n, ops.sigmoid)


@converter("LeakyRelu", 6)
def leaky_relu(ctx: ImportContext, n: OnnxNode) -> None:
    _unary(ctx, n, ops.leaky_relu, LeakyReluAttrs(n.attr("alpha", 0.01)))


@converter("Elu", 6)
def elu(ctx: ImportContext, n: OnnxNode) -> None:
    _unary(ctx, n, ops.elu, EluAttrs(n.attr("alpha", 1.0)))


@converter("Gelu", 20)
def gelu(ctx: ImportContext, n: OnnxNode) -> None:
    _unary(ctx, n, ops.gelu, GeluAttrs(n.attr("approximate", "none")))


@converter("Softplus", 1)
def softplus(ctx: ImportContext, n: OnnxNode) -> None:
    """``log(1 + eˣ)``: torch's softplus with its default threshold 20, where the two differ
    by less than e⁻²⁰ (relative)."""
    _unary(ctx, n, ops.softplus)


@converter("Mish", 18)
def mish(ctx: ImportContext, n: OnnxNode) -> None:
    _unary(ctx, n, ops.mish)


@converter("HardSigmoid", 6)
def hardsigmoid(ctx: ImportContext, n: OnnxNode) -> None:
    alpha, beta = n.attr("alpha", 0.2), n.attr("beta", 0.5)
    if not (math.isclose(alpha, 1 / 6, rel_tol=1e-6) and math.isclose(beta, 0.5)):
        ctx.fail(n, f"has alpha={alpha}, beta={beta}; cnnir's hardsigmoid is torch's "
                    f"(alpha=1/6, beta=0.5)")
    _unary(ctx, n, ops.hardsigmoid)


def _clip(ctx: ImportContext, n: OnnxNode, low: float | None, high: float | None) -> None:
    if low == 0 and high == 6:
        _unary(ctx, n, ops.relu6)
    elif low == 0 and high is None:
        _unary(ctx, n, ops.relu)
    elif low is not None and high is not None and low <= high:
        _unary(ctx, n, ops.hardtanh, HardtanhAttrs(low, high))
    elif low is None and high is None:
        _unary(ctx, n, ops.identity)
    else:  # one bound, or low > high (torch.clamp: the upper bound wins)
        _unary(ctx, n, ops.clamp, ClampAttrs(low, high))


@converter("Clip", 6)
def clip_6(ctx: ImportContext, n: OnnxNode) -> None:
    low, high = n.attr("min", -3.4028234663852886e38), n.attr("max", 3.4028234663852886e38)
    _clip(ctx, n, low if low > -3e38 else None, high if high < 3e38 else None)


@converter("Clip", 11)
def clip(ctx: ImportContext, n: OnnxNode) -> None:
    bounds = []
    for i in (1, 2):
        name = n.input(i)
        if name and not ctx.is_const(name):
            ctx.fail(n, f"has the non-constant bound '{name}'")
        bounds.append(float(ctx.const(name).reshape(-1)[0]) if name else None)
    _clip(ctx, n, *bounds)


def _per_channel_slope(ctx: ImportContext, n: OnnxNode, x: Value) -> Value | None:
    """The slope as cnnir's ``[C]`` or ``[1]`` weight, when it is one per channel."""
    name = n.input(1)
    if not ctx.is_const(name) or x.type.rank < 2:
        return None
    slope = ctx.const(name)
    channels = x.type.shape[1]
    if slope.size == 1:
        flat = slope.reshape(1)
    elif slope.size == channels and slope.ndim in (1, x.type.rank - 1) and (
            slope.ndim == 1 or slope.shape[0] == channels):
        if slope.ndim == 1 and x.type.rank > 2 and x.type.shape[-1] != channels:
            return None  # (C,) aligns with the last dim under numpy broadcasting
        flat = slope.reshape(channels)
    else:
        return None
    if flat.shape == slope.shape:
        return ctx.param(name)
    return ctx.constant_value(name, flat, ctx.kinds.get(name, "parameter"))


@converter("PRelu", 7)
def prelu(ctx: ImportContext, n: OnnxNode) -> None:
    """``PRelu(x, slope)``: cnnir's prelu for per-channel slopes, else
    ``relu(x) − slope·relu(−x)`` with numpy broadcasting."""
    x = ctx.tensor(n.input(0))
    slope = _per_channel_slope(ctx, n, x)
    if slope is not None:
        ctx.bind(n.output(0), ctx.emit(n, ops.prelu, [x, slope]))
        return
    minus_one = ctx.graph.add_literal(np.asarray(-1.0, dtype=x.type.dtype), "minus_one")
    negative = ctx.emit(n, ops.relu, [ctx.emit(n, ops.mul, [x, minus_one], suffix="/neg")],
                        suffix="/relu_neg")
    scaled = ctx.emit(n, ops.mul, [ctx.tensor(n.input(1)), negative], suffix="/scaled")
    positive = ctx.emit(n, ops.relu, [x], suffix="/relu")
    ctx.bind(n.output(0), ctx.emit(n, ops.sub, [positive, scaled]))


def _softmax(ctx: ImportContext, n: OnnxNode, op: OpDef, legacy: bool) -> None:
    """Opset 13+: along ``axis``. Before: over the input flattened to 2-D at ``axis``."""
    x = ctx.tensor(n.input(0))
    rank = x.type.rank
    axis = n.attr("axis", 1 if legacy else -1) % max(rank, 1)
    if not legacy or axis == rank - 1:
        _unary(ctx, n, op, SoftmaxAttrs(axis))
        return
    flat = ctx.emit(n, ops.reshape, [x], ReshapeAttrs((*x.type.shape[:axis], -1)),
                    suffix="/flat")
    y = ctx.emit(n, op, [flat], SoftmaxAttrs(axis))
    ctx.bind(n.output(0), ctx.emit(n, ops.reshape, [y], ReshapeAttrs(x.type.shape),
                                   suffix="/unflat"))


@converter("Softmax", 1)
def softmax_1(ctx: ImportContext, n: OnnxNode) -> None:
    _softmax(ctx, n, ops.softmax, legacy=True)


@converter("Softmax", 13)
def softmax(ctx: ImportContext, n: OnnxNode) -> None:
    _softmax(ctx, n, ops.softmax, legacy=False)


@converter("LogSoftmax", 1)
def log_softmax_1(ctx: ImportContext, n: OnnxNode) -> None:
    _softmax(ctx, n, ops.log_softmax, legacy=True)


@converter("LogSoftmax", 13)
def log_softmax(ctx: ImportContext, n: OnnxNode) -> None:
    _softmax(ctx, n, ops.log_softmax, legacy=False)


def _dropout(ctx: ImportContext, n: OnnxNode, ratio: float, training: bool) -> None:
    x = ctx.tensor(n.input(0))
    y = ctx.emit(n, ops.dropout, [x], DropoutAttrs(p=ratio, training=training))
    ctx.bind(n.output(0), y)
    if n.output(1) and (n.output(1) in ctx.graph_outputs or ctx.consumers.get(n.output(1))):
        if training:
            ctx.fail(n, "uses the boolean mask output; cnnir's training-mode dropout returns "
                        "its mask as floats scaled by 1/(1 − ratio), and no cnnir op turns "
                        "them into booleans")
        if not x.type.is_static:
            ctx.fail(n, "uses the mask output, which in eval mode needs a static shape")
        ctx.bind_const(n.output(1), np.ones(x.type.shape, dtype=bool))


def _scalar_input(ctx: ImportContext, n: OnnxNode, i: int, default: object) -> object:
    name = n.input(i)
    if not name:
        return default
    if not ctx.is_const(name):
        ctx.fail(n, f"has the non-constant input '{name}'")
    return ctx.const(name).reshape(-1)[0].item()


@converter("Dropout", 7)
def dropout_7(ctx: ImportContext, n: OnnxNode) -> None:
    """Dropout-7..11: ``ratio`` attribute, always inference."""
    _dropout(ctx, n, float(n.attr("ratio", 0.5)), training=False)


@converter("Dropout", 12)
def dropout(ctx: ImportContext, n: OnnxNode) -> None:
    """Dropout-12+: ``(data, ratio?, training_mode?)`` inputs."""
    ratio = float(_scalar_input(ctx, n, 1, 0.5))
    _dropout(ctx, n, ratio, training=bool(_scalar_input(ctx, n, 2, False)))


@converter("Identity", 1)
def identity(ctx: ImportContext, n: OnnxNode) -> None:
    _unary(ctx, n, ops.identity)
