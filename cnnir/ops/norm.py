"""Batch normalization (BatchNorm1d and BatchNorm2d share one op; channels are dim 1).

Eval: ``y = γ(x − rm)/√(rv + eps) + β``, 2 FLOPs per element (precomputed scale and shift).
Training, or without running statistics: batch statistics, 5 FLOPs per element with affine
parameters, 4 without (fvcore's rule). Training needs more than one value per channel.
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
    training: bool = False
    momentum: float | None = 0.1
    eps: float = 1e-5

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
))
