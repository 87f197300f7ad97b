"""cnnir.data.batches: every example once per pass, in order or in a seeded permutation, the
last batch smaller unless dropped, and clear errors for arrays that cannot be batched."""

from __future__ import annotations

import numpy as np
import pytest

import cnnir
from cnnir.errors import CnnirError

X = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
Y = np.arange(10) % 4


def test_in_order_with_a_smaller_last_batch() -> None:
    got = list(cnnir.data.batches(X, Y, batch_size=4))
    assert [len(y) for _, y in got] == [4, 4, 2] and len(cnnir.data.batches(X, batch_size=4)) == 3
    np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), X)
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), Y)


def test_drop_last_and_the_three_regimes() -> None:
    assert [len(y) for _, y in cnnir.data.batches(X, Y, batch_size=4, drop_last=True)] == [4, 4]
    (full,) = list(cnnir.data.batches(X, batch_size=len(X)))  # full-batch gradient descent
    np.testing.assert_array_equal(full[0], X)
    assert len(cnnir.data.batches(X, batch_size=1)) == 10  # per-sample
    assert len(cnnir.data.batches(X, batch_size=32)) == 1  # larger than the data: one batch


def test_shuffle_is_a_seeded_permutation_kept_across_arrays() -> None:
    first = list(cnnir.data.batches(X, Y, batch_size=3, shuffle=True, seed=7))
    order = np.random.default_rng(7).permutation(10)
    xs = np.concatenate([x for x, _ in first])
    np.testing.assert_array_equal(xs, X[order])
    np.testing.assert_array_equal(np.concatenate([y for _, y in first]), Y[order])
    again = list(cnnir.data.batches(X, Y, batch_size=3, shuffle=True, seed=7))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    other = np.concatenate([x for x, _ in cnnir.data.batches(X, Y, batch_size=3, shuffle=True,
                                                              seed=8)])
    assert not np.array_equal(other, xs) and sorted(other[:, 0]) == sorted(X[:, 0])


@pytest.mark.parametrize(("arrays", "options", "message"), [
    ((X, Y[:9]), {"batch_size": 2}, "one example count"),
    ((X,), {"batch_size": 0}, "positive integer"),
    ((X,), {"batch_size": 2.5}, "positive integer"),
    ((np.float32(1.0),), {"batch_size": 1}, "first dimension"),
    ((), {"batch_size": 1}, "at least one array"),
])
def test_bad_input_names_the_problem(arrays, options, message) -> None:
    with pytest.raises(CnnirError, match=message):
        cnnir.data.batches(*arrays, **options)
