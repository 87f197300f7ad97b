"""eliminate-dead-code: dead nodes go, effects and parameters stay, literals are dropped."""

from __future__ import annotations

import numpy as np
from pass_testing import assert_equivalent, constant

from cnnir import ops
from cnnir.ir import Graph, TensorType
from cnnir.ops.activation import DropoutAttrs
from cnnir.ops.norm import BatchNormAttrs
from cnnir.passes.manager import run_pipeline


def graph_with_dead_branch() -> Graph:
    """y = relu(x); a dead chain sigmoid(x) * 2 -> tanh; an unused literal and parameter."""
    g = Graph("dead")
    x = g.add_input("x", TensorType((2, 3, 4, 4), "float64"))
    y = g.add_node(ops.relu, [x], name="live")
    s = g.add_node(ops.sigmoid, [x], name="dead_sigmoid")
    two = g.add_literal(np.asarray(2.0), "two")
    m = g.add_node(ops.mul, [s.output, two], name="dead_mul")
    g.add_node(ops.tanh, [m.output], name="dead_tanh")
    g.add_literal(np.zeros(3), "unused_literal")
    constant(g, "unused.weight", np.ones(3))
    g.set_outputs([y.output])
    return g


def test_dead_nodes_and_unused_literals_are_removed():
    g = graph_with_dead_branch()
    result = run_pipeline(g, ["eliminate-dead-code"])
    out = result.graph
    assert [n.name for n in out.nodes] == ["live"]
    assert set(result.report["passes"][0]["nodes"]) == {"dead_sigmoid", "dead_mul", "dead_tanh"}
    assert "two" not in out.constants and "unused_literal" not in out.constants
    assert "unused.weight" in out.constants  # parameters stay unless pruned
    assert_equivalent(g, out)


def test_a_second_run_finds_nothing():
    once = run_pipeline(graph_with_dead_branch(), ["eliminate-dead-code"]).graph
    again = run_pipeline(once, ["eliminate-dead-code"])
    assert not again.modified and str(again.graph) == str(once)


def test_training_mode_nodes_with_effects_stay():
    """A dead training-mode batch_norm still updates its running statistics."""
    g = Graph("effects")
    x = g.add_input("x", TensorType((4, 2, 3, 3), "float64"))
    stats = [constant(g, "bn.running_mean", np.zeros(2), "buffer"),
             constant(g, "bn.running_var", np.ones(2), "buffer")]
    g.add_node(ops.batch_norm, [x, *stats, None, None], BatchNormAttrs(training=True),
               name="bn_train")
    g.add_node(ops.dropout, [x], DropoutAttrs(training=False), name="dead_dropout")
    g.set_outputs([g.add_node(ops.relu, [x], name="out").output])
    out = run_pipeline(g, ["eliminate-dead-code"]).graph
    assert [n.name for n in out.nodes] == ["bn_train", "out"]


def test_multi_output_node_lives_if_any_output_is_used():
    from cnnir.ops.tensor import SplitAttrs

    g = Graph("split")
    x = g.add_input("x", TensorType((1, 4, 2, 2), "float64"))
    parts = g.add_node(ops.split, [x], SplitAttrs((1, 3), 1), name="split")
    g.set_outputs([g.add_node(ops.relu, [parts.outputs[1]], name="second").output])
    out = run_pipeline(g, ["eliminate-dead-code"]).graph
    assert [n.name for n in out.nodes] == ["split", "second"]
    assert_equivalent(g, out)
