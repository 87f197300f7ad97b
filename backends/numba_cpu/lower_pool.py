"""Lowerings of the pool family: max, average and adaptive pooling, and interpolate.

Max pooling with equal strides and no dilation is 2×2 tiles, a stencil over phase planes
whose borders are −∞ (``kernels.stencil.max_pool_phases``) or rows on vectors
(``kernels.stencil.max_pool_rows``), by timing among those that may win
(``max_pool_candidates``); any other is separable (rows, then columns).
Interpolation tables (source indices and weights, ``docs/semantics.md``) are computed once at
compile time and applied separably.

The backward ops (``*_grad``) are one kernel each, parallel over (image, channel) planes of
the input gradient (max pool's over pairs of input rows when its 2×2 windows tile the image,
float32); interpolate's reuses the forward's tables, transposed.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.kernels import blocked as bk
from cnnir.backends.numba_cpu.kernels import gemm as gk
from cnnir.backends.numba_cpu.kernels import pool as pk
from cnnir.backends.numba_cpu.kernels import simd
from cnnir.backends.numba_cpu.kernels import stencil as sk
from cnnir.backends.numba_cpu.kernels.host import HOST
from cnnir.backends.numba_cpu.kernels.jit import bound
from cnnir.backends.numba_cpu.lower_conv import phase_scratch, window_of
from cnnir.backends.numba_cpu.program import lower, unary
from cnnir.ir import Node
from cnnir.ops import pool as pool_ops


@lower(ops.max_pool2d)
def max_pool2d(b: Builder, node: Node) -> Step | None:
    if node.name in b.taken_over:  # the convolution it reads made its step, or the pair's
        return b.taken_over.pop(node.name)
    x, out = unary(b, node)
    a = node.attrs
    taps = a.kernel_size[0] * a.kernel_size[1]
    if a.dilation == (1, 1) and a.stride[0] == a.stride[1]:
        makers = {"max-pool-2x2": lambda: max_pool_2x2_step(x, out),
                  "max-pool-phases": lambda: max_pool_phases_step(b, a, x, out),
                  "max-pool-rows": lambda: max_pool_rows_step(b, a, x, out)}
        return b.choose_among(node, {name: makers[name] for name in
                                     max_pool_candidates(b, a, x.shape[2:], out.shape[2:])})
    window = window_of(a, a.kernel_size)
    separable = pk.max_pool.sized(out.size * taps)
    return b.choose(node, {"max-pool-separable": lambda: separable(x, out, window)})


def max_pool_candidates(b: Builder, a, in_hw: tuple[int, ...],
                        out_hw: tuple[int, ...]) -> list[str]:
    """The max-pool algorithms worth timing for these windows (a name ``tune`` forces is
    always among them). Each is a few kernels to compile (the phase planes' took 1.7 s of
    Numba time in ResNet-18's cold compile), so the clear losers are left out, as measured
    (µs, 2-core Zen 4; the AVX2 path is code for an AVX2 CPU on the same machine):

    - 2×2 windows tiling the image: ``max-pool-2x2`` 7–32, against 41–256 for the others;
    - the AVX2 path: rows 29–170, against 62–624 for phase planes, on every geometry tried;
    - AVX-512, stride 2 with output rows of two vectors or more: rows (64×112² → 56², 3×3:
      88–111 against 163–214; at batch 8, 844 against 2,236); on shorter rows or stride 1
      phase planes often win (192×28², 3×3/1: 103–170 against 155–274), so both are timed.
    """
    float32 = b.dtype == np.float32
    tiled = float32 and tiles_2x2(a, in_hw, out_hw)
    rows_win = float32 and (HOST.isa == "avx2" or (a.stride[0] >= 2
                                                   and out_hw[1] >= 2 * simd.LANES))
    names = []
    if tiled:
        names.append("max-pool-2x2")
    if (not tiled and not rows_win) or b.tune == "max-pool-phases":
        names.append("max-pool-phases")
    if float32 and (not tiled or b.tune == "max-pool-rows"):
        names.append("max-pool-rows")
    return names


def max_pool_2x2_step(x: np.ndarray, out: np.ndarray) -> Step:
    """2×2 windows of stride 2 tiling the image (``pk.max_pool_2x2``)."""
    kernel = pk.max_pool_2x2.sized(x.size)
    return bound(kernel, x, out)


def max_pool_phases_step(b: Builder, a, x: np.ndarray, out: np.ndarray) -> Step:
    """Max pool as a stencil over phase planes with −∞ borders (``sk.max_pool_phases``)."""
    phases, acc = phase_scratch(b, a, x, a.kernel_size, out, -np.inf)
    (kh, kw), stride, (pad_top, pad_left) = a.kernel_size, a.stride[0], a.padding
    kernel = sk.max_pool_phases.sized(out.size * kh * kw)
    return bound(kernel, x, out, kh, kw, stride, pad_top, pad_left, phases, acc)


def max_pool_rows_step(b: Builder, a, x: np.ndarray, out: np.ndarray) -> Step:
    """Max pool row by row on vectors (``sk.max_pool_rows``), from each thread's row with −∞
    borders."""
    (kh, kw), stride, (pad_top, pad_left) = a.kernel_size, a.stride[0], a.padding
    length = sk.max_pool_row_length(x.shape[3], out.shape[3], kw, stride, pad_left)
    rows = b.scratch((gk.THREADS, gk.own_lines(length)),
                     owner=("max-pool-rows", pad_left, x.shape[3]))
    rows.fill(-np.inf)
    window = (kh, kw, stride, pad_top, pad_left)
    kernel = sk.max_pool_rows.sized(out.size * kh * kw)
    return bound(kernel, x, out, window, rows)


@lower(ops.avg_pool2d)
def avg_pool2d(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    a = node.attrs
    window = window_of(a, a.kernel_size)
    kernel = pk.avg_pool.sized(out.size * a.kernel_size[0] * a.kernel_size[1])
    divisor = a.divisor_override or 0
    return bound(kernel, x, out, window, a.count_include_pad, divisor)


@lower(pool_ops.max_pool2d_grad)
def max_pool2d_grad(b: Builder, node: Node) -> Step:
    x, gy = (b.array(v) for v in node.inputs)
    gx, a = b.array(node.output), node.attrs
    if b.dtype == np.float32 and tiles_2x2(a, x.shape[2:], gy.shape[2:]):
        codes = b.scratch((gk.THREADS, gk.own_lines(gy.shape[3])), owner="max-pool-grad-codes")
        tiled = pk.max_pool_grad_2x2.sized(x.size)
        return lambda: tiled(x, gy, gx, codes)
    kernel = pk.max_pool_grad.sized(gy.size * a.kernel_size[0] * a.kernel_size[1])
    window = window_of(a, a.kernel_size)
    rows, cols = (inside_taps(gy.shape[2 + i], a.stride[i], a.padding[i], a.dilation[i],
                              a.kernel_size[i], x.shape[2 + i]) for i in range(2))
    rows, cols = _ranges(rows), _ranges(cols)
    return lambda: kernel(x, gy, gx, window, rows, cols)


def tiles_2x2(a, in_hw: tuple[int, ...], out_hw: tuple[int, ...]) -> bool:
    """Whether the pooling windows are 2×2 of stride 2 covering the image exactly once."""
    return (tuple(a.kernel_size) == tuple(a.stride) == (2, 2) and not any(a.padding)
            and tuple(a.dilation) == (1, 1) and all(2 * o == n for o, n in zip(out_hw, in_hw)))


def inside_taps(out_len: int, s: int, p: int, d: int, k: int, in_len: int) -> np.ndarray:
    """``[o, j]``: whether tap j of output o, at ``o·s − p + j·d``, is inside the input."""
    taps = (np.arange(out_len) * s - p)[:, None] + np.arange(k) * d
    return (taps >= 0) & (taps < in_len)


def _ranges(inside: np.ndarray) -> np.ndarray:
    """``[lo, hi)`` of the True entries of each row (they are contiguous), [0, 0) if none."""
    lo = np.where(inside.any(1), inside.argmax(1), 0)
    return np.stack([lo, lo + inside.sum(1)], axis=1).astype(np.int64)


@lower(pool_ops.avg_pool2d_grad)
def avg_pool2d_grad(b: Builder, node: Node) -> Step:
    gy, gx, a = b.array(node.inputs[0]), b.array(node.output), node.attrs
    kernel = pk.avg_pool_grad.sized(gy.size * a.kernel_size[0] * a.kernel_size[1])
    window = window_of(a, a.kernel_size)
    divisor = a.divisor_override or 0
    return lambda: kernel(gy, gx, window, a.count_include_pad, divisor)


def adaptive_step(b: Builder, node: Node, is_max: bool) -> Step:
    x, out = unary(b, node)
    if id(node.inputs[0]) in b.blocked:
        return bound(bk.global_pool_blocked.over(x.shape[0] * x.shape[1]), x, out, is_max)
    kernels = pk.global_pool if out.shape[2:] == (1, 1) else pk.adaptive_pool
    kernel = kernels.sized(x.size)
    return bound(kernel, x, out, is_max)


lower(ops.adaptive_avg_pool2d)(lambda b, node: adaptive_step(b, node, is_max=False))
lower(ops.adaptive_max_pool2d)(lambda b, node: adaptive_step(b, node, is_max=True))


def adaptive_grad_step(b: Builder, node: Node, is_max: bool) -> Step:
    gy, gx = b.array(node.inputs[-1]), b.array(node.output)
    x = b.array(node.inputs[0]) if is_max else gx  # the average's gradient never reads x
    kernel = pk.adaptive_pool_grad.sized(gx.size)
    return lambda: kernel(x, gy, gx, is_max)


lower(pool_ops.adaptive_avg_pool2d_grad)(lambda b, node: adaptive_grad_step(b, node, is_max=False))
lower(pool_ops.adaptive_max_pool2d_grad)(lambda b, node: adaptive_grad_step(b, node, is_max=True))


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
    if node.attrs.mode != "bilinear":
        nearest = pk.resample_nearest.sized(out.size)
        return bound(nearest, x, out, h0, w0)
    lh, lw = lh.astype(b.dtype), lw.astype(b.dtype)
    resample = pk.resample.sized(out.size)
    return bound(resample, x, out, h0, h1, lh, w0, w1, lw)


@lower(pool_ops.interpolate_grad)
def interpolate_grad(b: Builder, node: Node) -> Step:
    gy, gx = b.array(node.inputs[0]), b.array(node.output)
    h0, h1, lh = source_index_table(node.attrs, 0, gx.shape[2], gy.shape[2])
    w0, w1, lw = source_index_table(node.attrs, 1, gx.shape[3], gy.shape[3])
    if node.attrs.mode != "bilinear":
        nearest = pk.nearest_grad.sized(gy.size)
        return lambda: nearest(gy, gx, h0, w0)
    lh, lw = lh.astype(b.dtype), lw.astype(b.dtype)
    rows = b.scratch((gk.THREADS, gk.own_lines(gx.shape[3])), owner="resample-grad-rows")
    scatter = pk.resample_grad.sized(gy.size)
    return lambda: scatter(gy, gx, h0, h1, lh, w0, w1, lw, rows)
