"""Elementwise kernels: activations, and the epilogue of conv/linear/batch-norm kernels.

Activation codes (``Act``) select a branch *outside* each element loop so every loop stays a
straight, vectorizable pass. The epilogue ``ep = (scale, shift, res, has_res, code, alpha)``
(``epilogue.Epilogue.args``) computes ``act(scale[c]·src + shift[c] (+ res))`` in one memory
pass; ``res`` is flat and indexed like the flat output. The clamps (NONE, RELU, RELU6) are
applied with the affine part; any other activation runs as a second pass over the rows just
written, while they are in cache (``activate_flat``).
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np

from cnnir.backends.numba_cpu.kernels.jit import (
    helper,
    job_count,
    job_items,
    kernel,
    prange,
    run_jobs,
    tile_kernel,
)


class Act(IntEnum):
    """The kernels' activation codes. NONE, RELU and RELU6 come first: up to ``LAST_CLAMP`` an
    activation is a clamp (``clamp_bounds``), which the GEMM micro-kernel applies in
    registers; later ones run as a pass over the stored rows (``act_row``)."""

    NONE = 0
    RELU = 1
    RELU6 = 2
    LEAKY_RELU = 3
    ELU = 4
    SIGMOID = 5
    TANH = 6
    SILU = 7
    HARDSIGMOID = 8
    HARDSWISH = 9
    GELU = 10
    GELU_TANH = 11
    ABS = 12


LAST_CLAMP = Act.RELU6
SQRT_HALF = 0.7071067811865476
SQRT_2_OVER_PI = 0.7978845608028654
INV_SQRT_2PI = 0.3989422804014327


@tile_kernel
def act_row(row, code, alpha):
    """Apply activation ``code`` in place to a 1-D row. A called function, not inlined: its
    twelve vectorized loops, copied into every kernel with an epilogue, made up much of
    ResNet-18's cold compile."""
    n = row.shape[0]
    # selects ordered so that NaN falls through unchanged: no NaN test, so loops vectorize
    if code == Act.RELU:
        for i in range(n):
            v = row[i]
            row[i] = 0.0 if v < 0 else v
    elif code == Act.RELU6:
        for i in range(n):
            v = row[i]
            row[i] = 0.0 if v < 0 else (6.0 if v > 6.0 else v)
    elif code == Act.LEAKY_RELU:
        for i in range(n):
            v = row[i]
            row[i] = v if v > 0 else v * alpha
    elif code == Act.ELU:
        for i in range(n):
            v = row[i]
            row[i] = v if v > 0 else alpha * (math.exp(v) - 1.0)
    elif code == Act.SIGMOID:
        for i in range(n):
            row[i] = 1.0 / (1.0 + math.exp(-row[i]))
    elif code == Act.TANH:
        for i in range(n):
            row[i] = math.tanh(row[i])
    elif code == Act.SILU:
        for i in range(n):
            v = row[i]
            row[i] = v / (1.0 + math.exp(-v))
    elif code == Act.HARDSIGMOID:
        for i in range(n):
            u = row[i] + 3.0
            row[i] = (0.0 if u < 0 else (6.0 if u > 6.0 else u)) / 6.0
    elif code == Act.HARDSWISH:
        for i in range(n):
            v = row[i]
            u = v + 3.0
            row[i] = v * (0.0 if u < 0 else (6.0 if u > 6.0 else u)) / 6.0
    elif code == Act.GELU:
        for i in range(n):
            v = row[i]
            row[i] = 0.5 * v * (1.0 + math.erf(v * SQRT_HALF))
    elif code == Act.GELU_TANH:
        for i in range(n):
            v = row[i]
            row[i] = 0.5 * v * (1.0 + math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)))
    elif code == Act.ABS:
        for i in range(n):
            row[i] = abs(row[i])


@helper
def derivative(v, code, alpha):
    """f'(v) of activation ``code`` (docs/semantics.md §3: 0 at the kinks of relu and relu6,
    the interval ends of hardsigmoid open, of hardswish closed)."""
    if code == Act.RELU:
        return 1.0 if v > 0 else 0.0
    if code == Act.RELU6:
        return 1.0 if (v > 0 and v < 6.0) else 0.0
    if code == Act.LEAKY_RELU:
        return 1.0 if v > 0 else alpha
    if code == Act.ELU:
        return 1.0 if v > 0 else alpha * math.exp(v)
    if code == Act.SIGMOID:
        s = 1.0 / (1.0 + math.exp(-v))
        return s * (1.0 - s)
    if code == Act.TANH:
        t = math.tanh(v)
        return 1.0 - t * t
    if code == Act.SILU:
        s = 1.0 / (1.0 + math.exp(-v))
        return s * (1.0 + v * (1.0 - s))
    if code == Act.HARDSIGMOID:
        return 1.0 / 6.0 if (v > -3.0 and v < 3.0) else 0.0
    if code == Act.HARDSWISH:
        return 0.0 if v < -3.0 else (1.0 if v > 3.0 else v / 3.0 + 0.5)
    if code == Act.GELU:
        return 0.5 * (1.0 + math.erf(v * SQRT_HALF)) + v * math.exp(-0.5 * v * v) * INV_SQRT_2PI
    if code == Act.GELU_TANH:
        t = math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v))
        return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (
            1.0 + 3 * 0.044715 * v * v)
    if code == Act.ABS:
        return 1.0 if v > 0 else (-1.0 if v < 0 else 0.0)
    return 1.0


@helper
def clamp_bounds(code):
    """The (lo, hi) clamp of activation ``code``: exact for NONE, RELU and RELU6; the other
    activations run afterwards (``activate_flat``)."""
    if code == Act.RELU:
        return np.float32(0.0), np.float32(np.inf)
    if code == Act.RELU6:
        return np.float32(0.0), np.float32(6.0)
    return np.float32(-np.inf), np.float32(np.inf)


@helper
def finish_flat(out, d, src, s0, count, channel, ep):
    """``out[d + i] = clamp(scale[channel]·src[s0 + i] + shift[channel] (+ res[d + i]))`` for
    i < count, on flat arrays with unsigned indices (no per-row slices); ``src`` may be
    ``out``. The clamp (``clamp_bounds``) keeps NaN; ``activate_flat`` does the rest."""
    scale, shift, res, has_res, code, _ = ep
    s, b = scale[channel], shift[channel]
    lo, hi = clamp_bounds(code)
    dst, first = np.uint64(d), np.uint64(s0)
    if has_res:
        for i in range(count):
            u = np.uint64(i)
            v = src[first + u] * s + b + res[dst + u]
            v = lo if v < lo else v
            out[dst + u] = hi if v > hi else v
    else:
        for i in range(count):
            u = np.uint64(i)
            v = src[first + u] * s + b
            v = lo if v < lo else v
            out[dst + u] = hi if v > hi else v


@helper
def activate_flat(out, d, count, ep):
    """The epilogue's activation over ``out[d:d + count]`` when it is not a clamp."""
    code, alpha = ep[4], ep[5]
    if code > LAST_CLAMP:
        act_row(out[d:d + count], code, alpha)


@kernel
def activation(x, out, code, alpha):
    """``out = act(x)`` over flat, contiguous arrays, in parallel chunks."""
    run_jobs(activation_chunk, (x.shape[0] + ACT_CHUNK - 1) // ACT_CHUNK, (x, out, code, alpha))


ACT_CHUNK = 16384  # elements per job of activation


@tile_kernel
def activation_chunk(c, args):
    """Chunk c of ``activation``."""
    x, out, code, alpha = args
    lo = c * ACT_CHUNK
    hi = min(x.shape[0], lo + ACT_CHUNK)
    copy_flat(out, lo, x, lo, hi - lo)
    act_row(out[lo:hi], code, alpha)


@helper
def derivative_row(x, g, out, code, alpha):
    """``out = f'(x)·g`` on one row. The piecewise-linear activations get a loop of their own
    (a select per element, so it vectorizes); the transcendental ones share one through
    ``derivative``, whose math outweighs its branches."""
    n = x.shape[0]
    if code == Act.RELU:
        for i in range(n):
            out[i] = g[i] if x[i] > 0 else 0.0
    elif code == Act.RELU6:
        for i in range(n):
            v = x[i]
            out[i] = g[i] if (v > 0 and v < 6.0) else 0.0
    elif code == Act.LEAKY_RELU:
        for i in range(n):
            out[i] = g[i] if x[i] > 0 else g[i] * alpha
    elif code == Act.HARDSIGMOID:
        for i in range(n):
            v = x[i]
            out[i] = g[i] / 6.0 if (v > -3.0 and v < 3.0) else 0.0
    elif code == Act.HARDSWISH:
        for i in range(n):
            v = x[i]
            out[i] = 0.0 if v < -3.0 else (g[i] if v > 3.0 else g[i] * (v / 3.0 + 0.5))
    elif code == Act.ABS:
        for i in range(n):
            v = x[i]
            out[i] = g[i] if v > 0 else (-g[i] if v < 0 else 0.0)
    else:
        for i in range(n):
            out[i] = derivative(x[i], code, alpha) * g[i]


@kernel
def activation_grad(x, g, out, code, alpha):
    """``out = f'(x)·g`` over flat, contiguous arrays, in parallel chunks."""
    n = x.shape[0]
    chunk = 16384
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(n, lo + chunk)
        derivative_row(x[lo:hi], g[lo:hi], out[lo:hi], code, alpha)


class ParamAct(IntEnum):
    """Codes of the activations with two parameters (a, b), which no fused epilogue takes:
    hardtanh (a = min_val, b = max_val), softplus (a = beta, b = threshold) and mish."""

    HARDTANH = 0
    SOFTPLUS = 1
    MISH = 2


@helper
def softplus_value(v, beta, threshold):
    """``log(1 + e^{βv})/β``, v itself where βv > threshold (PyTorch's rule)."""
    bv = beta * v
    return v if bv > threshold else math.log1p(math.exp(bv)) / beta


@helper
def param_value(v, code, a, b):
    if code == ParamAct.HARDTANH:
        return a if v < a else (b if v > b else v)  # NaN falls through
    if code == ParamAct.SOFTPLUS:
        return softplus_value(v, a, b)
    return v * math.tanh(math.log1p(math.exp(v)))


@helper
def param_derivative(v, code, a, b):
    """hardtanh: 1 on the open interval (a, b); softplus: σ(βv), 1 where βv > threshold;
    mish: tanh(sp) + v·σ(v)·(1 − tanh²(sp)), sp = log(1 + eᵛ)."""
    if code == ParamAct.HARDTANH:
        return 1.0 if (v > a and v < b) else 0.0
    if code == ParamAct.SOFTPLUS:
        bv = a * v
        return 1.0 if bv > b else 1.0 / (1.0 + math.exp(-bv))
    t = math.tanh(math.log1p(math.exp(v)))
    return t + v / (1.0 + math.exp(-v)) * (1.0 - t * t)


@kernel
def param_activation(x, out, code, a, b):
    """``out = act(x)`` for a ``ParamAct`` code over flat, contiguous arrays."""
    for i in prange(x.shape[0]):
        out[i] = param_value(x[i], code, a, b)


@kernel
def param_activation_grad(x, g, out, code, a, b):
    """``out = f'(x)·g`` for a ``ParamAct`` code over flat, contiguous arrays."""
    for i in prange(x.shape[0]):
        out[i] = param_derivative(x[i], code, a, b) * g[i]


@kernel
def epilogue(src, out, ep):
    """``out[n, c, :] = act(scale[c]·src[n, c, :] + shift[c] (+ res))`` over [N, C, P]."""
    run_jobs(epilogue_plane, out.shape[0] * out.shape[1], (src, out, ep))


@tile_kernel
def epilogue_plane(t, args):
    """Plane t (image t // C, channel t % C) of ``epilogue``."""
    src, out, ep = args
    p, outf = out.shape[2], out.reshape(-1)
    d = t * p
    finish_flat(outf, d, src.reshape(-1), d, p, t % out.shape[1], ep)
    activate_flat(outf, d, p, ep)


@tile_kernel
def epilogue_block(out, d0, rows, row_stride, cols, c0, ep):
    """In place on a block of a flat output: rows r < ``rows`` of ``cols`` values from
    ``d0 + r·row_stride``, channel ``c0 + r`` (a band of a GEMM's output, while in cache)."""
    for r in range(rows):
        d = d0 + r * row_stride
        finish_flat(out, d, out, d, cols, c0 + r, ep)
        activate_flat(out, d, cols, ep)


@kernel
def copy(src, out):
    """``out[:] = src`` (flat, one dtype) cut into the same even runs as the planes of a
    kernel's ``prange`` over jobs (``job_items``), so that each thread copies what it reads
    next: a model's input copied by one thread reached the other core's cache only when the
    first layer read it (a 3 MB input: 117 µs to copy, and its first layer 240 µs slower)."""
    run_jobs(copy_run, job_count(out.size), (src, out))


@tile_kernel
def copy_run(job, args):
    """Run ``job`` of ``copy``."""
    src, out = args
    first, last = job_items(job, out.size)
    copy_flat(out, first, src, first, last - first)


@helper
def copy_flat(dst, d, src, s, count):
    """``dst[d:d + count] = src[s:s + count]`` with unsigned indices (vectorizes)."""
    to, fro = np.uint64(d), np.uint64(s)
    for i in range(count):
        u = np.uint64(i)
        dst[to + u] = src[fro + u]


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
    return np.zeros(1, dtype)


@kernel
def sampled_slopes(x, slope, out, multiplier):
    """Training-mode RReLU over flat arrays: ``multiplier = x > 0 ? 1 : slope`` (the
    backward's factor) and ``out = x > 0 ? x : slope·x``, in parallel chunks."""
    n = x.shape[0]
    chunk = 16384
    for c in prange((n + chunk - 1) // chunk):
        for i in range(c * chunk, min(n, c * chunk + chunk)):
            v = x[i]
            a = slope[i]
            multiplier[i] = 1.0 if v > 0 else a
            out[i] = v if v > 0 else v * a


@kernel
def prelu_grad(x, g, slope, gx, gw, want_input, want_weight):
    """PReLU's backward, channel c per task over [N, C, P] x and g: ``gx = x > 0 ? g : a·g``
    (when ``want_input``; ``gx`` is [N, C, P]) and ``gw[c] = Σ_{x≤0} x·g`` in float64 (when
    ``want_weight``); ``slope`` is [C]."""
    n_img, channels, p = x.shape
    for c in prange(channels):
        a = slope[c]
        acc = 0.0
        for n in range(n_img):
            if want_input:
                for i in range(p):
                    v = g[n, c, i]
                    gx[n, c, i] = v if x[n, c, i] > 0 else v * a
            if want_weight:
                for i in range(p):
                    v = x[n, c, i]
                    acc += 0.0 if v > 0 else np.float64(v) * np.float64(g[n, c, i])
        gw[c] = acc
