"""Tensor ops and the rest of the activation family on the GPU: cat, reshape/flatten/identity,
transpose, split, slice, gather, mean/sum/amax, channel_shuffle, pad, expand; sqrt, exp, log,
pow, clamp, compare, where; prelu, rrelu, dropout, dropout2d, softmax and log_softmax.

Data movement is one thread per output element reading its source through element strides
padded to ``MAX_RANK`` dims (``gather``: transpose, channel_shuffle, expand; ``pad`` also
writes the fill value outside the source), or contiguous slabs (``slab_copy``: one launch per
input of cat and per output of split); reshape, flatten and identity are one device-to-device
copy each (no kernel).

Reductions over a slice of ``K`` elements (mean/sum/amax over dims, softmax along a dim) take
one of two forms, chosen at lowering (``one_block_per_slice``): one thread per slice, looping
over it serially, for short slices (``K <= SHORT``) and for many slices that do not include the
innermost dim (neighbouring threads then read neighbouring addresses, so the loads coalesce:
softmax over channels, a sum over the batch); otherwise one block per slice, its threads
striding over the slice and combining partial results in a shared-memory tree. Sums
accumulate in float64.

Random ops (rrelu and dropout in training mode) draw on the host from the program's
generator ``b.rng``, exactly as the CPU and reference backends draw, so the three agree for
one seed; each call uploads the draw (one host-to-device copy into a buffer allocated at
lowering: the slopes, or the scaled mask, which is dropout's second output) and runs one
kernel. numba.cuda.random's xoroshiro states would avoid the copy but give other numbers
than the reference.
"""

from __future__ import annotations

import math

import numpy as np
from numba import float64

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cuda.elementwise import MAX_RANK, broadcast_strides
from cnnir.backends.numba_cuda.runtime import THREADS, blocks, cuda, flat, lower, unary
from cnnir.ir import Node
from cnnir.ops import tensor as tensor_ops

SHORT = 64  # slices up to this length are reduced by one thread each
MANY = 2048  # with this many slices, strided (not innermost) slices are one thread each too
SUM, MEAN, MAX = 0, 1, 2


def launch(kernel, count: int, *args) -> Step:
    """A step launching ``kernel`` over ``count`` threads (blocks of ``THREADS``), configured
    at each call: numba's simulator sets the launch configuration on the kernel object itself
    (``kernel[grid, block]`` returns the same object), so a configuration made at lowering
    is overwritten by the next lowering using the same kernel; on a GPU configuring costs
    nothing measurable next to the launch (issue 12's measurements)."""
    return launch_blocks(kernel, blocks(count), THREADS, *args)


def launch_blocks(kernel, grid: int, threads: int, *args) -> Step:
    """A step launching ``grid`` blocks of ``threads`` (configured at each call)."""
    return lambda: kernel[grid, threads](*args)


def padded(values: tuple[int, ...], fill: int = 1) -> np.ndarray:
    """``values`` left-padded with ``fill`` to ``MAX_RANK`` entries, as int64."""
    return np.array((fill,) * (MAX_RANK - len(values)) + tuple(values), np.int64)


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major element strides of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(strides[::-1])


def block_threads(count: int) -> int:
    """A power of two between 32 and ``THREADS`` covering ``count`` if it can."""
    threads = 32
    while threads < min(count, THREADS):
        threads *= 2
    return threads


@cuda.jit(device=True, inline=True)
def offset_of(i, shape, strides):
    """The element offset of flat index ``i`` over ``shape`` (row-major) at ``strides``."""
    off = 0
    for d in range(MAX_RANK - 1, -1, -1):
        k = i % shape[d]
        i //= shape[d]
        off += k * strides[d]
    return off


# -- data movement --------------------------------------------------------------------------


@cuda.jit
def gather_kernel(x, out, shape, strides, base):
    """``out[i] = x[base + offset_of(i)]``: a strided view of ``x`` made contiguous."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = x[base + offset_of(i, shape, strides)]


def gather(x, out, strides: tuple[int, ...], base: int = 0) -> Step:
    """A step copying the view of ``x`` with element ``strides`` (one per dim of ``out``)."""
    shape = cuda.to_device(padded(tuple(out.shape)))
    steps = cuda.to_device(padded(tuple(strides), 0))
    return launch(gather_kernel, out.size, flat(x), flat(out), shape, steps, base)


@cuda.jit
def slab_copy_kernel(src, dst, count, width, src_row, src_off, dst_row, dst_off):
    """Rows of ``width`` contiguous elements: ``dst[r·dst_row + dst_off + c] =
    src[r·src_row + src_off + c]``."""
    i = cuda.grid(1)
    if i < count:
        r = i // width
        c = i - r * width
        dst[r * dst_row + dst_off + c] = src[r * src_row + src_off + c]


def slabs(shape: tuple[int, ...], dim: int) -> tuple[int, int]:
    """(rows, elements per unit of ``dim``) of a contiguous tensor cut along ``dim``."""
    return int(np.prod(shape[:dim], dtype=np.int64)), int(np.prod(shape[dim + 1:],
                                                                  dtype=np.int64))


def run_all(steps: list[Step]) -> Step:
    if len(steps) == 1:
        return steps[0]

    def step() -> None:
        for s in steps:
            s()

    return step


@lower(ops.cat)
def cat(b: Builder, node: Node) -> Step:
    """One slab copy per input into its column range of the output."""
    xs = [b.array(v) for v in node.inputs]
    out = b.array(node.output)
    dim = node.attrs.dim % out.ndim
    _, inner = slabs(tuple(out.shape), dim)
    total = out.shape[dim] * inner
    steps, at = [], 0
    for x in xs:
        width = x.shape[dim] * inner
        if x.size:
            steps.append(launch(slab_copy_kernel, x.size, flat(x), flat(out), x.size, width,
                                width, 0, total, at))
        at += width
    return run_all(steps) if steps else (lambda: None)


@lower(ops.split)
def split(b: Builder, node: Node) -> Step:
    """One slab copy per output from its column range of the input."""
    x = b.array(node.inputs[0])
    outs = [b.array(v) for v in node.outputs]
    dim = node.attrs.dim % x.ndim
    _, inner = slabs(tuple(x.shape), dim)
    total = x.shape[dim] * inner
    steps, at = [], 0
    for out in outs:
        width = out.shape[dim] * inner
        if out.size:
            steps.append(launch(slab_copy_kernel, out.size, flat(x), flat(out), out.size, width,
                                total, at, width, 0))
        at += width
    return run_all(steps) if steps else (lambda: None)


def copy_reshaped(b: Builder, node: Node) -> Step:
    """The same elements in the same order: one device-to-device copy."""
    x, out = unary(b, node)
    if out.size == 0:
        return lambda: None
    src, dst = flat(x), flat(out)
    return lambda: dst.copy_to_device(src)


for _op in (ops.reshape, ops.flatten, ops.identity):
    lower(_op)(copy_reshaped)


@lower(ops.transpose)
def transpose(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    strides = contiguous_strides(tuple(x.shape))
    return gather(x, out, tuple(strides[p % x.ndim] for p in node.attrs.perm))


@lower(ops.expand)
def expand(b: Builder, node: Node) -> Step:
    """Broadcasting read: stride 0 along the dims the input has as 1 or lacks."""
    x, out = unary(b, node)
    strides = broadcast_strides(tuple(x.shape))[MAX_RANK - out.ndim:]
    return gather(x, out, tuple(int(s) for s in strides))


@lower(ops.channel_shuffle)
def channel_shuffle(b: Builder, node: Node) -> Step:
    """``x.reshape(N, g, C/g, ...).transpose(1, 2)`` read into ``[N, C/g, g, ...]``."""
    x, out = unary(b, node)
    g = node.attrs.groups
    n, c = x.shape[:2]
    rest = tuple(x.shape[2:])
    grouped = (n, g, c // g, *rest)
    strides = list(contiguous_strides(grouped))
    strides[1], strides[2] = strides[2], strides[1]
    view = out.reshape((n, c // g, g, *rest))
    return gather(x, view, tuple(strides))


@cuda.jit
def pad_kernel(x, out, out_shape, in_shape, lo, value):
    """``out[i]`` is ``x`` at the output's coordinates less ``lo``, or ``value`` outside it
    (negative ``lo`` crops)."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    rest, src, step, inside = i, 0, 1, True
    for d in range(MAX_RANK - 1, -1, -1):
        k = rest % out_shape[d] - lo[d]
        rest //= out_shape[d]
        if k < 0 or k >= in_shape[d]:
            inside = False
        src += k * step
        step *= in_shape[d]
    out[i] = x[src] if inside else value


@lower(ops.pad)
def pad(b: Builder, node: Node) -> Step:
    """Constant padding in torch order; negative pads crop. One kernel, no separate fill."""
    x, out = unary(b, node)
    pads = node.attrs.pads
    lo = [0] * x.ndim
    for i in range(len(pads) // 2):
        lo[x.ndim - 1 - i] = pads[2 * i]
    args = (cuda.to_device(padded(tuple(out.shape))), cuda.to_device(padded(tuple(x.shape))),
            cuda.to_device(padded(tuple(lo), 0)), float(node.attrs.value))
    if out.size == 0:
        return lambda: None
    return launch(pad_kernel, out.size, flat(x), flat(out), *args)


# -- reductions -----------------------------------------------------------------------------


def one_block_per_slice(count: int, slices: int, innermost: bool) -> bool:
    """Whether ``slices`` reductions of ``count`` elements each take a block each (see the
    module docstring); ``innermost``: the slices run along the last dim."""
    return count > SHORT and (innermost or slices < MANY)


@cuda.jit(device=True, inline=True)
def combine(acc, v, kind):
    """``acc`` combined with ``v``: a sum, or a maximum that NaN always wins."""
    if kind == MAX:
        return v if (v > acc or v != v) else acc
    return acc + v


@cuda.jit
def reduce_short_kernel(x, out, rows, kept_shape, kept_strides, red_shape, red_strides,
                        count, kind):
    """One thread per output: its ``count`` elements in a serial loop."""
    r = cuda.grid(1)
    if r >= rows:
        return
    base = offset_of(r, kept_shape, kept_strides)
    acc = -math.inf if kind == MAX else 0.0
    for k in range(count):
        acc = combine(acc, float64(x[base + offset_of(k, red_shape, red_strides)]), kind)
    out[r] = acc / count if kind == MEAN else acc


@cuda.jit
def reduce_block_kernel(x, out, kept_shape, kept_strides, red_shape, red_strides, count, kind):
    """One block per output: strided partial results, then a shared-memory tree."""
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    part = cuda.shared.array(THREADS, float64)
    base = offset_of(r, kept_shape, kept_strides)
    acc = -math.inf if kind == MAX else 0.0
    for k in range(t, count, nt):
        acc = combine(acc, float64(x[base + offset_of(k, red_shape, red_strides)]), kind)
    part[t] = acc
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if t < s:
            part[t] = combine(part[t], part[t + s], kind)
        cuda.syncthreads()
        s //= 2
    if t == 0:
        out[r] = part[0] / count if kind == MEAN else part[0]


def reduction(kind: int):
    def lowering(b: Builder, node: Node) -> Step:
        x, out = unary(b, node)
        dims = node.attrs.dims
        axes = set(range(x.ndim)) if dims is None else {d % x.ndim for d in dims}
        shape, strides = tuple(x.shape), contiguous_strides(tuple(x.shape))
        kept = [i for i in range(x.ndim) if i not in axes]
        red = sorted(axes)
        count = int(np.prod([shape[i] for i in red], dtype=np.int64))
        rows = out.size
        if rows == 0:
            return lambda: None
        args = [cuda.to_device(padded(tuple(shape[i] for i in kept))),
                cuda.to_device(padded(tuple(strides[i] for i in kept), 0)),
                cuda.to_device(padded(tuple(shape[i] for i in red))),
                cuda.to_device(padded(tuple(strides[i] for i in red), 0)), count, kind]
        innermost = x.ndim > 0 and x.ndim - 1 in axes
        if not one_block_per_slice(count, rows, innermost):
            return launch(reduce_short_kernel, rows, flat(x), flat(out), rows, *args)
        return launch_blocks(reduce_block_kernel, rows, block_threads(count), flat(x), flat(out),
                             *args)

    return lowering


for _op, _kind in ((ops.mean, MEAN), (ops.sum_, SUM), (ops.amax, MAX)):
    lower(_op)(reduction(_kind))


# -- softmax, log_softmax ---------------------------------------------------------------------


@cuda.jit
def softmax_short_kernel(x, out, rows, length, inner, log):
    """One thread per row of ``length`` elements ``inner`` apart (max-subtracted)."""
    r = cuda.grid(1)
    if r >= rows:
        return
    base = (r // inner) * length * inner + r % inner
    m = float64(x[base])
    for j in range(1, length):
        v = float64(x[base + j * inner])
        if v > m or v != v:
            m = v
    s = 0.0
    for j in range(length):
        s += math.exp(x[base + j * inner] - m)
    lse = math.log(s)
    for j in range(length):
        v = x[base + j * inner] - m
        out[base + j * inner] = v - lse if log else math.exp(v) / s


@cuda.jit
def softmax_block_kernel(x, out, length, inner, log):
    """One block per row: the max, then the sum of exponentials, each a shared-memory tree."""
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    part = cuda.shared.array(THREADS, float64)
    base = (r // inner) * length * inner + r % inner
    m = -math.inf
    for j in range(t, length, nt):
        m = combine(m, float64(x[base + j * inner]), MAX)
    part[t] = m
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if t < s:
            part[t] = combine(part[t], part[t + s], MAX)
        cuda.syncthreads()
        s //= 2
    m = part[0]
    cuda.syncthreads()
    acc = 0.0
    for j in range(t, length, nt):
        acc += math.exp(x[base + j * inner] - m)
    part[t] = acc
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if t < s:
            part[t] += part[t + s]
        cuda.syncthreads()
        s //= 2
    total = part[0]
    lse = math.log(total)
    for j in range(t, length, nt):
        v = x[base + j * inner] - m
        out[base + j * inner] = v - lse if log else math.exp(v) / total


def softmax_step(b: Builder, node: Node, log: bool) -> Step:
    x, out = unary(b, node)
    if x.ndim == 0:
        shape, dim = (1,), 0
    else:
        shape, dim = tuple(x.shape), node.attrs.dim % x.ndim
    outer, inner = slabs(shape, dim)
    length = shape[dim]
    rows = outer * inner
    if rows == 0 or length == 0:
        return lambda: None
    src, dst = flat(x), flat(out)
    if not one_block_per_slice(length, rows, inner == 1):
        return launch(softmax_short_kernel, rows, src, dst, rows, length, inner, log)
    return launch_blocks(softmax_block_kernel, rows, block_threads(length), src, dst, length,
                         inner, log)


lower(ops.softmax)(lambda b, node: softmax_step(b, node, log=False))
lower(ops.log_softmax)(lambda b, node: softmax_step(b, node, log=True))


# -- prelu, rrelu, dropout ------------------------------------------------------------------


@cuda.jit
def channel_slope_kernel(x, out, slope, channels, inner, shared):
    """``x > 0 ? x : a·x`` with the slope ``a`` of channel ``(i // inner) % channels``, or
    the one slope when ``shared``."""
    i = cuda.grid(1)
    if i < out.size:
        v = x[i]
        c = 0 if shared else (i // inner) % channels
        out[i] = v if v > 0 else slope[c] * v


@lower(ops.prelu)
def prelu(b: Builder, node: Node) -> Step:
    """One thread per element reading the weight itself (one slope, or one per channel on
    dim 1): no derived form, so an updated weight needs no refresh."""
    x, out = unary(b, node)
    w = b.array(node.inputs[1])
    channels = x.shape[1] if x.ndim >= 2 else 1
    inner = int(np.prod(x.shape[2:], dtype=np.int64)) if x.ndim >= 2 else 1
    return launch(channel_slope_kernel, out.size, flat(x), flat(out), flat(w), channels,
                  max(1, inner), w.size == 1)


@cuda.jit
def leaky_kernel(x, out, slope):
    i = cuda.grid(1)
    if i < out.size:
        v = x[i]
        out[i] = v if v > 0 else slope * v


@cuda.jit
def sampled_slope_kernel(x, slope, out, multiplier):
    """rrelu in training: ``x > 0 ? x : a·x`` with this element's drawn slope ``a``; the
    multiplier output is 1 or ``a``."""
    i = cuda.grid(1)
    if i < out.size:
        v = x[i]
        a = slope[i] if not v > 0 else 1.0
        out[i] = v * a if not v > 0 else v
        multiplier[i] = a


@lower(ops.rrelu)
def rrelu(b: Builder, node: Node) -> Step:
    """Eval: leaky ReLU with the mean slope. Training: slopes drawn on the host from
    ``b.rng`` as the reference draws them, uploaded each call into a buffer of the lowering."""
    x, out = unary(b, node)
    a = node.attrs
    src, dst = flat(x), flat(out)
    if not a.training:
        return launch(leaky_kernel, out.size, src, dst, (a.lower + a.upper) / 2)
    multiplier = flat(b.array(node.outputs[1]))
    slope = cuda.device_array(max(1, x.size), out.dtype)
    run = launch(sampled_slope_kernel, out.size, src, slope, dst, multiplier)
    size, dtype = x.size, out.dtype

    def sampled() -> None:
        slope.copy_to_device(b.rng.uniform(a.lower, a.upper, size).astype(dtype))
        run()

    return sampled


@cuda.jit
def masked_kernel(x, mask, out, inner):
    """``out[i] = x[i]·mask[i // inner]`` (inner 1: dropout; H·W: dropout2d)."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = x[i] * mask[i // inner]


def dropout_step(b: Builder, node: Node) -> Step:
    """Eval: a copy. Training: the scaled mask ``keep/(1 − p)`` (the second output; per
    element, or per (sample, channel) for dropout2d), drawn on the host from ``b.rng`` as the
    reference draws it and uploaded into that output, then ``y = x·mask`` in one kernel."""
    x, out = unary(b, node)
    p = node.attrs.p
    if not node.attrs.training:
        return copy_reshaped(b, node)
    mask = b.array(node.outputs[1])
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    inner = x.size // max(1, mask.size)
    run = launch(masked_kernel, out.size, flat(x), flat(mask), flat(out), max(1, inner))
    shape, dtype = tuple(mask.shape), mask.dtype

    def step() -> None:
        if p >= 1.0:
            host = np.zeros(shape, dtype)
        else:
            host = ((b.rng.random(shape) >= p) * scale).astype(dtype)
        mask.copy_to_device(host)
        run()

    return step


lower(ops.dropout)(dropout_step)
lower(ops.dropout2d)(dropout_step)


# -- slice, gather ----------------------------------------------------------------------------


@lower(ops.slice_)
def slice_(b: Builder, node: Node) -> Step:
    """A strided read: each sliced dim's stride times its step, from the first element."""
    x, out = unary(b, node)
    if out.size == 0:
        return lambda: None
    strides = list(contiguous_strides(tuple(x.shape)))
    base = 0
    for axis, start, _, step in tensor_ops.slice_bounds(node.attrs, tuple(x.shape)):
        base += start * strides[axis]
        strides[axis] *= step
    return gather(x, out, tuple(strides), base)


@cuda.jit
def index_select_kernel(x, out, index, length, count, inner):
    """``out[o, j, r] = x[o, index[j], r]`` over (outer, count, inner) views."""
    i = cuda.grid(1)
    if i < out.size:
        r = i % inner
        j = (i // inner) % count
        o = i // (inner * count)
        out[i] = x[(o * length + index[j]) * inner + r]


@lower(ops.gather)
def gather_(b: Builder, node: Node) -> Step:
    x, out = unary(b, node)
    dim, indices = tensor_ops.gather_indices(node.attrs, tuple(x.shape))
    if out.size == 0:
        return lambda: None
    _, inner = slabs(tuple(x.shape), dim)
    index = cuda.to_device(np.asarray(indices, np.int64))
    return launch(index_select_kernel, out.size, flat(x), flat(out), index, x.shape[dim],
                  len(indices), max(1, inner))


# -- elementwise math -------------------------------------------------------------------------

SQRT, EXP, LOG, POW, CLAMP = 0, 1, 2, 3, 4


@cuda.jit
def math_kernel(x, out, kind, p, lo, hi):
    """One elementwise function per ``kind``; clamp's missing bound is ±inf."""
    i = cuda.grid(1)
    if i < out.size:
        v = x[i]
        if kind == SQRT:
            out[i] = math.sqrt(v) if v >= 0 else math.nan
        elif kind == EXP:
            out[i] = math.exp(v)
        elif kind == LOG:
            out[i] = (math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan))
        elif kind == POW:
            out[i] = math.pow(v, p)
        else:
            v = lo if v < lo else v
            out[i] = hi if v > hi else v


def math_step(kind: int):
    def lowering(b: Builder, node: Node) -> Step:
        x, out = unary(b, node)
        a = node.attrs
        p = float(a.exponent) if kind == POW else 0.0
        lo = -math.inf if kind != CLAMP or a.min is None else float(a.min)
        hi = math.inf if kind != CLAMP or a.max is None else float(a.max)
        if out.size == 0:
            return lambda: None
        return launch(math_kernel, out.size, flat(x), flat(out), kind, p, lo, hi)

    return lowering


for _op, _kind in ((ops.sqrt, SQRT), (ops.exp, EXP), (ops.log, LOG), (ops.pow_, POW),
                   (ops.clamp, CLAMP)):
    lower(_op)(math_step(_kind))

COMPARE_CODES = {"gt": 0, "lt": 1, "ge": 2, "le": 3, "eq": 4, "ne": 5}


@cuda.jit
def select_kernel(c, a, b, out, shape, c_strides, a_strides, b_strides, kind):
    """Broadcasting reads of up to three operands at the output's index: ``kind`` < 0 is
    ``where(c != 0, a, b)``, else the comparison ``a ∘ b`` (``COMPARE_CODES``) as 1.0/0.0."""
    i = cuda.grid(1)
    if i >= out.size:
        return
    rest, ic, ia, ib = i, 0, 0, 0
    for d in range(MAX_RANK - 1, -1, -1):
        k = rest % shape[d]
        rest //= shape[d]
        ic += k * c_strides[d]
        ia += k * a_strides[d]
        ib += k * b_strides[d]
    x, y = a[ia], b[ib]
    if kind < 0:
        out[i] = x if c[ic] != 0 else y
        return
    if kind == 0:
        t = x > y
    elif kind == 1:
        t = x < y
    elif kind == 2:
        t = x >= y
    elif kind == 3:
        t = x <= y
    elif kind == 4:
        t = x == y
    else:
        t = x != y
    out[i] = 1.0 if t else 0.0


def select_step(b: Builder, node: Node, operands: list, kind: int) -> Step:
    out = b.array(node.output)
    if out.size == 0:
        return lambda: None
    shape = padded(tuple(out.shape))
    strides = [cuda.to_device(broadcast_strides(tuple(v.shape))) for v in operands]
    arrays = [flat(v) for v in operands]
    return launch(select_kernel, out.size, *arrays, flat(out), cuda.to_device(shape),
                  *strides, kind)


@lower(ops.compare)
def compare(b: Builder, node: Node) -> Step:
    x, y = (b.array(v) for v in node.inputs)
    return select_step(b, node, [x, x, y], COMPARE_CODES[node.attrs.kind])


@lower(ops.where)
def where(b: Builder, node: Node) -> Step:
    return select_step(b, node, [b.array(v) for v in node.inputs], -1)
