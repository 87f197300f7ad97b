"""Reference tensor ops: broadcasting arithmetic, concatenation, reshapes, permutations,
splits, reductions, channel shuffle, constant padding and identity (docs/semantics.md §1.11–§1.13).

channel_shuffle: ``out[:, j·g + i] = in[:, i·(C/g) + j]``, i.e. reshape to (N, g, C/g, ...),
swap axes 1 and 2, reshape back. pad: torch order, (left, right) of the last dim first; a
negative amount crops.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.reference.runtime import Context, kernel
from cnnir.ops import tensor as tensor_ops
from cnnir.ops.tensor import (
    ChannelShuffleAttrs,
    DimAttrs,
    ExpandAttrs,
    FlattenAttrs,
    PadAttrs,
    ReduceAttrs,
    ReshapeAttrs,
    SplitAttrs,
    TransposeAttrs,
)


@kernel(ops.add)
def add(ctx: Context, attrs: object, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


@kernel(ops.sub)
def sub(ctx: Context, attrs: object, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a - b


@kernel(ops.mul)
def mul(ctx: Context, attrs: object, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b


@kernel(ops.div)
def div(ctx: Context, attrs: object, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.true_divide(a, b)


@kernel(ops.cat)
def cat(ctx: Context, a: DimAttrs, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=a.dim)


@kernel(ops.reshape)
def reshape(ctx: Context, a: ReshapeAttrs, x: np.ndarray) -> np.ndarray:
    return x.reshape(tuple(-1 if d == -1 else ctx.dim(d) for d in a.shape))


@kernel(ops.flatten)
def flatten(ctx: Context, a: FlattenAttrs, x: np.ndarray) -> np.ndarray:
    if x.ndim == 0:
        return x.reshape(1)
    start, end = a.start_dim % x.ndim, a.end_dim % x.ndim
    merged = int(np.prod(x.shape[start:end + 1]))
    return x.reshape(x.shape[:start] + (merged,) + x.shape[end + 1:])


@kernel(ops.transpose)
def transpose(ctx: Context, a: TransposeAttrs, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, a.perm)


@kernel(ops.split)
def split(ctx: Context, a: SplitAttrs, x: np.ndarray) -> tuple[np.ndarray, ...]:
    bounds = np.cumsum((0, *a.sizes))
    index = [slice(None)] * x.ndim
    pieces = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        index[a.dim] = slice(int(lo), int(hi))
        pieces.append(x[tuple(index)])
    return tuple(pieces)


def _axes(a: ReduceAttrs) -> tuple[int, ...] | None:
    return None if a.dims is None else tuple(a.dims)


@kernel(ops.mean)
def mean(ctx: Context, a: ReduceAttrs, x: np.ndarray) -> np.ndarray:
    return np.mean(x, axis=_axes(a), keepdims=a.keepdim)


@kernel(ops.sum_)
def sum_(ctx: Context, a: ReduceAttrs, x: np.ndarray) -> np.ndarray:
    return np.sum(x, axis=_axes(a), keepdims=a.keepdim)


@kernel(ops.amax)
def amax(ctx: Context, a: ReduceAttrs, x: np.ndarray) -> np.ndarray:
    return np.amax(x, axis=_axes(a), keepdims=a.keepdim)


@kernel(tensor_ops.amax_grad)
def amax_grad(ctx: Context, a: ReduceAttrs, x: np.ndarray, y: np.ndarray,
              g: np.ndarray) -> np.ndarray:
    """``(x == y)·g / count``: the maxima share each slice's gradient evenly (torch.amax)."""
    axes = tuple(range(x.ndim)) if a.dims is None else tuple(d % x.ndim for d in a.dims)
    kept = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    ties = x == y.reshape(kept)
    count = ties.sum(axis=axes, keepdims=True)
    return ties * (g.reshape(kept) / count)


@kernel(ops.channel_shuffle)
def channel_shuffle(ctx: Context, a: ChannelShuffleAttrs, x: np.ndarray) -> np.ndarray:
    n, c = x.shape[:2]
    grouped = x.reshape(n, a.groups, c // a.groups, *x.shape[2:])
    return grouped.swapaxes(1, 2).reshape(x.shape)


@kernel(ops.pad)
def pad(ctx: Context, a: PadAttrs, x: np.ndarray) -> np.ndarray:
    crop = [slice(None)] * x.ndim
    width = [(0, 0)] * x.ndim
    for i in range(len(a.pads) // 2):
        axis = x.ndim - 1 - i
        before, after = a.pads[2 * i], a.pads[2 * i + 1]
        crop[axis] = slice(max(0, -before), x.shape[axis] - max(0, -after))
        width[axis] = (max(0, before), max(0, after))
    return np.pad(x[tuple(crop)], width, constant_values=a.value)


@kernel(ops.identity)
def identity(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return x


@kernel(ops.expand)
def expand(ctx: Context, a: ExpandAttrs, x: np.ndarray) -> np.ndarray:
    return np.broadcast_to(x, tuple(ctx.dim(d) for d in a.shape)).copy()


@kernel(ops.slice_)
def slice_(ctx: Context, a: tensor_ops.SliceAttrs, x: np.ndarray) -> np.ndarray:
    index = [slice(None)] * x.ndim
    for axis, start, stop, step in tensor_ops.slice_bounds(a, x.shape):
        index[axis] = slice(start, stop, step)
    return x[tuple(index)].copy()


@kernel(ops.gather)
def gather(ctx: Context, a: tensor_ops.GatherAttrs, x: np.ndarray) -> np.ndarray:
    dim, indices = tensor_ops.gather_indices(a, x.shape)
    return np.take(x, np.asarray(indices, dtype=np.int64), axis=dim)


@kernel(ops.sqrt)
def sqrt(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return np.sqrt(x)


@kernel(ops.exp)
def exp(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return np.exp(x)


@kernel(ops.log)
def log(ctx: Context, attrs: object, x: np.ndarray) -> np.ndarray:
    return np.log(x)


@kernel(ops.pow_)
def pow_(ctx: Context, a: tensor_ops.PowAttrs, x: np.ndarray) -> np.ndarray:
    return np.power(x, x.dtype.type(a.exponent))


@kernel(ops.clamp)
def clamp(ctx: Context, a: tensor_ops.ClampAttrs, x: np.ndarray) -> np.ndarray:
    """torch.clamp: ``min(max(x, lo), hi)``, so hi wins when lo > hi; NaN stays NaN."""
    y = x if a.min is None else np.where(x < a.min, x.dtype.type(a.min), x)
    return y if a.max is None else np.where(y > a.max, x.dtype.type(a.max), y)


@kernel(ops.compare)
def compare(ctx: Context, a: tensor_ops.CompareAttrs, x: np.ndarray,
            y: np.ndarray) -> np.ndarray:
    return tensor_ops.NUMPY_COMPARISONS[a.kind](x, y).astype(np.result_type(x, y))


@kernel(ops.where)
def where(ctx: Context, attrs: object, cond: np.ndarray, a: np.ndarray,
          b: np.ndarray) -> np.ndarray:
    return np.where(cond != 0, a, b)
