"""Activations, softmax and dropout (PyTorch semantics; docs/semantics.md §1.5, §1.6, §1.14).

FLOPs per element E: relu 1; relu6, leaky_relu, prelu, rrelu, hardtanh 2; elu, sigmoid 3;
tanh 1; silu, hardsigmoid, mish 4; hardswish, softplus 5;
gelu 6 (scale, erf, add, two multiplies, halving);
softmax and log_softmax 5 (max, subtract, exp, sum, divide or subtract);
dropout 1 in training (a multiply by the pre-scaled mask), 0 in eval.

Random ops in training mode (dropout, dropout2d, rrelu) have a second output, the multiplier
they applied: dropout's keep mask scaled by 1/(1 − p) (dropout2d's shaped (N, C, 1, 1)), the
rrelu multiplier of each element (1 where x > 0, its sampled slope elsewhere). The forward is
``y = x·m`` and the gradient ``gx = gy·m``, so the backward reuses the forward's draw exactly;
tracing hands the user output 0 only, and in eval mode these ops have one output.
Backward-only ops: ``activation_grad`` (f'(x)·g), ``param_activation_grad`` (the same for
hardtanh, softplus and mish, whose parameters the fused kernels do not take), ``prelu_grad``
(E comparisons, plus E multiplies for the input's gradient and 2E, a multiply and an add,
for the slopes').
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnir.ir.types import TensorType, shape_str
from cnnir.ops.registry import (
    Cost,
    CostFn,
    OpDef,
    elementwise_cost,
    register,
    require,
    same_dtype,
    static_numel,
)
from cnnir.ops.tensor import mul, normalize_dim

if TYPE_CHECKING:
    from cnnir.ir.graph import Node


def onnx_same(op_type: str, **attrs: Any) -> Any:
    """ONNX mapping to one op of the same meaning: ``op_type(X)`` with fixed attributes."""

    def mapping(b: Any, node: Node) -> list[str]:
        return [b.op(op_type, [b.input(0)], **attrs)]

    return mapping


def onnx_relu6(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Clip(X, 0, 6)`` (min and max are inputs since opset 11)."""
    dtype = node.inputs[0].type.dtype
    return [b.op("Clip", [b.input(0), b.scalar(0.0, dtype), b.scalar(6.0, dtype)])]


def onnx_silu(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Mul(X, Sigmoid(X))``."""
    x = b.input(0)
    return [b.op("Mul", [x, b.op("Sigmoid", [x])])]


def infer_same(attrs: object, types: list[TensorType | None]) -> list[TensorType]:
    return [types[0]]


def _unary(name: str, flops: int, attrs: type | None = None, **flags) -> OpDef:
    extra = {"attrs": attrs} if attrs is not None else {}
    flags.setdefault("vjp", vjp_activation)
    return register(OpDef(
        name=name, inputs=("input",), infer=infer_same, cost=elementwise_cost(flops),
        flop_rule=f"{flops}E", **extra, **flags,
    ))


def vjp_activation(ad: Any, node: Node, grads: list) -> list:
    """``gx = f'(x)·g``, one ``activation_grad`` node (derivatives: docs/semantics.md §3)."""
    attrs = ActivationGradAttrs(node.op, node.attrs)
    return [ad.op(activation_grad, [node.inputs[0], grads[0]], attrs)]


relu = _unary("relu", 1, onnx=onnx_same("Relu"))
relu6 = _unary("relu6", 2, onnx=onnx_relu6)
sigmoid = _unary("sigmoid", 3, onnx=onnx_same("Sigmoid"))
tanh = _unary("tanh", 1, onnx=onnx_same("Tanh"))
silu = _unary("silu", 4, onnx=onnx_silu)
# ONNX's default alpha is 0.2; torch's hardsigmoid is relu6(x + 3) / 6.
hardsigmoid = _unary("hardsigmoid", 4, onnx=onnx_same("HardSigmoid", alpha=1.0 / 6, beta=0.5))
hardswish = _unary("hardswish", 5, onnx=onnx_same("HardSwish"))
# |x| (torch.abs): elementwise like the activations, so it shares their gradient op; its
# derivative is sign(x) with sign(0) = 0 (L1 regularization, docs/semantics.md §4).
abs_ = _unary("abs", 1, onnx=onnx_same("Abs"))


@dataclass(frozen=True)
class LeakyReluAttrs:
    negative_slope: float = 0.01


def onnx_leaky_relu(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``LeakyRelu(alpha = negative_slope)``."""
    return [b.op("LeakyRelu", [b.input(0)], alpha=float(node.attrs.negative_slope))]


leaky_relu = _unary("leaky_relu", 2, LeakyReluAttrs, onnx=onnx_leaky_relu)


@dataclass(frozen=True)
class EluAttrs:
    alpha: float = 1.0


def onnx_elu(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Elu(alpha)``."""
    return [b.op("Elu", [b.input(0)], alpha=float(node.attrs.alpha))]


elu = _unary("elu", 3, EluAttrs, onnx=onnx_elu)


@dataclass(frozen=True)
class GeluAttrs:
    approximate: str = "none"

    def __post_init__(self) -> None:
        require(self.approximate in ("none", "tanh"),
                f"approximate must be 'none' or 'tanh', got {self.approximate!r}")


def onnx_gelu(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Gelu`` from opset 20; before it the formula,
    ``0.5·x·(1 + erf(x/√2))`` or, approximate='tanh',
    ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``."""
    x, approximate = b.input(0), node.attrs.approximate
    if b.opset >= 20:
        return [b.op("Gelu", [x], approximate=approximate)]
    dtype = node.inputs[0].type.dtype
    if approximate == "tanh":
        cube = b.op("Mul", [b.op("Mul", [x, x]), x])
        inner = b.op("Add", [x, b.op("Mul", [cube, b.scalar(0.044715, dtype)])])
        core = b.op("Tanh", [b.op("Mul", [inner, b.scalar(math.sqrt(2 / math.pi), dtype)])])
    else:
        core = b.op("Erf", [b.op("Div", [x, b.scalar(math.sqrt(2.0), dtype)])])
    half_x = b.op("Mul", [x, b.scalar(0.5, dtype)])
    return [b.op("Mul", [half_x, b.op("Add", [core, b.scalar(1.0, dtype)])])]


gelu = _unary("gelu", 6, GeluAttrs, onnx=onnx_gelu)


# -- hardtanh, softplus, mish ------------------------------------------------------------------
# Their gradient is ``param_activation_grad``, not activation_grad: the kernels that take an
# activation code (activation_grad, the fused epilogues, batch_norm_grad's fused prologue)
# carry one parameter, and hardtanh and softplus have two.


@dataclass(frozen=True)
class HardtanhAttrs:
    min_val: float = -1.0
    max_val: float = 1.0

    def __post_init__(self) -> None:
        require(self.min_val <= self.max_val,
                f"hardtanh needs min_val <= max_val, got min_val={self.min_val}, "
                f"max_val={self.max_val}")


def onnx_hardtanh(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Clip(X, min_val, max_val)``."""
    a, dtype = node.attrs, node.inputs[0].type.dtype
    return [b.op("Clip", [b.input(0), b.scalar(a.min_val, dtype), b.scalar(a.max_val, dtype)])]


@dataclass(frozen=True)
class SoftplusAttrs:
    beta: float = 1.0
    threshold: float = 20.0

    def __post_init__(self) -> None:
        require(self.beta != 0, "softplus needs a nonzero beta")


def onnx_softplus(b: Any, node: Node) -> list[str]:
    """ONNX mapping (its Softplus has neither beta nor threshold): PyTorch's rule
    ``Where(β·x > threshold, x, Softplus(β·x)/β)``."""
    a, x, dtype = node.attrs, b.input(0), node.inputs[0].type.dtype
    scaled = x if a.beta == 1 else b.op("Mul", [x, b.scalar(a.beta, dtype)])
    soft = b.op("Softplus", [scaled])
    if a.beta != 1:
        soft = b.op("Div", [soft, b.scalar(a.beta, dtype)])
    linear = b.op("Greater", [scaled, b.scalar(a.threshold, dtype)])
    return [b.op("Where", [linear, x, soft])]


def vjp_param_activation(ad: Any, node: Node, grads: list) -> list:
    """``gx = f'(x)·g``, one ``param_activation_grad`` node (derivatives: hardtanh 1 on the
    open interval (min_val, max_val), else 0; softplus σ(β·x), 1 where β·x > threshold; mish
    tanh(sp) + x·σ(x)·(1 − tanh²(sp)) with sp = softplus(x))."""
    attrs = ActivationGradAttrs(node.op, node.attrs)
    return [ad.op(param_activation_grad, [node.inputs[0], grads[0]], attrs)]


hardtanh = _unary("hardtanh", 2, HardtanhAttrs, onnx=onnx_hardtanh, vjp=vjp_param_activation)
# softplus: a multiply, exp, log1p, divide and the threshold comparison
softplus = _unary("softplus", 5, SoftplusAttrs, onnx=onnx_softplus, vjp=vjp_param_activation)
# mish: exp, log1p, tanh and a multiply; ONNX ``Mish`` (opset 18)
mish = _unary("mish", 4, onnx=onnx_same("Mish"), vjp=vjp_param_activation)


@dataclass(frozen=True)
class RReluAttrs:
    lower: float = 1.0 / 8
    upper: float = 1.0 / 3
    training: bool = False

    def __post_init__(self) -> None:
        require(0 <= self.lower <= self.upper,
                f"rrelu needs 0 <= lower <= upper, got lower={self.lower}, upper={self.upper}")


def read_later(b: Any, node: Node, i: int) -> bool:
    """Whether output ``i`` of the node being exported is read (by a node or as a graph
    output); unknown (a decomposition's view) counts as read."""
    value = node.outputs[i]
    users = getattr(value, "users", None)
    return users is None or bool(users) or any(v is value for v in b.graph.outputs)


def onnx_rrelu(b: Any, node: Node) -> list[str]:
    """ONNX mapping: eval ``LeakyRelu(alpha = (lower + upper)/2)``; training
    ``PRelu(X, RandomUniformLike(X, lower, upper))`` (a fresh slope per element; ORT has no
    RandomUniformLike-22 kernel, fine at opsets ≤ 21). The multiplier output is
    ``Where(X > 0, 1, slopes)`` when something reads it, else the slopes' name (unread)."""
    a, x = node.attrs, b.input(0)
    if not a.training:
        return [b.op("LeakyRelu", [x], alpha=float((a.lower + a.upper) / 2))]
    slopes = b.op("RandomUniformLike", [x], low=float(a.lower), high=float(a.upper))
    y = b.op("PRelu", [x, slopes])
    if not read_later(b, node, 1):
        return [y, slopes]
    dtype = node.inputs[0].type.dtype
    positive = b.op("Greater", [x, b.scalar(0.0, dtype)])
    return [y, b.op("Where", [positive, b.scalar(1.0, dtype), slopes])]


def infer_random(a: Any, types: list[TensorType | None]) -> list[TensorType]:
    """dropout and rrelu: the output, and in training mode the multiplier applied."""
    return [types[0], types[0]] if a.training else [types[0]]


def vjp_rrelu(ad: Any, node: Node, grads: list) -> list:
    """Training: ``gx = gy·m`` with the forward's multiplier m (its sampled slopes); eval:
    the derivative of leaky_relu with slope (lower + upper)/2 (docs/semantics.md §3)."""
    g, a = grads[0], node.attrs
    if g is None:
        return [None]
    if a.training:
        return [ad.op(mul, [g, node.outputs[1]])]
    slope = LeakyReluAttrs((a.lower + a.upper) / 2)
    return [ad.op(activation_grad, [node.inputs[0], g], ActivationGradAttrs(leaky_relu, slope))]


rrelu = register(OpDef(
    name="rrelu", inputs=("input",), attrs=RReluAttrs, infer=infer_random,
    cost=elementwise_cost(2), flop_rule="2E", has_training_mode=True, random=True,
    onnx=onnx_rrelu, vjp=vjp_rrelu,
))


def infer_prelu(attrs: object, types: list[TensorType | None]) -> list[TensorType]:
    x, w = types
    dtype = same_dtype([x, w])
    channels = x.shape[1] if x.rank >= 2 else 1
    require(w.rank == 1 and w.shape[0] in (1, channels),
            f"expects 1 or {channels} slopes (num_parameters) for input {shape_str(x.shape)} "
            f"but the weight is {shape_str(w.shape)}",
            "nn.PReLU(num_parameters=C) must match the channel count (dim 1)")
    return [TensorType(x.shape, dtype)]


def onnx_prelu(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``PRelu(X, slope)`` with a ``(C, 1, 1)`` slope for a 4-D input (slopes
    broadcast one-way to X since opset 7; ``(C,)`` would align with W, not C)."""
    x, w = node.inputs[0].type, node.inputs[1].type
    slope = b.input(1)
    if x.rank > 2 and w.shape[0] != 1:
        shape = np.array([w.shape[0]] + [1] * (x.rank - 2), dtype=np.int64)
        slope = b.op("Reshape", [slope, b.const(shape, "shape")])
    return [b.op("PRelu", [b.input(0), slope])]


def vjp_prelu(ad: Any, node: Node, grads: list) -> list:
    """One ``prelu_grad`` node: ``gx = x > 0 ? gy : a·gy``, ``ga = Σ_{x≤0} x·gy`` per
    channel, or over everything for a shared slope (docs/semantics.md §3)."""
    wanted = tuple(name for i, name in enumerate(PRELU_GRADS) if ad.needs(i))
    outs = ad.ops(prelu_grad, [*node.inputs, grads[0]], PReluGradAttrs(wanted))
    got = dict(zip(wanted, outs))
    return [got.get(name) for name in PRELU_GRADS]


prelu = register(OpDef(
    name="prelu", inputs=("input", "weight"), params=("weight",), infer=infer_prelu,
    cost=elementwise_cost(2), flop_rule="2E", onnx=onnx_prelu, vjp=vjp_prelu,
))

PRELU_GRADS = ("input", "weight")


@dataclass(frozen=True)
class PReluGradAttrs:
    """Which gradients a ``prelu_grad`` node computes, in this order: input, weight."""

    outputs: tuple[str, ...] = PRELU_GRADS

    def __post_init__(self) -> None:
        require(bool(self.outputs) and tuple(n for n in PRELU_GRADS if n in self.outputs)
                == tuple(self.outputs),
                f"outputs must be a non-empty ordered subset of {PRELU_GRADS}, "
                f"got {self.outputs!r}")


def infer_prelu_grad(a: PReluGradAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x, w, g = types
    (y,) = infer_prelu(None, [x, w])
    require(g.shape == y.shape, lambda: f"expects grad_output shaped like the input "
            f"{shape_str(x.shape)} but it is {shape_str(g.shape)}")
    dtype = same_dtype([x, w, g])
    return [TensorType(x.shape if name == "input" else w.shape, dtype) for name in a.outputs]


def cost_prelu_grad(a: PReluGradAttrs, ins: list[TensorType | None],
                    outs: list[TensorType]) -> Cost:
    """E comparisons (x > 0); E multiplies for the input's gradient; a multiply and an add
    per element for the slopes' (every element counted, whatever its sign)."""
    e = static_numel(ins[0])
    return Cost(flops=e + e * ("input" in a.outputs) + 2 * e * ("weight" in a.outputs))


@dataclass(frozen=True)
class SoftmaxAttrs:
    dim: int = 1


def infer_softmax(a: SoftmaxAttrs, types: list[TensorType | None]) -> list[TensorType]:
    normalize_dim(a.dim, types[0].rank)
    return [types[0]]


def onnx_softmax(op_type: str) -> Any:
    """ONNX mapping: ``Softmax`` / ``LogSoftmax`` along ``axis = dim`` (opset-13 semantics;
    earlier versions flattened the input to 2-D)."""

    def mapping(b: Any, node: Node) -> list[str]:
        return [b.op(op_type, [b.input(0)], axis=node.attrs.dim)]

    return mapping


def _softmax(name: str, onnx_type: str, vjp: Any) -> OpDef:
    return register(OpDef(
        name=name, inputs=("input",), attrs=SoftmaxAttrs, infer=infer_softmax,
        cost=elementwise_cost(5), flop_rule="5E", onnx=onnx_softmax(onnx_type), vjp=vjp,
    ))


def vjp_softmax(ad: Any, node: Node, grads: list) -> list:
    """``gx = y ⊙ (g − Σ_dim g ⊙ y)`` with y the output."""
    from cnnir.ops.tensor import ReduceAttrs, mul, sub, sum_

    g, y = grads[0], node.output
    total = ad.op(sum_, [ad.op(mul, [g, y])], ReduceAttrs((node.attrs.dim,), keepdim=True))
    return [ad.op(mul, [y, ad.op(sub, [g, total])])]


def vjp_log_softmax(ad: Any, node: Node, grads: list) -> list:
    """``gx = g − softmax(x)·Σ_dim g``."""
    from cnnir.ops.tensor import ReduceAttrs, mul, sub, sum_

    g = grads[0]
    total = ad.op(sum_, [g], ReduceAttrs((node.attrs.dim,), keepdim=True))
    probs = ad.op(softmax, [node.inputs[0]], node.attrs)
    return [ad.op(sub, [g, ad.op(mul, [probs, total])])]


softmax = _softmax("softmax", "Softmax", vjp_softmax)
log_softmax = _softmax("log_softmax", "LogSoftmax", vjp_log_softmax)


@dataclass(frozen=True)
class DropoutAttrs:
    p: float = 0.5
    training: bool = False

    def __post_init__(self) -> None:
        require(0.0 <= self.p <= 1.0,
                f"dropout probability has to be between 0 and 1, but got {self.p}")


def _dropout_cost() -> CostFn:
    def cost(a: DropoutAttrs, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
        return Cost(flops=static_numel(outs[0]) if a.training else 0)

    return cost


def infer_dropout2d(a: DropoutAttrs, types: list[TensorType | None]) -> list[TensorType]:
    """The output and, in training mode, the scaled mask: one value per (sample, channel)."""
    x = types[0]
    require(x.rank in (3, 4), f"expects a 3-D or 4-D input (channels of feature maps) but it "
            f"is {shape_str(x.shape)}")
    if not a.training:
        return [x]
    return [x, TensorType((*x.shape[:2], *(1,) * (x.rank - 2)), x.dtype)]


def onnx_dropout(b: Any, node: Node) -> list[str]:
    """ONNX mapping: eval ``Identity``; training ``Dropout(X, ratio, training_mode=True)``
    (ratio and mode are inputs since opset 12). The scaled mask output is
    ``Mul(CastLike(mask, X), 1/(1 − p))`` when something reads it; unread, it is Dropout's own
    boolean mask output (no extra nodes)."""
    if not node.attrs.training:
        return [b.op("Identity", [b.input(0)])]
    p, dtype = node.attrs.p, node.inputs[0].type.dtype
    y, mask = b.op("Dropout", [b.input(0), b.scalar(p, dtype),
                               b.const(np.asarray(True), "training_mode")], n_out=2)
    if not read_later(b, node, 1):
        return [y, mask]
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    return [y, b.op("Mul", [b.op("CastLike", [mask, b.input(0)]), b.scalar(scale, dtype)])]


def onnx_dropout2d(b: Any, node: Node) -> list[str]:
    """ONNX mapping: eval ``Identity``; training has no ONNX op and is decomposed: one
    uniform draw per channel, ``mask = (u >= p) / (1 − p)`` (zeros when p = 1) and
    ``y = x · mask``; the mask is the second output."""
    a, x = node.attrs, b.input(0)
    if not a.training:
        return [b.op("Identity", [x])]
    rank, dtype = node.inputs[0].type.rank, node.inputs[0].type.dtype
    spatial = b.const(np.arange(rank - 2, rank, dtype=np.int64), "axes")
    per_channel = b.op("ReduceMax", [x, spatial], keepdims=1)
    keep = b.op("Not", [b.op("Less", [b.op("RandomUniformLike", [per_channel]),
                                      b.scalar(a.p, dtype)])])
    scale = 0.0 if a.p >= 1.0 else 1.0 / (1.0 - a.p)
    mask = b.op("Mul", [b.op("CastLike", [keep, x]), b.scalar(scale, dtype)])
    return [b.op("Mul", [x, mask]), mask]


def vjp_dropout(ad: Any, node: Node, grads: list) -> list:
    """Training: ``gx = gy·m`` with the forward's scaled mask m (the same draw); eval, or
    p = 0 (m is all ones): gy, and the mask stays unread."""
    g = grads[0]
    if g is None or not node.attrs.training or node.attrs.p == 0.0:
        return [g]
    return [ad.op(mul, [g, node.outputs[1]])]


dropout = register(OpDef(
    name="dropout", inputs=("input",), attrs=DropoutAttrs, infer=infer_random,
    cost=_dropout_cost(), has_training_mode=True, random=True, onnx=onnx_dropout,
    flop_rule="training E (multiply by the pre-scaled mask); eval 0", vjp=vjp_dropout,
))
dropout2d = register(OpDef(
    name="dropout2d", inputs=("input",), attrs=DropoutAttrs, infer=infer_dropout2d,
    cost=_dropout_cost(), has_training_mode=True, random=True, onnx=onnx_dropout2d,
    flop_rule="training E (multiply by the pre-scaled channel mask); eval 0", vjp=vjp_dropout,
))


@dataclass(frozen=True)
class ActivationGradAttrs:
    """Which activation (its OpDef and attributes) an ``activation_grad`` node differentiates."""

    activation: OpDef | None = None
    activation_attrs: Any = None


def infer_activation_grad(a: ActivationGradAttrs,
                          types: list[TensorType | None]) -> list[TensorType]:
    x, g = types
    require(x.shape == g.shape, f"expects the input {shape_str(x.shape)} and its output's "
            f"gradient {shape_str(g.shape)} to have one shape")
    return [TensorType(x.shape, same_dtype([x, g]))]


def cost_activation_grad(a: ActivationGradAttrs, ins: list[TensorType | None],
                         outs: list[TensorType]) -> Cost:
    """The activation's own FLOPs (its derivative costs about as much) plus one multiply."""
    forward = a.activation.cost(a.activation_attrs, ins[:1], outs).flops
    return Cost(flops=forward + static_numel(outs[0]))


activation_grad = register(OpDef(
    name="activation_grad", inputs=("input", "grad_output"), attrs=ActivationGradAttrs,
    infer=infer_activation_grad, cost=cost_activation_grad, backward=True,
    differentiable=False, flop_rule="the activation's FLOPs + E",
))


# hardtanh's, softplus's and mish's gradients: backward-only, emitted by vjp_param_activation.
param_activation_grad = register(OpDef(
    name="param_activation_grad", inputs=("input", "grad_output"), attrs=ActivationGradAttrs,
    infer=infer_activation_grad, cost=cost_activation_grad, backward=True,
    differentiable=False, flop_rule="the activation's FLOPs + E",
))


# prelu's gradients (docs/semantics.md §3): backward-only, emitted by vjp_prelu.
prelu_grad = register(OpDef(
    name="prelu_grad", inputs=("input", "weight", "grad_output"), attrs=PReluGradAttrs,
    infer=infer_prelu_grad, cost=cost_prelu_grad, backward=True, differentiable=False,
    flop_rule="E comparisons, + E (grad_input), + 2E (grad_weight)",
))
