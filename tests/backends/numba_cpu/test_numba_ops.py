"""Every op on the Numba backend (float32) against the float64 reference executor.

The cases are the shared table of ``tests/op_cases.py`` (those with ``numba`` set), compiled
at batch 2 (``BATCH``). Tolerance (docs/semantics.md §8): rtol 1e-4, atol 1e-5·max(1, ‖y_ref‖∞),
widened by √K for reductions of length K.
"""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES, Case, make_inputs, outputs, reference, trace, untested_ops
from op_helpers import T, assert_close, fused_graph

import cnnir
from cnnir import nn
from cnnir.backends.numba_cpu import KERNELS, UNSUPPORTED
from cnnir.backends.numba_cpu.kernels import simd
from cnnir.ops import REGISTRY

# The batch the Numba table used before the tables merged: its shapes are unchanged.
BATCH = 2
NUMBA_CASES = [c for c in CASES if c.numba]


@pytest.mark.parametrize("case", NUMBA_CASES, ids=[c.name for c in NUMBA_CASES])
def test_op_matches_reference(case: Case) -> None:
    graph = trace(case, BATCH)
    inputs = make_inputs(case, BATCH)
    got = outputs(cnnir.compile(graph, backend="numba")(*inputs))
    ref = reference(graph, inputs)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == np.float32 and g.shape == r.shape
        assert_close(g, r, case.reduction)


def test_every_op_has_a_kernel() -> None:
    missing = sorted(op.name for op in REGISTRY.values() if op not in KERNELS)
    assert sorted(op.name for op in UNSUPPORTED) == missing == []


def test_the_table_exercises_every_op() -> None:
    untested = untested_ops(NUMBA_CASES)
    assert untested <= {"conv2d_fused", "linear_fused"}, untested  # graph-built below


def test_float64_on_request() -> None:
    case = NUMBA_CASES[0]
    graph = trace(case, BATCH)
    x = make_inputs(case, BATCH)[0].astype(np.float64)
    y = cnnir.compile(graph, dtype="float64")(x)
    ref = cnnir.compile(graph, backend="reference")(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "leaky_relu", "hardswish",
                                        "sigmoid"])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_conv_and_linear(activation: str | None, residual: bool) -> None:
    from cnnir import ops
    from cnnir.ops.activation import LeakyReluAttrs
    from cnnir.ops.fused import Conv2dFusedAttrs, LinearFusedAttrs

    act = getattr(ops, activation) if activation else None
    act_attrs = LeakyReluAttrs(0.3) if activation == "leaky_relu" else None
    cases = [
        fused_graph(ops.conv2d_fused, Conv2dFusedAttrs(padding=(1, 1, 1, 1), activation=act,
                                                       activation_attrs=act_attrs,
                                                       residual=residual),
                    T(2, 4, 6, 6), (5, 4, 3, 3), residual),
        fused_graph(ops.conv2d_fused, Conv2dFusedAttrs(padding=(1, 1, 1, 1), groups=4,
                                                       activation=act, residual=residual),
                    T(2, 4, 6, 6), (4, 1, 3, 3), residual),
        fused_graph(ops.linear_fused, LinearFusedAttrs(activation=act, activation_attrs=act_attrs,
                                                       residual=residual),
                    T(3, 7), (5, 7), residual),
    ]
    rng = np.random.default_rng(0)
    for g in cases:
        xs = [rng.standard_normal(v.type.shape).astype(np.float32) * 3 for v in g.inputs]
        got = cnnir.compile(g)(*xs)
        ref = cnnir.compile(g, backend="reference")(*[x.astype(np.float64) for x in xs])
        assert_close(got, ref, 36)


def test_every_fusable_activation_has_a_kernel_code() -> None:
    from cnnir.backends.numba_cpu.epilogue import ACTIVATIONS
    from cnnir.ops.fused import FUSABLE_ACTIVATIONS

    missing = {op.name for op in FUSABLE_ACTIVATIONS - ACTIVATIONS.keys()}
    assert not missing


@pytest.mark.parametrize("rows", [2, 3, 5, 16])
@pytest.mark.parametrize("features", [5, 2 * simd.LANES, 2 * simd.LANES + 3, 3 * simd.LANES + 1])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_of_a_few_rows_matches_reference(rows: int, features: int, bias: bool) -> None:
    """2 to 16 rows run four at a time over blocks of two vectors of features
    (``gk.linear_rows``): rows past a multiple of four, features past a block (masked
    stores and bias loads), with and without a bias."""
    model = nn.Linear(37, features, bias=bias).eval()
    x = np.random.default_rng(rows).standard_normal((rows, 37)).astype(np.float32)
    got = cnnir.compile(model, x.shape)(x)
    ref = cnnir.compile(model, x.shape, backend="reference")(x.astype(np.float64))
    assert got.shape == (rows, features)
    assert_close(got, ref, 37)
