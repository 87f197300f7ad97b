"""Helpers for the reference-backend tests: one-node graphs run in float64."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from cnnir.backends.reference import compile_graph
from cnnir.ir import Graph, TensorType, verify
from cnnir.ops import OpDef


def one_node_graph(op: OpDef, attrs: Any, *inputs: np.ndarray | None) -> Graph:
    """A verified graph applying ``op`` to graph inputs shaped like ``inputs`` (None = absent)."""
    g = Graph(op.name)
    values = []
    for i, array in enumerate(inputs):
        if array is None:
            values.append(None)
            continue
        array = np.asarray(array)
        values.append(g.add_input(f"in{i}", TensorType(array.shape, array.dtype.name)))
    node = g.add_node(op, values, attrs)
    g.set_outputs(node.outputs)
    return verify(g)


def run_one(op: OpDef, attrs: Any, *inputs: np.ndarray | None, seed: int = 0) -> Any:
    """Run ``op`` once on the reference backend in float64."""
    run = compile_graph(one_node_graph(op, attrs, *inputs), seed=seed)
    return run(*(np.asarray(a) for a in inputs if a is not None))


@pytest.fixture
def run_op() -> Callable[..., Any]:
    return run_one


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
