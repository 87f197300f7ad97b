"""Reference activations, softmax, dropout and batch norm against scalar formulas
(docs/semantics.md §1.4–§1.6, §1.14), and their backward-only ops (prelu_grad,
batch_norm_grad; amax_grad's ties) against loops over the §3 rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnir import ops
from cnnir.ops.activation import (
    DropoutAttrs,
    EluAttrs,
    GeluAttrs,
    LeakyReluAttrs,
    PReluGradAttrs,
    RReluAttrs,
    SoftmaxAttrs,
    prelu_grad,
)
from cnnir.ops.norm import BatchNormAttrs, BatchNormGradAttrs, batch_norm_grad
from cnnir.ops.tensor import ReduceAttrs, amax_grad


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


SCALAR_RULES = [
    (ops.relu, None, lambda v: max(v, 0.0)),
    (ops.relu6, None, lambda v: min(max(v, 0.0), 6.0)),
    (ops.sigmoid, None, _sigmoid),
    (ops.tanh, None, math.tanh),
    (ops.silu, None, lambda v: v * _sigmoid(v)),
    (ops.hardsigmoid, None, lambda v: 0.0 if v <= -3 else 1.0 if v >= 3 else (v + 3) / 6),
    (ops.hardswish, None, lambda v: 0.0 if v <= -3 else v if v >= 3 else v * (v + 3) / 6),
    (ops.leaky_relu, LeakyReluAttrs(), lambda v: v if v > 0 else 0.01 * v),
    (ops.leaky_relu, LeakyReluAttrs(0.2), lambda v: v if v > 0 else 0.2 * v),
    (ops.elu, EluAttrs(), lambda v: v if v > 0 else math.exp(v) - 1),
    (ops.elu, EluAttrs(0.5), lambda v: v if v > 0 else 0.5 * (math.exp(v) - 1)),
    (ops.gelu, GeluAttrs(), lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))),
    (ops.gelu, GeluAttrs("tanh"),
     lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))),
    (ops.rrelu, RReluAttrs(), lambda v: v if v > 0 else v * (1 / 8 + 1 / 3) / 2),
]


@pytest.mark.parametrize("op, attrs, rule", SCALAR_RULES, ids=lambda r: getattr(r, "name", ""))
def test_activation_matches_scalar_rule(run_op, op, attrs, rule):
    x = np.concatenate([np.linspace(-7, 7, 57), [-3.0, 3.0, 0.0, 1e-3, -1e-3]]).reshape(1, 2, -1)
    want = np.vectorize(rule)(x)
    np.testing.assert_allclose(run_op(op, attrs, x), want, rtol=1e-14, atol=1e-15)


def test_relu_keeps_nan_and_zeroes_minus_inf(run_op):
    y = run_op(ops.relu, None, np.array([np.nan, -np.inf, np.inf, -2.0]))
    assert np.isnan(y[0]) and list(y[1:]) == [0.0, np.inf, 0.0]


def test_sigmoid_saturates_without_nan(run_op):
    y = run_op(ops.sigmoid, None, np.array([-1000.0, 1000.0]))
    np.testing.assert_array_equal(y, [0.0, 1.0])


def test_prelu_per_channel_and_shared(run_op, rng):
    x = rng.standard_normal((2, 3, 4))
    slopes = np.array([0.1, 0.2, 0.3])
    want = np.where(x > 0, x, x * slopes[None, :, None])
    np.testing.assert_allclose(run_op(ops.prelu, None, x, slopes), want, rtol=1e-15)
    want = np.where(x > 0, x, 0.25 * x)
    np.testing.assert_allclose(run_op(ops.prelu, None, x, np.array([0.25])), want, rtol=1e-15)


def test_rrelu_eval_slope(run_op):
    y = run_op(ops.rrelu, RReluAttrs(), np.array([-1.0, 2.0]))
    assert y[0] == pytest.approx(-0.2291667, abs=1e-7) and y[1] == 2.0


def test_rrelu_training_draws_one_slope_per_element(run_op):
    x = -np.ones((4, 1000))
    y, multiplier = run_op(ops.rrelu, RReluAttrs(training=True), x)
    slopes = -y
    assert (slopes >= 1 / 8).all() and (slopes <= 1 / 3).all()
    assert len(np.unique(slopes)) > 3900
    assert slopes.mean() == pytest.approx((1 / 8 + 1 / 3) / 2, abs=0.01)
    np.testing.assert_array_equal(multiplier, slopes)
    y, multiplier = run_op(ops.rrelu, RReluAttrs(training=True), -x)
    np.testing.assert_array_equal(y, -x)
    np.testing.assert_array_equal(multiplier, 1.0)


def test_rrelu_training_multiplier_is_the_applied_slope(run_op, rng):
    """The second output is what the backward multiplies by: y = x·multiplier exactly."""
    x = rng.standard_normal((3, 4, 5))
    y, multiplier = run_op(ops.rrelu, RReluAttrs(0.1, 0.3, training=True), x)
    np.testing.assert_array_equal(y, x * multiplier)
    assert (multiplier[x > 0] == 1).all()
    assert ((multiplier[x <= 0] >= 0.1) & (multiplier[x <= 0] <= 0.3)).all()


def test_softmax_and_log_softmax_subtract_the_max(run_op):
    x = np.array([[1000.0, 1001.0, 1002.0], [-5.0, 0.0, 5.0]])
    e = np.array([[math.exp(-2), math.exp(-1), 1.0], [math.exp(-10), math.exp(-5), 1.0]])
    p = e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(run_op(ops.softmax, SoftmaxAttrs(1), x), p, rtol=1e-14)
    np.testing.assert_allclose(run_op(ops.log_softmax, SoftmaxAttrs(1), x), np.log(p),
                               rtol=1e-14)
    np.testing.assert_allclose(run_op(ops.softmax, SoftmaxAttrs(0), x.T), p.T, rtol=1e-14)
    np.testing.assert_allclose(run_op(ops.log_softmax, SoftmaxAttrs(-1), x), np.log(p),
                               rtol=1e-14)


def test_dropout_training_scales_survivors(run_op, rng):
    x = rng.uniform(1, 2, (100, 100))
    y, mask = run_op(ops.dropout, DropoutAttrs(p=0.3, training=True), x)
    kept = y != 0
    np.testing.assert_allclose(y[kept] / x[kept], 1.428572, rtol=1e-6)
    assert kept.mean() == pytest.approx(0.7, abs=0.02)
    np.testing.assert_array_equal(mask, kept / 0.7)  # the scaled mask, second output
    np.testing.assert_array_equal(y, x * mask)


def test_dropout_p1_zeros_and_eval_identity(run_op, rng):
    x = rng.standard_normal((3, 4))
    for output in run_op(ops.dropout, DropoutAttrs(p=1.0, training=True), x):
        np.testing.assert_array_equal(output, 0)
    np.testing.assert_array_equal(run_op(ops.dropout, DropoutAttrs(p=0.5), x), x)
    np.testing.assert_array_equal(run_op(ops.dropout2d, DropoutAttrs(p=0.5), x[None]), x[None])


def test_dropout2d_drops_whole_channels(run_op, rng):
    x = rng.uniform(1, 2, (8, 16, 3, 3))
    y, mask = run_op(ops.dropout2d, DropoutAttrs(p=0.5, training=True), x)
    dropped = (y == 0).all(axis=(2, 3))
    kept = (y != 0).all(axis=(2, 3))
    assert (dropped | kept).all() and 0 < dropped.sum() < dropped.size
    np.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-15)
    assert mask.shape == (8, 16, 1, 1)
    np.testing.assert_array_equal(mask[..., 0, 0], 2.0 * kept)


def batch_norm_loops(x, mean, var, gamma, beta, eps):
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        y[:, c] = gamma[c] * (x[:, c] - mean[c]) / math.sqrt(var[c] + eps) + beta[c]
    return y


@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (6, 3), (2, 3, 7)])
def test_batch_norm_training_uses_biased_batch_variance(run_op, rng, shape):
    x = rng.standard_normal(shape) * 3 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    mean, var = [], []
    for c in range(3):
        values = [float(v) for v in np.moveaxis(x, 1, 0)[c].ravel()]
        m = sum(values) / len(values)
        mean.append(m)
        var.append(sum((v - m) ** 2 for v in values) / len(values))
    got = run_op(ops.batch_norm, BatchNormAttrs(training=True), x, rm, rv, gamma, beta)
    np.testing.assert_allclose(got, batch_norm_loops(x, mean, var, gamma, beta, 1e-5),
                               rtol=1e-12, atol=1e-12)


def test_batch_norm_eval_uses_running_statistics(run_op, rng):
    x = rng.standard_normal((2, 3, 4, 4))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), np.array([1e-6, 0.5, 3.0])
    got = run_op(ops.batch_norm, BatchNormAttrs(eps=1e-3), x, rm, rv, gamma, beta)
    np.testing.assert_allclose(got, batch_norm_loops(x, rm, rv, gamma, beta, 1e-3), rtol=1e-13)


def test_batch_norm_without_affine_or_running_stats(run_op, rng):
    x = rng.standard_normal((5, 2, 3))
    got = run_op(ops.batch_norm, BatchNormAttrs(), x, None, None, None, None)
    np.testing.assert_allclose(got.mean(axis=(0, 2)), 0, atol=1e-14)
    np.testing.assert_allclose((got**2).mean(axis=(0, 2)),
                               1 / (1 + 1e-5 / x.var(axis=(0, 2))), rtol=1e-12)


# -- backward-only ops (docs/semantics.md §3) -----------------------------------------------


@pytest.mark.parametrize("slopes", [np.array([0.1, -0.2, 0.3]), np.array([0.25])])
def test_prelu_grad_loops(run_op, rng, slopes):
    x, g = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    x[0, 0, :2] = 0.0  # x = 0 takes the slope, and counts in the slope's gradient
    gx, ga = run_op(prelu_grad, PReluGradAttrs(), x, slopes, g)
    want_gx, want_ga = np.empty_like(x), np.zeros(3)
    for n, c, i in np.ndindex(x.shape):
        a = slopes[c % slopes.size]
        want_gx[n, c, i] = g[n, c, i] if x[n, c, i] > 0 else a * g[n, c, i]
        if x[n, c, i] <= 0:
            want_ga[c] += x[n, c, i] * g[n, c, i]
    np.testing.assert_allclose(gx, want_gx, rtol=1e-15)
    want_ga = want_ga if slopes.size == 3 else np.array([want_ga.sum()])
    np.testing.assert_allclose(ga, want_ga, rtol=1e-13)
    only = run_op(prelu_grad, PReluGradAttrs(("weight",)), x, slopes, g)
    np.testing.assert_array_equal(only, ga)


def batch_norm_grad_loops(x, g, gamma, mean, var, eps, batch):
    """gx, gγ, gβ channel by channel from docs/semantics.md §3."""
    gx, gw, gb = np.empty_like(x), np.empty(x.shape[1]), np.empty(x.shape[1])
    for c in range(x.shape[1]):
        xc, gc = np.moveaxis(x, 1, 0)[c].ravel(), np.moveaxis(g, 1, 0)[c].ravel()
        m, v = (xc.mean(), ((xc - xc.mean()) ** 2).mean()) if batch else (mean[c], var[c])
        x_hat = (xc - m) / math.sqrt(v + eps)
        gb[c], gw[c] = gc.sum(), (gc * x_hat).sum()
        scale = gamma[c] / math.sqrt(v + eps)
        col = scale * (gc - gc.mean() - x_hat * (gc * x_hat).mean()) if batch else scale * gc
        np.moveaxis(gx, 1, 0)[c] = col.reshape(np.moveaxis(x, 1, 0)[c].shape)
    return gx, gw, gb


@pytest.mark.parametrize("batch", [True, False], ids=["batch-stats", "eval"])
@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (6, 3), (2, 3, 7)])
def test_batch_norm_grad_loops(run_op, rng, shape, batch):
    x, g = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape)
    gamma, rm, rv = rng.standard_normal(3), rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    stats = (None, None) if batch else (rm, rv)
    got = run_op(batch_norm_grad, BatchNormGradAttrs(1e-3, batch), x, *stats, gamma, g)
    for a, b in zip(got, batch_norm_grad_loops(x, g, gamma, rm, rv, 1e-3, batch)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


def test_batch_norm_grad_input_only_needs_no_input_in_eval(run_op, rng):
    g, gamma, rv = rng.standard_normal((2, 3, 4)), rng.standard_normal(3), np.array([1e-6, 1, 4])
    gx = run_op(batch_norm_grad, BatchNormGradAttrs(1e-5, False, ("input",)), None, None, rv,
                gamma, g)
    np.testing.assert_allclose(gx, g * (gamma / np.sqrt(rv + 1e-5))[:, None], rtol=1e-14)


def test_amax_grad_splits_ties_evenly(run_op):
    """As torch.amax: each maximum of a slice gets gy / (number of maxima)."""
    x = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, -1.0, 7.0, 6.0]])
    g = np.array([6.0, 8.0, 2.0])
    gx = run_op(amax_grad, ReduceAttrs((1,)), x, x.max(axis=1), g)
    np.testing.assert_array_equal(gx, [[0, 3, 3, 0], [2, 2, 2, 2], [0, 0, 2, 0]])
    whole = run_op(amax_grad, ReduceAttrs(None), x, np.asarray(x.max()), np.asarray(1.0))
    np.testing.assert_array_equal(whole, (x == 7.0) * 1.0)
