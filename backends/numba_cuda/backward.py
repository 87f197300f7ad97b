"""CUDA kernels and lowerings of the backward ops of generated gradient graphs, and of the
optimizer updates (docs/semantics.md §3, §4).

- activation_grad and the optimizer updates: one thread per element, one launch. An update
  reads its scalars from row ``attrs.row`` of the run-time ``hyper`` matrix inside the kernel
  (no host round trip); an absent optional state is a one-element placeholder with its flag
  off. Every output element depends on its own index only, so in-place updates are safe.
- Per-channel reductions (prelu_grad's slope, batch_norm_grad's sums, batch_norm_update's
  statistics): one block per channel striding over (N, pixels) with float64 partials and a
  shared-memory tree; then, where needed, one elementwise pass (one thread per element).
  batch_norm_grad is two launches; a fused activation's derivative is recomputed in both
  rather than written out.
- Pooling gradients are gathers, no atomics: one thread per input element sums the windows
  covering it (max: the windows whose chosen tap, recomputed as the forward chose it, is this
  element). Adaptive pooling's covering output range per input index is a host table.
- conv2d_weight_grad: one block per weight element, its threads striding over (N, OH, OW)
  row-major (neighbouring threads read neighbouring pixels of gy and x), float64 partials,
  shared-memory tree; one launch.
"""

from __future__ import annotations

import math

import numpy as np
from numba import float64

from cnnir import distributed as dist
from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.epilogue import activation_code
from cnnir.backends.numba_cpu.kernels.activation import SQRT_2_OVER_PI, SQRT_HALF
from cnnir.backends.numba_cuda.elementwise import (
    ABS,
    ELU,
    GELU,
    GELU_TANH,
    HARDSIGMOID,
    HARDSWISH,
    LEAKY_RELU,
    RELU,
    RELU6,
    SIGMOID,
    SILU,
    TANH,
)
from cnnir.backends.numba_cuda.runtime import cuda, flat, launch, lower
from cnnir.errors import LoweringError
from cnnir.ir import Node
from cnnir.ops import activation as activation_ops
from cnnir.ops import conv as conv_ops
from cnnir.ops import norm as norm_ops
from cnnir.ops import optim as optim_ops
from cnnir.ops import pool as pool_ops
from cnnir.ops import tensor as tensor_ops

REDUCE_THREADS = 256  # the largest block of the block reductions (a power of two)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def reduce_threads(count: int) -> int:
    """The block of a reduction over ``count`` items: the smallest power of two covering it,
    from a warp up to ``REDUCE_THREADS``."""
    threads = 32
    while threads < min(count, REDUCE_THREADS):
        threads *= 2
    return threads


def block_launch(kernel, grid: int, threads: int, *args) -> Step:
    """A step launching ``kernel`` on ``grid`` blocks of ``threads`` (configured per call, as
    ``runtime.launch`` explains)."""
    grid = max(1, grid)
    return lambda: kernel[grid, threads](*args)


def placeholder(dtype: np.dtype):
    return cuda.to_device(np.zeros(1, dtype))


@cuda.jit(device=True)
def block_sum(buf, t, v):
    """The sum of ``v`` over the block's threads (every thread calls it, every thread gets
    the total): a shared-memory tree; ``buf`` is free again on return."""
    buf[t] = v
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            buf[t] += buf[t + half]
        cuda.syncthreads()
        half //= 2
    total = buf[0]
    cuda.syncthreads()
    return total


# -- activation_grad ---------------------------------------------------------------------------


@cuda.jit(device=True)
def derivative(v, code, alpha):
    """f'(v) of activation ``code`` (docs/semantics.md §3), as the reference's."""
    if code == RELU:
        return 1.0 if v > 0 else 0.0
    if code == RELU6:
        return 1.0 if (v > 0 and v < 6.0) else 0.0
    if code == LEAKY_RELU:
        return 1.0 if v > 0 else alpha
    if code == ELU:
        return 1.0 if v > 0 else alpha * math.exp(v)
    if code == SIGMOID:
        s = 1.0 / (1.0 + math.exp(-v))
        return s * (1.0 - s)
    if code == TANH:
        t = math.tanh(v)
        return 1.0 - t * t
    if code == SILU:
        s = 1.0 / (1.0 + math.exp(-v))
        return s * (1.0 + v * (1.0 - s))
    if code == HARDSIGMOID:
        return 1.0 / 6.0 if (v > -3.0 and v < 3.0) else 0.0
    if code == HARDSWISH:
        return 0.0 if v < -3.0 else (1.0 if v > 3.0 else v / 3.0 + 0.5)
    if code == GELU:
        return 0.5 * (1.0 + math.erf(v * SQRT_HALF)) + v * math.exp(-0.5 * v * v) * INV_SQRT_2PI
    if code == GELU_TANH:
        t = math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v))
        return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (
            1.0 + 3 * 0.044715 * v * v)
    if code == ABS:
        return 1.0 if v > 0 else (-1.0 if v < 0 else v * 0.0)  # sign; NaN stays NaN
    return 1.0


@cuda.jit
def activation_grad_kernel(x, g, out, code, alpha):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = derivative(float64(x[i]), code, alpha) * g[i]


@lower(ops.activation_grad)
def activation_grad(b: Builder, node: Node) -> Step:
    x, g = (flat(b.array(v)) for v in node.inputs)
    out = flat(b.array(node.output))
    code, alpha = activation_code(node.attrs.activation, node.attrs.activation_attrs)
    return launch(activation_grad_kernel, out.size, x, g, out, int(code), alpha)


# -- prelu_grad --------------------------------------------------------------------------------


def planes(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """[N, C, ...] as (N, C, P); [N] or a scalar as (N, 1, 1)."""
    if len(shape) < 2:
        return (int(np.prod(shape, dtype=np.int64)), 1, 1)
    return shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64))


@cuda.jit
def prelu_input_grad_kernel(x, g, w, gx, channels, p):
    i = cuda.grid(1)
    if i < gx.size:
        v = x[i]
        gx[i] = g[i] if v > 0 else w[(i // p) % channels % w.size] * g[i]


@cuda.jit
def prelu_slope_grad_kernel(x, g, gw, n_img, channels, p):
    """Block c: ``gw[c] = Σ_{x ≤ 0} x·g`` over channel c of every image."""
    buf = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    acc = 0.0
    for j in range(t, n_img * p, cuda.blockDim.x):
        k = ((j // p) * channels + c) * p + j % p
        v = x[k]
        if not v > 0:
            acc += float64(v) * g[k]
    total = block_sum(buf, t, acc)
    if t == 0:
        gw[c] = total


@lower(activation_ops.prelu_grad)
def prelu_grad(b: Builder, node: Node) -> Step:
    """The input's gradient (one thread per element) and the slopes' (one block per channel,
    or one block over everything for a shared slope): two launches at most."""
    x, w, g = (b.array(v) for v in node.inputs)
    outs = dict(zip(node.attrs.outputs, (b.array(v) for v in node.outputs)))
    n_img, channels, p = planes(tuple(x.shape))
    steps = []
    if "input" in outs:
        steps.append(launch(prelu_input_grad_kernel, x.size, flat(x), flat(g), flat(w),
                            flat(outs["input"]), channels, p))
    if "weight" in outs:
        gw = flat(outs["weight"])
        shape = (n_img, channels, p) if gw.size > 1 else (1, 1, x.size)
        steps.append(block_launch(prelu_slope_grad_kernel, shape[1],
                                  reduce_threads(shape[0] * shape[2]), flat(x), flat(g), gw,
                                  *shape))
    return sequence(steps)


def sequence(steps: list[Step]) -> Step:
    if len(steps) == 1:
        return steps[0]

    def step() -> None:
        for s in steps:
            s()

    return step


# -- batch_norm_grad, batch_norm_update --------------------------------------------------------


@cuda.jit(device=True, inline=True)
def upstream(gy, act, k, has_act, code, alpha):
    """grad_output at ``k``, times the fused activation's derivative when there is one."""
    if has_act:
        return derivative(float64(act[k]), code, alpha) * gy[k]
    return float64(gy[k])


@cuda.jit
def batch_norm_grad_sums_kernel(x, rm, rv, gy, act, has_x, has_rm, batch_stats, has_act, code,
                                alpha, eps, n_img, channels, p, stats, gw, gb, want_w, want_b):
    """Block c: the channel's mean and 1/√(σ² + eps) (batch or running), Σ g and Σ g·(x − μ);
    writes gγ, gβ and ``stats[c] = (μ, 1/σ, mean(g), mean(g·x̂))`` for the elementwise pass."""
    buf = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    step = cuda.blockDim.x
    m = n_img * p
    if batch_stats:
        acc = 0.0
        for j in range(t, m, step):
            acc += x[((j // p) * channels + c) * p + j % p]
        mean = block_sum(buf, t, acc) / m
        acc = 0.0
        for j in range(t, m, step):
            d = x[((j // p) * channels + c) * p + j % p] - mean
            acc += d * d
        var = block_sum(buf, t, acc) / m
    else:
        mean = float64(rm[c]) if has_rm else 0.0
        var = float64(rv[c])
    inv = 1.0 / math.sqrt(var + eps)
    sg, sgx = 0.0, 0.0
    for j in range(t, m, step):
        k = ((j // p) * channels + c) * p + j % p
        u = upstream(gy, act, k, has_act, code, alpha)
        sg += u
        if has_x:
            sgx += u * (x[k] - mean)
    sg = block_sum(buf, t, sg)
    sgx = block_sum(buf, t, sgx) if has_x else 0.0
    if t == 0:
        if want_w:
            gw[c] = sgx * inv
        if want_b:
            gb[c] = sg
        stats[c, 0] = mean
        stats[c, 1] = inv
        stats[c, 2] = sg / m
        stats[c, 3] = sgx * inv / m


@cuda.jit
def batch_norm_grad_input_kernel(x, gamma, has_gamma, gy, act, has_act, code, alpha,
                                 batch_stats, channels, p, stats, gx):
    """``gx = γ/σ·(g − mean(g) − x̂·mean(g·x̂))`` (batch statistics) or ``g·γ/σ``."""
    i = cuda.grid(1)
    if i >= gx.size:
        return
    c = (i // p) % channels
    u = upstream(gy, act, i, has_act, code, alpha)
    scale = stats[c, 1] * (gamma[c] if has_gamma else 1.0)
    if batch_stats:
        x_hat = (x[i] - stats[c, 0]) * stats[c, 1]
        gx[i] = scale * (u - stats[c, 2] - x_hat * stats[c, 3])
    else:
        gx[i] = scale * u


def refuse_sync(node: Node) -> None:
    """SyncBatchNorm across several MPI ranks has no GPU collective here."""
    comm = dist.active()
    if node.attrs.sync and comm is not None and comm.size > 1:
        raise LoweringError(f"SyncBatchNorm across {comm.size} MPI ranks runs on the CPU "
                            "backends only", hint="compile with backend='numba', or use "
                            "BatchNorm (per-rank statistics) on the GPU")


@lower(norm_ops.batch_norm_grad)
def batch_norm_grad(b: Builder, node: Node) -> Step:
    a = node.attrs
    refuse_sync(node)
    x, rm, rv, gamma, gy, act = (None if v is None else b.array(v)
                                 for v in (node.inputs + [None] * 6)[:6])
    outs = dict(zip(a.outputs, (b.array(v) for v in node.outputs)))
    n_img, channels, p = planes(tuple(gy.shape))
    dummy = placeholder(b.dtype)
    fl = [dummy if v is None else flat(v) for v in (x, rm, rv, gamma, act)]
    xf, rmf, rvf, gammaf, actf = fl
    code, alpha = (activation_code(a.activation, a.activation_attrs) if a.activation is not None
                   else (0, 0.0))
    has_act = a.activation is not None
    stats = b.scratch((channels, 4), np.float64, owner=("batch_norm_grad", node.name))
    gw = flat(outs["weight"]) if "weight" in outs else dummy
    gb = flat(outs["bias"]) if "bias" in outs else dummy
    sums = block_launch(batch_norm_grad_sums_kernel, channels, reduce_threads(n_img * p),
                        xf, rmf, rvf, flat(gy), actf, x is not None, rm is not None,
                        a.batch_stats, has_act, int(code), float(alpha), float(a.eps),
                        n_img, channels, p, device(stats), gw, gb, "weight" in outs,
                        "bias" in outs)
    steps = [sums]
    if "input" in outs:
        steps.append(launch(batch_norm_grad_input_kernel, gy.size, xf, gammaf,
                            gamma is not None, flat(gy), actf, has_act, int(code),
                            float(alpha), a.batch_stats, channels, p, device(stats),
                            flat(outs["input"])))
    return sequence(steps)


def device(array):
    """A device array for scratch from ``Builder.scratch`` (a device view on this backend)."""
    return array if hasattr(array, "copy_to_host") else cuda.to_device(array)


@cuda.jit
def batch_norm_update_kernel(x, rm, rv, count, has_count, momentum, n_img, channels, p,
                             out_mean, out_var):
    """Block c: the batch mean and unbiased variance, blended into the running statistics
    (momentum < 0: the cumulative average 1/(count + 1))."""
    buf = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    step = cuda.blockDim.x
    m = n_img * p
    acc = 0.0
    for j in range(t, m, step):
        acc += x[((j // p) * channels + c) * p + j % p]
    mean = block_sum(buf, t, acc) / m
    acc = 0.0
    for j in range(t, m, step):
        d = x[((j // p) * channels + c) * p + j % p] - mean
        acc += d * d
    unbiased = block_sum(buf, t, acc) / (m - 1)
    if t == 0:
        f = momentum if momentum >= 0 else 1.0 / (float64(count[0]) + 1.0)
        old_mean, old_var = rm[c], rv[c]
        out_mean[c] = (1.0 - f) * old_mean + f * mean
        out_var[c] = (1.0 - f) * old_var + f * unbiased


@cuda.jit
def increment_kernel(count, out):
    if cuda.grid(1) == 0:
        out[0] = count[0] + 1


@lower(norm_ops.batch_norm_update)
def batch_norm_update(b: Builder, node: Node) -> Step:
    """One block per channel, then (with num_batches_tracked) a one-thread increment after
    every block has read the old count."""
    refuse_sync(node)
    x, rm, rv, count = (None if v is None else b.array(v) for v in (node.inputs + [None])[:4])
    outs = [flat(b.array(v)) for v in node.outputs]
    n_img, channels, p = planes(tuple(x.shape))
    momentum = node.attrs.momentum
    countf = count.reshape(1) if count is not None else placeholder(np.int64)
    steps = [block_launch(batch_norm_update_kernel, channels, reduce_threads(n_img * p),
                          flat(x), flat(rm), flat(rv), countf, count is not None,
                          -1.0 if momentum is None else float(momentum), n_img, channels, p,
                          outs[0], outs[1])]
    if count is not None:
        steps.append(launch(increment_kernel, 1, countf, outs[2].reshape(1)))
    return sequence(steps)


# -- optimizer updates -------------------------------------------------------------------------


@cuda.jit
def sgd_kernel(p, g, hyper, row, buf, has_buf, nesterov, p_out, buf_out):
    i = cuda.grid(1)
    if i >= p_out.size:
        return
    lr, momentum, dampening = hyper[row, 0], hyper[row, 1], hyper[row, 2]
    wd, first = hyper[row, 3], hyper[row, 4]
    w = float64(p[i])
    d = g[i] + wd * w
    if has_buf:
        v = d if first != 0 else momentum * buf[i] + (1.0 - dampening) * d
        buf_out[i] = v
        d = d + momentum * v if nesterov else v
    p_out[i] = w - lr * d


@cuda.jit
def adagrad_kernel(p, g, hyper, row, total, p_out, total_out):
    i = cuda.grid(1)
    if i >= p_out.size:
        return
    clr, wd, eps = hyper[row, 0], hyper[row, 1], hyper[row, 2]
    w = float64(p[i])
    d = g[i] + wd * w
    s = total[i] + d * d
    total_out[i] = s
    p_out[i] = w - clr * d / (math.sqrt(s) + eps)


@cuda.jit
def adadelta_kernel(p, g, hyper, row, square_avg, acc_delta, p_out, sq_out, acc_out):
    i = cuda.grid(1)
    if i >= p_out.size:
        return
    lr, rho, eps, wd = hyper[row, 0], hyper[row, 1], hyper[row, 2], hyper[row, 3]
    w = float64(p[i])
    d = g[i] + wd * w
    sq = rho * square_avg[i] + (1.0 - rho) * d * d
    acc = float64(acc_delta[i])
    delta = math.sqrt(acc + eps) / math.sqrt(sq + eps) * d
    sq_out[i] = sq
    acc_out[i] = rho * acc + (1.0 - rho) * delta * delta
    p_out[i] = w - lr * delta


@cuda.jit
def rmsprop_kernel(p, g, hyper, row, square_avg, buf, grad_avg, has_buf, centered,
                   p_out, sq_out, buf_out, avg_out):
    i = cuda.grid(1)
    if i >= p_out.size:
        return
    lr, alpha, eps, wd, momentum = (hyper[row, 0], hyper[row, 1], hyper[row, 2],
                                    hyper[row, 3], hyper[row, 4])
    w = float64(p[i])
    d = g[i] + wd * w
    sq = alpha * square_avg[i] + (1.0 - alpha) * d * d
    sq_out[i] = sq
    if centered:
        ga = alpha * grad_avg[i] + (1.0 - alpha) * d
        avg_out[i] = ga
        avg = math.sqrt(sq - ga * ga) + eps
    else:
        avg = math.sqrt(sq) + eps
    if has_buf:
        v = momentum * buf[i] + d / avg
        buf_out[i] = v
        p_out[i] = w - lr * v
    else:
        p_out[i] = w - lr * d / avg


@cuda.jit
def adam_kernel(p, g, hyper, row, m, v, vmax, amsgrad, decoupled, p_out, m_out, v_out,
                vmax_out):
    i = cuda.grid(1)
    if i >= p_out.size:
        return
    lr, beta1, beta2, eps = hyper[row, 0], hyper[row, 1], hyper[row, 2], hyper[row, 3]
    wd, step_size, bc2_sqrt = hyper[row, 4], hyper[row, 5], hyper[row, 6]
    w = float64(p[i])
    d = float64(g[i])
    if decoupled:
        w = w * (1.0 - lr * wd)
    else:
        d = d + wd * w
    mi = beta1 * m[i] + (1.0 - beta1) * d
    vi = beta2 * v[i] + (1.0 - beta2) * d * d
    m_out[i] = mi
    v_out[i] = vi
    if amsgrad:
        old = float64(vmax[i])  # (max() of two floats does not compile for CUDA)
        vi = old if old > vi or old != old else vi
        vmax_out[i] = vi
    p_out[i] = w - step_size * mi / (math.sqrt(vi) / bc2_sqrt + eps)


def update_operands(b: Builder, node: Node) -> tuple:
    """The flat parameter and gradient, the hyper matrix, the flat states (None where
    absent), the flat outputs."""
    p, g, hyper, *state = (None if v is None else b.array(v) for v in node.inputs)
    return (flat(p), flat(g), hyper, [None if s is None else flat(s) for s in state],
            [flat(b.array(v)) for v in node.outputs])


def spread(arrays: list, present: list[bool], dtype: np.dtype) -> list:
    """``arrays`` (the present ones, in order) over the ``present`` slots, placeholders in the
    absent ones."""
    it = iter(arrays)
    return [next(it) if here else placeholder(dtype) for here in present]


@lower(optim_ops.sgd_update)
def sgd_update(b: Builder, node: Node) -> Step:
    p, g, hyper, (buf,), outs = update_operands(b, node)
    has_buf = buf is not None
    p_out, buf_out = spread(outs, [True, has_buf], b.dtype)
    return launch(sgd_kernel, p.size, p, g, hyper, node.attrs.row,
                  buf if has_buf else placeholder(b.dtype), has_buf, node.attrs.nesterov,
                  p_out, buf_out)


@lower(optim_ops.adagrad_update)
def adagrad_update(b: Builder, node: Node) -> Step:
    p, g, hyper, (total,), outs = update_operands(b, node)
    return launch(adagrad_kernel, p.size, p, g, hyper, node.attrs.row, total, *outs)


@lower(optim_ops.adadelta_update)
def adadelta_update(b: Builder, node: Node) -> Step:
    p, g, hyper, (square_avg, acc_delta), outs = update_operands(b, node)
    return launch(adadelta_kernel, p.size, p, g, hyper, node.attrs.row, square_avg, acc_delta,
                  *outs)


@lower(optim_ops.rmsprop_update)
def rmsprop_update(b: Builder, node: Node) -> Step:
    p, g, hyper, (square_avg, buf, grad_avg), outs = update_operands(b, node)
    has_buf, centered = buf is not None, grad_avg is not None
    buf_in, avg_in = (placeholder(b.dtype) if s is None else s for s in (buf, grad_avg))
    p_out, sq_out, buf_out, avg_out = spread(outs, [True, True, has_buf, centered], b.dtype)
    return launch(rmsprop_kernel, p.size, p, g, hyper, node.attrs.row, square_avg, buf_in,
                  avg_in, has_buf, centered, p_out, sq_out, buf_out, avg_out)


@lower(optim_ops.adam_update)
def adam_update(b: Builder, node: Node) -> Step:
    p, g, hyper, (m, v, vmax), outs = update_operands(b, node)
    amsgrad = vmax is not None
    p_out, m_out, v_out, vmax_out = spread(outs, [True, True, True, amsgrad], b.dtype)
    return launch(adam_kernel, p.size, p, g, hyper, node.attrs.row, m, v,
                  vmax if amsgrad else placeholder(b.dtype), amsgrad, node.attrs.decoupled,
                  p_out, m_out, v_out, vmax_out)


# -- pooling and resizing gradients: gathers ---------------------------------------------------
#
# Every one of them is, per input pixel (h, w), a sum over the output pixels (oh, ow) whose
# window reads it. Along each axis the outputs reading input index h are a host table in CSR
# form (``ptr[h]:ptr[h + 1]`` into ``out`` and ``weight``), built once at lowering time.
# Average pooling, adaptive average pooling and interpolate weigh the product of the two axes'
# weights (ATen's average divisor factors into a row part and a column part); the max pools
# instead recompute each covering window's chosen tap and take gy where it is this pixel.


def csr(pairs: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per input index, its (output, weight) pairs as (ptr, out, weight) arrays."""
    ptr = np.zeros(len(pairs) + 1, np.int32)
    ptr[1:] = np.cumsum([len(p) for p in pairs])
    out = np.array([o for p in pairs for o, _ in p] or [0], np.int32)
    weight = np.array([w for p in pairs for _, w in p] or [0.0], np.float64)
    return ptr, out, weight


def window_table(size: int, starts: np.ndarray, taps: np.ndarray, step: int,
                 weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows along one axis (output o reads ``starts[o] + j·step`` for j < ``taps[o]``,
    inside [0, size)), inverted: per input index, the outputs reading it and their weights."""
    pairs: list[list[tuple[int, float]]] = [[] for _ in range(size)]
    for o, (s, k) in enumerate(zip(starts, taps)):
        for j in range(int(k)):
            h = int(s) + j * step
            if 0 <= h < size:
                pairs[h].append((o, float(weights[o])))
    return csr(pairs)


def upload_all(*arrays: np.ndarray) -> list:
    return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]


@cuda.jit
def separable_gather_kernel(gy, gx, height, width, out_h, out_w, rptr, rout, rwt, cptr, cout,
                            cwt):
    """``gx[nc, h, w] = Σ wr·wc·gy[nc, oh, ow]`` over the row and column tables."""
    i = cuda.grid(1)
    if i >= gx.size:
        return
    w = i % width
    rest = i // width
    h = rest % height
    plane = (rest // height) * out_h * out_w
    acc = 0.0
    for e in range(rptr[h], rptr[h + 1]):
        row = plane + rout[e] * out_w
        part = 0.0
        for f in range(cptr[w], cptr[w + 1]):
            part += cwt[f] * gy[row + cout[f]]
        acc += rwt[e] * part
    gx[i] = acc


@cuda.jit(device=True)
def chosen_tap(x, plane, height, width, h0, nh, dh, w0, nw, dw):
    """The flat in-plane index of a max window's chosen tap (docs/semantics.md §1.7): the
    first NaN, else the first valid tap equal to the maximum (row-major); -1 if none."""
    best = x[plane] * 0.0  # the dtype's zero; replaced by the first valid tap
    chosen = -1
    for a in range(nh):
        h = h0 + a * dh
        if h < 0 or h >= height:
            continue
        for c in range(nw):
            w = w0 + c * dw
            if w < 0 or w >= width:
                continue
            v = x[plane + h * width + w]
            if v != v:
                return h * width + w
            if chosen < 0 or v > best:
                best = v
                chosen = h * width + w
    return chosen


@cuda.jit
def max_gather_kernel(x, gy, gx, height, width, out_h, out_w, rptr, rout, cptr, cout,
                      start_h, taps_h, dh, start_w, taps_w, dw):
    """``gx[nc, h, w] = Σ gy[nc, oh, ow]`` over the covering windows that chose (h, w)."""
    i = cuda.grid(1)
    if i >= gx.size:
        return
    w = i % width
    rest = i // width
    h = rest % height
    nc = rest // height
    plane = nc * height * width
    me = h * width + w
    acc = 0.0
    for e in range(rptr[h], rptr[h + 1]):
        oh = rout[e]
        for f in range(cptr[w], cptr[w + 1]):
            ow = cout[f]
            if chosen_tap(x, plane, height, width, start_h[oh], taps_h[oh], dh, start_w[ow],
                          taps_w[ow], dw) == me:
                acc += gy[(nc * out_h + oh) * out_w + ow]
    gx[i] = acc


def pool_windows(size: int, out: int, k: int, s: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(out) * s - p, np.full(out, k)


def avg_divisors(size: int, out: int, k: int, s: int, p: int, include_pad: bool) -> np.ndarray:
    """Per output index along one axis: ATen's window length (§1.8), counting the padding
    (but not what hangs past it in ceil mode) or only the taps inside the image."""
    h0 = np.arange(out) * s - p
    h1 = np.minimum(h0 + k, size + p)
    if include_pad:
        return h1 - h0
    return np.minimum(h1, size) - np.maximum(h0, 0)


def separable_step(b: Builder, gy, gx, rows: tuple, cols: tuple) -> Step:
    return launch(separable_gather_kernel, gx.size, flat(gy), flat(gx), gx.shape[2], gx.shape[3],
                  gy.shape[2], gy.shape[3], *upload_all(*rows), *upload_all(*cols))


def max_gather_step(x, gy, gx, windows: list[tuple[np.ndarray, np.ndarray, int]]) -> Step:
    """The max gradient over per-axis windows ``(starts, taps, step)``."""
    tables, geometry = [], []
    for axis, (starts, taps, step) in enumerate(windows):
        ptr, out, _ = window_table(gx.shape[2 + axis], starts, taps, step, np.zeros(len(starts)))
        tables += upload_all(ptr, out)
        geometry += [*upload_all(starts.astype(np.int32), taps.astype(np.int32)), step]
    return launch(max_gather_kernel, gx.size, flat(x), flat(gy), flat(gx), gx.shape[2],
                  gx.shape[3], gy.shape[2], gy.shape[3], *tables, *geometry)


@lower(pool_ops.max_pool2d_grad)
def max_pool2d_grad(b: Builder, node: Node) -> Step:
    x, gy = (b.array(v) for v in node.inputs)
    gx, a = b.array(node.output), node.attrs
    windows = [(*pool_windows(x.shape[2 + i], gy.shape[2 + i], a.kernel_size[i], a.stride[i],
                              a.padding[i]), a.dilation[i]) for i in range(2)]
    return max_gather_step(x, gy, gx, windows)


@lower(pool_ops.avg_pool2d_grad)
def avg_pool2d_grad(b: Builder, node: Node) -> Step:
    gy, gx, a = b.array(node.inputs[0]), b.array(node.output), node.attrs
    tables = []
    for i in range(2):
        size, out = gx.shape[2 + i], gy.shape[2 + i]
        if a.divisor_override is not None:
            div = np.full(out, float(a.divisor_override) if i == 0 else 1.0)
        else:
            div = avg_divisors(size, out, a.kernel_size[i], a.stride[i], a.padding[i],
                               a.count_include_pad).astype(np.float64)
        starts, taps = pool_windows(size, out, a.kernel_size[i], a.stride[i], a.padding[i])
        tables.append(window_table(size, starts, taps, 1, 1.0 / div))
    return separable_step(b, gy, gx, *tables)


def adaptive_windows(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell i covers ``[⌊i·L/out⌋, ⌈(i+1)·L/out⌉)`` (§1.9): its start and length."""
    i = np.arange(out)
    lo, hi = i * size // out, -(-(i + 1) * size // out)
    return lo, hi - lo


@lower(pool_ops.adaptive_avg_pool2d_grad)
def adaptive_avg_pool2d_grad(b: Builder, node: Node) -> Step:
    gy, gx = b.array(node.inputs[0]), b.array(node.output)
    tables = []
    for i in range(2):
        starts, taps = adaptive_windows(gx.shape[2 + i], gy.shape[2 + i])
        tables.append(window_table(gx.shape[2 + i], starts, taps, 1, 1.0 / taps))
    return separable_step(b, gy, gx, *tables)


@lower(pool_ops.adaptive_max_pool2d_grad)
def adaptive_max_pool2d_grad(b: Builder, node: Node) -> Step:
    x, gy = b.array(node.inputs[0]), b.array(node.inputs[-1])
    gx = b.array(node.output)
    windows = [(*adaptive_windows(x.shape[2 + i], gy.shape[2 + i]), 1) for i in range(2)]
    return max_gather_step(x, gy, gx, windows)


def interpolate_table(attrs, axis: int, size: int, out: int) -> tuple:
    """Per input index along ``axis``: the outputs resampling from it and their weights."""
    from cnnir.backends.numba_cpu.lower_pool import source_index_table

    i0, i1, lam = source_index_table(attrs, axis, size, out)
    pairs: list[list[tuple[int, float]]] = [[] for _ in range(size)]
    for o in range(out):
        if attrs.mode == "bilinear":
            pairs[int(i0[o])].append((o, 1.0 - float(lam[o])))
            pairs[int(i1[o])].append((o, float(lam[o])))
        else:
            pairs[int(i0[o])].append((o, 1.0))
    return csr(pairs)


@lower(pool_ops.interpolate_grad)
def interpolate_grad(b: Builder, node: Node) -> Step:
    gy, gx = b.array(node.inputs[0]), b.array(node.output)
    tables = [interpolate_table(node.attrs, i, gx.shape[2 + i], gy.shape[2 + i])
              for i in range(2)]
    return separable_step(b, gy, gx, *tables)


# -- conv2d_weight_grad ------------------------------------------------------------------------


@cuda.jit
def conv_weight_grad_kernel(x, gy, gw, n_img, channels, height, width, out_ch, out_h, out_w,
                            per_group, kh, kw, sh, sw, ph, pw, dh, dw, out_per_group):
    """Block (o, ci, a, c): ``gw = Σ_{n, oh, ow} gy[n, o, oh, ow]·x[n, g·C/G + ci, h, w]``
    at ``h = oh·sh − ph + a·dh``, ``w = ow·sw − pw + c·dw`` (0 outside the image)."""
    buf = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    k = cuda.blockIdx.x
    t = cuda.threadIdx.x
    c = k % kw
    rest = k // kw
    a = rest % kh
    rest //= kh
    ci = rest % per_group
    o = rest // per_group
    cin = (o // out_per_group) * per_group + ci
    pixels = out_h * out_w
    acc = 0.0
    for j in range(t, n_img * pixels, cuda.blockDim.x):
        n = j // pixels
        q = j % pixels
        oh = q // out_w
        ow = q % out_w
        h = oh * sh - ph + a * dh
        w = ow * sw - pw + c * dw
        if h >= 0 and h < height and w >= 0 and w < width:
            acc += float64(gy[(n * out_ch + o) * pixels + q]) * x[
                ((n * channels + cin) * height + h) * width + w]
    total = block_sum(buf, t, acc)
    if t == 0:
        gw[k] = total


@lower(conv_ops.conv2d_weight_grad)
def conv2d_weight_grad(b: Builder, node: Node) -> Step:
    """One block per weight element reducing over (N, OH, OW); one launch."""
    x, gy = (b.array(v) for v in node.inputs)
    gw, a = b.array(node.output), node.attrs
    n_img, channels, height, width = x.shape
    out_ch, out_h, out_w = gy.shape[1:]
    per_group = channels // a.groups
    return block_launch(conv_weight_grad_kernel, gw.size, reduce_threads(n_img * out_h * out_w),
                        flat(x), flat(gy), flat(gw), n_img, channels, height, width, out_ch,
                        out_h, out_w, per_group, *a.kernel_size, *a.stride, a.padding[0],
                        a.padding[1], *a.dilation, out_ch // a.groups)


# -- amax_grad ---------------------------------------------------------------------------------

MAX_RANK = 6


@cuda.jit
def amax_share_kernel(x, y, g, share, kept_shape, reduced_shape, x_strides, slice_len):
    """Thread o: its slice's ties ``x == y[o]`` counted, ``share[o] = g[o] / count`` (NaN with
    no tie: a NaN maximum, whose slice the reference fills with NaN)."""
    o = cuda.grid(1)
    if o >= share.size:
        return
    base, rest = 0, o
    for d in range(MAX_RANK - 1, -1, -1):
        base += (rest % kept_shape[d]) * x_strides[d]
        rest //= kept_shape[d]
    top = y[o]
    count = 0
    for r in range(slice_len):
        offset, rest = base, r
        for d in range(MAX_RANK - 1, -1, -1):
            offset += (rest % reduced_shape[d]) * x_strides[d]
            rest //= reduced_shape[d]
        if x[offset] == top:
            count += 1
    share[o] = g[o] / float64(count) if count > 0 else math.nan


@cuda.jit
def amax_grad_kernel(x, y, share, gx, shape, y_strides):
    """``gx[i] = (x[i] == y[o])·share[o]``, o the slice of i."""
    i = cuda.grid(1)
    if i >= gx.size:
        return
    o, rest = 0, i
    for d in range(MAX_RANK - 1, -1, -1):
        o += (rest % shape[d]) * y_strides[d]
        rest //= shape[d]
    gx[i] = (1.0 if x[i] == y[o] else 0.0) * share[o]


@lower(tensor_ops.amax_grad)
def amax_grad(b: Builder, node: Node) -> Step:
    """Two launches: one thread per slice counts its ties, one thread per element shares."""
    x, y, g = (b.array(v) for v in node.inputs)
    gx = b.array(node.output)
    rank = x.ndim
    dims = range(rank) if node.attrs.dims is None else {d % rank for d in node.attrs.dims}
    pad = (1,) * (MAX_RANK - rank)
    shape = pad + tuple(x.shape)
    reduced = {d + MAX_RANK - rank for d in dims}
    kept = tuple(1 if d in reduced else s for d, s in enumerate(shape))
    red = tuple(s if d in reduced else 1 for d, s in enumerate(shape))
    strides = np.cumprod((1,) + shape[:0:-1])[::-1].astype(np.int64)
    kept_strides = np.cumprod((1,) + kept[:0:-1])[::-1].astype(np.int64)
    y_strides = np.where(np.array(kept) == 1, 0, kept_strides).astype(np.int64)
    share = b.scratch((max(1, y.size),), np.float64, owner=("amax_grad", node.name))
    share = device(share)
    args = upload_all(np.array(kept, np.int64), np.array(red, np.int64), strides)
    count = launch(amax_share_kernel, y.size, flat(x), flat(y), flat(g), share, *args,
                   int(np.prod(red)))
    spread_step = launch(amax_grad_kernel, gx.size, flat(x), flat(y), share, flat(gx),
                         *upload_all(np.array(shape, np.int64), y_strides))
    return sequence([count, spread_step])


# -- deformable convolution gradients ----------------------------------------------------------


@cuda.jit(device=True, inline=True)
def pixel(x, plane, height, width, h, w):
    """``x[plane + h·W + w]``, 0 outside the image."""
    if h >= 0 and h < height and w >= 0 and w < width:
        return float64(x[plane + h * width + w])
    return 0.0


@cuda.jit(device=True)
def bilinear(x, plane, height, width, y, xs):
    """The zero-padded bilinear sample at (y, xs) (§1.3): 0 when y ≤ −1, y ≥ H, x ≤ −1 or
    x ≥ W; corners outside the image contribute 0."""
    if not (y > -1 and y < height and xs > -1 and xs < width):
        return 0.0
    y0, x0 = int(math.floor(y)), int(math.floor(xs))
    ly, lx = y - y0, xs - x0
    return ((1.0 - ly) * ((1.0 - lx) * pixel(x, plane, height, width, y0, x0)
                          + lx * pixel(x, plane, height, width, y0, x0 + 1))
            + ly * ((1.0 - lx) * pixel(x, plane, height, width, y0 + 1, x0)
                    + lx * pixel(x, plane, height, width, y0 + 1, x0 + 1)))


@cuda.jit
def deform_weight_grad_kernel(x, offset, gy, mask, has_mask, gw, n_img, channels, height,
                              width, out_ch, out_h, out_w, per_group, kh, kw, sh, sw, pt, pl,
                              dh, dw, out_per_group, per_offset_group):
    """Block (o, ci, i, j): ``gw = Σ_{n, p} gy[n, o, p]·mask·sample(x[n, c], y, x)``."""
    buf = cuda.shared.array(REDUCE_THREADS, dtype=float64)
    k = cuda.blockIdx.x
    t = cuda.threadIdx.x
    j = k % kw
    rest = k // kw
    i = rest % kh
    rest //= kh
    ci = rest % per_group
    o = rest // per_group
    c = (o // out_per_group) * per_group + ci
    taps = (channels // per_offset_group) * kh * kw
    tap = (c // per_offset_group) * kh * kw + i * kw + j
    pixels = out_h * out_w
    acc = 0.0
    for q in range(t, n_img * pixels, cuda.blockDim.x):
        n = q // pixels
        p = q % pixels
        y = (p // out_w) * sh - pt + i * dh + offset[((n * 2 * taps) + 2 * tap) * pixels + p]
        xs = (p % out_w) * sw - pl + j * dw + offset[((n * 2 * taps) + 2 * tap + 1) * pixels + p]
        v = bilinear(x, (n * channels + c) * height * width, height, width, y, xs)
        if has_mask:
            v *= mask[(n * taps + tap) * pixels + p]
        acc += float64(gy[(n * out_ch + o) * pixels + p]) * v
    total = block_sum(buf, t, acc)
    if t == 0:
        gw[k] = total


@lower(conv_ops.deform_conv2d_weight_grad)
def deform_conv2d_weight_grad(b: Builder, node: Node) -> Step:
    """One block per weight element reducing over (N, OH, OW), sampling as the forward."""
    x, offset, gy, mask = (None if v is None else b.array(v)
                           for v in (node.inputs + [None])[:4])
    gw, a = b.array(node.output), node.attrs
    n_img, channels, height, width = x.shape
    out_ch, out_h, out_w = gy.shape[1:]
    kh, kw = a.kernel_size
    per_group = channels // a.groups
    per_offset_group = channels // (offset.shape[1] // (2 * kh * kw))
    return block_launch(deform_weight_grad_kernel, gw.size,
                        reduce_threads(n_img * out_h * out_w), flat(x), flat(offset), flat(gy),
                        placeholder(b.dtype) if mask is None else flat(mask), mask is not None,
                        flat(gw), n_img, channels, height, width, out_ch, out_h, out_w,
                        per_group, kh, kw, *a.stride, a.padding[0], a.padding[1], *a.dilation,
                        out_ch // a.groups, per_offset_group)


@cuda.jit
def zero_kernel(out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = 0


@cuda.jit
def deform_data_grad_kernel(x, offset, w, gy, mask, has_mask, gx, goff, gmask, n_img, channels,
                            height, width, out_ch, out_h, out_w, per_group, kh, kw, sh, sw,
                            pt, pl, dh, dw, out_per_group, per_offset_group):
    """Thread (n, tap, p), tap = (offset group, i, j): over the group's channels c, the
    column gradient ``gc = Σ_o W[o, c', i, j]·gy[n, o, p]`` (o in the group of c) gives the
    offset's and the mask's gradients (summed here, no atomics) and four bilinear corner
    contributions to gx (atomic adds: the offsets make the scatter data dependent)."""
    t = cuda.grid(1)
    pixels = out_h * out_w
    taps = (channels // per_offset_group) * kh * kw
    if t >= n_img * taps * pixels:
        return
    p = t % pixels
    rest = t // pixels
    tap = rest % taps
    n = rest // taps
    og = tap // (kh * kw)
    i = (tap % (kh * kw)) // kw
    j = tap % kw
    oy = ((n * 2 * taps) + 2 * tap) * pixels + p
    y = (p // out_w) * sh - pt + i * dh + float64(offset[oy])
    xs = (p % out_w) * sw - pl + j * dw + float64(offset[oy + pixels])
    m = float64(mask[(n * taps + tap) * pixels + p]) if has_mask else 1.0
    y0, x0 = int(math.floor(y)), int(math.floor(xs))
    ly, lx = y - y0, xs - x0
    g_y, g_x, g_m = 0.0, 0.0, 0.0
    for c in range(og * per_offset_group, (og + 1) * per_offset_group):
        ci = c % per_group
        first = (c // per_group) * out_per_group
        gc = 0.0
        for o in range(first, first + out_per_group):
            gc += float64(w[((o * per_group + ci) * kh + i) * kw + j]) * gy[
                (n * out_ch + o) * pixels + p]
        plane = (n * channels + c) * height * width
        v00 = pixel(x, plane, height, width, y0, x0)
        v01 = pixel(x, plane, height, width, y0, x0 + 1)
        v10 = pixel(x, plane, height, width, y0 + 1, x0)
        v11 = pixel(x, plane, height, width, y0 + 1, x0 + 1)
        g_y += m * gc * (lx * (v11 - v01) + (1.0 - lx) * (v10 - v00))
        g_x += m * gc * (ly * (v11 - v10) + (1.0 - ly) * (v01 - v00))
        if has_mask:
            g_m += gc * bilinear(x, plane, height, width, y, xs)
        for dy in range(2):
            yy = y0 + dy
            wy = ly if dy == 1 else 1.0 - ly
            for dx in range(2):
                xx = x0 + dx
                wx = lx if dx == 1 else 1.0 - lx
                if yy >= 0 and yy < height and xx >= 0 and xx < width:
                    cuda.atomic.add(gx, plane + yy * width + xx, wy * wx * m * gc)
    goff[oy] = g_y
    goff[oy + pixels] = g_x
    if has_mask:
        gmask[(n * taps + tap) * pixels + p] = g_m


@lower(conv_ops.deform_conv2d_data_grad)
def deform_conv2d_data_grad(b: Builder, node: Node) -> Step:
    """Two launches: gx zeroed, then one thread per (image, offset group, tap, pixel)."""
    x, offset, w, gy, mask = (None if v is None else b.array(v)
                              for v in (node.inputs + [None])[:5])
    outs = [flat(b.array(v)) for v in node.outputs]
    gx, goff = outs[0], outs[1]
    gmask = outs[2] if mask is not None else placeholder(b.dtype)
    a = node.attrs
    n_img, channels, height, width = x.shape
    out_ch, per_group, kh, kw = w.shape
    out_h, out_w = gy.shape[2:]
    offset_groups = offset.shape[1] // (2 * kh * kw)
    count = n_img * offset_groups * kh * kw * out_h * out_w
    return sequence([
        launch(zero_kernel, gx.size, gx),
        launch(deform_data_grad_kernel, count, flat(x), flat(offset), flat(w), flat(gy),
               placeholder(b.dtype) if mask is None else flat(mask), mask is not None, gx,
               goff, gmask, n_img, channels, height, width, out_ch, out_h, out_w, per_group,
               kh, kw, *a.stride, a.padding[0], a.padding[1], *a.dilation,
               out_ch // (channels // per_group), channels // offset_groups)])
