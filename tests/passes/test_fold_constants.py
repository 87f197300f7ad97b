"""fold-constants: constant subgraphs become literals computed by the reference kernels."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import assert_equivalent, constant

from cnnir import ops
from cnnir.api import run_passes
from cnnir.errors import PassError
from cnnir.ir import Graph, TensorType
from cnnir.ops.activation import DropoutAttrs
from cnnir.ops.tensor import TransposeAttrs
from cnnir.passes.manager import run_pipeline


def test_a_constant_chain_folds_to_one_literal():
    """y = x @ transpose(w * 2 + 1): the transpose, mul and add fold; the matmul stays."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4))
    g = Graph("chain")
    x = g.add_input("x", TensorType((2, 4), "float64"))
    wv = constant(g, "w", w)
    scaled = g.add_node(ops.mul, [wv, g.add_literal(np.asarray(2.0), "two")], name="scale")
    shifted = g.add_node(ops.add, [scaled.output, g.add_literal(np.asarray(1.0), "one")],
                         name="shift")
    t = g.add_node(ops.transpose, [shifted.output], TransposeAttrs((1, 0)), name="t")
    g.set_outputs([g.add_node(ops.matmul, [x, t.output], name="mm").output])
    result = run_passes(g, ["fold-constants"])
    out = result.graph
    assert [n.name for n in out.nodes] == ["mm"]
    folded = out.nodes[0].inputs[1]
    assert folded.const.kind == "literal" and folded.type == TensorType((4, 3), "float64")
    np.testing.assert_array_equal(folded.const.array, (w * 2 + 1).T)
    assert "two" not in out.constants and "one" not in out.constants  # literals left unused
    assert "w" in out.constants  # parameters stay (eliminate-dead-code decides)
    assert_equivalent(g, out)


def test_float32_results_keep_their_dtype():
    g = Graph("f32")
    x = g.add_input("x", TensorType((3,), "float32"))
    c = g.add_literal(np.asarray([1.0, 2.0, 3.0], np.float32), "c")
    e = g.add_node(ops.sigmoid, [c], name="sig")
    g.set_outputs([g.add_node(ops.add, [x, e.output], name="out").output])
    out = run_passes(g, ["fold-constants"]).graph
    lit = out.nodes[0].inputs[1]
    assert lit.type.dtype == "float32" and lit.const.array.dtype == np.float32
    np.testing.assert_allclose(lit.const.array, 1 / (1 + np.exp(-np.array([1.0, 2.0, 3.0]))),
                               rtol=1e-7)


def test_outputs_random_training_ops_and_huge_results_are_not_folded():
    g = Graph("keep")
    c = g.add_literal(np.ones((4, 4)), "c")
    drop = g.add_node(ops.dropout, [c], DropoutAttrs(0.5, training=True), name="drop")
    out = g.add_node(ops.relu, [c], name="is_output")
    g.set_outputs([drop.output, out.output])
    assert not run_passes(g, ["fold-constants"]).modified
    big = Graph("big")
    x = big.add_input("x", TensorType((8, 8), "float64"))
    r = big.add_node(ops.relu, [big.add_literal(np.ones((8, 8)), "c")], name="r")
    big.set_outputs([big.add_node(ops.add, [x, r.output], name="a").output])
    assert not run_passes(big, ["fold-constants"], max_elements=10).modified
    assert run_passes(big, ["fold-constants"]).modified


def test_folding_needs_an_evaluator_passed_in():
    """The core has no kernels: run_pipeline without ``evaluate`` says how to give one."""
    g = Graph("needs")
    x = g.add_input("x", TensorType((3,), "float64"))
    r = g.add_node(ops.relu, [g.add_literal(np.ones(3), "c")], name="r")
    g.set_outputs([g.add_node(ops.add, [x, r.output], name="a").output])
    with pytest.raises(PassError, match="(?s)needs an evaluator.*evaluate="):
        run_pipeline(g, ["fold-constants"])
