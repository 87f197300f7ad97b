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


def test_load_npz_reads_the_arrays_without_pickle(tmp_path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=X, y=Y, x_val=X[:2], y_val=Y[:2])
    data = cnnir.data.load_npz(path)
    np.testing.assert_array_equal(data.x, X)
    np.testing.assert_array_equal(data.y_val, Y[:2])
    np.savez(path, x=X, y=Y)
    assert cnnir.data.load_npz(path).x_val is None


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x": X}, "no array 'y'"),
    ({"x": X, "y": Y[:9]}, "x has 10 examples but y has 9"),
    ({"x": X, "y": Y, "x_val": X}, "only one of x_val and y_val"),
    ({"x": X, "y": Y, "x_val": X[:, :2], "y_val": Y}, r"x_val examples are \(2,\)"),
    ({"x": X, "y": np.array(["a"] * 10)}, "array 'y' is <U1"),
    ({"x": X, "y": np.array([None] * 10, dtype=object)}, "pickle"),
])
def test_load_npz_rejects_bad_files_clearly(tmp_path, arrays, message) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(CnnirError, match=message):
        cnnir.data.load_npz(path)


def test_load_npz_missing_or_not_an_npz(tmp_path) -> None:
    with pytest.raises(CnnirError, match="no data file"):
        cnnir.data.load_npz(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CnnirError, match="not a readable .npz"):
        cnnir.data.load_npz(tmp_path / "bad.npz")
