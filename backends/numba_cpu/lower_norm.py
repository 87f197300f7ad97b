"""Lowering of batch_norm: one epilogue pass ``γ(x − μ)/√(σ² + eps) + β`` per channel.

- Eval with running statistics in the program state: the per-channel scale and shift are a
  derived form of them (remade when they change).
- Eval with statistics fed as graph inputs: scale and shift computed each call.
- Training, or no running statistics: the biased mean and variance over every axis but the
  channels, each call, in one parallel pass over the channels (``kernels.norm``; the
  running-statistics update is the training graph's business).
Statistics are computed in float64 and applied in the compute dtype.

batch_norm_grad (the backward): with batch statistics, two parallel passes: one over the
channels (statistics, Σg and Σg·x̂ in float64, giving gγ, gβ and the coefficients of gx) and
one over the (sample, channel) rows computing ``gx = a·(g − ḡ) + b·(x − μ)``. Eval: gx is the
epilogue pass ``g·γ/√(rv + eps)``; gγ and gβ one pass of float64 sums over the channels.
A fused activation gradient (``fuse-activation-grad``) is applied as pass 1 reads g, its
products kept in gx for pass 2 (in eval, a pass of its own first).

SyncBatchNorm (``sync``) reduces over the ranks of ``cnnir.distributed``'s active
communicator: the forward's and the update's per-channel moments, and in the backward the
moments and the sums Σg, Σg·(x − μ) that give gx (gγ and gβ stay this rank's sums). Its
backward runs the fused activation's pass first, then moments, sums, their reduction and
the gx pass.

group_norm and layer_norm (the [M, 1, D, 1] view of a group norm) run one parallel pass per
(sample, group) row; group_norm_grad one more, plus a numpy sum of per-sample partials for
the parameters' gradients.
"""

from __future__ import annotations

import math

import numpy as np

from cnnir import distributed as dist
from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.epilogue import Epilogue, activation_code, as3d, epilogue_step
from cnnir.backends.numba_cpu.kernels import activation as ak
from cnnir.backends.numba_cpu.kernels import norm as nk
from cnnir.backends.numba_cpu.kernels.activation import Act
from cnnir.backends.numba_cpu.program import lower
from cnnir.ir import Node
from cnnir.ops import norm as norm_ops


def affine(gamma: np.ndarray | None, beta: np.ndarray | None, mean: np.ndarray,
           var: np.ndarray, eps: float, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` with ``y = scale·x + shift``, in float64 then cast to ``dtype``."""
    g = np.ones(len(mean)) if gamma is None else gamma.astype(np.float64)
    scale = g / np.sqrt(var.astype(np.float64) + eps)
    shift = (0.0 if beta is None else beta.astype(np.float64)) - mean.astype(np.float64) * scale
    return scale.astype(dtype), shift.astype(dtype)


@lower(ops.batch_norm)
def batch_norm(b: Builder, node: Node) -> Step:
    params = node.inputs[1:]
    x, rm, rv, gamma, beta = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    eps = node.attrs.eps
    ep = Epilogue(np.ones(x.shape[1], b.dtype), np.zeros(x.shape[1], b.dtype))
    running = not node.attrs.training and rm is not None
    if running and all(v.is_constant for v in params if v is not None):
        ep.scale, ep.shift = b.derived(params, ("batch-norm", eps), lambda: affine(
            gamma, beta, rm, rv, eps, b.dtype))
        return epilogue_step(x, out, ep)
    apply = epilogue_step(x, out, ep)
    if not running:
        x3 = as3d(x)
        moments = b.scratch((2, x3.shape[1]), np.float64, owner=("batch-norm", node.name))
        statistics = nk.channel_moments.sized(x3.size)
        sync, count = node.attrs.sync, x3.shape[0] * x3.shape[2]

        def batch_statistics() -> None:
            statistics(x3, moments)
            if sync:
                dist.reduce_moments(moments, count)
            ep.scale[:], ep.shift[:] = affine(gamma, beta, moments[0], moments[1], eps, b.dtype)
            apply()

        return batch_statistics

    def input_statistics() -> None:  # statistics fed as graph inputs: read them per call
        ep.scale[:], ep.shift[:] = affine(gamma, beta, rm, rv, eps, b.dtype)
        apply()

    return input_statistics


@lower(norm_ops.batch_norm_grad)
def batch_norm_grad(b: Builder, node: Node) -> Step:
    x, rm, rv, gamma, g, act_in = (b.array(v) for v in node.inputs)
    a = node.attrs
    outs = dict(zip(a.outputs, (b.array(v) for v in node.outputs)))
    g3 = as3d(g)
    channels = g3.shape[1]
    owner = ("batch-norm-grad", node.name)
    sums = b.scratch((2, channels), np.float64, owner=owner)
    gw, gb, gx = outs.get("weight"), outs.get("bias"), outs.get("input")
    prologue = (int(Act.NONE), 0.0, g3, g3)
    if a.activation is not None:  # a fused activation_grad: f'(a)·g, into gx (or scratch)
        code, alpha = activation_code(a.activation, a.activation_attrs)
        in_place = gx is not None and a.batch_stats  # eval reads g again after writing gx
        gv = gx if in_place else b.scratch(g.shape, owner=owner)
        prologue = (int(code), alpha, as3d(act_in), as3d(gv))
    if a.batch_stats and not a.sync:
        return batch_statistics_grad(b, as3d(x), g3, prologue, gamma, a.eps, sums, gw, gb, gx,
                                     owner)
    steps = []
    if a.activation is not None:  # eval, sync: the prologue as a pass of its own first
        g3 = prologue[3]
        kernel = ak.activation_grad.sized(g.size)
        flat = [v.reshape(-1) for v in (prologue[2], as3d(g), g3)]
        steps.append(lambda: kernel(*flat, prologue[0], prologue[1]))
        g = g3.reshape(g.shape)
    if a.batch_stats:  # SyncBatchNorm
        steps.append(synced_statistics_grad(b, as3d(x), g3, gamma, a.eps, sums, gw, gb, gx,
                                            owner))
    else:
        steps += running_statistics_grad(b, x, rm, rv, gamma, g, a.eps, sums, gw, gb, gx)

    def step() -> None:
        for part in steps:
            part()

    return step


def batch_statistics_grad(b: Builder, x3: np.ndarray, g3: np.ndarray, prologue: tuple,
                          gamma: np.ndarray | None, eps: float, sums: np.ndarray,
                          gw: np.ndarray | None, gb: np.ndarray | None, gx: np.ndarray | None,
                          owner: tuple) -> Step:
    """The two passes of the backward with batch statistics (module docstring); with an
    activation prologue pass 2 reads the products pass 1 kept (in gx itself)."""
    channels = g3.shape[1]
    coef = b.scratch((4, channels), owner=owner)
    ones = np.ones(channels, b.dtype)
    first = nk.batch_norm_grad_sums.sized(g3.size)
    second = nk.batch_norm_grad_input.sized(g3.size)
    gx3 = as3d(gx) if gx is not None else None
    g_read = prologue[3]  # g itself, or the products f'(a)·g

    def step() -> None:
        first(x3, g3, prologue, gamma if gamma is not None else ones, eps, coef, sums)
        if gb is not None:
            gb[:] = sums[0]
        if gw is not None:
            gw[:] = sums[1]
        if gx3 is not None:
            second(g_read, x3, coef, gx3)

    return step


def running_statistics_grad(b: Builder, x: np.ndarray | None, rm: np.ndarray | None,
                            rv: np.ndarray, gamma: np.ndarray | None, g: np.ndarray,
                            eps: float, sums: np.ndarray, gw: np.ndarray | None,
                            gb: np.ndarray | None, gx: np.ndarray | None) -> list[Step]:
    """Eval mode: gx as the epilogue pass ``g·γ/√(rv + eps)`` (the scale remade each call),
    gγ and gβ from one pass of float64 sums about the running mean."""
    g3 = as3d(g)
    channels = g3.shape[1]
    steps = []
    if gx is not None:
        ep = Epilogue(np.ones(channels, b.dtype), np.zeros(channels, b.dtype))
        apply = epilogue_step(g, gx, ep)

        def input_grad() -> None:
            ep.scale[:] = affine(gamma, None, np.zeros(channels), rv, eps, b.dtype)[0]
            apply()

        steps.append(input_grad)
    if gw is not None or gb is not None:
        x3 = as3d(x) if x is not None else g3
        center = rm if rm is not None else np.zeros(channels, b.dtype)
        reduce = nk.centered_grad_sums.sized(g3.size)

        def parameter_grads() -> None:
            reduce(x3, g3, center, sums)
            if gw is not None:
                gw[:] = sums[1] / np.sqrt(rv.astype(np.float64) + eps)
            if gb is not None:
                gb[:] = sums[0]

        steps.append(parameter_grads)
    return steps


def synced_statistics_grad(b: Builder, x3: np.ndarray, g3: np.ndarray,
                           gamma: np.ndarray | None, eps: float, sums: np.ndarray,
                           gw: np.ndarray | None, gb: np.ndarray | None, gx: np.ndarray | None,
                           owner: tuple) -> Step:
    """SyncBatchNorm's backward with batch statistics (module docstring): the moments and
    the sums Σg, Σg·(x − μ) over every rank; gγ and gβ from this rank's sums."""
    channels = g3.shape[1]
    moments = b.scratch((2, channels), np.float64, owner=(*owner, "moments"))
    total_sums = b.scratch((2, channels), np.float64, owner=(*owner, "total"))
    coef = b.scratch((4, channels), owner=owner)
    scale = np.ones(channels) if gamma is None else gamma  # γ, 1 without affine parameters
    statistics = nk.channel_moments.sized(x3.size)
    reduce = nk.centered_grad_sums.sized(g3.size)
    second = nk.batch_norm_grad_input.sized(g3.size)
    gx3 = as3d(gx) if gx is not None else None
    count = x3.shape[0] * x3.shape[2]

    def step() -> None:
        statistics(x3, moments)
        total = dist.reduce_moments(moments, count)
        reduce(x3, g3, moments[0], sums)
        inv_std = 1.0 / np.sqrt(moments[1] + eps)
        if gb is not None:
            gb[:] = sums[0]
        if gw is not None:
            gw[:] = sums[1] * inv_std
        if gx3 is not None:
            total_sums[:] = sums
            dist.reduce_sum(total_sums)
            a = scale.astype(np.float64) * inv_std
            coef[0], coef[1] = a, total_sums[0] / total
            coef[2], coef[3] = -a * total_sums[1] * inv_std ** 2 / total, moments[0]
            second(g3, x3, coef, gx3)

    return step


@lower(norm_ops.batch_norm_update)
def batch_norm_update(b: Builder, node: Node) -> Step:
    """The moving averages from the batch's per-channel mean and biased variance (one
    parallel pass, ``channel_moments``); with momentum None, 1/num_batches_tracked."""
    x, mean, var, count = (b.array(v) for v in (node.inputs + [None])[:4])
    outs = [b.array(v) for v in node.outputs]
    x3 = as3d(x)
    n = x3.shape[0] * x3.shape[2]
    moments = b.scratch((2, x3.shape[1]), np.dtype(np.float64), owner="batch-norm-moments")
    statistics = nk.channel_moments.sized(x3.size)
    momentum, sync = node.attrs.momentum, node.attrs.sync

    def step() -> None:
        statistics(x3, moments)
        total = dist.reduce_moments(moments, n) if sync else n
        tracked = None if count is None else count + 1
        m = momentum if momentum is not None else 1.0 / tracked
        np.copyto(outs[0], (1 - m) * mean + m * moments[0], casting="unsafe")
        np.copyto(outs[1], (1 - m) * var + m * moments[1] * total / (total - 1),
                  casting="unsafe")
        if tracked is not None:
            np.copyto(outs[2], tracked)

    return step


def grouped_view(node: Node, a: np.ndarray) -> np.ndarray:
    """An [N, C, ...] array of a group_norm(_grad) node as [N, G, C/G, P], or a layer_norm's
    [..., normalized] as [M, 1, D, 1]."""
    if node.op is norm_ops.layer_norm:
        d = math.prod(node.attrs.normalized_shape)
        return a.reshape(-1, 1, d, 1)
    groups = node.attrs.num_groups
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, -1)


def affine_or_default(b: Builder, v: np.ndarray | None, size: int, fill: float) -> np.ndarray:
    return v.reshape(-1) if v is not None else np.full(size, fill, b.dtype)


def group_norm(b: Builder, node: Node) -> Step:
    """One parallel pass, a (sample, group) row per task (``kernels.norm.group_norm``)."""
    x, gamma, beta = (b.array(v) for v in node.inputs)
    x4, out4 = grouped_view(node, x), grouped_view(node, b.array(node.output))
    channels = x4.shape[1] * x4.shape[2]
    gamma = affine_or_default(b, gamma, channels, 1.0)
    beta = affine_or_default(b, beta, channels, 0.0)
    kernel = nk.group_norm.sized(x4.size)
    eps = node.attrs.eps
    return lambda: kernel(x4, out4, gamma, beta, eps)


lower(norm_ops.group_norm)(group_norm)
lower(norm_ops.layer_norm)(group_norm)


@lower(norm_ops.group_norm_grad)
def group_norm_grad(b: Builder, node: Node) -> Step:
    """One parallel pass per (sample, group) row: gx, and float64 per-(sample, channel)
    partial sums that one numpy sum over the samples turns into gγ and gβ."""
    x, gamma, gy = (b.array(v) for v in node.inputs)
    outs = dict(zip(node.attrs.outputs, (b.array(v) for v in node.outputs)))
    x4, gy4 = grouped_view(node, x), grouped_view(node, gy)
    channels = x4.shape[1] * x4.shape[2]
    gamma = affine_or_default(b, gamma, channels, 1.0)
    gx = outs.get("input")
    gx4 = grouped_view(node, gx) if gx is not None else np.zeros((1, 1, 1, 1), b.dtype)
    partial = b.scratch((2, x4.shape[0], channels), np.float64,
                        owner=("group-norm-grad", node.name))
    kernel = nk.group_norm_grad.sized(x4.size)
    eps = node.attrs.eps

    def step() -> None:
        kernel(x4, gy4, gamma, eps, gx4, gx is not None, partial)
        if "bias" in outs:
            outs["bias"][:] = partial[0].sum(axis=0)
        if "weight" in outs:
            outs["weight"][:] = partial[1].sum(axis=0)

    return step
