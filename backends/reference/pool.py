"""Reference pooling and resampling (docs/semantics.md §1.7–§1.10).

Output size per axis (max and avg pool, d = 1 for avg):
    out = ⌊(L + 2p − d(k−1) − 1 + (ceil ? s−1 : 0))/s⌋ + 1, minus 1 in ceil mode when the
    last window would start in the right padding ((out−1)·s ≥ L + p).
max_pool2d: padding acts as −∞ and NaN propagates (np.maximum).
avg_pool2d (ATen): h0 = oh·s − p, h1 = min(h0 + k, L + p), pool_size = (h1 − h0)(w1 − w0)
    before clipping to the image, divisor = divisor_override or (count_include_pad ?
    pool_size : clipped window area).
adaptive pools: cell i covers [⌊i·L/out⌋, ⌈(i+1)·L/out⌉).
interpolate: size or ⌊L·scale⌋; coordinate scale sc = 1/scale_factor when a scale factor is
    given and recompute_scale_factor is not True, else L_in/L_out; nearest
    src = min(⌊dst·sc⌋, L_in − 1); nearest-exact src = min(⌊(dst + ½)·sc⌋, L_in − 1); bilinear
    src = max(sc(dst + ½) − ½, 0), or dst(L_in − 1)/(L_out − 1) with align_corners, blended
    between x[i0] and x[i0 + (i0 < L_in − 1)], H then W.

Gradients (docs/semantics.md §3), written from the rules rather than from the Numba kernels:
max pools send each window's gradient to its first maximum in row-major window order (strict
>), never to padding, and to its first NaN when there is one; avg_pool2d adds gy/divisor to the
window's pixels inside the image; adaptive avg adds gy/window size to its cells; interpolate
scatter-adds gy to the source pixels with the forward's weights (both weights land on one pixel
at the clamped edge), W then H.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnir import ops
from cnnir.backends.reference.conv import pad_spatial, taps
from cnnir.backends.reference.runtime import Context, kernel
from cnnir.ops import pool as pool_ops
from cnnir.ops.pool import (
    AdaptivePoolAttrs,
    AdaptivePoolGradAttrs,
    AvgPoolAttrs,
    AvgPoolGradAttrs,
    InterpolateAttrs,
    InterpolateGradAttrs,
    PoolAttrs,
)


def pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_geometry(a: PoolAttrs, x: np.ndarray | tuple[int, ...],
                   ) -> tuple[tuple[int, int], tuple[int, ...]]:
    """Output size and the (top, left, bottom, right) padding that makes every window,
    including ceil-mode windows hanging past the padding, fit in the padded input ``x`` (an
    array or its shape)."""
    shape = x if isinstance(x, tuple) else x.shape
    out, after = [], []
    for axis in range(2):
        size, k, s = shape[2 + axis], a.kernel_size[axis], a.stride[axis]
        p, d = a.padding[axis], a.dilation[axis]
        n = pool_out_size(size, k, s, p, d, a.ceil_mode)
        out.append(n)
        after.append(max(0, (n - 1) * s + d * (k - 1) + 1 - size - p))
    return (out[0], out[1]), (a.padding[0], a.padding[1], after[0], after[1])


@kernel(ops.max_pool2d)
def max_pool2d(ctx: Context, a: PoolAttrs, x: np.ndarray) -> np.ndarray:
    out_hw, pads = _pool_geometry(a, x)
    cols = taps(pad_spatial(x, pads, -np.inf), a.kernel_size, a.stride, a.dilation, out_hw)
    return cols.max(axis=(2, 3))


def avg_divisor_1d(size: int, out: int, k: int, s: int, p: int,
                   include_pad: bool) -> np.ndarray:
    """Per output index: the window length counted by ATen along one axis."""
    h0 = np.arange(out) * s - p
    h1 = np.minimum(h0 + k, size + p)
    if include_pad:
        return h1 - h0
    return np.minimum(h1, size) - np.maximum(h0, 0)


@kernel(ops.avg_pool2d)
def avg_pool2d(ctx: Context, a: AvgPoolAttrs, x: np.ndarray) -> np.ndarray:
    out_hw, pads = _pool_geometry(a, x)
    cols = taps(pad_spatial(x, pads, 0.0), a.kernel_size, a.stride, a.dilation, out_hw)
    return cols.sum(axis=(2, 3)) / _avg_divisors(a, x.shape, out_hw)


def _avg_divisors(a: AvgPoolAttrs, shape: tuple[int, ...], out_hw: tuple[int, int]) -> Any:
    """The divisor per output position: divisor_override, or ATen's window counts."""
    if a.divisor_override is not None:
        return a.divisor_override
    rows, columns = (
        avg_divisor_1d(shape[2 + i], out_hw[i], a.kernel_size[i], a.stride[i], a.padding[i],
                       a.count_include_pad)
        for i in range(2)
    )
    return np.outer(rows, columns)


def untaps(cols: np.ndarray, shape: tuple[int, ...], pads: tuple[int, ...],
           stride: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """The transpose of ``taps``: each ``cols[n, c, i, j, oh, ow]`` added back at
    ``(oh·s_h + i·d_h, ow·s_w + j·d_w)`` of the padded canvas, then the padding cropped."""
    top, left, bottom, right = pads
    (sh, sw), (dh, dw) = stride, dilation
    _, _, kh, kw, oh, ow = cols.shape
    canvas = np.zeros((*shape[:2], shape[2] + top + bottom, shape[3] + left + right))
    for i in range(kh):
        for j in range(kw):
            canvas[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                   j * dw:j * dw + sw * (ow - 1) + 1:sw] += cols[:, :, i, j]
    return canvas[:, :, top:top + shape[2], left:left + shape[3]]


def first_max_onehot(cols: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    """1.0 at each window's chosen tap along ``axis``: the first NaN if the window has one,
    else the first valid tap equal to the window's maximum; 0.0 elsewhere."""
    values = np.where(valid, cols, -np.inf)
    best = np.max(values, axis=axis, keepdims=True)  # NaN when the window has one
    hit = valid & ((values == best) | np.isnan(values))
    first = np.argmax(hit, axis=axis)  # the first True
    index = np.arange(cols.shape[axis]).reshape((-1,) + (1,) * (cols.ndim - axis - 1))
    return (index == np.expand_dims(first, axis)).astype(np.float64)


@kernel(pool_ops.max_pool2d_grad)
def max_pool2d_grad(ctx: Context, a: PoolAttrs, x: np.ndarray, gy: np.ndarray) -> np.ndarray:
    out_hw, pads = _pool_geometry(a, x)
    cols = taps(pad_spatial(x, pads, 0.0), a.kernel_size, a.stride, a.dilation, out_hw)
    valid = taps(pad_spatial(np.ones((1, 1, *x.shape[2:]), bool), pads, False),
                 a.kernel_size, a.stride, a.dilation, out_hw)
    n, c, kh, kw, oh, ow = cols.shape
    onehot = first_max_onehot(cols.reshape(n, c, kh * kw, oh, ow),
                              valid.reshape(1, 1, kh * kw, oh, ow), axis=2)
    routed = (onehot * gy[:, :, None]).reshape(cols.shape)
    return untaps(routed, x.shape, pads, a.stride, a.dilation)


@kernel(pool_ops.avg_pool2d_grad)
def avg_pool2d_grad(ctx: Context, a: AvgPoolGradAttrs, gy: np.ndarray) -> np.ndarray:
    shape = (*gy.shape[:2], *(ctx.dim(d) for d in a.input_size))
    out_hw, pads = _pool_geometry(a, shape)
    share = gy / _avg_divisors(a, shape, out_hw)
    cols = np.broadcast_to(share[:, :, None, None], (*gy.shape[:2], *a.kernel_size, *out_hw))
    return untaps(cols, shape, pads, a.stride, a.dilation)


def adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    """Cell i covers ``[⌊i·L/out⌋, ⌈(i+1)·L/out⌉)``."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _adaptive(a: AdaptivePoolAttrs, x: np.ndarray, reduce: str) -> np.ndarray:
    oh, ow = (x.shape[2 + i] if s is None else s for i, s in enumerate(a.output_size))
    y = np.empty((*x.shape[:2], oh, ow), dtype=x.dtype)
    for i, (h0, h1) in enumerate(adaptive_bounds(x.shape[2], oh)):
        for j, (w0, w1) in enumerate(adaptive_bounds(x.shape[3], ow)):
            window = x[:, :, h0:h1, w0:w1]
            y[:, :, i, j] = window.mean(axis=(2, 3)) if reduce == "mean" else window.max((2, 3))
    return y


@kernel(ops.adaptive_avg_pool2d)
def adaptive_avg_pool2d(ctx: Context, a: AdaptivePoolAttrs, x: np.ndarray) -> np.ndarray:
    return _adaptive(a, x, "mean")


@kernel(ops.adaptive_max_pool2d)
def adaptive_max_pool2d(ctx: Context, a: AdaptivePoolAttrs, x: np.ndarray) -> np.ndarray:
    return _adaptive(a, x, "max")


@kernel(pool_ops.adaptive_avg_pool2d_grad)
def adaptive_avg_pool2d_grad(ctx: Context, a: AdaptivePoolGradAttrs,
                             gy: np.ndarray) -> np.ndarray:
    height, width = (ctx.dim(d) for d in a.input_size)
    gx = np.zeros((*gy.shape[:2], height, width))
    for i, (h0, h1) in enumerate(adaptive_bounds(height, gy.shape[2])):
        for j, (w0, w1) in enumerate(adaptive_bounds(width, gy.shape[3])):
            gx[:, :, h0:h1, w0:w1] += gy[:, :, i, j, None, None] / ((h1 - h0) * (w1 - w0))
    return gx


@kernel(pool_ops.adaptive_max_pool2d_grad)
def adaptive_max_pool2d_grad(ctx: Context, a: AdaptivePoolAttrs, x: np.ndarray,
                             gy: np.ndarray) -> np.ndarray:
    gx = np.zeros(x.shape)
    for i, (h0, h1) in enumerate(adaptive_bounds(x.shape[2], gy.shape[2])):
        for j, (w0, w1) in enumerate(adaptive_bounds(x.shape[3], gy.shape[3])):
            window = x[:, :, h0:h1, w0:w1].reshape(*x.shape[:2], -1)
            onehot = first_max_onehot(window, np.ones(window.shape[2], bool), axis=2)
            gx[:, :, h0:h1, w0:w1] += (onehot * gy[:, :, i, j, None]).reshape(
                *x.shape[:2], h1 - h0, w1 - w0)
    return gx


def interpolate_out_size(a: InterpolateAttrs, size: int, axis: int) -> int:
    return a.size[axis] if a.size is not None else math.floor(size * a.scale_factor[axis])


def coordinate_scale(a: InterpolateAttrs, size_in: int, size_out: int, axis: int) -> float:
    """The ``sc`` of §1.10: 1/scale_factor unless sizes are given or recomputed."""
    if a.scale_factor is not None and a.recompute_scale_factor is not True:
        return 1.0 / a.scale_factor[axis]
    return size_in / size_out


def source_indices(a: InterpolateAttrs, size_in: int, size_out: int,
                   axis: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per output index along ``axis``: the source index i0, and for bilinear the second
    index i1 and its weight λ (None for the nearest modes)."""
    sc = coordinate_scale(a, size_in, size_out, axis)
    dst = np.arange(size_out, dtype=np.float64)
    if a.mode in ("nearest", "nearest-exact"):
        shift = 0.5 if a.mode == "nearest-exact" else 0.0
        return np.minimum(np.floor((dst + shift) * sc).astype(np.int64), size_in - 1), None, None
    if a.align_corners:
        src = dst * (size_in - 1) / (size_out - 1) if size_out > 1 else np.zeros(size_out)
    else:
        src = np.maximum(sc * (dst + 0.5) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    return i0, i0 + (i0 < size_in - 1), src - i0


def _resample_axis(a: InterpolateAttrs, x: np.ndarray, axis: int) -> np.ndarray:
    size_in = x.shape[2 + axis]
    i0, i1, lam = source_indices(a, size_in, interpolate_out_size(a, size_in, axis), axis)
    if lam is None:
        return np.take(x, i0, axis=2 + axis)
    lam = lam.reshape((-1, 1) if axis == 0 else (-1,)).astype(x.dtype)
    return (1 - lam) * np.take(x, i0, axis=2 + axis) + lam * np.take(x, i1, axis=2 + axis)


def _scatter_axis(a: InterpolateAttrs, g: np.ndarray, size_in: int, axis: int) -> np.ndarray:
    """The transpose of ``_resample_axis``: ``g[..., dst, ...]`` added to the source rows (or
    columns), times λ or 1 − λ for bilinear."""
    i0, i1, lam = source_indices(a, size_in, g.shape[2 + axis], axis)
    shape = list(g.shape)
    shape[2 + axis] = size_in
    out = np.zeros(shape)
    lead = (slice(None),) * (2 + axis)
    if lam is None:
        np.add.at(out, (*lead, i0), g)
        return out
    lam = lam.reshape((-1, 1) if axis == 0 else (-1,))
    np.add.at(out, (*lead, i0), (1 - lam) * g)
    np.add.at(out, (*lead, i1), lam * g)
    return out


@kernel(ops.interpolate)
def interpolate(ctx: Context, a: InterpolateAttrs, x: np.ndarray) -> np.ndarray:
    return _resample_axis(a, _resample_axis(a, x, 0), 1)


@kernel(pool_ops.interpolate_grad)
def interpolate_grad(ctx: Context, a: InterpolateGradAttrs, gy: np.ndarray) -> np.ndarray:
    height, width = (ctx.dim(d) for d in a.input_size)
    return _scatter_axis(a, _scatter_axis(a, gy, width, 1), height, 0)
