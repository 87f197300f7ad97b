"""Every op on the Numba backend (float32) against the float64 reference executor.

One table of cases, in the spirit of PyTorch's OpInfo: each case is a tiny network calling
one op with particular attributes, and its input types. Tolerance (SEMANTICS §8): rtol 1e-4,
atol 1e-5·max(1, ‖y_ref‖∞), widened by √K for reductions of length K.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from op_helpers import (
    T,
    assert_close,
    binary_labels,
    bn_with_stats,
    class_targets,
    fn,
    fused_graph,
    module,
    unit_interval,
)

import cnnir
import cnnir.nn.functional as F
from cnnir import nn
from cnnir.backends.numba_cpu import KERNELS, UNSUPPORTED
from cnnir.ops import REGISTRY


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    inputs: list[cnnir.TensorType]
    reduction: int = 1  # longest reduction length, widens atol by sqrt(K)
    data: Callable[[np.random.Generator, cnnir.TensorType], np.ndarray] | None = None
    extra: dict = field(default_factory=dict)


X = T(2, 4, 9, 9)
CASES = [
    Case("conv3x3", module(nn.Conv2d(4, 6, 3, padding=1)), [X], 36),
    Case("conv-stride2-dilation2", module(nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2)),
         [X], 36),
    Case("conv-groups", module(nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)), [X], 18),
    Case("conv-depthwise", module(nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)), [X], 9),
    Case("conv-depthwise-multiplier", module(nn.Conv2d(4, 8, (3, 5), padding=(1, 2), groups=4)),
         [X], 15),
    Case("conv-1x1", module(nn.Conv2d(4, 7, 1)), [X], 4),
    Case("conv-1x1-strided", module(nn.Conv2d(4, 7, 1, stride=2, bias=False)), [X], 4),
    Case("conv-same-even", module(nn.Conv2d(4, 3, 4, padding="same")), [X], 64),
    Case("conv-nonsquare", module(nn.Conv2d(4, 5, (1, 7), stride=(2, 1), padding=(0, 3))),
         [X], 28),
    Case("conv-batch1", module(nn.Conv2d(3, 8, 7, stride=2, padding=3)), [T(1, 3, 16, 16)], 147),
    Case("conv-transpose", module(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                     output_padding=1)), [X], 36),
    Case("conv-transpose-groups-dilation",
         module(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, dilation=2)), [X], 18),
    Case("deform-conv-mask", fn(lambda s, x, off, m: s.d(x, off, m),
                                d=nn.DeformConv2d(4, 6, 3, padding=1)),
         [X, T(2, 18, 9, 9), T(2, 9, 9, 9)], 36,
         extra={"scale": {1: 3.0}}),
    Case("deform-conv-offset-groups", fn(lambda s, x, off: s.d(x, off),
                                         d=nn.DeformConv2d(4, 4, 3, stride=2, groups=2)),
         [X, T(2, 36, 4, 4)], 18, extra={"scale": {1: 5.0}}),
    Case("linear-3d", module(nn.Linear(9, 5)), [T(2, 3, 9)], 9),
    Case("matmul-broadcast", fn(lambda s, a, b: cnnir.matmul(a, b)), [T(2, 3, 4, 5), T(5, 6)],
         5),
    Case("batch-norm-eval", lambda: bn_with_stats(4, min_log_var=-6), [X]),
    Case("batch-norm-1d-eval", lambda: bn_with_stats(5, one_d=True, min_log_var=-6), [T(3, 5)]),
    Case("batch-norm-train", lambda: nn.BatchNorm2d(4).train(), [X], 162),
    Case("relu", fn(lambda s, x: F.relu(x)), [X]),
    Case("relu6", fn(lambda s, x: F.relu6(x * 4)), [X]),
    Case("leaky-relu", fn(lambda s, x: F.leaky_relu(x, 0.2)), [X]),
    Case("elu", fn(lambda s, x: F.elu(x, 0.7)), [X]),
    Case("prelu-per-channel", module(nn.PReLU(4, init=0.1)), [X]),
    Case("prelu-shared", module(nn.PReLU()), [X]),
    Case("rrelu-eval", fn(lambda s, x: F.rrelu(x)), [X]),
    Case("sigmoid", fn(lambda s, x: F.sigmoid(x)), [X]),
    Case("tanh", fn(lambda s, x: F.tanh(x)), [X]),
    Case("hardswish", fn(lambda s, x: F.hardswish(x * 4)), [X]),
    Case("hardsigmoid", fn(lambda s, x: F.hardsigmoid(x * 4)), [X]),
    Case("silu", fn(lambda s, x: F.silu(x)), [X]),
    Case("gelu", fn(lambda s, x: F.gelu(x)), [X]),
    Case("gelu-tanh", fn(lambda s, x: F.gelu(x, approximate="tanh")), [X]),
    Case("softmax", fn(lambda s, x: F.softmax(x, 1)), [X], 4),
    Case("log-softmax", fn(lambda s, x: F.log_softmax(x, -1)), [X], 9),
    Case("dropout-eval", lambda: nn.Dropout(0.3).eval(), [X]),
    Case("dropout2d-eval", lambda: nn.Dropout2d(0.3).eval(), [X]),
    Case("max-pool-ceil", module(nn.MaxPool2d(3, 2, 1, ceil_mode=True)), [X]),
    Case("max-pool-dilated", module(nn.MaxPool2d(2, 1, dilation=2)), [X]),
    Case("avg-pool-ceil-exclude-pad", module(nn.AvgPool2d(3, 2, 1, ceil_mode=True,
                                                          count_include_pad=False)), [X], 9),
    Case("avg-pool-include-pad", module(nn.AvgPool2d(3, 2, 1)), [X], 9),
    Case("avg-pool-divisor", module(nn.AvgPool2d(2, divisor_override=3)), [X], 4),
    Case("adaptive-avg", module(nn.AdaptiveAvgPool2d((4, 3))), [X], 12),
    Case("adaptive-max", module(nn.AdaptiveMaxPool2d(5)), [X]),
    Case("global-avg", module(nn.AdaptiveAvgPool2d(1)), [X], 81),
    Case("nearest-scale", module(nn.Upsample(scale_factor=1.5)), [T(1, 2, 5, 7)]),
    Case("nearest-exact", fn(lambda s, x: F.interpolate(x, scale_factor=0.5,
                                                         mode="nearest-exact")), [X]),
    Case("bilinear", module(nn.Upsample(scale_factor=1.5, mode="bilinear")), [T(1, 2, 5, 7)]),
    Case("bilinear-align-corners", module(nn.UpsamplingBilinear2d(size=(7, 4))), [X]),
    Case("bilinear-recompute", fn(lambda s, x: F.interpolate(x, scale_factor=1.7,
                                                              mode="bilinear",
                                                              recompute_scale_factor=True)), [X]),
    Case("add-broadcast", fn(lambda s, a, b: a + b), [X, T(4, 1, 1)]),
    Case("sub-scalar", fn(lambda s, a: 1.5 - a), [X]),
    Case("mul-gate", fn(lambda s, a, b: a * b.sigmoid()), [X, T(2, 4, 1, 1)]),
    Case("div", fn(lambda s, a, b: a / (b * b + 1)), [X, X]),
    Case("cat", fn(lambda s, a, b: cnnir.cat([a, b, a], dim=1)), [X, T(2, 3, 9, 9)]),
    Case("reshape-view", fn(lambda s, a: a.view(a.size(0), -1)), [X]),
    Case("flatten-mid", fn(lambda s, a: a.flatten(1, 2)), [X]),
    Case("transpose-permute", fn(lambda s, a: a.permute(0, 2, 3, 1).transpose(1, 2)), [X]),
    Case("chunk-split", fn(lambda s, a: (*a.chunk(3, dim=1), *a.split([2, 7], dim=3))), [X]),
    Case("mean-sum-amax", fn(lambda s, a: (a.mean((2, 3), keepdim=True), a.sum(1),
                                           a.amax(dim=1, keepdim=True))), [X], 81),
    Case("channel-shuffle", module(nn.ChannelShuffle(2)), [X]),
    Case("pad-and-crop", fn(lambda s, a: F.pad(a, (1, 2, -1, 3), value=0.5)), [X]),
    Case("identity", fn(lambda s, a: F.identity(a)), [X]),
    Case("cross-entropy", fn(lambda s, x, t: F.cross_entropy(x, t, label_smoothing=0.1)),
         [T(6, 5), T(6, dtype="int64")], 30, extra={"data": {1: class_targets(5)}}),
    Case("cross-entropy-spatial-ignore", fn(lambda s, x, t: F.cross_entropy(
        x, t, ignore_index=2, reduction="sum")), [T(2, 4, 3, 3), T(2, 3, 3, dtype="int64")], 72,
         extra={"data": {1: class_targets(4)}}),
    Case("cross-entropy-probs", fn(lambda s, x, q: F.cross_entropy(x, q.softmax(1))),
         [T(6, 5), T(6, 5)], 30),
    Case("nll", fn(lambda s, x, t: F.nll_loss(F.log_softmax(x, 1), t, reduction="none")),
         [T(6, 5), T(6, dtype="int64")], 5, extra={"data": {1: class_targets(5)}}),
    Case("bce", fn(lambda s, p, y: F.binary_cross_entropy(p, y)), [T(4, 3), T(4, 3)], 12,
         extra={"data": {0: unit_interval, 1: binary_labels}}),
    Case("bce-logits-pos-weight", fn(lambda s, x, y, w: F.binary_cross_entropy_with_logits(
        x, y, pos_weight=w)), [T(4, 3), T(4, 3), T(3)], 12,
         extra={"data": {1: binary_labels}}),
    Case("l1-mse", fn(lambda s, x, y: (F.l1_loss(x, y), F.mse_loss(x, y, reduction="sum"))),
         [X, X], 648),
    Case("smooth-l1-huber", fn(lambda s, x, y: (F.smooth_l1_loss(x, y, beta=0.5),
                                                F.huber_loss(x, y, delta=0.7))), [X, X], 648),
    Case("triplet", fn(lambda s, a, p, n: F.triplet_margin_loss(a, p, n, swap=True)),
         [T(5, 8)] * 3, 8),
    Case("contrastive", module(nn.ContrastiveLoss(margin=2.0)), [T(5, 8), T(5, 8), T(5)], 8,
         extra={"data": {2: binary_labels}}),
]


def make_inputs(case: Case, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for i, t in enumerate(case.inputs):
        make = case.extra.get("data", {}).get(i)
        a = make(rng, t.shape) if make else rng.standard_normal(t.shape)
        a = a * case.extra.get("scale", {}).get(i, 1.0)
        arrays.append(a.astype(t.dtype))
    return arrays


def outputs(result: Any) -> list[np.ndarray]:
    return list(result) if isinstance(result, tuple) else [result]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op_matches_reference(case: Case) -> None:
    model = case.build()
    graph = cnnir.trace(model, case.inputs)
    inputs = make_inputs(case)
    got = outputs(cnnir.compile(graph, backend="numba")(*inputs))
    ref = outputs(cnnir.compile(graph, backend="reference")(
        *[a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs]))
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == np.float32 and g.shape == r.shape
        assert_close(g, r, case.reduction)


def test_every_op_has_a_kernel() -> None:
    missing = sorted(op.name for op in REGISTRY.values() if op not in KERNELS)
    assert sorted(op.name for op in UNSUPPORTED) == missing == []


def test_the_table_exercises_every_op() -> None:
    seen = {n.op for case in CASES for n in cnnir.trace(case.build(), case.inputs).nodes}
    untested = {op.name for op in REGISTRY.values()} - {op.name for op in seen}
    assert untested <= {"conv2d_fused", "linear_fused"}, untested  # graph-built below


def test_float64_on_request() -> None:
    case = CASES[0]
    graph = cnnir.trace(case.build(), case.inputs)
    x = make_inputs(case)[0].astype(np.float64)
    y = cnnir.compile(graph, dtype="float64")(x)
    ref = cnnir.compile(graph, backend="reference")(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "leaky_relu", "hardswish",
                                        "sigmoid"])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_conv_and_linear(activation: str | None, residual: bool) -> None:
    from cnnir import ops
    from cnnir.ops.activation import LeakyReluAttrs
    from cnnir.ops.fused import Conv2dFusedAttrs, LinearFusedAttrs

    act = getattr(ops, activation) if activation else None
    act_attrs = LeakyReluAttrs(0.3) if activation == "leaky_relu" else None
    cases = [
        fused_graph(ops.conv2d_fused, Conv2dFusedAttrs(padding=(1, 1, 1, 1), activation=act,
                                                       activation_attrs=act_attrs,
                                                       residual=residual),
                    T(2, 4, 6, 6), (5, 4, 3, 3), residual),
        fused_graph(ops.conv2d_fused, Conv2dFusedAttrs(padding=(1, 1, 1, 1), groups=4,
                                                       activation=act, residual=residual),
                    T(2, 4, 6, 6), (4, 1, 3, 3), residual),
        fused_graph(ops.linear_fused, LinearFusedAttrs(activation=act, activation_attrs=act_attrs,
                                                       residual=residual),
                    T(3, 7), (5, 7), residual),
    ]
    rng = np.random.default_rng(0)
    for g in cases:
        xs = [rng.standard_normal(v.type.shape).astype(np.float32) * 3 for v in g.inputs]
        got = cnnir.compile(g)(*xs)
        ref = cnnir.compile(g, backend="reference")(*[x.astype(np.float64) for x in xs])
        assert_close(got, ref, 36)
