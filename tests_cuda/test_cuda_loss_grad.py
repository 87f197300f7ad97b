"""The CUDA backend's ``loss_grad`` kernels, in the simulator, against the float64 reference
executor: one-node graphs (grad_output, then the loss's own inputs) for each reduction, class
weights, ignore_index, label smoothing, class-index and probability targets; and the refusal
of a case without a kernel."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import assert_close

import cnnir
from cnnir import Graph, TensorType, nn, ops
from cnnir.errors import LoweringError
from cnnir.ops.loss import (
    CrossEntropyAttrs,
    HuberAttrs,
    LossAttrs,
    LossGradAttrs,
    NllAttrs,
    SmoothL1Attrs,
    loss_grad,
)

REDUCTIONS = ["none", "sum", "mean"]


def T(*shape: int, dtype: str = "float32") -> TensorType:
    return TensorType(shape, dtype)


def grad_node(loss, attrs, wrt: int, arrays: list[np.ndarray | None], g_shape) -> Graph:
    """A graph of one loss_grad node whose present inputs are graph inputs."""
    graph = Graph("loss_grad")
    g = graph.add_input("g", T(*g_shape))
    ins = [None if a is None else graph.add_input(f"in{i}", T(*a.shape, dtype=a.dtype.name))
           for i, a in enumerate(arrays)]
    node = graph.add_node(loss_grad, [g, *ins], LossGradAttrs(loss, attrs, wrt))
    graph.set_outputs(node.outputs)
    return graph


def check(loss, attrs, wrt: int, arrays: list[np.ndarray | None], per_item_shape,
          seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    g_shape = per_item_shape if attrs.reduction == "none" else ()
    g = rng.standard_normal(g_shape).astype(np.float32)
    graph = grad_node(loss, attrs, wrt, arrays, g_shape)
    present = [g] + [a for a in arrays if a is not None]
    got = cnnir.compile(graph, backend="cuda", optimize=False)(*present)
    ref = cnnir.compile(graph, backend="reference")(
        *[a.astype(np.float64) if a.dtype.kind == "f" else a for a in present])
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    assert_close(got, ref, 16)


def scores(*shape: int, seed: int = 0) -> np.ndarray:
    return (2 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def classes_target(shape, classes: int, ignore: int | None = None) -> np.ndarray:
    t = np.random.default_rng(5).integers(0, classes, shape).astype(np.int64)
    if ignore is not None:
        t.flat[::3] = ignore
    return t


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_class_index(reduction, weighted, smoothing) -> None:
    x = scores(4, 5, 3)  # spatial: rows (n, d), classes 5 apart by 3
    t = classes_target((4, 3), 5, ignore=2)
    w = np.linspace(0.5, 2.0, 5).astype(np.float32) if weighted else None
    attrs = CrossEntropyAttrs(reduction, ignore_index=2, label_smoothing=smoothing)
    check(ops.cross_entropy, attrs, 0, [x, t, w], (4, 3))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_plain_and_unbatched(reduction) -> None:
    check(ops.cross_entropy, CrossEntropyAttrs(reduction), 0,
          [scores(6, 4), classes_target((6,), 4), None], (6,))
    check(ops.cross_entropy, CrossEntropyAttrs(reduction, label_smoothing=0.1), 0,
          [scores(7), np.array(3, np.int64), None], ())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("wrt", [0, 1])
def test_cross_entropy_probabilities(wrt, reduction, weighted) -> None:
    x = scores(3, 4, 2)
    q = np.random.default_rng(2).random((3, 4, 2)).astype(np.float32)
    q /= q.sum(axis=1, keepdims=True)
    w = np.array([0.5, 1.0, 2.0, 1.5], np.float32) if weighted else None
    check(ops.cross_entropy, CrossEntropyAttrs(reduction, label_smoothing=0.1), wrt, [x, q, w],
          (3, 2))


def test_cross_entropy_every_target_ignored() -> None:
    """'mean' over no kept row divides by D = 0: NaN gradients, as the reference."""
    x = scores(3, 4)
    t = np.full(3, -100, np.int64)
    check(ops.cross_entropy, CrossEntropyAttrs("mean"), 0, [x, t, None], (3,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll(reduction, weighted) -> None:
    x = scores(5, 4)
    t = classes_target((5,), 4, ignore=-1)
    w = np.array([0.5, 1.0, 2.0, 1.5], np.float32) if weighted else None
    check(ops.nll_loss, NllAttrs(reduction, ignore_index=-1), 0, [x, t, w], (5,))


REGRESSION = [(ops.mse_loss, LossAttrs), (ops.l1_loss, LossAttrs),
              (ops.smooth_l1_loss, lambda r: SmoothL1Attrs(r, beta=0.7)),
              (ops.smooth_l1_loss, lambda r: SmoothL1Attrs(r, beta=0.0)),
              (ops.huber_loss, lambda r: HuberAttrs(r, delta=0.6))]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wrt", [0, 1])
@pytest.mark.parametrize("case", REGRESSION,
                         ids=["mse", "l1", "smooth_l1", "smooth_l1_beta0", "huber"])
def test_regression(case, wrt, reduction) -> None:
    loss, make = case
    x, y = scores(2, 3, 4, seed=1), scores(2, 3, 4, seed=2)
    y[0, 0, :2] = x[0, 0, :2]  # d = 0: sign 0
    check(loss, make(reduction), wrt, [x, y], (2, 3, 4))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wrt", [0, 1])
@pytest.mark.parametrize("weight", [None, (3, 4), (4,)])
def test_bce(weight, wrt, reduction) -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.98, (3, 4)).astype(np.float32)
    y = rng.random((3, 4)).astype(np.float32)
    w = None if weight is None else rng.uniform(0.5, 2, weight).astype(np.float32)
    check(ops.binary_cross_entropy, LossAttrs(reduction), wrt, [p, y, w], (3, 4))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wrt", [0, 1])
@pytest.mark.parametrize("weights", [(None, None), ((2, 1, 4), (4,)), (None, (1, 3, 1))])
def test_bce_with_logits(weights, wrt, reduction) -> None:
    rng = np.random.default_rng(4)
    x = (4 * rng.standard_normal((2, 3, 4))).astype(np.float32)
    y = rng.random((2, 3, 4)).astype(np.float32)
    w, pw = (None if s is None else rng.uniform(0.5, 2, s).astype(np.float32) for s in weights)
    check(ops.binary_cross_entropy_with_logits, LossAttrs(reduction), wrt, [x, y, w, pw],
          (2, 3, 4))


@pytest.mark.parametrize("case", [
    (ops.cross_entropy, CrossEntropyAttrs("mean"), 2, "cross_entropy with respect to input 2"),
    (ops.binary_cross_entropy, LossAttrs("sum"), 2,
     "binary_cross_entropy with respect to input 2"),
], ids=["ce_weight", "bce_weight"])
def test_refused(case) -> None:
    loss, attrs, wrt, message = case
    if loss is ops.cross_entropy:
        arrays = [scores(3, 4), classes_target((3,), 4), np.ones(4, np.float32)]
    else:
        arrays = [np.full((3, 4), 0.5, np.float32), np.ones((3, 4), np.float32),
                  np.ones(4, np.float32)]
    graph = grad_node(loss, attrs, wrt, arrays, ())
    with pytest.raises(LoweringError, match=message):
        cnnir.compile(graph, backend="cuda", optimize=False)


def test_refused_metric_loss() -> None:
    a = scores(3, 4)
    graph = grad_node(ops.triplet_margin_loss, ops.triplet_margin_loss.attrs(), 0,
                      [a, scores(3, 4, seed=1), scores(3, 4, seed=2)], ())
    with pytest.raises(LoweringError, match="triplet_margin_loss with respect to input 0"):
        cnnir.compile(graph, backend="cuda", optimize=False)


def class_weights() -> np.ndarray:
    return np.array([1.0, 2.0, 0.5, 1.5], np.float32)


LOSS_MODULES = [
    (lambda: nn.CrossEntropyLoss(weight=class_weights(), ignore_index=1, label_smoothing=0.1),
     "int64"),
    (lambda: nn.CrossEntropyLoss(reduction="sum"), "int64"),
    (lambda: nn.MSELoss(), "float32"),
    (lambda: nn.SmoothL1Loss(beta=0.5), "float32"),
    (lambda: nn.BCEWithLogitsLoss(pos_weight=class_weights()), "float32"),
]


@pytest.mark.parametrize("case", LOSS_MODULES,
                         ids=["cross_entropy", "cross_entropy_sum", "mse", "smooth_l1",
                              "bce_with_logits"])
def test_grad_graph_of_linear_model(case) -> None:
    """The whole gradient graph of a tiny linear model (loss, loss_grad, the linear's
    gradients) on the GPU against the reference."""
    make_loss, target_dtype = case
    rng = np.random.default_rng(7)
    model = nn.Linear(6, 4)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    if target_dtype == "int64":
        target = rng.integers(0, 4, 5).astype(np.int64)
        target_type = T(5, dtype="int64")
    else:
        target = rng.random((5, 4)).astype(np.float32)
        target_type = T(5, 4)
    graph = cnnir.grad_graph(model, make_loss(), inputs=(5, 6), targets=[target_type])
    assert any(n.op is loss_grad for n in graph.nodes)
    got = cnnir.compile(graph, backend="cuda", optimize=False)(x, target)
    ref = cnnir.compile(graph, backend="reference")(x.astype(np.float64), target)
    assert len(got) == len(ref)
    for a, e in zip(got, ref):
        assert np.shape(a) == np.shape(e)
        assert_close(np.asarray(a), np.asarray(e), 16)
