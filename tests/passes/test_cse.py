"""eliminate-common-subexpressions: duplicates merge (chains too), random training ops and
graph outputs do not."""

from __future__ import annotations

import numpy as np
from pass_testing import assert_equivalent, build, constant

from cnnir import ops
from cnnir.ir import Graph, TensorType
from cnnir.ops.activation import DropoutAttrs, LeakyReluAttrs
from cnnir.ops.conv import Conv2dAttrs
from cnnir.passes.manager import run_pipeline


def _input(g: Graph):
    return g.add_input("x", TensorType((1, 2, 5, 5), "float64"))


def test_duplicate_chains_collapse_in_one_run():
    """conv(x) twice, relu of each, then their sum: one conv, one relu, add(r, r)."""
    g = Graph("dup")
    x = _input(g)
    w = constant(g, "w", np.random.default_rng(0).normal(size=(3, 2, 3, 3)))
    convs = [g.add_node(ops.conv2d, [x, w, None], Conv2dAttrs(padding=1), name=f"c{i}")
             for i in range(2)]
    relus = [g.add_node(ops.relu, [c.output], name=f"r{i}") for i, c in enumerate(convs)]
    g.set_outputs([g.add_node(ops.add, [relus[0].output, relus[1].output], name="sum").output])
    result = run_pipeline(g, ["eliminate-common-subexpressions"])
    out = result.graph
    assert [n.name for n in out.nodes] == ["c0", "r0", "sum"]
    assert out.nodes[-1].inputs == [out.nodes[1].output] * 2
    assert result.report["passes"][0]["merged"] == ["c1 = c0", "r1 = r0"]
    assert_equivalent(g, out)


def test_equal_small_literals_merge_so_their_users_do():
    g = Graph("literals")
    x = _input(g)
    halves = [g.add_literal(np.asarray(0.5), "half") for _ in range(2)]
    muls = [g.add_node(ops.mul, [x, h], name=f"m{i}") for i, h in enumerate(halves)]
    g.set_outputs([g.add_node(ops.sub, [muls[0].output, muls[1].output], name="d").output])
    out = run_pipeline(g, ["eliminate-common-subexpressions"]).graph
    assert [n.name for n in out.nodes] == ["m0", "d"]
    assert len([c for c in out.constants.values() if c.const.kind == "literal"]) == 1
    assert_equivalent(g, out)


def test_different_attributes_and_random_training_ops_stay_apart():
    g = Graph("apart")
    x = _input(g)
    leaky = [g.add_node(ops.leaky_relu, [x], LeakyReluAttrs(s), name=f"l{i}")
             for i, s in enumerate((0.1, 0.2))]
    drops = [g.add_node(ops.dropout, [x], DropoutAttrs(0.5, training=True), name=f"d{i}")
             for i in range(2)]
    total = g.add_node(ops.add, [leaky[0].output, leaky[1].output], name="a")
    masks = g.add_node(ops.add, [drops[0].output, drops[1].output], name="b")
    g.set_outputs([total.output, masks.output])
    assert not run_pipeline(g, ["eliminate-common-subexpressions"]).modified


def test_duplicates_that_are_graph_outputs_keep_their_names():
    g = Graph("outs")
    x = _input(g)
    g.set_outputs([g.add_node(ops.relu, [x], name=f"r{i}").output for i in range(2)])
    out = run_pipeline(g, ["eliminate-common-subexpressions"]).graph
    assert [v.name for v in out.outputs] == ["r0", "r1"]


def test_siamese_towers_are_not_merged_across_inputs():
    """The two towers share weights but read different inputs: nothing is common."""
    g = build("siamese.py", "siamese", [(1, 1, 28, 28)] * 2)
    assert not run_pipeline(g, ["eliminate-common-subexpressions"]).modified
