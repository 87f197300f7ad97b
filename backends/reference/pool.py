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
"""

from __future__ import annotations

import math

import numpy as np

from cnnir import ops
from cnnir.backends.reference.conv import pad_spatial, taps
from cnnir.backends.reference.runtime import Context, kernel
from cnnir.ops.pool import AdaptivePoolAttrs, AvgPoolAttrs, InterpolateAttrs, PoolAttrs


def pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_geometry(a: PoolAttrs, x: np.ndarray) -> tuple[tuple[int, int], tuple[int, ...]]:
    """Output size and the (top, left, bottom, right) padding that makes every window,
    including ceil-mode windows hanging past the padding, fit in the padded input."""
    out, after = [], []
    for axis in range(2):
        size, k, s = x.shape[2 + axis], a.kernel_size[axis], a.stride[axis]
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
    total = cols.sum(axis=(2, 3))
    if a.divisor_override is not None:
        return total / a.divisor_override
    rows, columns = (
        avg_divisor_1d(x.shape[2 + i], out_hw[i], a.kernel_size[i], a.stride[i], a.padding[i],
                       a.count_include_pad)
        for i in range(2)
    )
    return total / np.outer(rows, columns)


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


def interpolate_out_size(a: InterpolateAttrs, size: int, axis: int) -> int:
    return a.size[axis] if a.size is not None else math.floor(size * a.scale_factor[axis])


def coordinate_scale(a: InterpolateAttrs, size_in: int, size_out: int, axis: int) -> float:
    """The ``sc`` of §1.10: 1/scale_factor unless sizes are given or recomputed."""
    if a.scale_factor is not None and a.recompute_scale_factor is not True:
        return 1.0 / a.scale_factor[axis]
    return size_in / size_out


def _resample_axis(a: InterpolateAttrs, x: np.ndarray, axis: int) -> np.ndarray:
    size_in = x.shape[2 + axis]
    size_out = interpolate_out_size(a, size_in, axis)
    sc = coordinate_scale(a, size_in, size_out, axis)
    dst = np.arange(size_out, dtype=np.float64)
    if a.mode in ("nearest", "nearest-exact"):
        shift = 0.5 if a.mode == "nearest-exact" else 0.0
        src = np.minimum(np.floor((dst + shift) * sc).astype(np.int64), size_in - 1)
        return np.take(x, src, axis=2 + axis)
    if a.align_corners:
        src = dst * (size_in - 1) / (size_out - 1) if size_out > 1 else np.zeros(size_out)
    else:
        src = np.maximum(sc * (dst + 0.5) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = i0 + (i0 < size_in - 1)
    lam = (src - i0).reshape((-1, 1) if axis == 0 else (-1,)).astype(x.dtype)
    return (1 - lam) * np.take(x, i0, axis=2 + axis) + lam * np.take(x, i1, axis=2 + axis)


@kernel(ops.interpolate)
def interpolate(ctx: Context, a: InterpolateAttrs, x: np.ndarray) -> np.ndarray:
    return _resample_axis(a, _resample_axis(a, x, 0), 1)
