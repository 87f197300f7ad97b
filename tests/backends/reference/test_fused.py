"""Reference fused ops: y = act(conv2d(x, W, b) + r) and y = act(x·Wᵀ + b + r), the residual
added before the activation (cnnir/ops/fused.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnir import ops
from cnnir.ops.activation import LeakyReluAttrs
from cnnir.ops.fused import Conv2dFusedAttrs, LinearFusedAttrs

ACTIVATIONS = [
    (None, None, lambda v: v),
    (ops.relu, None, lambda v: np.maximum(v, 0)),
    (ops.relu6, None, lambda v: np.clip(v, 0, 6)),
    (ops.leaky_relu, LeakyReluAttrs(0.3), lambda v: np.where(v > 0, v, 0.3 * v)),
    (ops.hardswish, None, lambda v: v * np.clip(v + 3, 0, 6) / 6),
    (ops.sigmoid, None, lambda v: 1 / (1 + np.exp(-v))),
]


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("act, act_attrs, rule", ACTIVATIONS,
                         ids=[getattr(a[0], "name", "none") for a in ACTIVATIONS])
def test_conv2d_fused_1x1_stride2(run_op, rng, act, act_attrs, rule, residual):
    x, w, b = rng.standard_normal((2, 3, 5, 4)) * 3, rng.standard_normal((4, 3, 1, 1)), \
        rng.standard_normal(4)
    r = rng.standard_normal((2, 4, 3, 2)) * 3 if residual else None
    pre = np.empty((2, 4, 3, 2))
    for n in range(2):
        for o in range(4):
            for i in range(3):
                for j in range(2):
                    pre[n, o, i, j] = b[o] + sum(w[o, c, 0, 0] * x[n, c, 2 * i, 2 * j]
                                                 for c in range(3))
    if residual:
        pre += r
    attrs = Conv2dFusedAttrs(stride=2, activation=act, activation_attrs=act_attrs,
                             residual=residual)
    got = run_op(ops.conv2d_fused, attrs, x, w, b, r)
    np.testing.assert_allclose(got, rule(pre), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("residual", [False, True])
def test_linear_fused_adds_the_residual_before_the_activation(run_op, rng, residual):
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(2)
    r = rng.standard_normal((3, 2)) * 2 if residual else None
    pre = np.array([[b[o] + sum(x[n, k] * w[o, k] for k in range(4)) for o in range(2)]
                    for n in range(3)])
    if residual:
        pre += r
    attrs = LinearFusedAttrs(activation=ops.relu, residual=residual)
    np.testing.assert_allclose(run_op(ops.linear_fused, attrs, x, w, b, r), np.maximum(pre, 0),
                               rtol=1e-13, atol=1e-14)
