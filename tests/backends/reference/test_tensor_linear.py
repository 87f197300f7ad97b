"""Reference tensor ops, linear and matmul against explicit index loops
(docs/semantics.md §1.11–§1.13)."""

from __future__ import annotations

import itertools
import operator

import numpy as np
import pytest

from cnnir import ops
from cnnir.backends.reference import compile_graph
from cnnir.ir import Graph, TensorType, verify
from cnnir.ops.tensor import (
    ChannelShuffleAttrs,
    DimAttrs,
    FlattenAttrs,
    PadAttrs,
    ReduceAttrs,
    ReshapeAttrs,
    SplitAttrs,
    TransposeAttrs,
)


def broadcast_loops(fn, a, b):
    """Align from the right; a size-1 or missing dim reads index 0."""
    rank = max(a.ndim, b.ndim)
    sa = (1,) * (rank - a.ndim) + a.shape
    sb = (1,) * (rank - b.ndim) + b.shape
    out_shape = tuple(max(p, q) for p, q in zip(sa, sb))
    ar, br = a.reshape(sa), b.reshape(sb)
    y = np.empty(out_shape)
    for idx in itertools.product(*map(range, out_shape)):
        ia = tuple(i if d > 1 else 0 for i, d in zip(idx, sa))
        ib = tuple(i if d > 1 else 0 for i, d in zip(idx, sb))
        y[idx] = fn(float(ar[ia]), float(br[ib]))
    return y


@pytest.mark.parametrize("op, fn", [(ops.add, operator.add), (ops.sub, operator.sub),
                                    (ops.mul, operator.mul), (ops.div, operator.truediv)])
@pytest.mark.parametrize("sa, sb", [((2, 3, 4), (3, 1)), ((1, 4), (3, 1)), ((2, 3), (2, 3))])
def test_binary_ops_broadcast(run_op, rng, op, fn, sa, sb):
    a, b = rng.standard_normal(sa), rng.uniform(0.5, 2, sb)
    np.testing.assert_allclose(run_op(op, None, a, b), broadcast_loops(fn, a, b), rtol=1e-15)


def test_linear_over_leading_dims(run_op, rng):
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    want = np.empty((2, 3, 5))
    for i, j, o in itertools.product(range(2), range(3), range(5)):
        want[i, j, o] = b[o] + sum(x[i, j, k] * w[o, k] for k in range(4))
    np.testing.assert_allclose(run_op(ops.linear, None, x, w, b), want, rtol=1e-13)
    np.testing.assert_allclose(run_op(ops.linear, None, x, w, None), want - b, rtol=1e-13,
                               atol=1e-14)


@pytest.mark.parametrize("sa, sb, out", [((3,), (3, 2), (2,)), ((2, 3), (3,), (2,)),
                                         ((3,), (3,), ()), ((2, 1, 2, 3), (4, 3, 2), (2, 4, 2, 2))])
def test_matmul_torch_rules(run_op, rng, sa, sb, out):
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    got = run_op(ops.matmul, None, a, b)
    assert got.shape == out
    a2 = a[None] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    full = np.empty(batch + (a2.shape[-2], b2.shape[-1]))
    for idx in itertools.product(*map(range, batch)):
        ia = tuple(i if d > 1 else 0 for i, d in zip(idx[len(idx) - a2.ndim + 2:],
                                                       a2.shape[:-2]))
        ib = tuple(i if d > 1 else 0 for i, d in zip(idx[len(idx) - b2.ndim + 2:],
                                                       b2.shape[:-2]))
        for m, n in itertools.product(range(full.shape[-2]), range(full.shape[-1])):
            full[idx + (m, n)] = sum(a2[ia + (m, k)] * b2[ib + (k, n)]
                                     for k in range(a2.shape[-1]))
    np.testing.assert_allclose(got, full.reshape(out), rtol=1e-13)


def test_cat_split_and_transpose(run_op, rng):
    a, b = rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 1, 2))
    y = run_op(ops.cat, DimAttrs(1), a, b)
    np.testing.assert_array_equal(y[:, :3], a)
    np.testing.assert_array_equal(y[:, 3:], b)
    pieces = run_op(ops.split, SplitAttrs(sizes=(1, 0, 3), dim=-2), y)
    assert isinstance(pieces, tuple) and [p.shape[1] for p in pieces] == [1, 0, 3]
    np.testing.assert_array_equal(pieces[0], a[:, :1])
    np.testing.assert_array_equal(pieces[2], np.concatenate([a[:, 1:], b], axis=1))
    t = run_op(ops.transpose, TransposeAttrs((2, 0, 1)), a)
    for i, j, k in itertools.product(range(2), range(3), range(2)):
        assert t[k, i, j] == a[i, j, k]


def test_reshape_resolves_symbols_and_minus_one(rng):
    g = Graph("reshape")
    x = g.add_input("x", TensorType(("N", 3, 4), "float64"))
    node = g.add_node(ops.reshape, [x], ReshapeAttrs(("N", 2, -1)))
    g.set_outputs(node.outputs)
    run = compile_graph(verify(g))
    for n in (1, 3):
        data = rng.standard_normal((n, 3, 4))
        got = run(data)
        assert got.shape == (n, 2, 6)
        np.testing.assert_array_equal(got.ravel(), data.ravel())


def test_flatten(run_op, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    assert run_op(ops.flatten, FlattenAttrs(1, -1), x).shape == (2, 60)
    assert run_op(ops.flatten, FlattenAttrs(1, 2), x).shape == (2, 12, 5)
    np.testing.assert_array_equal(run_op(ops.flatten, FlattenAttrs(0, -1), x), x.ravel())


@pytest.mark.parametrize("dims, keepdim", [(None, False), ((1,), True), ((0, -1), False)])
def test_reductions(run_op, rng, dims, keepdim):
    x = rng.standard_normal((2, 3, 4))
    axes = range(3) if dims is None else [d % 3 for d in dims]
    kept = [d for d in range(3) if d not in axes]
    out_shape = tuple(x.shape[d] for d in kept)
    groups: dict[tuple, list[float]] = {}
    for idx in itertools.product(*map(range, x.shape)):
        groups.setdefault(tuple(idx[d] for d in kept), []).append(float(x[idx]))
    attrs = ReduceAttrs(dims=dims, keepdim=keepdim)
    for op, fn in ((ops.sum_, sum), (ops.mean, lambda v: sum(v) / len(v)), (ops.amax, max)):
        want = np.array([fn(groups[k]) for k in sorted(groups)]).reshape(out_shape)
        got = run_op(op, attrs, x)
        if keepdim:
            assert got.shape == tuple(1 if d in axes else s for d, s in enumerate(x.shape))
        np.testing.assert_allclose(got.reshape(out_shape), want, rtol=1e-14)


def test_channel_shuffle_formula(run_op, rng):
    g, c = 3, 6
    x = rng.standard_normal((2, c, 2, 2))
    y = run_op(ops.channel_shuffle, ChannelShuffleAttrs(g), x)
    for i in range(g):
        for j in range(c // g):
            np.testing.assert_array_equal(y[:, j * g + i], x[:, i * (c // g) + j])


def test_pad_uses_torch_order_and_crops_with_negative_amounts(run_op, rng):
    x = rng.standard_normal((1, 2, 3, 4))
    y = run_op(ops.pad, PadAttrs(pads=(1, 2, 0, 3), value=-7.0), x)
    assert y.shape == (1, 2, 6, 7)
    np.testing.assert_array_equal(y[:, :, :3, 1:5], x)
    assert (y[:, :, 3:] == -7).all() and (y[..., 0] == -7).all() and (y[..., 5:] == -7).all()
    y = run_op(ops.pad, PadAttrs(pads=(-1, 1, 2, -1)), x)
    assert y.shape == (1, 2, 4, 4)
    np.testing.assert_array_equal(y[:, :, 2:, :3], x[:, :, :2, 1:])
    assert (y[:, :, :2] == 0).all() and (y[..., 3] == 0).all()


def test_identity(run_op, rng):
    x = rng.standard_normal((2, 2))
    np.testing.assert_array_equal(run_op(ops.identity, None, x), x)
