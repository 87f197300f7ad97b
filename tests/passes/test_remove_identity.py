"""remove-identity: identities and eval dropout are bypassed, reshape chains collapse."""

from __future__ import annotations

from pass_testing import assert_equivalent, build

from cnnir import ops
from cnnir.ir import Graph, TensorType
from cnnir.ops.activation import DropoutAttrs
from cnnir.ops.tensor import FlattenAttrs, ReshapeAttrs
from cnnir.passes.manager import run_pipeline


def _graph(shape=(2, 3, 4, 4)):
    g = Graph("ids")
    return g, g.add_input("x", TensorType(shape, "float64"))


def test_identity_eval_dropout_and_same_shape_reshape_go():
    g, x = _graph()
    a = g.add_node(ops.identity, [x], name="id")
    b = g.add_node(ops.dropout, [a.output], DropoutAttrs(0.3, training=False), name="drop")
    c = g.add_node(ops.dropout2d, [b.output], DropoutAttrs(0.0, training=True), name="drop0")
    d = g.add_node(ops.reshape, [c.output], ReshapeAttrs((2, 3, 4, 4)), name="same")
    g.set_outputs([g.add_node(ops.relu, [d.output], name="out").output])
    out = run_pipeline(g, ["remove-identity"]).graph
    assert [n.name for n in out.nodes] == ["out"] and out.nodes[0].inputs[0] is out.inputs[0]
    assert_equivalent(g, out)


def test_training_dropout_stays():
    g, x = _graph()
    d = g.add_node(ops.dropout, [x], DropoutAttrs(0.5, training=True), name="drop")
    g.set_outputs([g.add_node(ops.relu, [d.output], name="out").output])
    assert not run_pipeline(g, ["remove-identity"]).modified


def test_reshape_chains_become_one_reshape():
    g, x = _graph()
    f = g.add_node(ops.flatten, [x], FlattenAttrs(1), name="flat")
    r1 = g.add_node(ops.reshape, [f.output], ReshapeAttrs((2, 12, 4)), name="r1")
    r2 = g.add_node(ops.reshape, [r1.output], ReshapeAttrs((6, -1)), name="r2")
    g.set_outputs([g.add_node(ops.relu, [r2.output], name="out").output])
    out = run_pipeline(g, ["remove-identity"]).graph
    assert [n.op for n in out.nodes] == [ops.reshape, ops.relu]
    assert out.nodes[0].inputs[0] is out.inputs[0]
    assert out.nodes[0].output.type.shape == (6, 16)
    assert_equivalent(g, out)


def test_a_chain_that_restores_the_shape_disappears():
    g, x = _graph()
    f = g.add_node(ops.flatten, [x], FlattenAttrs(1), name="flat")
    back = g.add_node(ops.reshape, [f.output], ReshapeAttrs((2, 3, 4, 4)), name="back")
    g.set_outputs([g.add_node(ops.relu, [back.output], name="out").output])
    out = run_pipeline(g, ["remove-identity"]).graph
    assert [n.name for n in out.nodes] == ["out"]
    assert_equivalent(g, out)


def test_an_inner_reshape_with_other_users_stays():
    g, x = _graph()
    f = g.add_node(ops.flatten, [x], FlattenAttrs(1), name="flat")
    r = g.add_node(ops.reshape, [f.output], ReshapeAttrs((6, 16)), name="r")
    g.set_outputs([g.add_node(ops.relu, [r.output], name="a").output,
                   g.add_node(ops.tanh, [f.output], name="b").output])
    out = run_pipeline(g, ["remove-identity"]).graph
    assert [n.name for n in out.nodes] == ["flat", "r", "a", "b"]
    assert out.nodes[1].inputs[0] is out.inputs[0]
    assert_equivalent(g, out)


def test_symbolic_batch_flatten_of_a_flat_tensor_is_an_identity():
    g, x = _graph(("N", 10))
    f = g.add_node(ops.flatten, [x], FlattenAttrs(1), name="flat")
    g.set_outputs([g.add_node(ops.relu, [f.output], name="out").output])
    assert [n.name for n in run_pipeline(g, ["remove-identity"]).graph.nodes] == ["out"]


def test_graph_outputs_keep_their_names_and_models_stay_equal():
    g, x = _graph()
    g.set_outputs([g.add_node(ops.identity, [x], name="id").output])
    assert not run_pipeline(g, ["remove-identity"]).modified
    model = build("mobilenet.py", "mobilenet_v2", (1, 3, 32, 32))
    out = run_pipeline(model, ["remove-identity"]).graph
    assert not any(n.op is ops.dropout for n in out.nodes)
    assert len(out.nodes) == len(model.nodes) - 1
