"""The call-time contract on the CUDA backend: the checks, classes and messages of the other
backends (``cnnir.backend.check_call``), host or device arrays."""

from __future__ import annotations

import numpy as np
import pytest

import cnnir
from cnnir import LoweringError, nn
from cnnir.backends.numba_cuda import cuda

X = np.zeros((1, 3, 2, 2), np.float32)
MISTAKES = [
    ((X, X), r"takes 1 input\(s\) \('x' float32\[N, 3, 2, 2\]\) but was called with 2"),
    ((X.tolist(),), r"input 'x' is a list, not an array"),
    ((X[0],), r"input 'x' expects a 4-D array of shape \[N, 3, 2, 2\]"),
    ((np.zeros((1, 4, 2, 2), np.float32),), r"input 'x' expects shape \[N, 3, 2, 2\]"),
    ((X[:0],), r"input 'x' has shape \[0, 3, 2, 2\], size 0 on dim 0: cnnir refuses empty"),
    ((X.astype(np.float64),), r"input 'x' must be float32 but got float64"),
]


@pytest.fixture(scope="module")
def runs():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    return [cnnir.compile(model, ("N", 3, 2, 2), backend=b, dtype="float32")
            for b in ("cuda", "numba")]


@pytest.mark.parametrize("args, pattern", MISTAKES)
def test_mistakes_match_the_cpu_backend_word_for_word(runs, args, pattern):
    errors = []
    for run in runs:
        with pytest.raises(LoweringError, match=pattern) as exc:
            run(*args)
        errors.append(str(exc.value))
    assert errors[0] == errors[1]


def test_device_arrays_are_checked_too(runs):
    with pytest.raises(LoweringError, match=r"input 'x' has shape \[0, 3, 2, 2\], size 0"):
        runs[0](cuda.to_device(X[:0].copy()))
    with pytest.raises(LoweringError, match=r"must be float32 but got float64"):
        runs[0](cuda.to_device(X.astype(np.float64)))
