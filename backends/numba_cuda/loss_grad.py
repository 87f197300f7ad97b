"""Loss gradients on the GPU (``loss_grad``; docs/semantics.md §2, the reference's
"gradients" section): the gradient of the reduced loss with respect to one of its inputs,
times the incoming gradient ``g``. ``s`` is the incoming gradient per item: ``g[item]`` for
reduction 'none', ``g[0]`` for 'sum', ``g[0] / count`` for 'mean'.

- cross_entropy and nll_loss with respect to the scores (input 0): one thread per row (one
  row per (sample, spatial position), its classes ``inner`` elements apart, as the forward
  kernels read them), which recomputes the row's log-sum-exp and writes the row's C
  gradients ``s·(p_c·U − u_c)`` (cross_entropy, ``u_c = w_c·q'_c``, ``U = Σ_c u_c``) or
  ``−s·u_c`` (nll). With class-index targets and 'mean' the divisor ``D = Σ w[y]`` over the
  kept rows is reduced on the device first, by one block (strided partial sums and a
  shared-memory tree), which writes ``s = g / D`` to a one-element scratch: two launches;
  one otherwise. With respect to probability targets (cross_entropy's input 1) the same
  thread writes ``−s·(1 − ε)·w_c·lp_c``.
- The pointwise losses (l1, mse, smooth_l1, huber with respect to input or target; bce and
  bce_with_logits with respect to input or target, their weight and pos_weight read
  through broadcasting strides): one thread per element, one launch.

Other cases (the gradients with respect to class weights, weight or pos_weight, the metric
losses) are refused by name at lowering. As in the forward kernels, a class target out of
``[0, C)`` (which the reference refuses) gives NaN gradients: a kernel cannot raise.
"""

from __future__ import annotations

import math

import numpy as np
from numba import float64

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cuda.elementwise import MAX_RANK, broadcast_strides
from cnnir.backends.numba_cuda.loss import (
    BCE,
    BCE_LOGITS,
    HUBER,
    L1,
    MSE,
    SMOOTH_L1,
    clamped_log,
    class_rows,
    log_sum_exp,
    optional,
)
from cnnir.backends.numba_cuda.runtime import THREADS, cuda, flat, lower
from cnnir.backends.numba_cuda.tensor import block_threads, launch, launch_blocks, offset_of
from cnnir.errors import LoweringError
from cnnir.ir import Node
from cnnir.ops import loss as loss_ops

BCE_FLOOR = float(np.float32(1e-12))  # the reference's floor of p·(1 − p)


@cuda.jit(device=True, inline=True)
def divide(g, d):
    """``g / d`` as numpy divides floats (d = 0: ±inf, or NaN for g = 0 or NaN)."""
    if d == 0.0:
        return math.nan if g == 0.0 or g != g else math.copysign(math.inf, g)
    return g / d


@cuda.jit(device=True, inline=True)
def item_scale(g, scale, i, per_item, divisor):
    """The incoming gradient of item ``i``: ``g[i]`` ('none'), else ``scale[0] / divisor``."""
    if per_item:
        return float64(g[i])
    return divide(float64(scale[0]), divisor)


# -- classification ---------------------------------------------------------------------------


@cuda.jit
def class_divisor_kernel(g, target, w, has_w, rows, classes, ignore, scale):
    """``scale[0] = g[0] / D``, ``D = Σ w[y]`` over the rows whose target is kept (NaN for a
    target out of range); one block."""
    part = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    d = 0.0
    for r in range(t, rows, cuda.blockDim.x):
        y = target[r]
        if y != ignore:
            if y < 0 or y >= classes:
                d += math.nan
            else:
                d += float64(w[y]) if has_w else 1.0
    part[t] = d
    cuda.syncthreads()
    step = cuda.blockDim.x // 2
    while step > 0:
        if t < step:
            part[t] += part[t + step]
        cuda.syncthreads()
        step //= 2
    if t == 0:
        scale[0] = divide(float64(g[0]), part[0])


@cuda.jit
def class_grad_kernel(out, x, target, q, w, has_w, g, scale, per_row, divisor, rows, classes,
                      inner, ignore, eps, integer, softmax, wrt):
    """Row r's gradients with respect to the scores (``wrt`` 0): ``s·(p_c·U − u_c)``
    (``softmax``) or ``−s·u_c``, ``u_c = w_c·q'_c``, an ignored row's ``s·0``; or with
    respect to probability targets (``wrt`` 1): ``−s·(1 − ε)·w_c·lp_c``."""
    r = cuda.grid(1)
    if r >= rows:
        return
    base = (r // inner) * classes * inner + r % inner
    s = item_scale(g, scale, r, per_row, divisor)
    y = 0
    if integer:
        y = target[r]
        if y == ignore:
            for c in range(classes):
                out[base + c * inner] = s * 0.0
            return
        if y < 0 or y >= classes:
            for c in range(classes):
                out[base + c * inner] = math.nan
            return
    lse = log_sum_exp(x, base, classes, inner) if softmax else 0.0
    if wrt == 1:
        for c in range(classes):
            k = base + c * inner
            wc = float64(w[c]) if has_w else 1.0
            out[k] = -s * (1.0 - eps) * wc * (float64(x[k]) - lse)
        return
    smooth = eps / classes
    total = 0.0  # U
    for c in range(classes):
        k = base + c * inner
        wc = float64(w[c]) if has_w else 1.0
        if integer:
            qc = (1.0 - eps if c == y else 0.0) + smooth
        else:
            qc = (1.0 - eps) * float64(q[k]) + smooth
        total += wc * qc
    for c in range(classes):
        k = base + c * inner
        wc = float64(w[c]) if has_w else 1.0
        if integer:
            qc = (1.0 - eps if c == y else 0.0) + smooth
        else:
            qc = (1.0 - eps) * float64(q[k]) + smooth
        u = wc * qc
        if softmax:
            out[k] = s * (math.exp(float64(x[k]) - lse) * total - u)
        else:
            out[k] = -s * u


def classification_grad(b: Builder, node: Node, attrs, softmax: bool, wrt: int) -> Step:
    g = flat(b.array(node.inputs[0]))
    x = b.array(node.inputs[1])
    target_value = node.inputs[2]
    integer = np.dtype(target_value.type.dtype).kind in "iu"
    # class indices, or probabilities q (the other a one-element stand-in, never read)
    if integer:
        target = flat(b.array(target_value))
        q = b.scratch((1,), owner=("loss-absent",))
    else:
        target = b.scratch((1,), np.int64, owner=("loss-absent",))
        q = flat(b.array(target_value))
    w, has_w = optional(b, node, 3)
    rows, classes, inner = class_rows(x)
    eps = float(getattr(attrs, "label_smoothing", 0.0))
    ignore = int(getattr(attrs, "ignore_index", -100))
    out = flat(b.array(node.output))
    reduction = attrs.reduction
    per_row = reduction == "none"
    steps = []
    if reduction == "mean" and integer:
        scale = b.scratch((1,), np.float64, owner=("loss_grad", node.name))
        steps.append(launch_blocks(class_divisor_kernel, 1, block_threads(rows), g, target, w,
                                   has_w, rows, classes, ignore, scale))
        divisor = 1.0
    else:
        scale = g
        divisor = float(rows) if reduction == "mean" else 1.0
    if rows == 0 or classes == 0:
        return lambda: None
    steps.append(launch(class_grad_kernel, rows, out, flat(x), target, q, w, has_w, g, scale,
                        per_row, divisor, rows, classes, inner, ignore, eps, integer, softmax,
                        wrt))

    def step() -> None:
        for s in steps:
            s()

    return step


# -- pointwise --------------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def sign(d):
    """``np.sign``: −1, 0, 1, NaN for NaN."""
    if d > 0.0:
        return 1.0
    if d < 0.0:
        return -1.0
    return d  # 0 or NaN


@cuda.jit(device=True, inline=True)
def log_sigmoid(u):
    """``log σ(u)``, stably."""
    return -(math.log1p(math.exp(-abs(u))) + (-u if u < 0.0 else 0.0))


@cuda.jit
def pointwise_grad_kernel(out, x, y, w, pw, g, shape, w_strides, pw_strides, has_w, has_pw,
                          per_item, divisor, kind, param, wrt):
    """Element i's gradient of a pointwise loss (``kind``; ``param`` is beta or delta) with
    respect to input ``wrt`` (0 or 1)."""
    i = cuda.grid(1)
    if i >= x.size:
        return
    s = item_scale(g, g, i, per_item, divisor)
    u = float64(x[i])
    t = float64(y[i])
    wi = float64(w[offset_of(i, shape, w_strides)]) if has_w else 1.0
    if kind == BCE:
        if wrt == 0:
            v = u * (1.0 - u)
            den = v if v > BCE_FLOOR or v != v else BCE_FLOOR
            grad = wi * (u - t) / den
        else:
            grad = wi * (clamped_log(1.0 - u) - clamped_log(u))
    elif kind == BCE_LOGITS:
        p = float64(pw[offset_of(i, shape, pw_strides)]) if has_pw else 1.0
        if wrt == 0:
            sig = 1.0 / (1.0 + math.exp(-u)) if u >= 0.0 else math.exp(u) / (1.0 + math.exp(u))
            grad = wi * (p * t * (sig - 1.0) + (1.0 - t) * sig)
        else:
            grad = -wi * (p * log_sigmoid(u) - log_sigmoid(-u))
    else:
        d = u - t
        if kind == L1:
            grad = sign(d)
        elif kind == MSE:
            grad = 2.0 * d
        elif kind == SMOOTH_L1:
            grad = d / param if abs(d) < param else sign(d)
        else:
            grad = param if d > param else (-param if d < -param else d)
        if wrt == 1:
            grad = -grad
    out[i] = grad * s


def pointwise_grad(b: Builder, node: Node, attrs, kind: int, wrt: int) -> Step:
    g = flat(b.array(node.inputs[0]))
    x = b.array(node.inputs[1])
    y = b.array(node.inputs[2])
    w, has_w = optional(b, node, 3)
    pw, has_pw = optional(b, node, 4)
    shape = (1,) * (MAX_RANK - x.ndim) + tuple(x.shape)

    def strides(i: int) -> np.ndarray:
        there = len(node.inputs) > i and node.inputs[i] is not None
        return broadcast_strides(tuple(node.inputs[i].type.shape) if there else ())

    param = 0.0
    if kind == SMOOTH_L1:
        param = float(attrs.beta)
        if param == 0.0:
            kind = L1  # beta = 0 is exactly L1
    elif kind == HUBER:
        param = float(attrs.delta)
    if x.size == 0:
        return lambda: None
    reduction = attrs.reduction
    divisor = float(x.size) if reduction == "mean" else 1.0
    return launch(pointwise_grad_kernel, x.size, flat(b.array(node.output)), flat(x), flat(y),
                  w, pw, g, cuda.to_device(np.array(shape, np.int64)),
                  cuda.to_device(strides(3)), cuda.to_device(strides(4)), has_w, has_pw,
                  reduction == "none", divisor, kind, param, wrt)


POINTWISE = {ops.l1_loss: L1, ops.mse_loss: MSE, ops.smooth_l1_loss: SMOOTH_L1,
             ops.huber_loss: HUBER, ops.binary_cross_entropy: BCE,
             ops.binary_cross_entropy_with_logits: BCE_LOGITS}


def refuse(loss, wrt: int) -> LoweringError:
    name = getattr(loss, "name", repr(loss))
    return LoweringError(
        f"the cuda backend has no kernel for loss_grad of {name} with respect to input {wrt}",
        hint="it has the gradients of cross_entropy and nll_loss with respect to the scores "
             "(and of cross_entropy with respect to probability targets), and of the "
             "pointwise losses with respect to input and target; compile with "
             "backend='numba' or 'reference' for this one")


@lower(loss_ops.loss_grad)
def loss_grad(b: Builder, node: Node) -> Step:
    a = node.attrs
    loss, wrt = a.loss, a.wrt
    attrs = a.loss_attrs if a.loss_attrs is not None else loss.attrs()
    if loss in (ops.cross_entropy, ops.nll_loss):
        integer = np.dtype(node.inputs[2].type.dtype).kind in "iu"
        if (wrt == 0 and (integer or loss is ops.cross_entropy)
                or wrt == 1 and not integer and loss is ops.cross_entropy):
            return classification_grad(b, node, attrs, loss is ops.cross_entropy, wrt)
    if loss in POINTWISE and wrt in (0, 1):
        x_type, y_type = node.inputs[1].type, node.inputs[2].type
        if tuple(x_type.shape) == tuple(y_type.shape):
            return pointwise_grad(b, node, attrs, POINTWISE[loss], wrt)
    raise refuse(loss, wrt)
