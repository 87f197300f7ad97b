"""batch_norm, group_norm and layer_norm on the GPU (docs/semantics.md §1.4).

batch_norm: ``y = γ(x − μ)/√(σ² + eps) + β`` per channel (dim 1; the input is viewed as
(N, C, inner), inner = 1 for BatchNorm1d on (N, C)). group_norm and layer_norm: see below.

- Eval with running statistics in the program state: the per-channel scale and shift are a
  derived form of them (float64 on the host, remade when they change), and the step is one
  launch of ``y = scale[c]·x + shift[c]``, one thread per element.
- Eval with statistics fed as graph inputs: one launch, each thread computing its channel's
  scale and shift from the four per-channel arrays (no host round trip).
- Training, or no running statistics: one launch, one block per channel (a power of two of
  threads near a quarter of the channel's values, 32 to 1024: ``statistics_threads``). They stride
  over the channel's N·inner values (consecutive threads read consecutive pixels) summing
  ``d = x − x₀`` and ``d²`` in float64, shifted by the channel's first value so that a large
  mean costs no precision; a shared-memory tree combines the partial sums, thread 0 turns
  them into the biased variance and the channel's scale, and after a barrier the same block
  normalizes its channel as ``((x − x₀) − (μ − x₀))·scale + β`` (the second read of a channel
  mostly hits L2): ``x − x₀`` is exact between nearby floats, where ``scale·x + shift`` would
  lose the digits of a mean far from zero (1000 ± 0.01: errors of 1%). The
  running-statistics update is ``batch_norm_update``'s business.
Absent γ and β are uploaded once as ones and zeros.
"""

from __future__ import annotations

import math

import numpy as np
from numba import float64

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cuda.backward import (
    REDUCE_THREADS,
    block_launch,
    block_sum,
    device,
    placeholder,
    reduce_threads,
    refuse_sync,
    sequence,
)
from cnnir.backends.numba_cuda.runtime import cuda, flat, launch, lower
from cnnir.ir import Node
from cnnir.ops import norm as norm_ops

MAX_STAT_THREADS = 1024  # the largest block of the batch-statistics kernel (a power of two)


@cuda.jit
def scale_shift_kernel(x, out, scale, shift, channels, inner):
    """``out = scale[c]·x + shift[c]``, one thread per element."""
    i = cuda.grid(1)
    if i < out.size:
        c = (i // inner) % channels
        out[i] = x[i] * scale[c] + shift[c]


@cuda.jit
def normalize_kernel(x, out, mean, var, gamma, beta, eps, channels, inner):
    """``out = γ(x − μ)/√(σ² + eps) + β`` from per-channel statistics, one thread per
    element."""
    i = cuda.grid(1)
    if i < out.size:
        c = (i // inner) % channels
        out[i] = (x[i] - mean[c]) * (gamma[c] / math.sqrt(var[c] + eps)) + beta[c]


@cuda.jit
def batch_statistics_kernel(x, out, gamma, beta, eps, channels, inner):
    """Block c: the biased mean and variance of channel c, then its normalization (module
    docstring). Thread t visits values t, t + blockDim, … of the channel, (n, s) = (sample,
    pixel), stepping (n, s) without a division per value."""
    sums = cuda.shared.array(MAX_STAT_THREADS, dtype=np.float64)
    squares = cuda.shared.array(MAX_STAT_THREADS, dtype=np.float64)
    coef = cuda.shared.array(2, dtype=x.dtype)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    step = cuda.blockDim.x
    batch = x.size // (channels * inner)
    dn, ds = step // inner, step % inner
    origin = x[c * inner]
    s1 = 0.0
    s2 = 0.0
    n, s = t // inner, t % inner
    while n < batch:
        d = x[(n * channels + c) * inner + s] - origin
        s1 += d
        s2 += d * d
        n, s = n + dn, s + ds
        if s >= inner:
            n, s = n + 1, s - inner
    sums[t] = s1
    squares[t] = s2
    cuda.syncthreads()
    half = step // 2
    while half > 0:
        if t < half:
            sums[t] += sums[t + half]
            squares[t] += squares[t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        count = batch * inner
        shifted_mean = sums[0] / count
        var = squares[0] / count - shifted_mean * shifted_mean
        var = 0.0 if var < 0.0 else var  # (max() of two floats does not compile for CUDA)
        coef[0] = shifted_mean
        coef[1] = gamma[c] / math.sqrt(var + eps)
    cuda.syncthreads()
    center, scale, shift = coef[0], coef[1], beta[c]
    n, s = t // inner, t % inner
    while n < batch:
        j = (n * channels + c) * inner + s
        out[j] = ((x[j] - origin) - center) * scale + shift
        n, s = n + dn, s + ds
        if s >= inner:
            n, s = n + 1, s - inner


def statistics_threads(count: int) -> int:
    """Threads of the block reducing one channel of ``count`` values: a power of two near
    count / 4 (each thread sums a few values before the tree), between a warp and
    ``MAX_STAT_THREADS`` (a 64-channel batch at 112² fills 64 blocks of 1024)."""
    return min(MAX_STAT_THREADS, max(32, 1 << (max(1, count // 4) - 1).bit_length()))


def host(array) -> np.ndarray | None:
    """A device array's values on the host, in float64."""
    if array is None:
        return None
    values = array.copy_to_host() if hasattr(array, "copy_to_host") else array
    return np.asarray(values, dtype=np.float64)


def affine(gamma, beta, mean, var, eps: float, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` with ``y = scale·x + shift``, in float64 then cast to ``dtype``."""
    mean, var = host(mean), host(var)
    scale = (1.0 if gamma is None else host(gamma)) / np.sqrt(var + eps)
    shift = (0.0 if beta is None else host(beta)) - mean * scale
    return scale.astype(dtype), shift.astype(dtype)


@lower(ops.batch_norm)
def batch_norm(b: Builder, node: Node) -> Step:
    refuse_sync(node)
    x, rm, rv, gamma, beta = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    params = node.inputs[1:]
    eps = node.attrs.eps
    channels = x.shape[1]
    inner = x.size // (x.shape[0] * channels) if x.size else 1
    running = not node.attrs.training and rm is not None
    if running and all(v.is_constant for v in params if v is not None):
        scale, shift = b.derived(params, ("cuda-batch-norm", eps), lambda: affine(
            gamma, beta, rm, rv, eps, b.dtype))
        return launch(scale_shift_kernel, out.size, flat(x), flat(out), scale, shift,
                      channels, inner)
    if gamma is None:
        gamma = cuda.to_device(np.ones(channels, b.dtype))
    if beta is None:
        beta = cuda.to_device(np.zeros(channels, b.dtype))
    if running:
        return launch(normalize_kernel, out.size, flat(x), flat(out), rm, rv, gamma, beta,
                      b.dtype.type(eps), channels, inner)
    configured = batch_statistics_kernel[channels, statistics_threads(x.size // channels)]
    args = (flat(x), flat(out), gamma, beta, eps, channels, inner)
    return lambda: configured(*args)


# -- group_norm, layer_norm and group_norm_grad ------------------------------------------------
# The input is rows of L = C/G·inner contiguous values, row r = (sample, group) = n·G + g;
# value j of row r belongs to channel (r mod G)·C/G + j // inner (layer_norm: one group,
# inner = 1, a channel per normalized element). One block per row (``block_sum``, float64,
# shifted by the row's first value) computes μ and σ², then writes its row. The backward's
# block per row also sums ĝ = γ·gy and ĝ·x̂ for gx, and records (μ, 1/√(σ² + eps)); then, for
# the parameters, one block per channel sums gy and gy·x̂ over (samples, pixels).


@cuda.jit(device=True)
def row_moments(x, base, length, buf, t):
    """(μ, σ²), the biased variance, of ``x[base:base + length]`` in float64; every thread
    of the block calls it and gets them."""
    origin = float64(x[base])
    s1 = 0.0
    s2 = 0.0
    for j in range(t, length, cuda.blockDim.x):
        d = float64(x[base + j]) - origin
        s1 += d
        s2 += d * d
    m = block_sum(buf, t, s1) / length
    var = block_sum(buf, t, s2) / length - m * m
    return origin + m, (0.0 if var < 0.0 else var)


@cuda.jit
def group_norm_kernel(x, out, gamma, beta, eps, groups, group_channels, inner):
    buf = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    r, t = cuda.blockIdx.x, cuda.threadIdx.x
    length = group_channels * inner
    base = r * length
    mu, var = row_moments(x, base, length, buf, t)
    inv_std = 1.0 / math.sqrt(var + eps)
    c0 = (r % groups) * group_channels
    for j in range(t, length, cuda.blockDim.x):
        c = c0 + j // inner
        out[base + j] = (float64(x[base + j]) - mu) * inv_std * gamma[c] + beta[c]


@cuda.jit
def group_norm_grad_rows(x, gy, gamma, eps, groups, group_channels, inner, gx, want_input,
                         stats):
    """Block per row: ``stats[r] = (μ, 1/√(σ² + eps))`` and, when ``want_input``,
    ``gx = (ĝ − mean ĝ − x̂·mean(ĝ·x̂))/√(σ² + eps)``."""
    buf = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    r, t = cuda.blockIdx.x, cuda.threadIdx.x
    length = group_channels * inner
    base = r * length
    mu, var = row_moments(x, base, length, buf, t)
    inv_std = 1.0 / math.sqrt(var + eps)
    if t == 0:
        stats[r, 0] = mu
        stats[r, 1] = inv_std
    if not want_input:
        return
    c0 = (r % groups) * group_channels
    s_g = 0.0
    s_gx = 0.0
    for j in range(t, length, cuda.blockDim.x):
        g_hat = float64(gamma[c0 + j // inner]) * gy[base + j]
        s_g += g_hat
        s_gx += g_hat * (float64(x[base + j]) - mu) * inv_std
    mean_g = block_sum(buf, t, s_g) / length
    mean_gx = block_sum(buf, t, s_gx) / length
    for j in range(t, length, cuda.blockDim.x):
        x_hat = (float64(x[base + j]) - mu) * inv_std
        g_hat = float64(gamma[c0 + j // inner]) * gy[base + j]
        gx[base + j] = (g_hat - mean_g - x_hat * mean_gx) * inv_std


@cuda.jit
def group_norm_grad_params(x, gy, stats, batch, groups, group_channels, inner, gw, gb,
                           want_weight, want_bias):
    """Block per channel c: ``gβ_c = Σ gy``, ``gγ_c = Σ gy·x̂`` over (samples, pixels)."""
    buf = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    c, t = cuda.blockIdx.x, cuda.threadIdx.x
    g = c // group_channels
    offset = (c % group_channels) * inner
    s_g = 0.0
    s_gx = 0.0
    for k in range(t, batch * inner, cuda.blockDim.x):
        n = k // inner
        r = n * groups + g
        i = r * group_channels * inner + offset + k % inner
        v = float64(gy[i])
        s_g += v
        s_gx += v * (float64(x[i]) - stats[r, 0]) * stats[r, 1]
    total_g = block_sum(buf, t, s_g)
    total_gx = block_sum(buf, t, s_gx)
    if t == 0:
        if want_bias:
            gb[c] = total_g
        if want_weight:
            gw[c] = total_gx


def row_layout(node: Node, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``(rows, groups, channels per group, inner)`` of a group_norm(_grad) or layer_norm
    node's input shape."""
    if node.op is norm_ops.layer_norm:
        d = math.prod(node.attrs.normalized_shape)
        return math.prod(shape) // d, 1, d, 1
    groups = node.attrs.num_groups
    inner = math.prod(shape[2:])
    return shape[0] * groups, groups, shape[1] // groups, inner


def filled(v, size: int, fill: float, dtype: np.dtype):
    return flat(v) if v is not None else cuda.to_device(np.full(size, fill, dtype))


def group_norm(b: Builder, node: Node) -> Step:
    x, gamma, beta = (b.array(v) for v in node.inputs)
    out = b.array(node.output)
    rows, groups, cg, inner = row_layout(node, tuple(x.shape))
    channels = groups * cg
    args = (flat(x), flat(out), filled(gamma, channels, 1.0, b.dtype),
            filled(beta, channels, 0.0, b.dtype), node.attrs.eps, groups, cg, inner)
    return block_launch(group_norm_kernel, rows, reduce_threads(cg * inner), *args)


lower(norm_ops.group_norm)(group_norm)
lower(norm_ops.layer_norm)(group_norm)


@lower(norm_ops.group_norm_grad)
def group_norm_grad(b: Builder, node: Node) -> Step:
    x, gamma, gy = (b.array(v) for v in node.inputs)
    outs = dict(zip(node.attrs.outputs, (b.array(v) for v in node.outputs)))
    rows, groups, cg, inner = row_layout(node, tuple(x.shape))
    channels = groups * cg
    stats = device(b.scratch((rows, 2), np.float64, owner=("group_norm_grad", node.name)))
    gx = outs.get("input")
    rows_step = block_launch(
        group_norm_grad_rows, rows, reduce_threads(cg * inner), flat(x), flat(gy),
        filled(gamma, channels, 1.0, b.dtype), node.attrs.eps, groups, cg, inner,
        flat(gx) if gx is not None else placeholder(b.dtype), gx is not None, stats)
    if "weight" not in outs and "bias" not in outs:
        return rows_step
    dummy = placeholder(b.dtype)
    batch = rows // groups
    params_step = block_launch(
        group_norm_grad_params, channels, reduce_threads(batch * inner), flat(x), flat(gy),
        stats, batch, groups, cg, inner, outs.get("weight", dummy), outs.get("bias", dummy),
        "weight" in outs, "bias" in outs)
    return sequence([rows_step, params_step])
