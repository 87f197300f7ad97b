"""Elementwise kernels: activations and the fused epilogue of conv/linear/batch-norm.

Activation codes (``ACT``) select a branch *outside* each element loop so every loop stays a
straight, vectorizable pass. The epilogue computes ``act(scale[c]·src + shift[c] (+ res))``
over ``[N, C, P]`` views in one memory pass: a conv's bias, a folded BatchNorm, a residual add
and the activation, written where the output is produced.
"""

from __future__ import annotations

import math

import numpy as np

from cnnir.backends.numba_cpu.jit import helper, kernel, prange, tile_kernel

ACT = {"none": 0, "relu": 1, "relu6": 2, "leaky_relu": 3, "elu": 4, "sigmoid": 5, "tanh": 6,
       "silu": 7, "hardsigmoid": 8, "hardswish": 9, "gelu": 10, "gelu_tanh": 11, "rrelu": 3}


@helper
def act_row(row, code, alpha):
    """Apply activation ``code`` in place to a 1-D row."""
    n = row.shape[0]
    # selects ordered so that NaN falls through unchanged: no NaN test, so loops vectorize
    if code == 1:
        for i in range(n):
            v = row[i]
            row[i] = 0.0 if v < 0 else v
    elif code == 2:
        for i in range(n):
            v = row[i]
            row[i] = 0.0 if v < 0 else (6.0 if v > 6.0 else v)
    elif code == 3:
        for i in range(n):
            v = row[i]
            row[i] = v if v > 0 else v * alpha
    elif code == 4:
        for i in range(n):
            v = row[i]
            row[i] = v if v > 0 else alpha * (math.exp(v) - 1.0)
    elif code == 5:
        for i in range(n):
            row[i] = 1.0 / (1.0 + math.exp(-row[i]))
    elif code == 6:
        for i in range(n):
            row[i] = math.tanh(row[i])
    elif code == 7:
        for i in range(n):
            v = row[i]
            row[i] = v / (1.0 + math.exp(-v))
    elif code == 8:
        for i in range(n):
            u = row[i] + 3.0
            row[i] = (0.0 if u < 0 else (6.0 if u > 6.0 else u)) / 6.0
    elif code == 9:
        for i in range(n):
            v = row[i]
            u = v + 3.0
            row[i] = v * (0.0 if u < 0 else (6.0 if u > 6.0 else u)) / 6.0
    elif code == 10:
        for i in range(n):
            v = row[i]
            row[i] = 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))
    elif code == 11:
        for i in range(n):
            v = row[i]
            row[i] = 0.5 * v * (1.0 + math.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)))


@helper
def clamp_bounds(code):
    """The (lo, hi) clamp of the micro-kernel for activation ``code``: exact for none, ReLU
    and ReLU6; other activations run afterwards on the stored rows."""
    if code == 1:
        return np.float32(0.0), np.float32(np.inf)
    if code == 2:
        return np.float32(0.0), np.float32(6.0)
    return np.float32(-np.inf), np.float32(np.inf)


@helper
def finish_flat(out, d, src, s0, count, scale, shift, res, has_res, lo, hi):
    """``out[d + i] = clamp(scale·src[s0 + i] + shift (+ res[d + i]), lo, hi)`` for i < count,
    on flat arrays with unsigned indices (no per-row slices): the epilogue of a stencil or
    transform row. The clamp (``clamp_bounds``) keeps NaN; other activations run afterwards."""
    dst, first = np.uint64(d), np.uint64(s0)
    if has_res:
        for i in range(count):
            u = np.uint64(i)
            v = src[first + u] * scale + shift + res[dst + u]
            v = lo if v < lo else v
            out[dst + u] = hi if v > hi else v
    else:
        for i in range(count):
            u = np.uint64(i)
            v = src[first + u] * scale + shift
            v = lo if v < lo else v
            out[dst + u] = hi if v > hi else v


@helper
def finish_row(row, src, s, b, res, has_res, code, alpha):
    """``row = act(s·src + b (+ res))``: the epilogue of one output row (src may be row)."""
    if has_res:
        for i in range(row.shape[0]):
            row[i] = src[i] * s + b + res[i]
    else:
        for i in range(row.shape[0]):
            row[i] = src[i] * s + b
    act_row(row, code, alpha)


@kernel
def activation(x, out, code, alpha):
    """``out = act(x)`` over flat, contiguous arrays, in parallel chunks."""
    n = x.shape[0]
    chunk = 16384
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(n, lo + chunk)
        row = out[lo:hi]
        row[:] = x[lo:hi]
        act_row(row, code, alpha)


@kernel
def epilogue(src, scale, shift, res, has_res, out, code, alpha):
    """``out[n, c, :] = act(scale[c]·src[n, c, :] + shift[c] (+ res[n, c, :]))``, 3-D views."""
    n_img, channels = out.shape[0], out.shape[1]
    for t in prange(n_img * channels):
        n = t // channels
        c = t % channels
        finish_row(out[n, c], src[n, c], scale[c], shift[c], res[n, c] if has_res else res[0, 0],
                   has_res, code, alpha)


@tile_kernel
def epilogue_tile(plane, o0, o1, p0, p1, scale, shift, res, has_res, code, alpha):
    """In place on a tile of a contiguous [C, P] plane, channels [o0, o1) × columns [p0, p1):
    ``plane[c, p] = act(scale[c]·plane[c, p] + shift[c] (+ res[c, p]))``. Taking the whole
    plane plus offsets (not a strided view) keeps every row contiguous for Numba, so the
    loops vectorize."""
    for c in range(o0, o1):
        row = plane[c, p0:p1]
        finish_row(row, row, scale[c], shift[c], res[c, p0:p1] if has_res else res[0, 0:1],
                   has_res, code, alpha)


@kernel
def slopes(x, out, slope, per_channel):
    """PReLU and training-mode RReLU: ``x > 0 ? x : a·x`` with a per-channel or per-element a.
    ``x``/``out`` are [N, C, P]; ``slope`` is [C] (per_channel) or [N, C, P] flattened."""
    n_img, channels, p = x.shape
    for t in prange(n_img * channels):
        n = t // channels
        c = t % channels
        for i in range(p):
            v = x[n, c, i]
            a = slope[c] if per_channel else slope[(n * channels + c) * p + i]
            out[n, c, i] = v if v > 0 else v * a


def dummy(dtype: np.dtype) -> np.ndarray:
    """A placeholder for an absent residual (kernels take arrays, not None)."""
    return np.zeros((1, 1, 1), dtype)
