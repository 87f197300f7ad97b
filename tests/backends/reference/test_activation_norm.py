"""Reference activations, softmax, dropout and batch norm against scalar formulas
(docs/semantics.md §1.4–§1.6, §1.14)."""

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
    RReluAttrs,
    SoftmaxAttrs,
)
from cnnir.ops.norm import BatchNormAttrs


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
    y = run_op(ops.rrelu, RReluAttrs(training=True), x)
    slopes = -y
    assert (slopes >= 1 / 8).all() and (slopes <= 1 / 3).all()
    assert len(np.unique(slopes)) > 3900
    assert slopes.mean() == pytest.approx((1 / 8 + 1 / 3) / 2, abs=0.01)
    np.testing.assert_array_equal(run_op(ops.rrelu, RReluAttrs(training=True), -x), -x)


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
    y = run_op(ops.dropout, DropoutAttrs(p=0.3, training=True), x)
    kept = y != 0
    np.testing.assert_allclose(y[kept] / x[kept], 1.428572, rtol=1e-6)
    assert kept.mean() == pytest.approx(0.7, abs=0.02)


def test_dropout_p1_zeros_and_eval_identity(run_op, rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(run_op(ops.dropout, DropoutAttrs(p=1.0, training=True), x), 0)
    np.testing.assert_array_equal(run_op(ops.dropout, DropoutAttrs(p=0.5), x), x)
    np.testing.assert_array_equal(run_op(ops.dropout2d, DropoutAttrs(p=0.5), x[None]), x[None])


def test_dropout2d_drops_whole_channels(run_op, rng):
    x = rng.uniform(1, 2, (8, 16, 3, 3))
    y = run_op(ops.dropout2d, DropoutAttrs(p=0.5, training=True), x)
    dropped = (y == 0).all(axis=(2, 3))
    kept = (y != 0).all(axis=(2, 3))
    assert (dropped | kept).all() and 0 < dropped.sum() < dropped.size
    np.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-15)


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
