"""Every op's ``vjp`` rule against central finite differences in float64, on the op-case
table (``tests/op_cases.py``): the generated gradient of ``Σ r·(y + tanh(y))`` with respect
to every float input and trainable parameter (``tests/grad_testing.py``)."""

from __future__ import annotations

import grad_testing as gt
import pytest
from grad_testing import BATCH, PENDING, ready
from op_cases import CASES, Case, input_types, make_inputs, trace

import cnnir
from cnnir.grad import sum_of_outputs
from cnnir.ops import REGISTRY
from cnnir.ops.optim import UPDATE_OPS

READY = [c for c in CASES if ready(c)]


def test_pending_lists_exactly_the_ops_without_a_rule() -> None:
    lacking = {op for op in REGISTRY.values() if op.differentiable and op.vjp is None}
    assert sorted(op.name for op in lacking) == sorted(op.name for op in PENDING)


def test_backward_ops_are_not_differentiated_again() -> None:
    backward = [op.name for op in REGISTRY.values() if op.backward and op.differentiable]
    assert backward == []


def test_every_backward_op_is_exercised() -> None:
    """Backward ops have no case of their own: the gradients of the cases (and, for the
    training-mode BatchNorm, the running-statistics update of cnnir.grad_graph) must use
    each."""
    used = {node.op.name for case in READY
            for node in gt.gradient_graphs(trace(case, BATCH)).grads.nodes}
    used |= {node.op.name for case in READY if case.name == "batch-norm-train"
             for node in cnnir.grad_graph(case.build(), sum_of_outputs,
                                          input_types(case, BATCH)).nodes}
    updates = {op.name for op in UPDATE_OPS}  # the optimizer's, exercised by tests/optim
    unused = {op.name for op in REGISTRY.values() if op.backward} - used - updates
    assert not unused


@pytest.mark.parametrize("case", READY, ids=[c.name for c in READY])
def test_vjp_matches_finite_differences(case: Case) -> None:
    graph = trace(case, BATCH)
    checked = gt.gradient_graphs(graph)
    arrays = [a.astype("float64") if a.dtype.kind == "f" else a
              for a in make_inputs(case, BATCH)] + gt.parameter_arrays(graph)
    gt.numeric_check(checked, arrays)
