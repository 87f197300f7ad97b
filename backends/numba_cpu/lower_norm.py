"""Lowering of batch_norm: one epilogue pass ``γ(x − μ)/√(σ² + eps) + β`` per channel.

- Eval with running statistics in the program state: the per-channel scale and shift are a
  derived form of them (remade when they change).
- Eval with statistics fed as graph inputs: scale and shift computed each call.
- Training, or no running statistics: the biased mean and variance over every axis but the
  channels, each call (the running-statistics update is the training graph's business).
Statistics are computed in float64 and applied in the compute dtype.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.epilogue import Epilogue, as3d, epilogue_step
from cnnir.backends.numba_cpu.program import lower
from cnnir.ir import Node


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

        def batch_statistics() -> None:
            mean = x3.mean(axis=(0, 2), dtype=np.float64)
            var = x3.var(axis=(0, 2), dtype=np.float64)
            ep.scale[:], ep.shift[:] = affine(gamma, beta, mean, var, eps, b.dtype)
            apply()

        return batch_statistics

    def input_statistics() -> None:  # statistics fed as graph inputs: read them per call
        ep.scale[:], ep.shift[:] = affine(gamma, beta, rm, rv, eps, b.dtype)
        apply()

    return input_statistics
