"""Symbolic sizes as model code sees them: ``x.size(0)`` under a symbolic batch behaves like
torch's SymInt (arithmetic builds expressions), never like a Python string."""

from __future__ import annotations

import numpy as np
import pytest

import cnnir
from cnnir import nn
from cnnir.ir.types import SymDim


class Regroup(nn.Module):
    def forward(self, x):
        n = x.size(0)
        assert isinstance(n, SymDim)
        pairs = x.view(n * 2, -1)          # two rows per sample
        return pairs.reshape(n, -1), x.flatten(1).view(-1, 4)


def test_arithmetic_on_a_symbolic_batch_builds_expressions() -> None:
    g = cnnir.trace(Regroup(), ("N", 4, 2, 2))
    assert [v.type.shape for v in g.outputs] == [("N", 16), ("4 * N", 4)]
    rep = cnnir.analyze(g)  # per sample: N bound to 1
    assert rep.per_sample and [layer.output_shapes for layer in rep.layers][-1] == [[4, 4]]


def test_symbolic_graph_runs_at_any_batch() -> None:
    g = cnnir.trace(Regroup(), ("N", 4, 2, 2))
    x = np.arange(3 * 16, dtype=np.float32).reshape(3, 4, 2, 2)
    a, b = cnnir.compile(g)(x)
    np.testing.assert_array_equal(a, x.reshape(3, 16))
    np.testing.assert_array_equal(b, x.reshape(12, 4))


def test_symbolic_size_is_not_string_repetition() -> None:
    n = SymDim("N")
    assert n * 2 == "N * 2" and 3 * n == "3 * N" and n + 1 == "N + 1" and n // 2 == "N // 2"
    with pytest.raises(cnnir.ShapeError, match="remainder"):
        n % 2  # noqa: B018
