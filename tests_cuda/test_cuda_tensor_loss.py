"""The CUDA tensor ops, softmax, random ops and losses on the paths the shared op table
(``tests/op_cases.py``, run by test_cuda_ops.py) does not reach: the one-block-per-slice forms
of softmax and of the reductions, coalesced one-thread-per-slice reductions over outer dims,
repeated calls of the random ops, p = 1 and p = 0 dropout, and the loss edge cases (every
target ignored, p of exactly 0 or 1 in bce). Against the float64 reference executor, on
shapes small enough for the simulator."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import Case, make_inputs, outputs, reference, trace
from op_helpers import T, class_targets, fn, unit_interval
from op_helpers import assert_close as close

import cnnir
import cnnir.nn.functional as F
from cnnir import nn
from cnnir.backends.numba_cuda import loss, tensor

CASES = [
    # inner = 1, L > SHORT: one block per row
    Case("softmax-block-last-dim", fn(lambda s, x: F.softmax(x * 3, -1)), [T(3, 100)], 100),
    Case("log-softmax-block-last-dim", fn(lambda s, x: F.log_softmax(x * 3, 1)), [T(2, 300)],
         300),
    # strided rows, few of them: one block per row reading ``inner`` apart
    Case("softmax-block-strided", fn(lambda s, x: F.softmax(x, 1)), [T(1, 70, 3)], 70),
    Case("sum-block-outer-dims", fn(lambda s, x: (x.sum((0, 1)), x.amax((0, 1), keepdim=True),
                                                  x.mean(0))), [T(70, 1, 2)], 70),
    Case("amax-block-last", fn(lambda s, x: x.amax(-1)), [T(3, 300)], 300),
    Case("cat-last-dim-split-first", fn(lambda s, a, b: (cnnir.cat([a, b], dim=-1),
                                                         *b.split([1, 2], dim=0))),
         [T(3, 2, 4), T(3, 2, 5)]),
    Case("transpose-negative", fn(lambda s, a: a.transpose(-1, 0)), [T(2, 3, 4)]),
    Case("cross-entropy-many-classes", fn(lambda s, x, t: F.cross_entropy(x, t)),
         [T(3, 100), T(3, dtype="int64")], 100, data={1: class_targets(100)}),
    Case("bce-long-sum", fn(lambda s, p, y: F.binary_cross_entropy(p, y, reduction="sum")),
         [T(700), T(700)], 700, data={0: unit_interval, 1: unit_interval}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_reference(case: Case) -> None:
    graph = trace(case, 1)
    inputs = make_inputs(case, 1)
    got = outputs(cnnir.compile(graph, backend="cuda")(*inputs))
    ref = reference(graph, inputs)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        close(g, r, case.reduction)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_long_loss_reductions_go_through_partial_sums(monkeypatch, reduction: str) -> None:
    """More than ``LONG`` items: a partial kernel over ``PARTIALS`` blocks first (both made
    small here), the weighted mean's weights summed alongside."""
    monkeypatch.setattr(loss, "LONG", 100)
    monkeypatch.setattr(loss, "PARTIALS", 3)
    cases = [Case("mse", fn(lambda s, x, y: F.mse_loss(x, y, reduction=reduction)),
                  [T(700), T(700)], 700),
             Case("ce", fn(lambda s, x, t, w: F.cross_entropy(x, t, w, ignore_index=0,
                                                               reduction=reduction)),
                  [T(300, 3), T(300, dtype="int64"), T(3)], 300,
                  data={1: class_targets(3), 2: unit_interval})]
    for case in cases:
        graph = trace(case, 1)
        inputs = make_inputs(case, 1)
        close(cnnir.compile(graph, backend="cuda")(*inputs), reference(graph, inputs)[0],
              case.reduction)


def test_slice_forms_are_the_ones_meant() -> None:
    assert tensor.one_block_per_slice(100, 3, innermost=True)
    assert tensor.one_block_per_slice(70, 3, innermost=False)
    assert not tensor.one_block_per_slice(70, tensor.MANY, innermost=False)
    assert not tensor.one_block_per_slice(tensor.SHORT, 1, innermost=True)


@pytest.mark.parametrize("layer", [nn.Dropout(0.3), nn.Dropout2d(0.5), nn.RReLU()],
                         ids=["dropout", "dropout2d", "rrelu"])
def test_random_ops_draw_afresh_each_call_as_the_reference(layer) -> None:
    layer.train()
    graph = cnnir.trace(layer, [T(2, 3, 4, 4)])
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    run = cnnir.compile(graph, backend="cuda")
    ref = cnnir.compile(graph, backend="reference")
    first, second = run(x), run(x)
    assert not np.array_equal(first, second)
    for got, want in ((first, ref(x.astype(np.float64))), (second, ref(x.astype(np.float64)))):
        close(got, want)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_extremes(p: float) -> None:
    graph = cnnir.trace(nn.Dropout(p).train(), [T(2, 5)])
    x = np.random.default_rng(2).standard_normal((2, 5)).astype(np.float32)
    y = cnnir.compile(graph, backend="cuda")(x)
    np.testing.assert_array_equal(y, x if p == 0.0 else np.zeros_like(x))


def test_cross_entropy_mean_with_every_target_ignored_is_nan() -> None:
    graph = cnnir.trace(fn(lambda s, x, t: F.cross_entropy(x, t, ignore_index=1))(),
                        [T(3, 4), T(3, dtype="int64")])
    x = np.zeros((3, 4), np.float32)
    y = cnnir.compile(graph, backend="cuda")(x, np.ones(3, np.int64))
    assert np.isnan(y)


def test_bce_at_exact_zero_and_one_clamps_the_log() -> None:
    graph = cnnir.trace(fn(lambda s, p, y: F.binary_cross_entropy(p, y, reduction="none"))(),
                        [T(4), T(4)])
    p = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    y = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    np.testing.assert_array_equal(cnnir.compile(graph, backend="cuda")(p, y),
                                  [100.0, 100.0, 0.0, 0.0])
