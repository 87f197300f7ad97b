"""Gradient graphs on the Numba backend (float32) against the reference backend (float64):
every op-case whose ops have vjp rules (tests/ops/test_vjp.py checks those rules against
finite differences), and whole example networks."""

from __future__ import annotations

import grad_testing as gt
import numpy as np
import pytest
from grad_testing import BATCH, ready
from op_cases import CASES, Case, make_inputs, trace

CASES_READY = [c for c in CASES if c.numba and ready(c)]


@pytest.mark.parametrize("case", CASES_READY, ids=[c.name for c in CASES_READY])
def test_backward_matches_reference(case: Case) -> None:
    graph = trace(case, BATCH)
    arrays = [a.astype(np.float64) if a.dtype.kind == "f" else a
              for a in make_inputs(case, BATCH)] + gt.parameter_arrays(graph)
    gt.compare_backends(graph, arrays, reduction=max(case.reduction, 16))
