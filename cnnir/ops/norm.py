"""Batch normalization (BatchNorm1d and BatchNorm2d share one op; channels are dim 1).

Eval: ``y = γ(x − rm)/√(rv + eps) + β``, 2 FLOPs per element (precomputed scale and shift).
Training, or without running statistics: batch statistics, 5 FLOPs per element with affine
parameters, 4 without (fvcore's rule). Training needs more than one value per channel.

Gradient (docs/semantics.md §3): one backward-only ``batch_norm_grad`` node computing the
wanted gradients among input, weight and bias (the running statistics carry none). With
batch statistics, with M values per channel, ``x̂ = (x − μ)/√(σ² + eps)``:
``gβ = Σ gy``, ``gγ = Σ gy·x̂``, ``gx = γ/√(σ² + eps)·(gy − Σgy/M − x̂·gγ/M)``; its cost is 6E
for the sums (Σx, x², Σx², Σgy, gy·x, Σgy·x: they give gγ and gβ too) plus 5E for gx
(``a·(gy − ḡ) + b·(x − μ)``). Eval: ``gx = gy·γ/√(rv + eps)`` (E), gγ (3E: a subtract, a
multiply and an add per element) and gβ (E).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnir.ir.types import TensorType, dim_floordiv, is_static, numel, shape_str
from cnnir.ops.registry import Cost, OpDef, expect_rank, register, require, same_dtype, static_numel

if TYPE_CHECKING:
    from cnnir.ir.graph import Node


@dataclass(frozen=True)
class BatchNormAttrs:
    """``sync``: SyncBatchNorm, whose batch statistics (and, in the backward, their gradient
    sums) are reduced over the ranks of ``cnnir.distributed``'s active communicator; the
    same as BatchNorm in one process or in eval."""

    training: bool = False
    momentum: float | None = 0.1
    eps: float = 1e-5
    sync: bool = False

    def __post_init__(self) -> None:
        require(self.eps > 0, f"eps must be > 0, got {self.eps}")
        require(self.momentum is None or 0.0 <= self.momentum <= 1.0,
                f"momentum must be in [0, 1] or None, got {self.momentum}")


def uses_batch_stats(a: BatchNormAttrs, types: list[TensorType | None]) -> bool:
    return a.training or types[1] is None


def infer_batch_norm(a: BatchNormAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    expect_rank(x, (2, 3, 4), "its input (N, C), (N, C, L) or (N, C, H, W)")
    dtype = same_dtype(types)
    channels = x.shape[1]
    for name, t in zip(("running_mean", "running_var", "weight", "bias"), types[1:]):
        require(t is None or t.shape == (channels,),
                lambda name=name, t=t: f"expects {name} of shape [{channels}] for input "
                                       f"{shape_str(x.shape)} but it is {shape_str(t.shape)}")
    if uses_batch_stats(a, types):
        per_channel = dim_floordiv(numel(x.shape), channels) if is_static(channels) else None
        require(not (is_static(per_channel) and per_channel == 1),
                f"expected more than 1 value per channel when training, got input size "
                f"{shape_str(x.shape)}", "use a batch larger than 1 or call model.eval()")
    return [TensorType(x.shape, dtype)]


def cost_batch_norm(a: BatchNormAttrs, ins: list[TensorType | None],
                    outs: list[TensorType]) -> Cost:
    elems = static_numel(outs[0])
    if not uses_batch_stats(a, ins):
        return Cost(flops=2 * elems)
    affine = ins[3] is not None
    return Cost(flops=(5 if affine else 4) * elems)


def onnx_batch_norm(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``BatchNormalization(X, scale, B, mean, var)`` with ``epsilon = eps`` and
    ``momentum = 1 − momentum_torch``. Absent affine parameters become ones/zeros constants.
    Training mode, or no running statistics, exports ``training_mode=1`` (batch statistics)
    (ONNX then requires the running-mean and running-var outputs; they stay unused: cnnir's
    op returns Y only, and ONNX would update running_var with the biased variance, unlike
    PyTorch). ORT 1.32's graph optimizer evaluates such a node as if in eval mode when its
    statistics are initializers; with optimizations off ORT follows the spec."""
    a, x = node.attrs, node.inputs[0].type
    channels = x.shape[1]
    if not is_static(channels):
        b.fail(f"needs a static channel count, got input {shape_str(x.shape)}")

    def given_or(i: int, fill: float) -> str:
        return b.input(i) or b.const(np.full((channels,), fill, dtype=x.dtype), "fill")

    batch_stats = uses_batch_stats(a, [v.type if v else None for v in node.inputs])
    momentum = 0.9 if a.momentum is None else 1.0 - a.momentum
    inputs = [b.input(0), given_or(3, 1.0), given_or(4, 0.0), given_or(1, 0.0), given_or(2, 1.0)]
    outputs = b.op("BatchNormalization", inputs, n_out=3 if batch_stats else 1,
                   epsilon=float(a.eps), momentum=float(momentum), training_mode=int(batch_stats))
    return [outputs[0] if batch_stats else outputs]


def vjp_batch_norm(ad: Any, node: Node, grads: list) -> list:
    """One ``batch_norm_grad`` node for the wanted gradients (docs/semantics.md §3). It reads
    only what they need: x (always with batch statistics; in eval for gγ only), the running
    statistics in eval, γ when present, and gy."""
    x, rm, rv, w, b = node.inputs
    wanted = tuple(name for name, i in zip(BN_GRADS, (0, 3, 4)) if ad.needs(i))
    batch = uses_batch_stats(node.attrs, [v.type if v is not None else None
                                          for v in node.inputs])
    reads_x = batch or "weight" in wanted
    inputs = [x if reads_x else None, None if batch or "weight" not in wanted else rm,
              None if batch else rv, w, grads[0]]
    attrs = BatchNormGradAttrs(node.attrs.eps, batch, wanted, sync=node.attrs.sync and batch)
    got = dict(zip(wanted, ad.ops(batch_norm_grad, inputs, attrs)))
    return [got.get("input"), None, None, got.get("weight"), got.get("bias")]


batch_norm = register(OpDef(
    name="batch_norm",
    inputs=("input", "running_mean?", "running_var?", "weight?", "bias?"),
    params=("weight", "bias"),
    attrs=BatchNormAttrs,
    infer=infer_batch_norm,
    cost=cost_batch_norm,
    onnx=onnx_batch_norm,
    has_training_mode=True,
    flop_rule="eval 2E; training (or no running stats) 5E with affine, 4E without",
    vjp=vjp_batch_norm,
))

BN_GRADS = ("input", "weight", "bias")


@dataclass(frozen=True)
class BatchNormGradAttrs:
    """A ``batch_norm_grad`` node: the forward's eps, whether it used batch statistics, and
    the gradients it computes, in this order: input, weight, bias. With an ``activation``
    (the ``fuse-activation-grad`` pass) grad_output is first multiplied by that activation's
    derivative at ``activation_input``: the activation_grad node before it, fused. ``sync``
    (SyncBatchNorm with batch statistics): the statistics and the sums ``Σgy``, ``Σgy·x̂``
    of the input's gradient are over every rank's batch; the weight's and bias's gradients
    stay this rank's sums (data-parallel training averages them with the others)."""

    eps: float = 1e-5
    batch_stats: bool = True
    outputs: tuple[str, ...] = BN_GRADS
    activation: OpDef | None = None
    activation_attrs: Any = None
    sync: bool = False

    def __post_init__(self) -> None:
        require(self.eps > 0, f"eps must be > 0, got {self.eps}")
        require(bool(self.outputs) and tuple(n for n in BN_GRADS if n in self.outputs)
                == tuple(self.outputs),
                f"outputs must be a non-empty ordered subset of {BN_GRADS}, "
                f"got {self.outputs!r}")


def infer_batch_norm_grad(a: BatchNormGradAttrs,
                          types: list[TensorType | None]) -> list[TensorType]:
    x, rm, rv, w, g, act_in = types
    expect_rank(g, (2, 3, 4), "its grad_output (N, C), (N, C, L) or (N, C, H, W)")
    require((a.activation is None) == (act_in is None),
            "takes an activation_input exactly when it has an activation")
    require(act_in is None or act_in.shape == g.shape,
            lambda: f"expects the activation_input {shape_str(act_in.shape)} and grad_output "
                    f"{shape_str(g.shape)} to have one shape")
    dtype = same_dtype(types)
    channels = g.shape[1]
    require(x is None or x.shape == g.shape,
            lambda: f"expects the input {shape_str(x.shape)} and grad_output "
                    f"{shape_str(g.shape)} to have one shape")
    for name, t in (("running_mean", rm), ("running_var", rv), ("weight", w)):
        require(t is None or t.shape == (channels,),
                lambda name=name, t=t: f"expects {name} of shape [{channels}] for grad_output "
                                       f"{shape_str(g.shape)} but it is {shape_str(t.shape)}")
    if a.batch_stats:
        require(x is not None, "needs the input to recompute the batch statistics")
    else:
        require(rv is not None, "needs running_var (eval-mode gradients)")
        require("weight" not in a.outputs or (x is not None and rm is not None),
                "needs the input and running_mean for the weight's gradient")
    param = TensorType((channels,), dtype)
    return [TensorType(g.shape, dtype) if name == "input" else param for name in a.outputs]


def cost_batch_norm_grad(a: BatchNormGradAttrs, ins: list[TensorType | None],
                         outs: list[TensorType]) -> Cost:
    """Batch statistics: 6E for the per-channel sums (they give gγ and gβ) plus 5E for gx.
    Eval: E for gx, 3E for gγ, E for gβ."""
    e = static_numel(ins[4])
    wants = {name: name in a.outputs for name in BN_GRADS}
    prologue = 0 if a.activation is None else a.activation.cost(
        a.activation_attrs, ins[5:], ins[5:]).flops + e  # as activation_grad's
    if a.batch_stats:
        return Cost(flops=prologue + 6 * e + 5 * e * wants["input"])
    return Cost(flops=prologue + e * wants["input"] + 3 * e * wants["weight"]
                + e * wants["bias"])


# Backward-only (docs/semantics.md §3), emitted by vjp_batch_norm.
batch_norm_grad = register(OpDef(
    name="batch_norm_grad", inputs=("input?", "running_mean?", "running_var?", "weight?",
                                    "grad_output", "activation_input?"),
    attrs=BatchNormGradAttrs, infer=infer_batch_norm_grad, cost=cost_batch_norm_grad,
    backward=True, differentiable=False,
    flop_rule="batch statistics 6E + 5E with grad_input; eval E (input) + 3E (weight) + "
              "E (bias); + the activation's FLOPs + E with an activation",
))


# batch_norm_update: the running statistics a training-mode batch_norm leaves (docs §1.4), as
# new values: rm' = (1 − m)·rm + m·μ, rv' = (1 − m)·rv + m·σ²_b·n/(n − 1) (the unbiased
# variance, n values per channel), num_batches_tracked + 1; with momentum None m is
# 1/num_batches_tracked after the increment (a cumulative average). cnnir.grad_graph emits it
# next to the gradients; no gradient flows through it.


@dataclass(frozen=True)
class BatchNormUpdateAttrs:
    """``sync``: from the statistics of every rank's batch (SyncBatchNorm)."""

    momentum: float | None = 0.1
    sync: bool = False


def infer_batch_norm_update(a: BatchNormUpdateAttrs,
                            types: list[TensorType | None]) -> list[TensorType]:
    x, mean, var, count = types
    channels = x.shape[1]
    require(mean.shape == var.shape == (channels,),
            f"expects running statistics of shape [{channels}] for input {shape_str(x.shape)}")
    outs = [mean, var]
    if count is not None:
        require(count.shape == () and np.dtype(count.dtype).kind in "iu",
                f"expects num_batches_tracked to be an integer scalar, got {count}")
        outs.append(count)
    return outs


def cost_batch_norm_update(a: BatchNormUpdateAttrs, ins: list[TensorType | None],
                           outs: list[TensorType]) -> Cost:
    """The batch statistics (3E: a sum, a square and its sum per element) and 7 FLOPs per
    channel for the two moving averages and the n/(n − 1) correction."""
    return Cost(flops=3 * static_numel(ins[0]) + 7 * static_numel(outs[0]))


batch_norm_update = register(OpDef(
    name="batch_norm_update",
    inputs=("input", "running_mean", "running_var", "num_batches_tracked?"),
    attrs=BatchNormUpdateAttrs, infer=infer_batch_norm_update, cost=cost_batch_norm_update,
    backward=True, differentiable=False,
    updates=("running_mean", "running_var", "num_batches_tracked?"),
    flop_rule="3E for the batch statistics + 7 per channel",
))


# -- group_norm and layer_norm ---------------------------------------------------------------
# group_norm (GroupNorm, and InstanceNorm as G = C): per sample and group of C/G channels, the
# biased mean μ and variance σ² over (C/G, *spatial); ``y = γ_c(x − μ)/√(σ² + eps) + β_c``.
# layer_norm: the same over the trailing ``normalized_shape`` dims, γ and β of that shape,
# i.e. group_norm with one group on the (M, D) view (M leading elements, D normalized ones).
# FLOPs as batch_norm with batch statistics (fvcore): 5E with affine parameters, 4E without.
# Gradient: ``group_norm_grad`` (layer_norm's through that (M, D) view), per (sample, group)
# with x̂ = (x − μ)/√(σ² + eps) and ĝ = γ·gy over its L values:
# ``gx = (ĝ − Σĝ/L − x̂·Σĝ·x̂/L)/√(σ² + eps)``, ``gγ_c = Σ_{n, pixels} gy·x̂``,
# ``gβ_c = Σ gy``; cost as batch_norm_grad's: 6E for the sums, + 5E for gx.

NORM_GRADS = BN_GRADS


def _check_eps(eps: float) -> None:
    require(eps > 0, f"eps must be > 0, got {eps}")


@dataclass(frozen=True)
class GroupNormAttrs:
    num_groups: int = 1
    eps: float = 1e-5

    def __post_init__(self) -> None:
        require(isinstance(self.num_groups, int) and self.num_groups >= 1,
                f"num_groups must be a positive int, got {self.num_groups!r}")
        _check_eps(self.eps)


def _check_params(x: TensorType, shape: tuple, types: list[TensorType | None],
                  what: str) -> None:
    for name, t in zip(("weight", "bias"), types):
        require(t is None or t.shape == shape,
                lambda name=name, t=t: f"expects {name} of shape {shape_str(shape)} for "
                                       f"input {shape_str(x.shape)} ({what}) but it is "
                                       f"{shape_str(t.shape)}")


def infer_group_norm(a: GroupNormAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    require(x.rank >= 2, f"expects an input (N, C, *) but it is {shape_str(x.shape)}")
    dtype = same_dtype(types)
    channels = x.shape[1]
    require(not is_static(channels) or channels % a.num_groups == 0,
            lambda: f"expects the number of channels in input {shape_str(x.shape)} to be "
                    f"divisible by num_groups={a.num_groups}",
            "GroupNorm(num_groups, num_channels) needs num_channels % num_groups == 0")
    _check_params(x, (channels,), types[1:3], "one per channel")
    return [TensorType(x.shape, dtype)]


def cost_norm(a: Any, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    return Cost(flops=(5 if ins[1] is not None else 4) * static_numel(outs[0]))


def onnx_group_norm(b: Any, node: Node) -> list[str]:
    """ONNX mapping: G = C is ``InstanceNormalization(X, γ, β)``; from opset 21
    ``GroupNormalization(X, γ, β, num_groups)`` (ones and zeros for absent γ, β). Before it,
    ONNX has no per-channel GroupNormalization (opset 18's scales one value per group):
    ``Reshape(X, (N, G, −1))``, ``InstanceNormalization`` with unit scale, ``Reshape`` back,
    then ``Mul(γ)`` and ``Add(β)`` along the channels."""
    a, x = node.attrs, node.inputs[0].type
    channels = x.shape[1]
    if not is_static(channels):
        b.fail(f"needs a static channel count, got input {shape_str(x.shape)}")
    ones = np.ones((channels,), x.dtype)
    if a.num_groups == channels or b.opset >= 21:
        affine = [b.input(1) or b.const(ones, "fill"),
                  b.input(2) or b.const(np.zeros_like(ones), "fill")]
        if a.num_groups == channels:
            return [b.op("InstanceNormalization", [b.input(0), *affine], epsilon=float(a.eps))]
        return [b.op("GroupNormalization", [b.input(0), *affine], epsilon=float(a.eps),
                     num_groups=a.num_groups)]
    groups = np.asarray([0, a.num_groups, -1], np.int64)
    grouped = b.op("Reshape", [b.input(0), b.const(groups, "shape")])
    unit = np.ones((a.num_groups,), x.dtype)
    y = b.op("InstanceNormalization", [grouped, b.const(unit, "fill"),
                                       b.const(np.zeros_like(unit), "fill")],
             epsilon=float(a.eps))
    y = b.op("Reshape", [y, b.op("Shape", [b.input(0)])])
    along = np.asarray([channels] + [1] * (x.rank - 2), np.int64)
    for i, op_type in ((1, "Mul"), (2, "Add")):
        if b.input(i):
            y = b.op(op_type, [y, b.op("Reshape", [b.input(i), b.const(along, "shape")])])
    return [y]


def vjp_group_norm(ad: Any, node: Node, grads: list) -> list:
    """One ``group_norm_grad`` node for the wanted gradients among input, weight and bias."""
    x, w = node.inputs[:2]
    wanted = tuple(name for i, name in enumerate(NORM_GRADS) if ad.needs(i))
    attrs = GroupNormGradAttrs(node.attrs.num_groups, node.attrs.eps, wanted)
    got = dict(zip(wanted, ad.ops(group_norm_grad, [x, w, grads[0]], attrs)))
    return [got.get(name) for name in NORM_GRADS]


group_norm = register(OpDef(
    name="group_norm", inputs=("input", "weight?", "bias?"), params=("weight", "bias"),
    attrs=GroupNormAttrs, infer=infer_group_norm, cost=cost_norm, onnx=onnx_group_norm,
    vjp=vjp_group_norm, flop_rule="5E with affine parameters, 4E without",
))


@dataclass(frozen=True)
class LayerNormAttrs:
    normalized_shape: tuple[int, ...] = ()
    eps: float = 1e-5

    def __post_init__(self) -> None:
        shape = self.normalized_shape
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        object.__setattr__(self, "normalized_shape", shape)
        require(len(shape) >= 1 and all(isinstance(d, int) and d >= 1 for d in shape),
                f"normalized_shape must be one or more positive ints, got {shape!r}")
        _check_eps(self.eps)


def infer_layer_norm(a: LayerNormAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x, shape = types[0], a.normalized_shape
    dtype = same_dtype(types)
    tail = x.shape[x.rank - len(shape):] if x.rank >= len(shape) else None
    require(tail is not None and all(not is_static(d) or d == s for d, s in zip(tail, shape)),
            lambda: f"expects an input ending in normalized_shape {list(shape)} but it is "
                    f"{shape_str(x.shape)}",
            "LayerNorm(normalized_shape) normalizes the trailing dims of its input")
    _check_params(x, shape, types[1:3], "normalized_shape")
    return [TensorType(x.shape, dtype)]


def onnx_layer_norm(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``LayerNormalization(X, γ, β, axis = −len(normalized_shape))`` (opset
    17; a ones scale when there is no weight)."""
    a, x = node.attrs, node.inputs[0].type
    scale = b.input(1) or b.const(np.ones(a.normalized_shape, x.dtype), "fill")
    inputs = [b.input(0), scale] + ([b.input(2)] if b.input(2) else [])
    return [b.op("LayerNormalization", inputs, axis=-len(a.normalized_shape),
                 epsilon=float(a.eps))]


def vjp_layer_norm(ad: Any, node: Node, grads: list) -> list:
    """group_norm's gradient with one group on the (M, D) view: x and gy reshaped to it, γ
    to (D,), and the gradients reshaped back."""
    from cnnir.ops.tensor import ReshapeAttrs, reshape

    x, w = node.inputs[:2]
    shape = node.attrs.normalized_shape
    d = int(np.prod(shape))

    def view(v: Any, to: tuple) -> Any:
        return None if v is None else ad.op(reshape, [v], ReshapeAttrs(to))

    wanted = tuple(name for i, name in enumerate(NORM_GRADS) if ad.needs(i))
    attrs = GroupNormGradAttrs(1, node.attrs.eps, wanted)
    outs = ad.ops(group_norm_grad, [view(x, (-1, d)), view(w, (d,)), view(grads[0], (-1, d))],
                  attrs)
    back = {"input": x.type.shape, "weight": shape, "bias": shape}
    got = {name: view(v, back[name]) for name, v in zip(wanted, outs)}
    return [got.get(name) for name in NORM_GRADS]


layer_norm = register(OpDef(
    name="layer_norm", inputs=("input", "weight?", "bias?"), params=("weight", "bias"),
    attrs=LayerNormAttrs, infer=infer_layer_norm, cost=cost_norm, onnx=onnx_layer_norm,
    vjp=vjp_layer_norm, flop_rule="5E with affine parameters, 4E without",
))


@dataclass(frozen=True)
class GroupNormGradAttrs:
    """A ``group_norm_grad`` node: the forward's groups and eps, and the gradients it
    computes, in this order: input, weight, bias."""

    num_groups: int = 1
    eps: float = 1e-5
    outputs: tuple[str, ...] = NORM_GRADS

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        require(bool(self.outputs) and tuple(n for n in NORM_GRADS if n in self.outputs)
                == tuple(self.outputs),
                f"outputs must be a non-empty ordered subset of {NORM_GRADS}, "
                f"got {self.outputs!r}")


def infer_group_norm_grad(a: GroupNormGradAttrs,
                          types: list[TensorType | None]) -> list[TensorType]:
    x, w, g = types
    (y,) = infer_group_norm(GroupNormAttrs(a.num_groups, a.eps), [x, w])
    require(g.shape == y.shape, lambda: f"expects grad_output shaped like the input "
            f"{shape_str(x.shape)} but it is {shape_str(g.shape)}")
    dtype = same_dtype(types)
    param = TensorType((x.shape[1],), dtype)
    return [TensorType(x.shape, dtype) if name == "input" else param for name in a.outputs]


def cost_group_norm_grad(a: GroupNormGradAttrs, ins: list[TensorType | None],
                         outs: list[TensorType]) -> Cost:
    e = static_numel(ins[0])
    return Cost(flops=6 * e + 5 * e * ("input" in a.outputs))


# Backward-only, emitted by vjp_group_norm and vjp_layer_norm.
group_norm_grad = register(OpDef(
    name="group_norm_grad", inputs=("input", "weight?", "grad_output"),
    attrs=GroupNormGradAttrs, infer=infer_group_norm_grad, cost=cost_group_norm_grad,
    backward=True, differentiable=False, flop_rule="6E + 5E with grad_input",
))
