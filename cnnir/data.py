"""Data for training: mini-batches over in-memory arrays (``batches``) and the user's own
data sets as ``.npz`` files (``load_npz``).

The three gradient-descent regimes of a textbook are batch sizes: full-batch gradient descent
is ``batch_size=len(x)``, per-sample (stochastic) gradient descent ``batch_size=1``, and
mini-batch gradient descent any size in between.

    >>> for x, y in cnnir.data.batches(X, Y, batch_size=32, shuffle=True, seed=epoch):
    ...     loss = step(x, y)
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
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
    unless ``drop_last``."""

    def __init__(self, *arrays: Any, batch_size: int, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False) -> None:
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise CnnirError(f"batch_size must be a positive integer, got {batch_size!r}",
                             hint="len(x) for full-batch gradient descent, 1 per sample")
        self.count = shapes[0][0]
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last

    def __len__(self) -> int:
        if self.drop_last:
            return self.count // self.batch_size
        return -(-self.count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        order = (np.random.default_rng(self.seed).permutation(self.count) if self.shuffle
                 else None)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = min(start + self.batch_size, self.count)
            if order is None:
                yield tuple(a[start:stop] for a in self.arrays)
            else:
                yield tuple(a[order[start:stop]] for a in self.arrays)


def batches(*arrays: Any, batch_size: int, shuffle: bool = False, seed: int | None = None,
            drop_last: bool = False) -> Batches:
    """Mini-batches of ``arrays`` (see ``Batches``)."""
    return Batches(*arrays, batch_size=batch_size, shuffle=shuffle, seed=seed,
                   drop_last=drop_last)


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
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as err:  # object arrays need pickle, which is never used
        raise CnnirError(f"{path}: {err}", hint="save plain numeric arrays with "
                         "np.savez(path, x=..., y=...)") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise CnnirError(f"{path} is not a readable .npz file ({err})",
                         hint="save it with np.savez(path, x=..., y=...)") from None
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


__all__ = ["Batches", "DataSet", "batches", "load_npz"]
