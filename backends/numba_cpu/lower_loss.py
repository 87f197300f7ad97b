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
from cnnir.ops.loss import loss_grad


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


# -- gradients (loss_grad): written from the FLOP decompositions of cnnir/ops/loss.py ----------


def _per_item(g: np.ndarray, reduction: str, count: float) -> np.ndarray:
    """``s``: the incoming gradient as it is ('none', 'sum') or over the count ('mean')."""
    return g / count if reduction == "mean" else g


def _reduce_to(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a gradient down to a weight's shape (the axes the weight was broadcast along)."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(axis=i, keepdims=True)
    return grad


def _lsm_last(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _classes_first(grad: np.ndarray, unbatched: bool) -> np.ndarray:
    """Undo ``_classes_last``: (N, d..., C) -> (N, C, d...); (1, C) -> (C,)."""
    return grad[0] if unbatched else np.moveaxis(grad, -1, 1)


def _class_index_grad(a, wrt: int, g, lp, t, weight, forward: Callable[[], np.ndarray],
                      softmax: bool) -> np.ndarray:
    """Class-index targets, classes last: lp (rows..., C), t (rows...)."""
    classes = lp.shape[-1]
    eps = getattr(a, "label_smoothing", 0.0)
    w = np.ones(classes) if weight is None else weight
    valid = t != a.ignore_index
    safe = np.where(valid, t, 0)
    wy = w[safe] * valid
    denom = wy.sum()
    s = _per_item(g, a.reduction, denom) * valid  # per row (broadcasts for 'sum'/'mean')
    s = np.broadcast_to(s, t.shape)
    if wrt == 0:
        if not softmax:  # nll: −s·w[y] at the target
            grad = np.zeros(lp.shape)
            np.put_along_axis(grad, safe[..., None], (-s * wy)[..., None], axis=-1)
            return grad
        p = np.exp(lp)
        onehot = np.zeros(lp.shape)
        np.put_along_axis(onehot, safe[..., None], 1.0, axis=-1)
        grad = ((1 - eps) * s * wy)[..., None] * (p - onehot)
        if eps:
            grad = grad + (eps / classes * s)[..., None] * (w.sum() * p - w)
        return grad
    picked = np.take_along_axis(lp, safe[..., None], axis=-1)[..., 0]
    gw = np.zeros(classes)
    np.add.at(gw, safe[valid], -((1 - eps) * s * picked)[valid])
    if eps:
        gw -= eps / classes * (s[..., None] * lp).reshape(-1, classes).sum(axis=0)
    if a.reduction == "mean":
        kept = np.bincount(safe[valid], minlength=classes)
        gw -= g * float(forward()) / denom * kept
    return gw


def cross_entropy_grad(a, wrt: int, g, x, target, weight=None) -> np.ndarray:
    unbatched = x.ndim == 1
    lp = _lsm_last(_classes_last(x))
    classes = lp.shape[-1]
    if a.reduction == "none" and unbatched:
        g = g[None]
    if target.dtype.kind != "f":
        t = target[None] if unbatched else target
        grad = _class_index_grad(a, wrt, g, lp, t, weight,
                                 lambda: cross_entropy(a, x, target, weight), softmax=True)
        return grad if wrt == 2 else _classes_first(grad, unbatched)
    eps = a.label_smoothing
    w = np.ones(classes) if weight is None else weight
    q = (1 - eps) * _classes_last(target) + eps / classes
    s = _per_item(g, a.reduction, lp.size // classes)
    s = s[..., None] if a.reduction == "none" else s
    if wrt == 0:
        wq = w * q
        grad = s * (np.exp(lp) * wq.sum(axis=-1, keepdims=True) - wq)
    elif wrt == 1:
        grad = -(1 - eps) * s * w * lp
    else:
        return -(s * q * lp).reshape(-1, classes).sum(axis=0)
    return _classes_first(grad, unbatched)


def nll_loss_grad(a, wrt: int, g, x, target, weight=None) -> np.ndarray:
    unbatched = x.ndim == 1
    if a.reduction == "none" and unbatched:
        g = g[None]
    t = target[None] if unbatched else target
    grad = _class_index_grad(a, wrt, g, _classes_last(x), t, weight,
                             lambda: nll_loss(a, x, target, weight), softmax=False)
    return grad if wrt == 2 else _classes_first(grad, unbatched)


def bce_grad(a, wrt: int, g, p, y, weight=None) -> np.ndarray:
    s = _per_item(g, a.reduction, p.size)
    w = 1.0 if weight is None else weight
    if wrt == 0:
        return (p - y) / np.maximum(p * (1 - p), np.float32(1e-12).item()) * w * s
    if wrt == 1:
        with np.errstate(divide="ignore"):
            return (np.maximum(np.log1p(-p), -100) - np.maximum(np.log(p), -100)) * w * s
    return _reduce_to(bce(type(a)("none"), p, y) * s, weight.shape)


def bce_with_logits_grad(a, wrt: int, g, x, y, weight=None, pos_weight=None) -> np.ndarray:
    s = _per_item(g, a.reduction, x.size)
    w = 1.0 if weight is None else weight
    sig = 0.5 * (1 + np.tanh(0.5 * x))
    softplus_neg = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)  # −log σ(x)
    if wrt == 0:
        if pos_weight is None:
            return (sig - y) * w * s
        c = 1 + (pos_weight - 1) * y
        return (c * sig - pos_weight * y) * w * s
    if wrt == 1:
        pw_minus_1 = 0.0 if pos_weight is None else pos_weight - 1
        return (pw_minus_1 * softplus_neg - x) * w * s
    if wrt == 2:
        plain = bce_with_logits(type(a)("none"), x, y, None, pos_weight)
        return _reduce_to(plain * s, weight.shape)
    return _reduce_to(y * softplus_neg * w * s, pos_weight.shape)


def _regression_grad(derivative: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def grad(a, wrt: int, g, x, y) -> np.ndarray:
        d = x - y if wrt == 0 else y - x
        return derivative(a, d) * _per_item(g, a.reduction, x.size)

    return grad


def _smooth_l1_slope(a, d: np.ndarray) -> np.ndarray:
    return np.sign(d) if a.beta == 0 else np.clip(d / a.beta, -1.0, 1.0)


def _norm_grad(v: np.ndarray, d: np.ndarray, p: float) -> np.ndarray:
    """∂‖v‖_p/∂v for the rows of v (d: their norms)."""
    if p == 2:
        return v / d[..., None]
    if p == 1:
        return np.sign(v)
    return np.sign(v) * np.abs(v) ** (p - 1) / (d ** (p - 1))[..., None]


def triplet_grad(a, wrt: int, g, anchor, pos, neg) -> np.ndarray:
    pairs = {"ap": (anchor, pos), "an": (anchor, neg), "pn": (pos, neg)}
    v = {k: u - w + a.eps for k, (u, w) in pairs.items()}
    d = {k: _distance(u, w, a.p, a.eps) for k, (u, w) in pairs.items()}
    if a.swap:
        c_an = (d["an"] < d["pn"]) + 0.5 * (d["an"] == d["pn"])
        d_neg = np.minimum(d["an"], d["pn"])
    else:
        c_an, d_neg = np.ones_like(d["an"]), d["an"]
    h = _per_item(g, a.reduction, d["ap"].size) * (d["ap"] - d_neg + a.margin >= 0)
    # (coefficient of each distance in ℓ, sign of this input in that distance's difference)
    terms = {0: [("ap", h, 1), ("an", -h * c_an, 1)],
             1: [("ap", h, -1)] + ([("pn", -h * (1 - c_an), 1)] if a.swap else []),
             2: [("an", -h * c_an, -1)] + ([("pn", -h * (1 - c_an), -1)] if a.swap else [])}
    grad = np.zeros(anchor.shape)
    for key, coef, sign in terms[wrt]:
        grad = grad + sign * np.asarray(coef)[..., None] * _norm_grad(v[key], d[key], a.p)
    return grad


def contrastive_grad(a, wrt: int, g, x1, x2, label) -> np.ndarray:
    v = x1 - x2 + a.eps
    dist = np.sqrt((v * v).sum(axis=-1))
    s = _per_item(g, a.reduction, dist.size)
    gap = np.maximum(a.margin - dist, 0)
    if wrt == 2:
        return s * 0.5 * (gap * gap - dist * dist)
    k = s * ((1 - label) - label * gap / dist)
    return (k if wrt == 0 else -k)[..., None] * v


GRADIENTS: dict = {
    ops.cross_entropy: cross_entropy_grad,
    ops.nll_loss: nll_loss_grad,
    ops.binary_cross_entropy: bce_grad,
    ops.binary_cross_entropy_with_logits: bce_with_logits_grad,
    ops.l1_loss: _regression_grad(lambda a, d: np.sign(d)),
    ops.mse_loss: _regression_grad(lambda a, d: 2 * d),
    ops.smooth_l1_loss: _regression_grad(_smooth_l1_slope),
    ops.huber_loss: _regression_grad(lambda a, d: np.clip(d, -a.delta, a.delta)),
    ops.triplet_margin_loss: triplet_grad,
    ops.contrastive_loss: contrastive_grad,
}


@lower(loss_grad)
def lower_loss_grad(b: Builder, node: Node) -> Step:
    """One loss input's gradient, in numpy (float64, written in the compute dtype)."""
    a = node.attrs
    arity = len(a.loss.inputs)
    g, *args = (b.array(v) for v in node.inputs)
    args = (args + [None] * arity)[:arity]
    out = b.array(node.output)
    attrs = a.loss_attrs if a.loss_attrs is not None else a.loss.attrs()
    fn = GRADIENTS[a.loss]

    def step() -> None:
        values = [v.astype(np.float64) if v is not None and v.dtype.kind == "f" else v
                  for v in args]
        grad = fn(attrs, a.wrt, np.asarray(g, dtype=np.float64), *values)
        np.copyto(out, grad, casting="unsafe")

    return step
