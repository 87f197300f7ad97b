"""Reference batch normalization (docs/semantics.md §1.4); channels are dim 1.

Training, or no running statistics: μ and σ²_b are the **biased** mean and variance over every
dim but 1, ``y = γ(x − μ)/√(σ²_b + eps) + β``. Eval: ``y = γ(x − rm)/√(rv + eps) + β``.
γ = 1 and β = 0 when absent. The running-statistics update is not part of the forward value.

batch_norm_grad (docs/semantics.md §3), with ``x̂ = (x − μ)/√(σ² + eps)`` and means over every
dim but 1: ``gβ = Σ gy``, ``gγ = Σ gy·x̂``; with batch statistics
``gx = γ/√(σ²_b + eps)·(gy − mean(gy) − x̂·mean(gy·x̂))``, in eval ``gx = gy·γ/√(rv + eps)``
(μ, σ² the running statistics).

SyncBatchNorm (``sync``): μ and σ²_b over every rank's batch (``cnnir.distributed``'s active
communicator), and in gx the means of gy and gy·x̂ too; gγ and gβ stay this rank's sums.
"""

from __future__ import annotations

import numpy as np

from cnnir import distributed as dist
from cnnir import ops
from cnnir.backends.reference.activation import activation_derivative
from cnnir.backends.reference.runtime import Context, kernel
from cnnir.ops import norm as norm_ops
from cnnir.ops.norm import (
    BatchNormAttrs,
    BatchNormGradAttrs,
    GroupNormAttrs,
    GroupNormGradAttrs,
    LayerNormAttrs,
)


def per_channel(v: np.ndarray, rank: int) -> np.ndarray:
    """A ``[C]`` vector shaped to broadcast along dim 1 of a rank-``rank`` tensor."""
    return v.reshape((1, -1) + (1,) * (rank - 2))


def batch_moments(x: np.ndarray, sync: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """The per-channel mean and biased variance (shaped to broadcast) and the count of values
    per channel: this batch's, or with ``sync`` every rank's batch's."""
    axes = (0, *range(2, x.ndim))
    mean = x.mean(axis=axes)
    var = ((x - per_channel(mean, x.ndim)) ** 2).mean(axis=axes)
    count = x.size // x.shape[1]
    if sync:
        moments = np.stack([mean, var]).astype(np.float64)
        count = dist.reduce_moments(moments, count)
        mean, var = moments.astype(x.dtype)
    return per_channel(mean, x.ndim), per_channel(var, x.ndim), count


@kernel(ops.batch_norm)
def batch_norm(ctx: Context, a: BatchNormAttrs, x: np.ndarray, running_mean: np.ndarray | None,
               running_var: np.ndarray | None, weight: np.ndarray | None,
               bias: np.ndarray | None) -> np.ndarray:
    if a.training or running_mean is None:
        mean, var, _ = batch_moments(x, a.sync)
    else:
        mean = per_channel(running_mean, x.ndim)
        var = per_channel(running_var, x.ndim)
    y = (x - mean) / np.sqrt(var + a.eps)
    if weight is not None:
        y = y * per_channel(weight, x.ndim)
    if bias is not None:
        y = y + per_channel(bias, x.ndim)
    return y


@kernel(norm_ops.batch_norm_grad)
def batch_norm_grad(ctx: Context, a: BatchNormGradAttrs, x: np.ndarray | None,
                    running_mean: np.ndarray | None, running_var: np.ndarray | None,
                    weight: np.ndarray | None, gy: np.ndarray,
                    activation_input: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    if a.activation is not None:  # fused: activation_grad's product first
        gy = activation_derivative(a.activation, a.activation_attrs, activation_input) * gy
    axes = (0, *range(2, gy.ndim))
    gamma = per_channel(weight, gy.ndim) if weight is not None else 1.0
    if a.batch_stats:
        mean, var, count = batch_moments(x, a.sync)
    else:
        mean = None if running_mean is None else per_channel(running_mean, gy.ndim)
        var = per_channel(running_var, gy.ndim)
    inv_std = 1.0 / np.sqrt(var + a.eps)
    results = {}
    if "weight" in a.outputs:
        results["weight"] = np.sum(gy * (x - mean) * inv_std, axis=axes)
    if "bias" in a.outputs:
        results["bias"] = np.sum(gy, axis=axes)
    if "input" in a.outputs:
        if a.batch_stats:
            x_hat = (x - mean) * inv_std
            sums = np.stack([gy.sum(axis=axes), (gy * x_hat).sum(axis=axes)])
            if a.sync:
                dist.reduce_sum(sums)
            g_mean, gx_mean = (per_channel(s / count, gy.ndim) for s in sums)
            results["input"] = gamma * inv_std * (gy - g_mean - x_hat * gx_mean)
        else:
            results["input"] = gy * gamma * inv_std
    return tuple(results[name] for name in a.outputs)


@kernel(norm_ops.batch_norm_update)
def batch_norm_update(ctx: Context, a, x: np.ndarray, running_mean: np.ndarray,
                      running_var: np.ndarray, count: np.ndarray | None) -> tuple:
    """The running statistics after one training-mode forward (docs/semantics.md §1.4)."""
    mean, var, n = batch_moments(x, a.sync)
    mean, unbiased = mean.reshape(-1), var.reshape(-1) * n / (n - 1)
    tracked = None if count is None else count + 1
    m = a.momentum if a.momentum is not None else 1.0 / tracked
    new = ((1 - m) * running_mean + m * mean, (1 - m) * running_var + m * unbiased)
    return new if count is None else (*new, tracked)


# -- group_norm, layer_norm and group_norm_grad -------------------------------------------------
# group_norm: per sample and group, the biased mean and variance over the group's channels and
# pixels, ``y = γ_c(x − μ)/√(σ² + eps) + β_c``; layer_norm: over the trailing normalized_shape
# dims, γ and β of that shape. group_norm_grad, per (sample, group) with ĝ = γ·gy and means
# over the group: ``gx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))/√(σ² + eps)``, ``gγ = Σ gy·x̂`` and
# ``gβ = Σ gy`` over samples and pixels.


def grouped(x: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """x viewed as (N, G, rest): its values centered per (sample, group), and their biased
    variance."""
    v = x.reshape(x.shape[0], groups, -1)
    centered = v - v.mean(axis=2, keepdims=True)
    return centered, (centered**2).mean(axis=2, keepdims=True)


def affine_per_channel(y: np.ndarray, weight: np.ndarray | None,
                       bias: np.ndarray | None) -> np.ndarray:
    if weight is not None:
        y = y * per_channel(weight, y.ndim)
    if bias is not None:
        y = y + per_channel(bias, y.ndim)
    return y


@kernel(norm_ops.group_norm)
def group_norm(ctx: Context, a: GroupNormAttrs, x: np.ndarray, weight: np.ndarray | None,
               bias: np.ndarray | None) -> np.ndarray:
    centered, var = grouped(x, a.num_groups)
    y = (centered / np.sqrt(var + a.eps)).reshape(x.shape)
    return affine_per_channel(y, weight, bias)


@kernel(norm_ops.layer_norm)
def layer_norm(ctx: Context, a: LayerNormAttrs, x: np.ndarray, weight: np.ndarray | None,
               bias: np.ndarray | None) -> np.ndarray:
    axes = tuple(range(x.ndim - len(a.normalized_shape), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + a.eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


@kernel(norm_ops.group_norm_grad)
def group_norm_grad(ctx: Context, a: GroupNormGradAttrs, x: np.ndarray,
                    weight: np.ndarray | None, gy: np.ndarray) -> tuple[np.ndarray, ...]:
    centered, var = grouped(x, a.num_groups)
    inv_std = 1.0 / np.sqrt(var + a.eps)
    x_hat = (centered * inv_std).reshape(x.shape)
    axes = (0, *range(2, x.ndim))
    results = {"weight": np.sum(gy * x_hat, axis=axes), "bias": np.sum(gy, axis=axes)}
    if "input" in a.outputs:
        g_hat = affine_per_channel(gy, weight, None).reshape(centered.shape)
        xh = x_hat.reshape(centered.shape)
        gx = (g_hat - g_hat.mean(axis=2, keepdims=True)
              - xh * (g_hat * xh).mean(axis=2, keepdims=True)) * inv_std
        results["input"] = gx.reshape(x.shape)
    return tuple(results[name] for name in a.outputs)
