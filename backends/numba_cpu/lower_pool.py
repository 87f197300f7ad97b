"""Lowerings of the pool family: max, average and adaptive pooling, and interpolate.

Max pooling with equal strides and no dilation is a stencil over phase planes whose borders
are −∞ (``kernels.stencil.max_pool_phases``); any other is separable (rows, then columns).
Interpolation tables (source indices and weights, ``docs/semantics.md``) are computed once at
compile time and applied separably.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.kernels import pool as pk
from cnnir.backends.numba_cpu.kernels import stencil as sk
from cnnir.backends.numba_cpu.lower_conv import phase_scratch, window_of
from cnnir.backends.numba_cpu.program import lower, unary
from cnnir.ir import Node


@lower(ops.max_pool2d)
def max_pool2d(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    a = node.attrs
    taps = a.kernel_size[0] * a.kernel_size[1]
    if a.dilation == (1, 1) and a.stride[0] == a.stride[1]:
        phases, acc = phase_scratch(b, a, x, a.kernel_size, out, -np.inf)
        (kh, kw), stride, (pad_top, pad_left) = a.kernel_size, a.stride[0], a.padding
        kernel = sk.max_pool_phases.sized(out.size * taps)
        return b.choose(node, {"max-pool-phases": lambda: kernel(
            x, out, kh, kw, stride, pad_top, pad_left, phases, acc)})
    window = window_of(a, a.kernel_size)
    separable = pk.max_pool.sized(out.size * taps)
    return b.choose(node, {"max-pool-separable": lambda: separable(x, out, window)})


@lower(ops.avg_pool2d)
def avg_pool2d(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    a = node.attrs
    window = window_of(a, a.kernel_size)
    kernel = pk.avg_pool.sized(out.size * a.kernel_size[0] * a.kernel_size[1])
    divisor = a.divisor_override or 0
    return lambda: kernel(x, out, window, a.count_include_pad, divisor)


def adaptive_step(b: Builder, node: Node, is_max: bool) -> Step:
    x, out = unary(b, node)
    kernel = pk.adaptive_pool.sized(x.size)
    return lambda: kernel(x, out, is_max)


lower(ops.adaptive_avg_pool2d)(lambda b, node: adaptive_step(b, node, is_max=False))
lower(ops.adaptive_max_pool2d)(lambda b, node: adaptive_step(b, node, is_max=True))


def source_index_table(attrs, axis: int, in_len: int,
                       out_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the two source indices and the weight of the second (§1.10)."""
    scale = attrs.scale_factor
    if scale is not None and attrs.recompute_scale_factor is not True:
        sc = 1.0 / scale[axis]
    else:
        sc = in_len / out_len
    dst = np.arange(out_len, dtype=np.float64)
    if attrs.mode == "nearest":
        src = np.minimum(np.floor(dst * sc), in_len - 1)
        return src.astype(np.int64), src.astype(np.int64), np.zeros(out_len)
    if attrs.mode == "nearest-exact":
        src = np.minimum(np.floor((dst + 0.5) * sc), in_len - 1)
        return src.astype(np.int64), src.astype(np.int64), np.zeros(out_len)
    if attrs.align_corners:
        src = dst * ((in_len - 1) / (out_len - 1)) if out_len > 1 else np.zeros(out_len)
    else:
        src = np.maximum(sc * (dst + 0.5) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = i0 + (i0 < in_len - 1)
    return i0, i1, src - i0


@lower(ops.interpolate)
def interpolate(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    h0, h1, lh = source_index_table(node.attrs, 0, x.shape[2], out.shape[2])
    w0, w1, lw = source_index_table(node.attrs, 1, x.shape[3], out.shape[3])
    lh, lw = lh.astype(b.dtype), lw.astype(b.dtype)
    resample = pk.resample.sized(out.size)
    return lambda: resample(x, out, h0, h1, lh, w0, w1, lw)
