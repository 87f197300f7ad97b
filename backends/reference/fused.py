"""Reference kernels of the fused ops (cnnir/ops/fused.py), composed from the plain kernels.

conv2d_fused:  y = act(conv2d(x, W, b) + r)
linear_fused:  y = act(x·Wᵀ + b + r)
The residual ``r`` is added only when present, before the activation, in the same order as
the unfused graph computes it, so a fused graph gives bit-identical results here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnir import ops
from cnnir.backends.reference.conv import conv2d
from cnnir.backends.reference.linear import linear
from cnnir.backends.reference.runtime import KERNELS, Context, kernel
from cnnir.ops.fused import Conv2dFusedAttrs, LinearFusedAttrs


def epilogue(ctx: Context, a: Any, y: np.ndarray, residual: np.ndarray | None) -> np.ndarray:
    """``act(y + r)`` with the activation's own reference kernel."""
    if residual is not None:
        y = y + residual
    if a.activation is None:
        return y
    attrs = a.activation_attrs if a.activation_attrs is not None else a.activation.attrs()
    return KERNELS[a.activation](ctx, attrs, y)


@kernel(ops.conv2d_fused)
def conv2d_fused(ctx: Context, a: Conv2dFusedAttrs, x: np.ndarray, w: np.ndarray,
                 b: np.ndarray | None = None, residual: np.ndarray | None = None) -> np.ndarray:
    return epilogue(ctx, a, conv2d(ctx, a, x, w, b), residual)


@kernel(ops.linear_fused)
def linear_fused(ctx: Context, a: LinearFusedAttrs, x: np.ndarray, w: np.ndarray,
                 b: np.ndarray | None = None, residual: np.ndarray | None = None) -> np.ndarray:
    return epilogue(ctx, a, linear(ctx, a, x, w, b), residual)
