"""Reference losses (docs/semantics.md §2); reduction 'none' | 'sum' | 'mean' (default 'mean').

cross_entropy, lp = log_softmax(x, dim=1):
    class indices: ℓ_n = −w[y_n]·lp[n, y_n] (0 where y_n = ignore_index); with smoothing ε,
    ℓ = (1−ε)·ℓ + (ε/C)·S_n, S_n = −Σ_c w_c·lp[n,c]; 'mean' divides by D = Σ_n w[y_n]·[y_n ≠ ii]
    (NaN when every target is ignored).
    probabilities: q' = (1−ε)q + ε/C, ℓ_n = −Σ_c w_c·q'_c·lp[n,c]; 'mean' divides by the count.
nll_loss: the class-index rule with lp = input and no smoothing.
bce: −w[y·max(log p, −100) + (1−y)·max(log(1−p), −100)].
bce_with_logits (stable): w·[(1−y)x + (1+(pw−1)y)·(log(1+e^{−|x|}) + max(−x, 0))].
l1 |d|; mse d²; smooth_l1 |d|<β ? ½d²/β : |d| − ½β (β = 0 is L1);
huber |d|<δ ? ½d² : δ(|d| − ½δ); with d = input − target.
triplet_margin: d(a,b) = ‖a − b + eps‖_p, ℓ = max(d(a,pos) − d(a,neg) + margin, 0), with swap
    d(a,neg) ← min(d(a,neg), d(pos,neg)).
contrastive (cnnir convention, label 0 = similar): D = ‖f1 − f2 + eps‖₂,
    ℓ = (1−Y)·½·D² + Y·½·max(0, m − D)².
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.reference.activation import log_softmax_of
from cnnir.backends.reference.runtime import Context, kernel
from cnnir.errors import LoweringError
from cnnir.ops.loss import (
    ContrastiveAttrs,
    CrossEntropyAttrs,
    HuberAttrs,
    LossAttrs,
    NllAttrs,
    SmoothL1Attrs,
    TripletAttrs,
)


def reduce(loss: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "none":
        return loss
    return np.sum(loss) if reduction == "sum" else np.mean(loss)


def _class_weights(weight: np.ndarray | None, classes: int, dtype: np.dtype) -> np.ndarray:
    return np.ones(classes, dtype=dtype) if weight is None else weight


def _check_targets(target: np.ndarray, classes: int, ignore_index: int) -> None:
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bad.any():
        raise LoweringError(f"has target {int(target[bad].flat[0])} out of bounds for "
                            f"{classes} classes", hint="class indices must be in [0, C)")


def class_index_loss(lp: np.ndarray, target: np.ndarray, weight: np.ndarray | None,
                     ignore_index: int, smoothing: float, reduction: str) -> np.ndarray:
    """Weighted NLL of log-probabilities ``lp`` [N, C, ...] at integer ``target`` [N, ...]."""
    classes = lp.shape[1]
    _check_targets(target, classes, ignore_index)
    w = _class_weights(weight, classes, lp.dtype)
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    picked = np.take_along_axis(lp, safe[:, None], axis=1)[:, 0]
    w_target = w[safe] * valid
    loss = -w_target * picked
    if smoothing:
        w_c = w.reshape((1, classes) + (1,) * (lp.ndim - 2))
        smooth = -(w_c * lp).sum(axis=1) * valid
        loss = (1 - smoothing) * loss + (smoothing / classes) * smooth
    if reduction == "mean":
        return np.sum(loss) / np.sum(w_target)
    return reduce(loss, reduction)


def _batched(x: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An unbatched input (C,) becomes (1, C) with its target (), or (C,) for probabilities."""
    if x.ndim >= 2:
        return x, target
    return x[None], target[None]


def _unbatch(loss: np.ndarray, was_batched: bool, reduction: str) -> np.ndarray:
    return loss[0] if (not was_batched and reduction == "none") else loss


@kernel(ops.cross_entropy)
def cross_entropy(ctx: Context, a: CrossEntropyAttrs, x: np.ndarray, target: np.ndarray,
                  weight: np.ndarray | None) -> np.ndarray:
    integer = target.dtype.kind in "iu"
    xb, tb = _batched(x, target)
    lp = log_softmax_of(xb, 1)
    if integer:
        loss = class_index_loss(lp, tb, weight, a.ignore_index, a.label_smoothing, a.reduction)
        return _unbatch(loss, x.ndim >= 2, a.reduction)
    classes = lp.shape[1]
    q = (1 - a.label_smoothing) * tb + a.label_smoothing / classes
    w_c = _class_weights(weight, classes, lp.dtype).reshape((1, classes) + (1,) * (lp.ndim - 2))
    loss = -(w_c * q * lp).sum(axis=1)
    return _unbatch(reduce(loss, a.reduction), x.ndim >= 2, a.reduction)


@kernel(ops.nll_loss)
def nll_loss(ctx: Context, a: NllAttrs, x: np.ndarray, target: np.ndarray,
             weight: np.ndarray | None) -> np.ndarray:
    xb, tb = _batched(x, target)
    loss = class_index_loss(xb, tb, weight, a.ignore_index, 0.0, a.reduction)
    return _unbatch(loss, x.ndim >= 2, a.reduction)


def _weighted(loss: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    return loss if weight is None else loss * weight


@kernel(ops.binary_cross_entropy)
def binary_cross_entropy(ctx: Context, a: LossAttrs, p: np.ndarray, y: np.ndarray,
                         weight: np.ndarray | None) -> np.ndarray:
    log_p = np.maximum(np.log(p), -100.0)
    log_not_p = np.maximum(np.log(1 - p), -100.0)
    return reduce(_weighted(-(y * log_p + (1 - y) * log_not_p), weight), a.reduction)


@kernel(ops.binary_cross_entropy_with_logits)
def binary_cross_entropy_with_logits(ctx: Context, a: LossAttrs, x: np.ndarray, y: np.ndarray,
                                     weight: np.ndarray | None,
                                     pos_weight: np.ndarray | None) -> np.ndarray:
    softplus_neg = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0.0)  # −log σ(x)
    coef = 1.0 if pos_weight is None else 1 + (pos_weight - 1) * y
    loss = (1 - y) * x + coef * softplus_neg
    return reduce(_weighted(loss, weight), a.reduction)


@kernel(ops.l1_loss)
def l1_loss(ctx: Context, a: LossAttrs, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return reduce(np.abs(x - y), a.reduction)


@kernel(ops.mse_loss)
def mse_loss(ctx: Context, a: LossAttrs, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return reduce((x - y) ** 2, a.reduction)


@kernel(ops.smooth_l1_loss)
def smooth_l1_loss(ctx: Context, a: SmoothL1Attrs, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = np.abs(x - y)
    if a.beta == 0:
        return reduce(d, a.reduction)
    return reduce(np.where(d < a.beta, 0.5 * d**2 / a.beta, d - 0.5 * a.beta), a.reduction)


@kernel(ops.huber_loss)
def huber_loss(ctx: Context, a: HuberAttrs, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = np.abs(x - y)
    return reduce(np.where(d < a.delta, 0.5 * d**2, a.delta * (d - 0.5 * a.delta)), a.reduction)


def pairwise_distance(a: np.ndarray, b: np.ndarray, p: float, eps: float) -> np.ndarray:
    """``‖a − b + eps‖_p`` over the last dim (eps is added to the difference)."""
    return np.linalg.norm(a - b + eps, ord=p, axis=-1)


@kernel(ops.triplet_margin_loss)
def triplet_margin_loss(ctx: Context, a: TripletAttrs, anchor: np.ndarray, pos: np.ndarray,
                        neg: np.ndarray) -> np.ndarray:
    d_ap = pairwise_distance(anchor, pos, a.p, a.eps)
    d_an = pairwise_distance(anchor, neg, a.p, a.eps)
    if a.swap:
        d_an = np.minimum(d_an, pairwise_distance(pos, neg, a.p, a.eps))
    return reduce(np.maximum(d_ap - d_an + a.margin, 0.0), a.reduction)


@kernel(ops.contrastive_loss)
def contrastive_loss(ctx: Context, a: ContrastiveAttrs, f1: np.ndarray, f2: np.ndarray,
                     label: np.ndarray) -> np.ndarray:
    d = pairwise_distance(f1, f2, 2.0, a.eps)
    y = label.astype(d.dtype)
    loss = (1 - y) * 0.5 * d**2 + y * 0.5 * np.maximum(0.0, a.margin - d) ** 2
    return reduce(loss, a.reduction)
