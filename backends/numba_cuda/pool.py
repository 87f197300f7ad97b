"""Pooling and resizing on the GPU: max and average pooling, adaptive pooling, interpolate
(docs/semantics.md §1.7–§1.10).

- max_pool2d, avg_pool2d, interpolate and adaptive pooling with small windows: one thread per
  output element, reading its window from the flat (N·C, H, W) planes; one launch each.
- Adaptive pooling with windows of a warp or more of taps (global pooling above all, 7×7 at
  the end of a ResNet): one block per output element, the smallest power of two of threads
  covering the window (at most 256), striding over it row-major so that neighbouring threads
  read neighbouring pixels, and meeting in a shared-memory tree; one launch.

Everything that depends on the geometry alone is computed once at lowering time and uploaded:
the average pool's divisor per output row and column (ATen's window counts factor into a row
part and a column part: ``pool_size`` and the clipped count are both products), the adaptive
windows' bounds and lengths, interpolate's source indices and blend weights (the CPU
backend's ``source_index_table``). The tables hold the compute dtype, so a float32 kernel
does float32 arithmetic only (numba types ``float32 ∘ int`` and ``1.0 − float32`` as
float64).

Max pooling starts every window at −∞ (padding acts as −∞) and takes a value when it is
greater or NaN: a NaN wins the comparison and then keeps the window (§1.7).
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.lower_pool import source_index_table
from cnnir.backends.numba_cuda.runtime import cuda, flat, launch, lower, unary
from cnnir.ir import Node

REDUCE_THREADS = 256  # the largest block of the block-per-output reduction (a power of two)
BLOCK_REDUCE_MIN = 32  # adaptive windows of at least a warp of taps reduce with a block


def _upload(array: np.ndarray, dtype: np.dtype) -> object:
    return cuda.to_device(np.ascontiguousarray(array, dtype=dtype))


# -- max and average pooling -------------------------------------------------------------------


@cuda.jit
def max_pool_kernel(x, out, height, width, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw,
                    lowest):
    """``out[nc, oh, ow]``: the largest tap of its window inside the image (NaN wins)."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    ow = i % out_w
    rest = i // out_w
    oh = rest % out_h
    plane = (rest // out_h) * height * width
    h0, w0 = oh * sh - ph, ow * sw - pw
    best = lowest
    for a in range(kh):
        h = h0 + a * dh
        if h < 0 or h >= height:
            continue
        row = plane + h * width
        for c in range(kw):
            w = w0 + c * dw
            if w >= 0 and w < width:
                v = x[row + w]
                if v > best or v != v:
                    best = v
    out[i] = best


@cuda.jit
def avg_pool_kernel(x, out, height, width, out_h, out_w, kh, kw, sh, sw, ph, pw, div_h, div_w,
                    zero):
    """``out[nc, oh, ow]``: the sum over the window's taps inside the image, divided by
    ``div_h[oh]·div_w[ow]`` (padding adds nothing)."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    ow = i % out_w
    rest = i // out_w
    oh = rest % out_h
    plane = (rest // out_h) * height * width
    h0, w0 = oh * sh - ph, ow * sw - pw
    # (min()/max() do not compile for CUDA: the window is clipped with conditionals)
    h1 = height if h0 + kh > height else h0 + kh
    w1 = width if w0 + kw > width else w0 + kw
    h0 = 0 if h0 < 0 else h0
    w0 = 0 if w0 < 0 else w0
    acc = zero
    for h in range(h0, h1):
        row = plane + h * width
        for w in range(w0, w1):
            acc += x[row + w]
    out[i] = acc / (div_h[oh] * div_w[ow])


def pool_args(node: Node, x, out) -> tuple:
    a = node.attrs
    return (x.shape[2], x.shape[3], out.shape[2], out.shape[3], *a.kernel_size, *a.stride,
            *a.padding)


@lower(ops.max_pool2d)
def max_pool2d(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    lowest = b.dtype.type(-np.inf)
    return launch(max_pool_kernel, out.size, flat(x), flat(out), *pool_args(node, x, out),
                  *node.attrs.dilation, lowest)


def avg_divisors(size: int, out: int, k: int, s: int, p: int, include_pad: bool) -> np.ndarray:
    """Per output index along one axis: ATen's window length (§1.8), counting the padding
    (but not what hangs past it in ceil mode) or only the taps inside the image."""
    h0 = np.arange(out) * s - p
    h1 = np.minimum(h0 + k, size + p)
    if include_pad:
        return h1 - h0
    return np.minimum(h1, size) - np.maximum(h0, 0)


@lower(ops.avg_pool2d)
def avg_pool2d(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    a = node.attrs
    if a.divisor_override is not None:
        div_h, div_w = np.full(out.shape[2], a.divisor_override), np.ones(out.shape[3])
    else:
        div_h, div_w = (avg_divisors(x.shape[2 + i], out.shape[2 + i], a.kernel_size[i],
                                     a.stride[i], a.padding[i], a.count_include_pad)
                        for i in range(2))
    return launch(avg_pool_kernel, out.size, flat(x), flat(out), *pool_args(node, x, out),
                  _upload(div_h, b.dtype), _upload(div_w, b.dtype), b.dtype.type(0))


# -- adaptive pooling --------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def combine(acc, v, is_max):
    if is_max:
        return v if (v > acc or v != v) else acc
    return acc + v


@cuda.jit
def adaptive_kernel(x, out, height, width, out_h, out_w, bounds_h, bounds_w, len_h, len_w,
                    is_max, start):
    """One thread per output element: the max, or the mean, of its window ``[lo, hi)``."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    ow = i % out_w
    rest = i // out_w
    oh = rest % out_h
    plane = (rest // out_h) * height * width
    acc = start
    for h in range(bounds_h[oh, 0], bounds_h[oh, 1]):
        row = plane + h * width
        for w in range(bounds_w[ow, 0], bounds_w[ow, 1]):
            acc = combine(acc, x[row + w], is_max)
    out[i] = acc if is_max else acc / (len_h[oh] * len_w[ow])


@cuda.jit
def adaptive_block_kernel(x, out, height, width, out_h, out_w, bounds_h, bounds_w, len_h,
                          len_w, is_max, start):
    """One block per output element: its threads stride over the window (row-major, so a
    warp reads contiguous pixels), then a shared-memory tree combines their partials."""
    partial = cuda.shared.array(REDUCE_THREADS, dtype=x.dtype)
    i = cuda.blockIdx.x
    t = cuda.threadIdx.x
    ow = i % out_w
    rest = i // out_w
    oh = rest % out_h
    plane = (rest // out_h) * height * width
    h0, w0 = bounds_h[oh, 0], bounds_w[ow, 0]
    rows, cols = bounds_h[oh, 1] - h0, bounds_w[ow, 1] - w0
    step = cuda.blockDim.x
    dr, dc = step // cols, step % cols
    r, q = t // cols, t % cols  # tap t, t + step, …: (row, column) stepped, not divided
    acc = start
    while r < rows:
        acc = combine(acc, x[plane + (h0 + r) * width + w0 + q], is_max)
        r, q = r + dr, q + dc
        if q >= cols:
            r, q = r + 1, q - cols
    partial[t] = acc
    cuda.syncthreads()
    half = step // 2
    while half > 0:
        if t < half:
            partial[t] = combine(partial[t], partial[t + half], is_max)
        cuda.syncthreads()
        half //= 2
    if t == 0:
        total = partial[0]
        out[i] = total if is_max else total / (len_h[oh] * len_w[ow])


def adaptive_bounds(size: int, out: int) -> np.ndarray:
    """``[out, 2]``: cell i covers ``[⌊i·L/out⌋, ⌈(i+1)·L/out⌉)`` (§1.9)."""
    i = np.arange(out)
    return np.stack([i * size // out, -(-(i + 1) * size // out)], axis=1).astype(np.int32)


def block_size(taps: int) -> int:
    """The smallest power of two covering ``taps``, between a warp and ``REDUCE_THREADS``."""
    return min(REDUCE_THREADS, max(32, 1 << (taps - 1).bit_length()))


def adaptive_pool(is_max: bool):
    def lowering(b: Builder, node: Node) -> Step:
        x, out = unary(b, node)
        bounds = [adaptive_bounds(x.shape[2 + i], out.shape[2 + i]) for i in range(2)]
        lengths = [bd[:, 1] - bd[:, 0] for bd in bounds]
        start = b.dtype.type(-np.inf if is_max else 0)
        args = (flat(x), flat(out), *x.shape[2:], *out.shape[2:],
                *(cuda.to_device(bd) for bd in bounds),
                *(_upload(n, b.dtype) for n in lengths), is_max, start)
        taps = int(lengths[0].max() * lengths[1].max())
        if taps < BLOCK_REDUCE_MIN:
            return launch(adaptive_kernel, out.size, *args)
        configured = adaptive_block_kernel[out.size, block_size(taps)]
        return lambda: configured(*args)

    return lowering


lower(ops.adaptive_avg_pool2d)(adaptive_pool(is_max=False))
lower(ops.adaptive_max_pool2d)(adaptive_pool(is_max=True))


# -- interpolate -------------------------------------------------------------------------------


@cuda.jit
def nearest_kernel(x, out, height, width, out_h, out_w, src_h, src_w):
    i = cuda.grid(1)
    if i >= out.size:
        return
    ow = i % out_w
    rest = i // out_w
    oh = rest % out_h
    out[i] = x[(rest // out_h) * height * width + src_h[oh] * width + src_w[ow]]


@cuda.jit
def bilinear_kernel(x, out, height, width, out_h, out_w, src_h, src_w, weight_h, weight_w):
    """``src_*[o] = (i0, i1)``, ``weight_*[o] = (1 − λ, λ)``: the blend over H, then over W
    (the reference's order)."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    ow = i % out_w
    rest = i // out_w
    oh = rest % out_h
    plane = (rest // out_h) * height * width
    r0, r1 = plane + src_h[oh, 0] * width, plane + src_h[oh, 1] * width
    c0, c1 = src_w[ow, 0], src_w[ow, 1]
    a0, a1 = weight_h[oh, 0], weight_h[oh, 1]
    left = a0 * x[r0 + c0] + a1 * x[r1 + c0]
    right = a0 * x[r0 + c1] + a1 * x[r1 + c1]
    out[i] = weight_w[ow, 0] * left + weight_w[ow, 1] * right


@lower(ops.interpolate)
def interpolate(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    tables = [source_index_table(node.attrs, i, x.shape[2 + i], out.shape[2 + i])
              for i in range(2)]
    sizes = (flat(x), flat(out), *x.shape[2:], *out.shape[2:])
    if node.attrs.mode != "bilinear":
        src = [cuda.to_device(i0.astype(np.int32)) for i0, _, _ in tables]
        return launch(nearest_kernel, out.size, *sizes, *src)
    src = [cuda.to_device(np.stack([i0, i1], axis=1).astype(np.int32)) for i0, i1, _ in tables]
    weights = [_upload(np.stack([1 - lam, lam], axis=1), b.dtype) for _, _, lam in tables]
    return launch(bilinear_kernel, out.size, *sizes, *src, *weights)

