"""Losses on the GPU (docs/semantics.md §2; contrastive_loss is the cnnir convention, label 0 =
similar): two launches each (one for reduction 'none', three for long reductions).

1. The items kernel: one thread per loss item, computing its loss in float64: per element for
   the pointwise losses (l1, mse, smooth_l1, huber, bce, bce_with_logits; weights and
   pos_weight read through broadcasting strides), per row for the others (cross_entropy and
   nll: one row per (sample, spatial position), its classes ``inner`` elements apart, so
   neighbouring threads read neighbouring addresses; triplet and contrastive: one row per
   embedding). With reduction 'none' it writes the output itself and is the only launch.
2. The finish kernel (for 'sum' and 'mean'): one block reducing the items, held in a float64
   scratch buffer, in a shared-memory tree, and dividing for 'mean': by the item count, or
   for class-index cross_entropy and nll by ``D = Σ w[y]`` over the kept rows (reduced in the
   same tree), NaN when it is 0 (every target ignored). Beyond ``LONG`` items a partial
   kernel first reduces them over up to ``PARTIALS`` blocks (grid-strided, one shared-memory
   tree each), and the finish kernel reduces those partial sums: three launches.

A class target outside ``[0, C)`` (other than ignore_index), which the reference refuses,
gives a NaN loss here: a kernel cannot raise.
"""

from __future__ import annotations

import math

import numpy as np
from numba import float64

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cuda.elementwise import MAX_RANK, broadcast_strides
from cnnir.backends.numba_cuda.runtime import THREADS, blocks, cuda, flat, lower
from cnnir.backends.numba_cuda.tensor import block_threads, launch, launch_blocks, offset_of
from cnnir.ir import Node

SUM, MEAN, WEIGHTED_MEAN = 0, 1, 2
LONG = 16 * 1024  # more items than this are first summed by up to PARTIALS blocks
PARTIALS = 1024
L1, MSE, SMOOTH_L1, HUBER, BCE, BCE_LOGITS = 0, 1, 2, 3, 4, 5


# -- the reduction ----------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def block_sums(items, weights, start, stride, count, weighted, total, denom):
    """Thread 0 of the block gets, in ``total[0]`` and ``denom[0]``, the sums of ``items``
    and (``weighted``) ``weights`` at ``start + t, start + t + stride, ...`` below ``count``
    over the block's threads ``t``: strided partial sums, then a shared-memory tree."""
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    s = 0.0
    d = 0.0
    for k in range(start + t, count, stride):
        s += items[k]
        if weighted:
            d += weights[k]
    total[t] = s
    denom[t] = d
    cuda.syncthreads()
    step = nt // 2
    while step > 0:
        if t < step:
            total[t] += total[t + step]
            denom[t] += denom[t + step]
        cuda.syncthreads()
        step //= 2


@cuda.jit
def partial_kernel(items, weights, part_items, part_weights, count, weighted):
    """Block b's share of a long reduction (a grid-strided slice) into ``part_*[b]``."""
    total = cuda.shared.array(THREADS, float64)
    denom = cuda.shared.array(THREADS, float64)
    b = cuda.blockIdx.x
    block_sums(items, weights, b * cuda.blockDim.x, cuda.gridDim.x * cuda.blockDim.x, count,
               weighted, total, denom)
    if cuda.threadIdx.x == 0:
        part_items[b] = total[0]
        part_weights[b] = denom[0]


@cuda.jit
def finish_kernel(items, weights, out, count, items_total, mode):
    """``out[0]``: the sum of the ``count`` entries of ``items``, over ``items_total``
    ('mean'), or over the sum of ``weights`` (the weighted mean); one block."""
    total = cuda.shared.array(THREADS, float64)
    denom = cuda.shared.array(THREADS, float64)
    block_sums(items, weights, 0, cuda.blockDim.x, count, mode == WEIGHTED_MEAN, total, denom)
    if cuda.threadIdx.x == 0:
        s = total[0]
        if mode == SUM:
            out[0] = s
        else:
            d = float64(items_total) if mode == MEAN else denom[0]
            if d == 0.0:
                out[0] = math.nan if s == 0.0 or s != s else math.copysign(math.inf, s)
            else:
                out[0] = s / d


def finish(b: Builder, node: Node, items_kernel, items_count: int, args: tuple,
           weighted: bool = False) -> Step:
    """The step of a loss: the items kernel (``items_kernel(items, weights, *args)`` over
    ``items_count`` threads) writing the output ('none'); or into scratch, then the finish
    kernel, after ``partial_kernel`` (up to ``PARTIALS`` blocks) when there are more than
    ``LONG`` items."""
    out = flat(b.array(node.output))
    reduction = node.attrs.reduction
    owner = ("loss", node.name)
    # the per-row weights only where the kernel writes them (class-index losses)
    weights = b.scratch((max(1, items_count) if weighted else 1,), np.float64,
                        owner=owner if weighted else ("loss-absent",))
    if reduction == "none":
        if items_count == 0:
            return lambda: None
        return launch(items_kernel, items_count, out, weights, *args)
    items = b.scratch((max(1, items_count),), np.float64, owner=owner + ("items",))
    mode = SUM if reduction == "sum" else (WEIGHTED_MEAN if weighted else MEAN)
    steps = [launch(items_kernel, items_count, items, weights, *args)] if items_count else []
    if items_count > LONG:
        grid = min(PARTIALS, blocks(items_count))
        part_items = b.scratch((grid,), np.float64, owner=owner + ("partials",))
        part_weights = b.scratch((grid,), np.float64, owner=owner + ("partial weights",))
        steps.append(launch_blocks(partial_kernel, grid, THREADS, items, weights, part_items,
                                   part_weights, items_count, weighted))
        items, weights, count = part_items, part_weights, grid
    else:
        count = items_count
    steps.append(launch_blocks(finish_kernel, 1, block_threads(count), items, weights, out,
                               count, items_count, mode))

    def step() -> None:
        for s in steps:
            s()

    return step


def optional(b: Builder, node: Node, i: int):
    """The array of optional input ``i`` (flat) and whether it is there; a one-element
    stand-in (never read) when it is not."""
    value = node.inputs[i] if len(node.inputs) > i else None
    if value is None:
        return b.scratch((1,), owner=("loss-absent",)), False
    return flat(b.array(value)), True


# -- classification ---------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def log_sum_exp(x, base, classes, inner):
    """``max + log Σ exp(x − max)`` over the classes of one row."""
    m = float64(x[base])
    for c in range(1, classes):
        v = float64(x[base + c * inner])
        if v > m or v != v:
            m = v
    s = 0.0
    for c in range(classes):
        s += math.exp(float64(x[base + c * inner]) - m)
    return m + math.log(s)


@cuda.jit
def class_index_kernel(items, weights, x, target, w, has_w, rows, classes, inner, ignore,
                       eps, softmax):
    """Row r: ``−w[y]·lp[y]`` (smoothing: ``(1−ε)·that + (ε/C)·(−Σ_c w_c·lp_c)``), 0 where
    ``y`` is ignored; ``weights[r] = w[y]`` (0 where ignored). ``lp = x − lse`` for
    cross_entropy (``softmax``), ``x`` itself for nll."""
    r = cuda.grid(1)
    if r >= rows:
        return
    base = (r // inner) * classes * inner + r % inner
    y = target[r]
    if y == ignore:
        items[r] = 0.0
        weights[r] = 0.0
        return
    if y < 0 or y >= classes:
        items[r] = math.nan
        weights[r] = math.nan
        return
    lse = log_sum_exp(x, base, classes, inner) if softmax else 0.0
    wy = float64(w[y]) if has_w else 1.0
    loss = -wy * (float64(x[base + y * inner]) - lse)
    if eps != 0.0:
        smooth = 0.0
        for c in range(classes):
            wc = float64(w[c]) if has_w else 1.0
            smooth -= wc * (float64(x[base + c * inner]) - lse)
        loss = (1.0 - eps) * loss + eps / classes * smooth
    items[r] = loss
    weights[r] = wy


@cuda.jit
def probability_kernel(items, weights, x, q, w, has_w, rows, classes, inner, eps):
    """Row r: ``−Σ_c w_c·q'_c·lp_c`` with ``q' = (1−ε)q + ε/C``."""
    r = cuda.grid(1)
    if r >= rows:
        return
    base = (r // inner) * classes * inner + r % inner
    lse = log_sum_exp(x, base, classes, inner)
    acc = 0.0
    for c in range(classes):
        k = base + c * inner
        wc = float64(w[c]) if has_w else 1.0
        acc += wc * ((1.0 - eps) * q[k] + eps / classes) * (float64(x[k]) - lse)
    items[r] = -acc


def class_rows(x) -> tuple[int, int, int]:
    """(rows, classes, inner) of scores (N, C, d...) or unbatched (C,)."""
    if x.ndim == 1:
        return 1, x.shape[0], 1
    inner = int(np.prod(x.shape[2:], dtype=np.int64))
    return x.shape[0] * inner, x.shape[1], inner


def class_index_loss(b: Builder, node: Node, eps: float, softmax: bool) -> Step:
    x = b.array(node.inputs[0])
    target = flat(b.array(node.inputs[1]))
    w, has_w = optional(b, node, 2)
    rows, classes, inner = class_rows(x)
    args = (flat(x), target, w, has_w, rows, classes, inner, int(node.attrs.ignore_index),
            float(eps), softmax)
    return finish(b, node, class_index_kernel, rows, args, weighted=True)


@lower(ops.cross_entropy)
def cross_entropy(b: Builder, node: Node) -> Step:
    a = node.attrs
    if np.dtype(node.inputs[1].type.dtype).kind in "iu":
        return class_index_loss(b, node, a.label_smoothing, softmax=True)
    x = b.array(node.inputs[0])
    q = flat(b.array(node.inputs[1]))
    w, has_w = optional(b, node, 2)
    rows, classes, inner = class_rows(x)
    return finish(b, node, probability_kernel, rows,
                  (flat(x), q, w, has_w, rows, classes, inner, float(a.label_smoothing)))


@lower(ops.nll_loss)
def nll_loss(b: Builder, node: Node) -> Step:
    return class_index_loss(b, node, 0.0, softmax=False)


# -- pointwise --------------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def clamped_log(v):
    """``max(log v, −100)`` (log 0 = −inf clamps to −100; a negative or NaN ``v`` is NaN)."""
    if v > 0.0:
        u = math.log(v)
        return u if u > -100.0 else -100.0
    if v == 0.0:
        return -100.0
    return math.nan


@cuda.jit
def pointwise_kernel(items, weights, x, y, w, pw, shape, w_strides, pw_strides, has_w, has_pw,
                     kind, param):
    """Element i of a pointwise loss (``kind``; ``param`` is beta or delta)."""
    i = cuda.grid(1)
    if i >= x.size:
        return
    u = float64(x[i])
    t = float64(y[i])
    if kind == BCE:
        loss = -(t * clamped_log(u) + (1.0 - t) * clamped_log(1.0 - u))
    elif kind == BCE_LOGITS:
        p = float64(pw[offset_of(i, shape, pw_strides)]) if has_pw else 1.0
        log_sig = math.log1p(math.exp(-abs(u))) + (-u if u < 0.0 else 0.0)
        loss = (1.0 - t) * u + (1.0 + (p - 1.0) * t) * log_sig
    else:
        d = abs(u - t)
        if kind == L1:
            loss = d
        elif kind == MSE:
            loss = d * d
        elif kind == SMOOTH_L1:
            loss = 0.5 * d * d / param if d < param else d - 0.5 * param
        else:
            loss = 0.5 * d * d if d < param else param * (d - 0.5 * param)
    if has_w:
        loss *= float64(w[offset_of(i, shape, w_strides)])
    items[i] = loss


def pointwise(kind: int, param_name: str | None = None):
    def lowering(b: Builder, node: Node) -> Step:
        x = b.array(node.inputs[0])
        y = b.array(node.inputs[1])
        w, has_w = optional(b, node, 2)
        pw, has_pw = optional(b, node, 3)
        shape = (1,) * (MAX_RANK - x.ndim) + tuple(x.shape)

        def strides(i: int) -> np.ndarray:
            there = len(node.inputs) > i and node.inputs[i] is not None
            return broadcast_strides(tuple(node.inputs[i].type.shape) if there else ())

        param = 0.0 if param_name is None else float(getattr(node.attrs, param_name))
        code = kind
        if kind == SMOOTH_L1 and param == 0.0:
            code = L1  # beta = 0 is exactly L1
        args = (flat(x), flat(y), w, pw, cuda.to_device(np.array(shape, np.int64)),
                cuda.to_device(strides(2)), cuda.to_device(strides(3)), has_w, has_pw, code,
                param)
        return finish(b, node, pointwise_kernel, x.size, args)

    return lowering


lower(ops.binary_cross_entropy)(pointwise(BCE))
lower(ops.binary_cross_entropy_with_logits)(pointwise(BCE_LOGITS))
lower(ops.l1_loss)(pointwise(L1))
lower(ops.mse_loss)(pointwise(MSE))
lower(ops.smooth_l1_loss)(pointwise(SMOOTH_L1, "beta"))
lower(ops.huber_loss)(pointwise(HUBER, "delta"))


# -- metric losses ----------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def distance(u, v, base, dim, p, eps):
    """``‖u − v + eps‖_p`` over the ``dim`` features of one row."""
    acc = 0.0
    for k in range(dim):
        diff = abs(float64(u[base + k]) - float64(v[base + k]) + eps)
        if p == 2.0:
            acc += diff * diff
        elif p == 1.0:
            acc += diff
        else:
            acc += diff ** p
    if p == 2.0:
        return math.sqrt(acc)
    if p == 1.0:
        return acc
    return acc ** (1.0 / p)


@cuda.jit
def triplet_kernel(items, weights, anchor, pos, neg, rows, dim, margin, p, eps, swap):
    r = cuda.grid(1)
    if r >= rows:
        return
    base = r * dim
    d_ap = distance(anchor, pos, base, dim, p, eps)
    d_an = distance(anchor, neg, base, dim, p, eps)
    if swap:
        d_pn = distance(pos, neg, base, dim, p, eps)
        if d_pn < d_an or d_pn != d_pn:  # torch.minimum: NaN wins
            d_an = d_pn
    hinge = d_ap - d_an + margin
    items[r] = 0.0 if hinge < 0.0 else hinge  # clamp_min(0), NaN kept


@cuda.jit
def contrastive_kernel(items, weights, x1, x2, label, rows, dim, margin, eps):
    r = cuda.grid(1)
    if r >= rows:
        return
    d = distance(x1, x2, r * dim, dim, 2.0, eps)
    y = float64(label[r])
    gap = 0.0 if d >= margin else margin - d  # max(0, m − D), NaN kept
    items[r] = (1.0 - y) * 0.5 * d * d + y * 0.5 * gap * gap


def embedding_rows(x) -> tuple[int, int]:
    """(rows, features) of embeddings (N, D) or (D,)."""
    return (x.shape[0], x.shape[1]) if x.ndim == 2 else (1, x.shape[0])


@lower(ops.triplet_margin_loss)
def triplet_margin_loss(b: Builder, node: Node) -> Step:
    a = node.attrs
    anchor, pos, neg = (b.array(v) for v in node.inputs)
    rows, dim = embedding_rows(anchor)
    return finish(b, node, triplet_kernel, rows,
                  (flat(anchor), flat(pos), flat(neg), rows, dim, float(a.margin), float(a.p),
                   float(a.eps), bool(a.swap)))


@lower(ops.contrastive_loss)
def contrastive_loss(b: Builder, node: Node) -> Step:
    a = node.attrs
    x1, x2, label = (b.array(v) for v in node.inputs)
    rows, dim = embedding_rows(x1)
    return finish(b, node, contrastive_kernel, rows,
                  (flat(x1), flat(x2), flat(label), rows, dim, float(a.margin), float(a.eps)))
