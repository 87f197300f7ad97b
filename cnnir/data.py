"""Mini-batches over in-memory arrays: ``cnnir.data.batches``.

The three gradient-descent regimes of a textbook are batch sizes: full-batch gradient descent
is ``batch_size=len(x)``, per-sample (stochastic) gradient descent ``batch_size=1``, and
mini-batch gradient descent any size in between.

    >>> for x, y in cnnir.data.batches(X, Y, batch_size=32, shuffle=True, seed=epoch):
    ...     loss = step(x, y)
"""

from __future__ import annotations

from collections.abc import Iterator
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


__all__ = ["Batches", "batches"]
