"""Lowerings of the tensor family: broadcasting arithmetic, cat, reshape/flatten/identity,
transpose, split, reductions, channel_shuffle and pad.

All of it is data movement or a single numpy call: numpy with ``out=`` into the planned
buffers (views prepared at compile time), so a call allocates nothing.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.program import lower, unary
from cnnir.ir import Node
from cnnir.ops import tensor as tensor_ops
from cnnir.ops.registry import REGISTRY


def binary(ufunc):
    def lowering(b: Builder, node: Node) -> Step:
        x, y = (b.array(v) for v in node.inputs)
        out = b.array(node.output)
        return lambda: ufunc(x, y, out=out)

    return lowering


for _op, _ufunc in ((ops.add, np.add), (ops.sub, np.subtract), (ops.mul, np.multiply),
                    (ops.div, np.divide)):
    lower(_op)(binary(_ufunc))


@lower(ops.cat)
def cat(b: Builder, node: Node) -> Step:
    xs = [b.array(v) for v in node.inputs]
    out = b.array(node.output)
    axis = node.attrs.dim % out.ndim
    return lambda: np.concatenate(xs, axis=axis, out=out)


def copy_reshaped(b: Builder, node: Node) -> Step | None:
    """Nothing where the output is a view of the input's memory (``CpuBuilder.view_outputs``),
    else a copy (of a constant)."""
    if id(node.output) in b.views:
        return None
    x, out = unary(b, node)
    src = x.reshape(out.shape)
    return lambda: np.copyto(out, src)


for _op in REGISTRY.values():
    if _op.reshapes:
        lower(_op)(copy_reshaped)


@lower(ops.transpose)
def transpose(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    view = x.transpose(node.attrs.perm)
    return lambda: np.copyto(out, view)


@lower(ops.split)
def split(b: Builder, node: Node) -> Step:
    x = b.array(node.inputs[0])
    outs = [b.array(v) for v in node.outputs]
    dim = node.attrs.dim
    bounds = np.cumsum((0, *node.attrs.sizes))
    views = [x[(slice(None),) * dim + (slice(lo, hi),)] for lo, hi in zip(bounds, bounds[1:])]

    def step() -> None:
        for out, view in zip(outs, views):
            np.copyto(out, view)

    return step


def reduction(fn):
    def lowering(b: Builder, node: Node) -> Step:
        x, out = unary(b, node)
        a = node.attrs
        axis = None if a.dims is None else tuple(d % x.ndim for d in a.dims)
        return lambda: fn(x, axis=axis, keepdims=a.keepdim, out=out)

    return lowering


for _op, _fn in ((ops.mean, np.mean), (ops.sum_, np.sum), (ops.amax, np.max)):
    lower(_op)(reduction(_fn))


@lower(tensor_ops.amax_grad)
def amax_grad(b: Builder, node: Node) -> Step:
    """``(x == y)·g / count`` in numpy: the maxima of each slice share its gradient evenly
    (torch.amax's rule); the tie mask and the per-slice share live in scratch buffers."""
    x, y, g = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    a = node.attrs
    axes = tuple(range(x.ndim)) if a.dims is None else tuple(sorted({d % x.ndim
                                                                     for d in a.dims}))
    kept = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    y_kept, g_kept = y.reshape(kept), g.reshape(kept)
    ties = b.scratch(x.shape, np.bool_, owner=("amax_grad", node.name))
    share = b.scratch(kept, owner=("amax_grad", node.name))

    def step() -> None:
        np.equal(x, y_kept, out=ties)
        np.sum(ties, axis=axes, keepdims=True, out=share)
        np.divide(g_kept, share, out=share)
        np.multiply(ties, share, out=out)

    return step


@lower(ops.expand)
def expand(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    return lambda: np.copyto(out, x)


@lower(ops.channel_shuffle)
def channel_shuffle(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    g = node.attrs.groups
    n, c = x.shape[:2]
    rest = x.shape[2:]
    src = x.reshape(n, g, c // g, *rest).swapaxes(1, 2)
    dst = out.reshape(n, c // g, g, *rest)
    return lambda: np.copyto(dst, src)


@lower(ops.pad)
def pad(b: Builder, node: Node) -> Step:
    """Constant padding in torch order; negative pads crop."""
    x, out = unary(b, node)
    pads = node.attrs.pads
    src, dst = [slice(None)] * x.ndim, [slice(None)] * x.ndim
    for i in range(len(pads) // 2):
        axis = x.ndim - 1 - i
        lo, hi = pads[2 * i], pads[2 * i + 1]
        src[axis] = slice(max(-lo, 0), x.shape[axis] - max(-hi, 0))
        dst[axis] = slice(max(lo, 0), out.shape[axis] - max(hi, 0))
    src_view, dst_view = x[tuple(src)], out[tuple(dst)]
    value = node.attrs.value

    def step() -> None:
        out.fill(value)
        np.copyto(dst_view, src_view)

    return step


@lower(ops.slice_)
def slice_(b: Builder, node: Node) -> Step:
    """A strided view of the input made at compile time, copied each call."""
    x, out = unary(b, node)
    index = [slice(None)] * x.ndim
    for axis, start, stop, step in tensor_ops.slice_bounds(node.attrs, x.shape):
        index[axis] = slice(start, stop, step)
    view = x[tuple(index)]
    return lambda: np.copyto(out, view)


@lower(ops.gather)
def gather(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    dim, indices = tensor_ops.gather_indices(node.attrs, x.shape)
    index = np.asarray(indices, dtype=np.int64)
    return lambda: np.take(x, index, axis=dim, out=out)


def unary_ufunc(ufunc):
    def lowering(b: Builder, node: Node) -> Step:
        x, out = unary(b, node)
        return lambda: ufunc(x, out=out)

    return lowering


for _op, _ufunc in ((ops.sqrt, np.sqrt), (ops.exp, np.exp), (ops.log, np.log)):
    lower(_op)(unary_ufunc(_ufunc))


@lower(ops.pow_)
def pow_(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    exponent = out.dtype.type(node.attrs.exponent)
    return lambda: np.power(x, exponent, out=out)


@lower(ops.clamp)
def clamp(b: Builder, node: Node) -> Step:
    """``np.clip`` is ``min(max(x, lo), hi)``, torch.clamp's order; NaN stays NaN."""
    x, out = unary(b, node)
    lo, hi = node.attrs.min, node.attrs.max
    return lambda: np.clip(x, lo, hi, out=out)


@lower(ops.compare)
def compare(b: Builder, node: Node) -> Step:
    """The comparison's ufunc writing its booleans into the float output as 1.0/0.0."""
    return binary(tensor_ops.NUMPY_COMPARISONS[node.attrs.kind])(b, node)


@lower(ops.where)
def where(b: Builder, node: Node) -> Step:
    """``other`` everywhere, then ``input`` where the condition is nonzero."""
    cond, x, y = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    mask = b.scratch(cond.shape, np.bool_, owner=("where", node.name))

    def step() -> None:
        np.not_equal(cond, 0, out=mask)
        np.copyto(out, y)
        np.copyto(out, x, where=mask)

    return step
