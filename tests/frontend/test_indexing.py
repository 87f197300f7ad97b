"""Indexing, slicing, comparisons, ``where``, ``x.max(dim)`` and powers in a traced forward:
the graph each records, its outputs on the reference (float64) and Numba backends against
numpy's own indexing of the same array, and the clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import assert_close

import cnnir
from cnnir import nn, ops
from cnnir.errors import CnnirError
from cnnir.passes.autodiff import differentiate

X_SHAPE = (2, 5, 6, 7)


class Fn(nn.Module):
    def __init__(self, f) -> None:
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


def close(got: np.ndarray, want: np.ndarray, backend: str) -> None:
    """float64 to 1e-12; float32 within the §8 elementwise tolerance (op_helpers)."""
    if backend == "reference":
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
    else:
        assert_close(got, want)


def run(f, backend: str, x: np.ndarray):
    graph = cnnir.trace(Fn(f), [("N", *x.shape[1:])])
    dtype = np.float64 if backend == "reference" else np.float32
    return graph, cnnir.compile(graph, backend=backend)(x.astype(dtype))


# (index expression on the traced tensor, the same on a numpy array)
INDEXES = {
    "int": lambda a: a[:, 0],
    "negative-int": lambda a: a[:, -1, 2],
    "prefix": lambda a: a[:, :3],
    "ellipsis-interior": lambda a: a[..., 1:-1],
    "steps": lambda a: a[:, 1:5:2, ::3],
    "clamped-bounds": lambda a: a[:, -100:100, 4:],
    "empty-range": lambda a: a[:, 3:2],
    "none": lambda a: a[:, None, 2:4, ..., None],
    "list": lambda a: a[:, [4, 0, 0, -2]],
    "list-then-int": lambda a: a[:, [1, 3], 2],
    "ellipsis-list": lambda a: a[..., [6, 1]],
}


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("name", sorted(INDEXES))
def test_indexing_matches_numpy(name: str, backend: str) -> None:
    x = np.random.default_rng(1).standard_normal(X_SHAPE)
    _, got = run(INDEXES[name], backend, x)
    want = INDEXES[name](x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_an_int_index_is_a_slice_and_a_reshape() -> None:
    graph = cnnir.trace(Fn(lambda a: a[:, 1]), [("N", 5, 6, 7)])
    assert [n.op for n in graph.nodes] == [ops.slice_, ops.reshape]
    assert graph.outputs[0].type.shape == ("N", 6, 7)


def test_a_full_slice_records_no_node() -> None:
    graph = cnnir.trace(Fn(lambda a: a[:, :, ...] + 1), [("N", 5, 6, 7)])
    assert [n.op for n in graph.nodes] == [ops.add]


@pytest.mark.parametrize("index, match", [
    (lambda a: a[:, ::-1], "steps must be positive"),
    (lambda a: a[:, 0:4:0], "steps must be positive"),
    (lambda a: a[1:], "size N is symbolic"),
    (lambda a: a[:, 5], "index 5 is out of range for dim 1 of size 5"),
    (lambda a: a[:, [0, 7]], "index 7 is out of range"),
    (lambda a: a[:, :, :, :, 0], "too many indices"),
    (lambda a: a[..., 0, ...], "single ellipsis"),
    (lambda a: a[:, [0, 1], [1, 2]], "more than one list"),
    (lambda a: a[:, 0, :, [1, 2]], "separated by a slice"),
    (lambda a: a[:, 1.5], "float"),
    (lambda a: a[a > 0], "data-dependent index"),
])
def test_unsupported_indexes_are_refused_clearly(index, match: str) -> None:
    with pytest.raises(CnnirError, match=match):
        cnnir.trace(Fn(index), [("N", 5, 6, 7)])


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_comparisons_are_float_masks_and_where_selects(backend: str) -> None:
    x = np.random.default_rng(2).standard_normal(X_SHAPE)
    x[0, 0, 0, :3] = [0.0, 0.25, -0.25]  # ties with the thresholds below

    def f(a):
        return (a > 0, a < 0.25, a >= 0.25, a <= -0.25, a == 0, a != 0,
                cnnir.where(a > 0, a, 0.1 * a), cnnir.maximum(a, 0.25 - a),
                cnnir.minimum(a, 0.0))

    _, got = run(f, backend, x)
    want = [x > 0, x < 0.25, x >= 0.25, x <= -0.25, x == 0, x != 0,
            np.where(x > 0, x, 0.1 * x), np.maximum(x, 0.25 - x), np.minimum(x, 0.0)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w, dtype=np.float64), rtol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_max_min_over_a_dim_give_values(backend: str) -> None:
    x = np.random.default_rng(3).standard_normal(X_SHAPE)

    def f(a):
        values, _ = a.max(1)
        return values, a.min(dim=2, keepdim=True).values, a.max(), cnnir.max(a, 3)[0]

    _, got = run(f, backend, x)
    want = [x.max(1), x.min(2, keepdims=True), x.max(), x.max(3)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_the_indices_of_max_over_a_dim_are_refused_when_used() -> None:
    with pytest.raises(CnnirError, match="argmax"):
        cnnir.trace(Fn(lambda a: a.max(1).indices + 1), [("N", 5, 6, 7)])
    with pytest.raises(CnnirError, match="argmax"):
        cnnir.trace(Fn(lambda a: a.max(1)[1].float()), [("N", 5, 6, 7)])


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_powers_and_elementwise_math(backend: str) -> None:
    x = np.random.default_rng(4).standard_normal(X_SHAPE)

    def f(a):
        p = a * a + 0.125
        return (a ** 2, a ** 3, p ** 0.5, cnnir.pow(p, -1.5), cnnir.sqrt(p), cnnir.exp(a),
                cnnir.log(p), a.clamp(-0.3, 0.4), cnnir.clamp(a, min=0.2),
                cnnir.clamp(a, max=-0.1), cnnir.clamp(a, 0.5, -0.5), a.abs())

    _, got = run(f, backend, x)
    p = x * x + 0.125
    want = [x ** 2, x ** 3, p ** 0.5, p ** -1.5, np.sqrt(p), np.exp(x), np.log(p),
            np.minimum(np.maximum(x, -0.3), 0.4), np.maximum(x, 0.2), np.minimum(x, -0.1),
            np.full_like(x, -0.5), np.abs(x)]
    for g, w in zip(got, want):
        close(g, w, backend)


def test_square_stays_a_product_and_other_powers_are_pow_nodes() -> None:
    graph = cnnir.trace(Fn(lambda a: (a ** 2, a ** 3)), [("N", 5)])
    assert [n.op for n in graph.nodes] == [ops.mul, ops.pow_]
    assert graph.nodes[1].attrs.exponent == 3.0


def test_a_traced_exponent_is_refused() -> None:
    with pytest.raises(CnnirError, match="traced exponent"):
        cnnir.trace(Fn(lambda a: cnnir.pow(a, a)), [("N", 5)])


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_expand_and_split_by_sizes(backend: str) -> None:
    x = np.random.default_rng(5).standard_normal((2, 5, 1, 7))

    def f(a):
        first, second = cnnir.split(a, [2, 3], dim=1)
        return a.expand(-1, -1, 4, 7), first, second, a.split(3, dim=3)[2]

    _, got = run(f, backend, x)
    want = [np.broadcast_to(x, (2, 5, 4, 7)), x[:, :2], x[:, 2:], x[..., 6:]]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_slice_gradient_scatters_into_zeros() -> None:
    """d/dx Σ w·x[:, 1:5:2, ::3] is w at the read positions and 0 elsewhere (numpy
    scatter written here); the gather's gradient sums a repeated index's shares."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 6, 7))
    w = rng.standard_normal((2, 2, 2, 7))
    v = rng.standard_normal((2, 4, 6, 7))

    class Loss(nn.Module):
        def forward(self, a, wa, va):
            return (a[:, 1:5:2, ::3] * wa).sum() + (a[:, [4, 0, 0, -2]] * va).sum()

    graph = cnnir.trace(Loss(), [(2, 5, 6, 7), (2, 2, 2, 7), (2, 4, 6, 7)])
    (grad,) = differentiate(graph, graph.outputs[0], [graph.inputs[0]])
    graph.set_outputs([grad])
    cnnir.verify(graph)
    got = cnnir.compile(graph, backend="reference")(x, w, v)
    want = np.zeros_like(x)
    want[:, 1:5:2, ::3] += w
    for j, i in enumerate([4, 0, 0, 3]):
        want[:, i] += v[:, j]
    np.testing.assert_allclose(got, want, rtol=1e-12)
