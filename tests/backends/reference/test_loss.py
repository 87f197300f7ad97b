"""Reference losses against per-element loops written from docs/semantics.md §2."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnir import ops
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


def log_softmax_row(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def rows_of(x):
    """(N, C, d...) -> list of (row index, class vector) over N and the spatial positions."""
    moved = np.moveaxis(x, 1, -1)
    return [(idx, list(moved[idx])) for idx in np.ndindex(moved.shape[:-1])]


def ce_class_loops(x, t, w, ii, eps, reduction, log_probs=False):
    c = x.shape[1]
    w = [1.0] * c if w is None else list(w)
    losses, denom = np.zeros(t.shape), 0.0
    for idx, row in rows_of(x):
        y = int(t[idx])
        if y == ii:
            continue
        lp = row if log_probs else log_softmax_row(row)
        nll = -w[y] * lp[y]
        smooth = -sum(w[k] * lp[k] for k in range(c))
        losses[idx] = (1 - eps) * nll + eps / c * smooth
        denom += w[y]
    if reduction == "none":
        return losses
    return losses.sum() / denom if reduction == "mean" else losses.sum()


CE_CASES = [
    # input shape, weight, ignore_index, label_smoothing, reduction
    ((5, 4), None, -100, 0.0, "mean"),
    ((5, 4), (0.5, 2.0, 1.0, 3.0), 2, 0.0, "mean"),
    ((5, 4), (0.5, 2.0, 1.0, 3.0), 1, 0.2, "mean"),
    ((3, 4, 2, 2), (0.5, 2.0, 1.0, 3.0), 0, 0.1, "sum"),
    ((3, 4, 3), None, 3, 0.3, "none"),
]


@pytest.mark.parametrize("shape, weight, ii, eps, reduction", CE_CASES)
def test_cross_entropy_class_indices(run_op, rng, shape, weight, ii, eps, reduction):
    x = rng.standard_normal(shape) * 2
    t = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    w = None if weight is None else np.array(weight)
    attrs = CrossEntropyAttrs(reduction=reduction, ignore_index=ii, label_smoothing=eps)
    got = run_op(ops.cross_entropy, attrs, x, t, w)
    np.testing.assert_allclose(got, ce_class_loops(x, t, w, ii, eps, reduction), rtol=1e-12)


def test_cross_entropy_all_ignored_mean_is_nan(run_op, rng):
    x = rng.standard_normal((3, 4))
    t = np.full(3, -100)
    assert np.isnan(run_op(ops.cross_entropy, CrossEntropyAttrs(), x, t, None))
    assert run_op(ops.cross_entropy, CrossEntropyAttrs(reduction="sum"), x, t, None) == 0


def test_cross_entropy_unbatched(run_op, rng):
    x = rng.standard_normal(5)
    got = run_op(ops.cross_entropy, CrossEntropyAttrs(), x, np.array(3), None)
    assert got == pytest.approx(-log_softmax_row(list(x))[3], rel=1e-13)


@pytest.mark.parametrize("weight, eps, reduction", [(None, 0.0, "mean"),
                                                    ((1.0, 2.0, 0.5), 0.25, "mean"),
                                                    ((1.0, 2.0, 0.5), 0.0, "none")])
def test_cross_entropy_probability_targets(run_op, rng, weight, eps, reduction):
    x = rng.standard_normal((2, 3, 2))
    q = rng.dirichlet(np.ones(3), size=(2, 2)).transpose(0, 2, 1)
    w = [1.0] * 3 if weight is None else list(weight)
    losses = np.zeros((2, 2))
    for idx, row in rows_of(x):
        lp = log_softmax_row(row)
        qs = [(1 - eps) * q[idx[0], k, idx[1]] + eps / 3 for k in range(3)]
        losses[idx] = -sum(w[k] * qs[k] * lp[k] for k in range(3))
    want = losses if reduction == "none" else losses.sum() / losses.size  # not by the weights
    attrs = CrossEntropyAttrs(reduction=reduction, label_smoothing=eps)
    got = run_op(ops.cross_entropy, attrs, x, q, None if weight is None else np.array(weight))
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(run_op, rng, reduction):
    lp = np.log(rng.dirichlet(np.ones(4), size=6))
    t = np.array([0, 3, 1, 1, -100, 2])
    w = np.array([1.0, 0.5, 2.0, 3.0])
    got = run_op(ops.nll_loss, NllAttrs(reduction=reduction), lp, t, w)
    np.testing.assert_allclose(got, ce_class_loops(lp, t, w, -100, 0.0, reduction, True),
                               rtol=1e-13)


def test_class_index_out_of_range_is_a_cnnir_error(run_op, rng):
    import cnnir

    with pytest.raises(cnnir.CnnirError, match=r"cross_entropy .*target 4 out of bounds"):
        run_op(ops.cross_entropy, CrossEntropyAttrs(), rng.standard_normal((2, 4)),
               np.array([1, 4]), None)


def reduce_loops(values, reduction):
    values = np.asarray(values, dtype=float)
    if reduction == "none":
        return values
    return values.sum() if reduction == "sum" else values.sum() / values.size


def pointwise(fn, *arrays):
    return np.array([fn(*(float(a[i]) for a in arrays))
                     for i in np.ndindex(arrays[0].shape)]).reshape(arrays[0].shape)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_clamps_logs(run_op, rng, reduction):
    p = np.concatenate([rng.uniform(0.01, 0.99, 6), [0.0, 1.0, 0.0, 1.0]]).reshape(2, 5)
    y = np.concatenate([rng.uniform(0, 1, 6), [1.0, 0.0, 0.0, 1.0]]).reshape(2, 5)
    w = rng.uniform(0.5, 2, (1, 5))

    def rule(pv, yv, wv):
        log_p = math.log(pv) if pv > 0 else -math.inf
        log_q = math.log(1 - pv) if pv < 1 else -math.inf
        return -wv * (yv * max(log_p, -100) + (1 - yv) * max(log_q, -100))

    want = reduce_loops(pointwise(rule, p, y, np.broadcast_to(w, p.shape)), reduction)
    got = run_op(ops.binary_cross_entropy, LossAttrs(reduction), p, y, w)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    if reduction == "none":
        np.testing.assert_allclose(got[1, 1:], [100 * w[0, 1], 100 * w[0, 2], 0.0, 0.0],
                                   rtol=1e-15)


def test_bce_with_logits_matches_log_sigmoid_form(run_op, rng):
    x, y = rng.standard_normal((3, 4)) * 4, rng.uniform(0, 1, (3, 4))
    w, pw = rng.uniform(0.5, 2, (3, 1)), rng.uniform(0.5, 3, 4)

    def rule(xv, yv, wv, pwv):
        log_sig = -math.log1p(math.exp(-xv))
        log_sig_neg = -math.log1p(math.exp(xv))
        return -wv * (pwv * yv * log_sig + (1 - yv) * log_sig_neg)

    want = pointwise(rule, x, y, np.broadcast_to(w, x.shape), np.broadcast_to(pw, x.shape))
    got = run_op(ops.binary_cross_entropy_with_logits, LossAttrs("none"), x, y, w, pw)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    got = run_op(ops.binary_cross_entropy_with_logits, LossAttrs("mean"), x, y, None, None)
    want = pointwise(lambda a, b: rule(a, b, 1.0, 1.0), x, y).mean()
    assert got == pytest.approx(want, rel=1e-12)


def test_bce_with_logits_is_stable_for_large_logits(run_op):
    x = np.array([1000.0, -1000.0])
    y = np.array([0.0, 1.0])
    got = run_op(ops.binary_cross_entropy_with_logits, LossAttrs("none"), x, y, None, None)
    np.testing.assert_allclose(got, [1000.0, 1000.0], rtol=1e-15)


REGRESSION = [
    (ops.l1_loss, LossAttrs, {}, lambda d: abs(d)),
    (ops.mse_loss, LossAttrs, {}, lambda d: d * d),
    (ops.smooth_l1_loss, SmoothL1Attrs, {"beta": 1.0},
     lambda d: 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5),
    (ops.smooth_l1_loss, SmoothL1Attrs, {"beta": 0.5},
     lambda d: 0.5 * d * d / 0.5 if abs(d) < 0.5 else abs(d) - 0.25),
    (ops.smooth_l1_loss, SmoothL1Attrs, {"beta": 0.0}, lambda d: abs(d)),
    (ops.huber_loss, HuberAttrs, {"delta": 1.5},
     lambda d: 0.5 * d * d if abs(d) < 1.5 else 1.5 * (abs(d) - 0.75)),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("op, attrs_cls, kw, rule", REGRESSION,
                         ids=[f"{r[0].name}{r[2]}" for r in REGRESSION])
def test_regression_losses(run_op, rng, op, attrs_cls, kw, rule, reduction):
    x, t = rng.standard_normal((3, 5)) * 2, rng.standard_normal((3, 5))
    got = run_op(op, attrs_cls(reduction=reduction, **kw), x, t)
    want = reduce_loops(pointwise(lambda a, b: rule(a - b), x, t), reduction)
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_huber_is_delta_times_smooth_l1(run_op, rng):
    x, t = rng.standard_normal((4, 6)) * 3, rng.standard_normal((4, 6))
    for delta in (0.3, 1.0, 2.5):
        huber = run_op(ops.huber_loss, HuberAttrs("none", delta), x, t)
        smooth = run_op(ops.smooth_l1_loss, SmoothL1Attrs("none", delta), x, t)
        np.testing.assert_allclose(huber, delta * smooth, rtol=1e-14)


def norm_p(v, p):
    return sum(abs(e) ** p for e in v) ** (1 / p)


@pytest.mark.parametrize("p, swap, reduction", [(2.0, False, "mean"), (2.0, True, "none"),
                                                (1.0, True, "sum"), (3.0, False, "mean")])
def test_triplet_margin_loss(run_op, rng, p, swap, reduction):
    a, pos, neg = (rng.standard_normal((6, 4)) * 0.7 for _ in range(3))
    eps, margin = 1e-6, 1.0
    losses = []
    for n in range(6):
        d_ap = norm_p(a[n] - pos[n] + eps, p)
        d_an = norm_p(a[n] - neg[n] + eps, p)
        if swap:
            d_an = min(d_an, norm_p(pos[n] - neg[n] + eps, p))
        losses.append(max(d_ap - d_an + margin, 0.0))
    attrs = TripletAttrs(reduction=reduction, p=p, swap=swap)
    got = run_op(ops.triplet_margin_loss, attrs, a, pos, neg)
    np.testing.assert_allclose(got, reduce_loops(losses, reduction), rtol=1e-13)


def test_triplet_eps_is_added_to_the_difference(run_op):
    a = np.zeros((1, 3))
    got = run_op(ops.triplet_margin_loss, TripletAttrs(margin=0.0, eps=0.1), a, a, a + 1)
    d_an = math.sqrt(3 * 0.9**2)  # ‖0 − 1 + 0.1‖ = 0.9 per coordinate
    assert got == pytest.approx(max(math.sqrt(3) * 0.1 - d_an, 0.0))
    got = run_op(ops.triplet_margin_loss, TripletAttrs(margin=2.0, eps=0.1), a, a, a + 1)
    assert got == pytest.approx(math.sqrt(3) * 0.1 - d_an + 2.0, rel=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_contrastive_loss_cnnir_convention(run_op, rng, reduction):
    f1, f2 = rng.standard_normal((6, 3)) * 0.5, rng.standard_normal((6, 3)) * 0.5
    label = np.array([0, 1, 0, 1, 1, 0])
    losses = []
    for n in range(6):
        d = norm_p(f1[n] - f2[n] + 1e-6, 2)
        similar = 0.5 * d * d
        dissimilar = 0.5 * max(0.0, 1.0 - d) ** 2
        losses.append(similar if label[n] == 0 else dissimilar)
    got = run_op(ops.contrastive_loss, ContrastiveAttrs(reduction=reduction), f1, f2,
                 label.astype(np.float64))
    np.testing.assert_allclose(got, reduce_loops(losses, reduction), rtol=1e-13)


# -- gradients (loss_grad), against loops over the gradient column of docs/semantics.md §2 ------


def grad_of(run_op, op, attrs, wrt, g, *inputs):
    """The reference ``loss_grad`` of ``op``'s input ``wrt`` for the output gradient ``g``."""
    return run_op(loss_grad, LossGradAttrs(op, attrs, wrt), np.asarray(g, dtype=float), *inputs)


def softmax_row(row):
    return [math.exp(v) for v in log_softmax_row(row)]


@pytest.mark.parametrize("shape, weight, ii, eps, reduction", CE_CASES)
def test_cross_entropy_class_index_gradient(run_op, rng, shape, weight, ii, eps, reduction):
    x = rng.standard_normal(shape) * 2
    t = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    t.flat[0] = ii if ii >= 0 else t.flat[0]  # at least one ignored row
    c = shape[1]
    w = [1.0] * c if weight is None else list(weight)
    g = rng.standard_normal(t.shape) if reduction == "none" else np.asarray(1.7)
    denom = sum(w[int(y)] for y in t.flat if y != ii) if reduction == "mean" else 1.0
    want = np.zeros(shape)
    moved = np.moveaxis(want, 1, -1)  # a view: rows of want along the classes
    for idx, row in rows_of(x):
        y = int(t[idx])
        if y == ii:
            continue
        p = softmax_row(row)
        gn = float(g[idx]) if reduction == "none" else float(g)
        moved[idx] = [gn * ((1 - eps) * w[y] * (p[k] - (k == y))
                            + eps / c * (sum(w) * p[k] - w[k])) / denom for k in range(c)]
    attrs = CrossEntropyAttrs(reduction=reduction, ignore_index=ii, label_smoothing=eps)
    got = grad_of(run_op, ops.cross_entropy, attrs, 0, g, x, t,
                  None if weight is None else np.array(weight))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("weight, eps, reduction", [(None, 0.0, "mean"),
                                                    ((1.0, 2.0, 0.5), 0.25, "mean"),
                                                    ((1.0, 2.0, 0.5), 0.0, "none")])
def test_cross_entropy_probability_gradient(run_op, rng, weight, eps, reduction):
    x = rng.standard_normal((2, 3, 2))
    q = rng.dirichlet(np.ones(3), size=(2, 2)).transpose(0, 2, 1)
    w = [1.0] * 3 if weight is None else list(weight)
    g = rng.standard_normal((2, 2)) if reduction == "none" else np.asarray(0.8)
    want = np.zeros(x.shape)
    for idx, row in rows_of(x):
        n, s = idx
        p = softmax_row(row)
        qs = [(1 - eps) * q[n, k, s] + eps / 3 for k in range(3)]
        scale = float(g[idx]) if reduction == "none" else float(g) / 4  # N × spatial
        total = sum(w[k] * qs[k] for k in range(3))
        want[n, :, s] = [scale * (p[k] * total - w[k] * qs[k]) for k in range(3)]
    attrs = CrossEntropyAttrs(reduction=reduction, label_smoothing=eps)
    got = grad_of(run_op, ops.cross_entropy, attrs, 0, g, x, q,
                  None if weight is None else np.array(weight))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_cross_entropy_unbatched_gradient(run_op, rng):
    x = rng.standard_normal(5)
    got = grad_of(run_op, ops.cross_entropy, CrossEntropyAttrs(), 0, 2.0, x, np.array(3), None)
    want = [2.0 * (p - (k == 3)) for k, p in enumerate(softmax_row(list(x)))]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_cross_entropy_all_ignored_mean_gradient_is_nan(run_op, rng):
    x, t = rng.standard_normal((3, 4)), np.full(3, -100)
    assert np.isnan(grad_of(run_op, ops.cross_entropy, CrossEntropyAttrs(), 0, 1.0, x, t,
                            None)).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_gradient(run_op, rng, reduction):
    lp = np.log(rng.dirichlet(np.ones(4), size=6))
    t = np.array([0, 3, 1, 1, -100, 2])
    w = np.array([1.0, 0.5, 2.0, 3.0])
    g = rng.standard_normal(6) if reduction == "none" else np.asarray(1.3)
    denom = sum(w[y] for y in t if y != -100) if reduction == "mean" else 1.0
    want = np.zeros((6, 4))
    for n, y in enumerate(t):
        if y != -100:
            want[n, y] = -(g[n] if reduction == "none" else g) * w[y] / denom
    got = grad_of(run_op, ops.nll_loss, NllAttrs(reduction=reduction), 0, g, lp, t, w)
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_binary_cross_entropy_gradient_floor(run_op, rng):
    """``w·(p − y)/max(p(1 − p), ε)`` with ε = float32 1e-12: −1.000000004e12 at p = 0, y = 1."""
    p = np.concatenate([rng.uniform(0.01, 0.99, 4), [0.0, 1.0]])
    y = np.concatenate([rng.uniform(0, 1, 4), [1.0, 0.0]])
    w = rng.uniform(0.5, 2, 6)
    eps = float(np.float32(1e-12))
    got = grad_of(run_op, ops.binary_cross_entropy, LossAttrs("sum"), 0, 1.0, p, y, w)
    want = pointwise(lambda pv, yv, wv: wv * (pv - yv) / max(pv * (1 - pv), eps), p, y, w)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    got = grad_of(run_op, ops.binary_cross_entropy, LossAttrs("none"), 0, np.ones(1),
                  np.zeros(1), np.ones(1))
    assert got[0] == pytest.approx(-1.000000004e12, rel=1e-9)


def test_bce_with_logits_gradient(run_op, rng):
    """``w·[pw·y·(σ(x) − 1) + (1 − y)·σ(x)]``, over the count for 'mean'."""
    x, y = rng.standard_normal((3, 4)) * 3, rng.uniform(0, 1, (3, 4))
    w, pw = rng.uniform(0.5, 2, (3, 1)), rng.uniform(0.5, 3, 4)

    def rule(xv, yv, wv, pwv):
        sig = 1 / (1 + math.exp(-xv))
        return wv * (pwv * yv * (sig - 1) + (1 - yv) * sig) / 12

    want = pointwise(rule, x, y, np.broadcast_to(w, x.shape), np.broadcast_to(pw, x.shape))
    got = grad_of(run_op, ops.binary_cross_entropy_with_logits, LossAttrs(), 0, 1.0, x, y, w, pw)
    np.testing.assert_allclose(got, want, rtol=1e-12)


REGRESSION_GRADS = [
    (ops.l1_loss, LossAttrs, {}, lambda d: (d > 0) - (d < 0)),  # sign(0) = 0
    (ops.mse_loss, LossAttrs, {}, lambda d: 2 * d),
    (ops.smooth_l1_loss, SmoothL1Attrs, {"beta": 0.5},
     lambda d: d / 0.5 if abs(d) < 0.5 else math.copysign(1.0, d)),
    (ops.smooth_l1_loss, SmoothL1Attrs, {"beta": 0.0}, lambda d: (d > 0) - (d < 0)),
    (ops.huber_loss, HuberAttrs, {"delta": 1.5}, lambda d: min(max(d, -1.5), 1.5)),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("op, attrs_cls, kw, rule", REGRESSION_GRADS,
                         ids=[f"{r[0].name}{r[2]}" for r in REGRESSION_GRADS])
def test_regression_gradients(run_op, rng, op, attrs_cls, kw, rule, reduction):
    x, t = rng.standard_normal((3, 5)) * 2, rng.standard_normal((3, 5))
    t[0, 0] = x[0, 0]  # d = 0
    g = rng.standard_normal((3, 5)) if reduction == "none" else np.asarray(0.7)
    scale = g / 15 if reduction == "mean" else g
    want = pointwise(lambda a, b: rule(a - b), x, t) * scale
    attrs = attrs_cls(reduction=reduction, **kw)
    np.testing.assert_allclose(grad_of(run_op, op, attrs, 0, g, x, t), want, rtol=1e-14)
    np.testing.assert_allclose(grad_of(run_op, op, attrs, 1, g, x, t), -want, rtol=1e-14)
    assert grad_of(run_op, op, attrs, 0, g, x, t)[0, 0] == 0.0 or op is ops.mse_loss


def test_triplet_gradient_p2(run_op, rng):
    """While the hinge is active: ∂/∂a = (a − pos + eps)/d_ap − (a − neg + eps)/d_an,
    ∂/∂pos = −(a − pos + eps)/d_ap, ∂/∂neg = (a − neg + eps)/d_an; 0 where it is not."""
    a, pos, neg = (rng.standard_normal((6, 4)) * 0.7 for _ in range(3))
    eps, margin, g = 1e-6, 0.2, 1.5
    want = [np.zeros((6, 4)) for _ in range(3)]
    for n in range(6):
        u, v = a[n] - pos[n] + eps, a[n] - neg[n] + eps
        d_ap, d_an = norm_p(u, 2), norm_p(v, 2)
        if d_ap - d_an + margin > 0:
            want[0][n] = g / 6 * (u / d_ap - v / d_an)
            want[1][n] = g / 6 * (-u / d_ap)
            want[2][n] = g / 6 * (v / d_an)
    assert 0 < sum(w.any() for w in want[0]) < 6  # both sides of the hinge
    for wrt in range(3):
        got = grad_of(run_op, ops.triplet_margin_loss, TripletAttrs(margin=margin), wrt, g,
                      a, pos, neg)
        np.testing.assert_allclose(got, want[wrt], rtol=1e-12, atol=1e-15)


def test_triplet_gradient_at_the_hinge_and_swap_tie(run_op):
    """The hinge passes the gradient at exactly 0 (torch's clamp_min), and a swap tie
    d(a, neg) = d(pos, neg) splits it evenly (torch.minimum)."""
    a, pos, neg = np.array([[0.0, 0.0]]), np.array([[2.0, 0.0]]), np.array([[1.0, 0.0]])
    attrs = TripletAttrs(margin=0.0, eps=0.0, swap=True)  # d_ap 2, d_an = d_pn = 1: hinge 1
    got = grad_of(run_op, ops.triplet_margin_loss, attrs, 2, 1.0, a, pos, neg)
    np.testing.assert_allclose(got, [[0.5 * (-1.0) + 0.5 * 1.0, 0.0]], atol=1e-15)
    got = grad_of(run_op, ops.triplet_margin_loss, attrs, 0, 1.0, a, pos, neg)
    np.testing.assert_allclose(got, [[-1.0 - 0.5 * -1.0, 0.0]])
    at_zero = TripletAttrs(margin=-1.0, eps=0.0)  # d_ap − d_an + margin = 2 − 1 − 1 = 0
    got = grad_of(run_op, ops.triplet_margin_loss, at_zero, 1, 1.0, a, pos, neg)
    np.testing.assert_allclose(got, [[1.0, 0.0]])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_contrastive_gradient(run_op, rng, reduction):
    """∂L/∂D = (1 − Y)·D − Y·max(0, m − D) (then over N), ∂D/∂f1 = (f1 − f2 + eps)/D."""
    f1, f2 = rng.standard_normal((6, 3)) * 0.5, rng.standard_normal((6, 3)) * 0.5
    label = np.array([0, 1, 0, 1, 1, 0], dtype=float)
    g = rng.standard_normal(6) if reduction == "none" else np.asarray(1.0)
    want_f1, want_y = np.zeros((6, 3)), np.zeros(6)
    for n in range(6):
        v = f1[n] - f2[n] + 1e-6
        d = norm_p(v, 2)
        scale = float(g[n]) if reduction == "none" else float(g) / 6
        dl_dd = (1 - label[n]) * d - label[n] * max(0.0, 1.0 - d)
        want_f1[n] = scale * dl_dd * v / d
        want_y[n] = scale * (0.5 * max(0.0, 1.0 - d) ** 2 - 0.5 * d * d)
    attrs = ContrastiveAttrs(reduction=reduction)
    got = [grad_of(run_op, ops.contrastive_loss, attrs, i, g, f1, f2, label) for i in range(3)]
    np.testing.assert_allclose(got[0], want_f1, rtol=1e-12)
    np.testing.assert_allclose(got[1], -want_f1, rtol=1e-12)
    np.testing.assert_allclose(got[2], want_y, rtol=1e-12)
