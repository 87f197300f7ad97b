"""Reference batch normalization (docs/semantics.md §1.4); channels are dim 1.

Training, or no running statistics: μ and σ²_b are the **biased** mean and variance over every
dim but 1, ``y = γ(x − μ)/√(σ²_b + eps) + β``. Eval: ``y = γ(x − rm)/√(rv + eps) + β``.
γ = 1 and β = 0 when absent. The running-statistics update is not part of the forward value.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.reference.runtime import Context, kernel
from cnnir.ops.norm import BatchNormAttrs


def per_channel(v: np.ndarray, rank: int) -> np.ndarray:
    """A ``[C]`` vector shaped to broadcast along dim 1 of a rank-``rank`` tensor."""
    return v.reshape((1, -1) + (1,) * (rank - 2))


@kernel(ops.batch_norm)
def batch_norm(ctx: Context, a: BatchNormAttrs, x: np.ndarray, running_mean: np.ndarray | None,
               running_var: np.ndarray | None, weight: np.ndarray | None,
               bias: np.ndarray | None) -> np.ndarray:
    axes = (0, *range(2, x.ndim))
    if a.training or running_mean is None:
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    else:
        mean = per_channel(running_mean, x.ndim)
        var = per_channel(running_var, x.ndim)
    y = (x - mean) / np.sqrt(var + a.eps)
    if weight is not None:
        y = y * per_channel(weight, x.ndim)
    if bias is not None:
        y = y + per_channel(bias, x.ndim)
    return y
