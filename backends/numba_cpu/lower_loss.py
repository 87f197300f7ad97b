"""Loss lowerings (numpy, computed in float64 and written in the compute dtype).

Losses run once per step on small tensors, so clarity beats kernels here. Semantics follow
PyTorch (docs/semantics.md §2); contrastive_loss is the cnnir convention (label 0 = similar).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.program import lower
from cnnir.ir import Node


def reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "sum":
        return np.asarray(loss.sum())
    if reduction == "mean":
        return np.asarray(loss.mean()) if loss.size else np.asarray(np.nan)
    return loss


def _loss(op, fn: Callable[..., np.ndarray]) -> None:
    @lower(op)
    def lowering(b: Builder, node: Node) -> Step:
        args = [b.array(v) for v in node.inputs]
        out = b.array(node.output)

        def step() -> None:
            values = [a.astype(np.float64) if a is not None and a.dtype.kind == "f" else a
                      for a in args]
            np.copyto(out, fn(node.attrs, *values), casting="unsafe")

        return step


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _classes_last(x: np.ndarray) -> np.ndarray:
    """(N, C, d...) -> (N, d..., C); (C,) -> (1, C)."""
    return x[None] if x.ndim == 1 else np.moveaxis(x, 1, -1)


def cross_entropy(a, x, target, weight=None) -> np.ndarray:
    lp = _classes_last(_log_softmax(x if x.ndim > 1 else x[None]))
    classes = lp.shape[-1]
    w = np.ones(classes) if weight is None else weight
    eps = a.label_smoothing
    if target.dtype.kind != "f":
        t = target if x.ndim > 1 else target[None]
        valid = t != a.ignore_index
        safe = np.where(valid, t, 0)
        wy = w[safe] * valid
        nll = -np.take_along_axis(lp, safe[..., None], axis=-1)[..., 0] * wy
        smooth = -(lp * w).sum(axis=-1) * valid
        loss = (1 - eps) * nll + eps / classes * smooth
        if a.reduction == "mean":
            return np.asarray(loss.sum() / wy.sum())
        return reduce(loss if x.ndim > 1 else loss[0], a.reduction)
    q = _classes_last(target if x.ndim > 1 else target[None])
    q = (1 - eps) * q + eps / classes
    loss = -(w * q * lp).sum(axis=-1)
    return reduce(loss if x.ndim > 1 else loss[0], a.reduction)


def nll_loss(a, x, target, weight=None) -> np.ndarray:
    lp = _classes_last(x if x.ndim > 1 else x[None])
    t = target if x.ndim > 1 else target[None]
    w = np.ones(lp.shape[-1]) if weight is None else weight
    valid = t != a.ignore_index
    safe = np.where(valid, t, 0)
    wy = w[safe] * valid
    loss = -np.take_along_axis(lp, safe[..., None], axis=-1)[..., 0] * wy
    if a.reduction == "mean":
        return np.asarray(loss.sum() / wy.sum())
    return reduce(loss if x.ndim > 1 else loss[0], a.reduction)


def bce(a, p, y, weight=None) -> np.ndarray:
    with np.errstate(divide="ignore"):
        loss = -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))
    return reduce(loss * (1 if weight is None else weight), a.reduction)


def bce_with_logits(a, x, y, weight=None, pos_weight=None) -> np.ndarray:
    pw = 1.0 if pos_weight is None else pos_weight
    log_sig = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)
    loss = (1 - y) * x + (1 + (pw - 1) * y) * log_sig
    return reduce(loss * (1 if weight is None else weight), a.reduction)


def smooth_l1(a, x, y) -> np.ndarray:
    d = np.abs(x - y)
    if a.beta == 0:
        return reduce(d, a.reduction)
    return reduce(np.where(d < a.beta, 0.5 * d * d / a.beta, d - 0.5 * a.beta), a.reduction)


def huber(a, x, y) -> np.ndarray:
    d = np.abs(x - y)
    return reduce(np.where(d < a.delta, 0.5 * d * d, a.delta * (d - 0.5 * a.delta)), a.reduction)


def _distance(u: np.ndarray, v: np.ndarray, p: float, eps: float) -> np.ndarray:
    return (np.abs(u - v + eps) ** p).sum(axis=-1) ** (1.0 / p)


def triplet(a, anchor, pos, neg) -> np.ndarray:
    d_ap = _distance(anchor, pos, a.p, a.eps)
    d_an = _distance(anchor, neg, a.p, a.eps)
    if a.swap:
        d_an = np.minimum(d_an, _distance(pos, neg, a.p, a.eps))
    return reduce(np.maximum(d_ap - d_an + a.margin, 0), a.reduction)


def contrastive(a, x1, x2, label) -> np.ndarray:
    d = _distance(x1, x2, 2.0, a.eps)
    loss = (1 - label) * 0.5 * d**2 + label * 0.5 * np.maximum(a.margin - d, 0) ** 2
    return reduce(loss, a.reduction)


_loss(ops.cross_entropy, cross_entropy)
_loss(ops.nll_loss, nll_loss)
_loss(ops.binary_cross_entropy, bce)
_loss(ops.binary_cross_entropy_with_logits, bce_with_logits)
_loss(ops.l1_loss, lambda a, x, y: reduce(np.abs(x - y), a.reduction))
_loss(ops.mse_loss, lambda a, x, y: reduce((x - y) ** 2, a.reduction))
_loss(ops.smooth_l1_loss, smooth_l1)
_loss(ops.huber_loss, huber)
_loss(ops.triplet_margin_loss, triplet)
_loss(ops.contrastive_loss, contrastive)
