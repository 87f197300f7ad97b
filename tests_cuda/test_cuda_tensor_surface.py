"""The CUDA kernels of slice, gather, sqrt/exp/log/pow/clamp, compare and where (tiny shapes:
the simulator runs each thread in Python), against numpy written here."""

from __future__ import annotations

import numpy as np

import cnnir
from cnnir import nn


class Fn(nn.Module):
    def __init__(self, f) -> None:
        super().__init__()
        self.f = f

    def forward(self, *xs):
        return self.f(*xs)


def run_cuda(f, *arrays: np.ndarray) -> list[np.ndarray]:
    graph = cnnir.trace(Fn(f), [a.shape for a in arrays])
    out = cnnir.compile(graph, backend="cuda")(*arrays)
    return list(out) if isinstance(out, tuple) else [out]


def test_slices_and_gathers() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)

    def f(a):
        return a[:, 1], a[:, :, 1:4:2, ::2], a[..., -2:], a[:, [2, 0, 0]], a[:, 2:1]

    want = [x[:, 1], x[:, :, 1:4:2, ::2], x[..., -2:], x[:, [2, 0, 0]], x[:, 2:1]]
    for got, w in zip(run_cuda(f, x), want):
        assert got.shape == w.shape
        np.testing.assert_array_equal(got, w)


def test_elementwise_math() -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    x[0, 0, :3] = [0.0, -1.0, np.nan]

    def f(a):
        return (a.sqrt(), a.exp(), a.log(), a ** 3, a.clamp(-0.5, 0.25), a.clamp(min=0.0),
                a.clamp(max=-0.2))

    with np.errstate(invalid="ignore", divide="ignore"):
        want = [np.sqrt(x), np.exp(x), np.log(x), x ** 3, np.clip(x, -0.5, 0.25),
                np.clip(x, 0.0, None), np.clip(x, None, -0.2)]
    for got, w in zip(run_cuda(f, x), want):  # NaN and ±inf must match position for position
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def test_comparisons_and_where_broadcast() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    y = rng.standard_normal((3, 1)).astype(np.float32)
    x[0, 0, 0] = y[0, 0]  # a tie

    def f(a, b):
        return (a > b, a < b, a >= b, a <= b, a == b, a != b, cnnir.where(a > b, a, b * 2),
                cnnir.where(b, a, 0.5))

    want = [x > y, x < y, x >= y, x <= y, x == y, x != y, np.where(x > y, x, y * 2),
            np.where(y != 0, x, np.float32(0.5))]
    for got, w in zip(run_cuda(f, x, y), want):
        np.testing.assert_array_equal(got, w.astype(np.float32))
