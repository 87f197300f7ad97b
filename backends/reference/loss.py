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
from cnnir.backends.reference.activation import log_softmax_of, sigmoid_of
from cnnir.backends.reference.runtime import Context, kernel
from cnnir.errors import LoweringError
from cnnir.ops.loss import (
    ContrastiveAttrs,
    CrossEntropyAttrs,
    HuberAttrs,
    LossAttrs,
    LossGradAttrs,
    NllAttrs,
    SmoothL1Attrs,
    TripletAttrs,
    loss_grad,
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


# -- gradients (docs/semantics.md §2), for loss_grad: d(reduced loss)/d(input wrt)·g ----------


def _scale(g: np.ndarray, reduction: str, count: float) -> np.ndarray:
    """The incoming gradient per item: g itself for 'none' and 'sum', g / count for 'mean'."""
    return g / count if reduction == "mean" else g


def _sum_to(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """``grad`` summed over the axes along which an array of ``shape`` was broadcast."""
    lead = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(lead))) if lead else grad
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad.reshape(shape)


def _class_column(v: np.ndarray, ndim: int) -> np.ndarray:
    """A [C] vector shaped to broadcast along dim 1 of an (N, C, d...) array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _classification_grad(a, g: np.ndarray, lp: np.ndarray, target: np.ndarray,
                         weight: np.ndarray | None, wrt: int, log_softmax: bool) -> np.ndarray:
    """Batched (N, C, d...) gradients of ``ℓ_n = −Σ_c w_c·q'_c·lp[n, c]`` (cross_entropy, or
    nll_loss with ``lp`` the input), q' the smoothed target distribution."""
    classes = lp.shape[1]
    eps = getattr(a, "label_smoothing", 0.0)
    w = _class_column(_class_weights(weight, classes, lp.dtype), lp.ndim)
    integer = target.dtype.kind in "iu"
    if integer:
        _check_targets(target, classes, a.ignore_index)
        kept = target != a.ignore_index
        onehot = (np.arange(classes).reshape(w.shape) == np.where(kept, target, 0)[:, None])
        q = ((1 - eps) * onehot + eps / classes) * kept[:, None]
        rows_kept = (w * onehot * kept[:, None]).sum(axis=1)  # w[y_n], 0 if ignored
        count = rows_kept.sum()
    else:
        q = (1 - eps) * target + eps / classes
        count = target.size // classes
    s = _scale(g, a.reduction, count)
    s = s[:, None] if a.reduction == "none" else s
    if wrt == 0:
        if not log_softmax:
            return -s * w * q
        p = np.exp(lp)
        u = w * q
        return s * (p * u.sum(axis=1, keepdims=True) - u)
    if wrt == 1:  # probability targets: dq'/dq = 1 − ε
        return -s * (1 - eps) * w * lp
    per_class = -s * q * lp  # wrt == 2: the class weights
    grad = per_class.sum(axis=tuple(i for i in range(lp.ndim) if i != 1))
    if integer and a.reduction == "mean":  # D depends on w too: −(L / D)·K_c
        loss = -(w * q * lp).sum() / count
        kept_per_class = (onehot * kept[:, None]).sum(axis=tuple(
            i for i in range(lp.ndim) if i != 1))
        grad = grad - g * loss / count * kept_per_class
    return grad


def _classification_kernel(log_softmax: bool):
    def grad(a, g: np.ndarray, wrt: int, x: np.ndarray, target: np.ndarray,
             weight: np.ndarray | None) -> np.ndarray:
        batched = x.ndim >= 2
        xb, tb = _batched(x, target)
        gb = g[None] if (not batched and a.reduction == "none") else g
        lp = log_softmax_of(xb, 1) if log_softmax else xb
        out = _classification_grad(a, gb, lp, tb, weight, wrt, log_softmax)
        return out if (batched or wrt == 2) else out[0]

    return grad


def _bce_grad(a, g, wrt, p, y, weight):
    s = _scale(g, a.reduction, p.size)
    w = 1.0 if weight is None else weight
    with np.errstate(divide="ignore"):
        log_p, log_not_p = np.maximum(np.log(p), -100.0), np.maximum(np.log(1 - p), -100.0)
    if wrt == 0:
        floor = float(np.float32(1e-12))
        return w * (p - y) / np.maximum(p * (1 - p), floor) * s
    if wrt == 1:
        return w * (log_not_p - log_p) * s
    return _sum_to(-(y * log_p + (1 - y) * log_not_p) * s, weight.shape)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -(np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0.0))


def _bce_logits_grad(a, g, wrt, x, y, weight, pos_weight):
    s = _scale(g, a.reduction, x.size)
    w = 1.0 if weight is None else weight
    pw = 1.0 if pos_weight is None else pos_weight
    # ℓ = −w·[pw·y·log σ(x) + (1 − y)·log σ(−x)]
    if wrt == 0:
        sig = sigmoid_of(x)
        return w * (pw * y * (sig - 1) + (1 - y) * sig) * s
    if wrt == 1:
        return -w * (pw * _log_sigmoid(x) - _log_sigmoid(-x)) * s
    if wrt == 2:
        loss = -(pw * y * _log_sigmoid(x) + (1 - y) * _log_sigmoid(-x))
        return _sum_to(loss * s, weight.shape)
    return _sum_to(-w * y * _log_sigmoid(x) * s, pos_weight.shape)


def _regression(derivative):
    """``dℓ/dd`` of an elementwise loss of ``d = input − target``; the target's is minus it."""

    def grad(a, g, wrt, x, y):
        d = x - y
        gd = derivative(a, d) * _scale(g, a.reduction, x.size)
        return gd if wrt == 0 else -gd

    return grad


def _smooth_l1_derivative(a: SmoothL1Attrs, d: np.ndarray) -> np.ndarray:
    if a.beta == 0:
        return np.sign(d)
    return np.where(np.abs(d) < a.beta, d / a.beta, np.sign(d))


def _distance_grad(v: np.ndarray, d: np.ndarray, p: float) -> np.ndarray:
    """∂‖v‖_p/∂v = sign(v)·|v|^(p−1) / ‖v‖_p^(p−1), with ``d`` the norm (last dim)."""
    return np.sign(v) * np.abs(v) ** (p - 1) / d[..., None] ** (p - 1)


def _triplet_grad(a: TripletAttrs, g, wrt, anchor, pos, neg):
    v_ap, v_an, v_pn = anchor - pos + a.eps, anchor - neg + a.eps, pos - neg + a.eps
    d_ap, d_an, d_pn = (pairwise_distance(u, 0.0, a.p, 0.0) for u in (v_ap, v_an, v_pn))
    # with swap the negative distance is min(d_an, d_pn); torch.minimum splits ties
    to_an = np.where(d_an < d_pn, 1.0, np.where(d_an == d_pn, 0.5, 0.0)) if a.swap else 1.0
    to_pn = 1.0 - to_an if a.swap else 0.0
    d_neg = np.minimum(d_an, d_pn) if a.swap else d_an
    active = (d_ap - d_neg + a.margin >= 0).astype(anchor.dtype)
    h = (_scale(g, a.reduction, d_ap.size) * active)[..., None]
    du_ap, du_an = _distance_grad(v_ap, d_ap, a.p), _distance_grad(v_an, d_an, a.p)
    du_pn = _distance_grad(v_pn, d_pn, a.p)
    an, pn = np.asarray(to_an)[..., None], np.asarray(to_pn)[..., None]
    # ℓ = d_ap − (to_an·d_an + to_pn·d_pn) + margin, locally
    return {0: h * (du_ap - an * du_an), 1: h * (-du_ap - pn * du_pn),
            2: h * (an * du_an + pn * du_pn)}[wrt]


def _contrastive_grad(a: ContrastiveAttrs, g, wrt, f1, f2, label):
    v = f1 - f2 + a.eps
    d = pairwise_distance(f1, f2, 2.0, a.eps)
    y = label.astype(d.dtype)
    s = _scale(g, a.reduction, d.size)
    gap = np.maximum(0.0, a.margin - d)
    if wrt == 2:
        return s * (0.5 * gap**2 - 0.5 * d**2)
    dl_dd = (1 - y) * d - y * gap
    gf1 = (s * dl_dd / d)[..., None] * v
    return gf1 if wrt == 0 else -gf1


GRADIENTS = {
    ops.cross_entropy: _classification_kernel(log_softmax=True),
    ops.nll_loss: _classification_kernel(log_softmax=False),
    ops.binary_cross_entropy: _bce_grad,
    ops.binary_cross_entropy_with_logits: _bce_logits_grad,
    ops.l1_loss: _regression(lambda a, d: np.sign(d)),
    ops.mse_loss: _regression(lambda a, d: 2 * d),
    ops.smooth_l1_loss: _regression(_smooth_l1_derivative),
    ops.huber_loss: _regression(lambda a, d: np.clip(d, -a.delta, a.delta)),
    ops.triplet_margin_loss: _triplet_grad,
    ops.contrastive_loss: _contrastive_grad,
}


@kernel(loss_grad)
def loss_grad_kernel(ctx: Context, a: LossGradAttrs, g: np.ndarray, *inputs) -> np.ndarray:
    args = list(inputs) + [None] * (len(a.loss.inputs) - len(inputs))
    attrs = a.loss_attrs if a.loss_attrs is not None else a.loss.attrs()
    return GRADIENTS[a.loss](attrs, g, a.wrt, *args[:len(a.loss.inputs)])
