"""linear-to-conv1x1: global-pool heads as 1x1 convs (and back), exact in float64."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import as_float64, assert_equivalent, build, constant, randomize_bn

import cnnir
from cnnir import ops
from cnnir.errors import PassError
from cnnir.ir import Graph, TensorType
from cnnir.ops.activation import DropoutAttrs
from cnnir.ops.tensor import FlattenAttrs, ReduceAttrs
from cnnir.passes.manager import run_pipeline

HEADS = [("resnet.py", "resnet18", (2, 3, 64, 64)),
         ("mobilenet.py", "mobilenet_v2", (1, 3, 64, 64))]


@pytest.mark.parametrize(("path", "builder", "shape"), HEADS, ids=[h[1] for h in HEADS])
def test_classifier_heads_round_trip_exactly(path, builder, shape):
    g = randomize_bn(as_float64(build(path, builder, shape)))
    forward = run_pipeline(g, ["linear-to-conv1x1"])
    ops_after = [n.op for n in forward.graph.nodes[-3:]]
    assert ops_after == [ops.conv2d, ops.adaptive_avg_pool2d, ops.flatten]
    assert not any(n.op in (ops.linear, ops.dropout) for n in forward.graph.nodes)
    assert_equivalent(g, forward.graph)
    back = run_pipeline(forward.graph, ["linear-to-conv1x1"], direction="reverse")
    assert [n.op for n in back.graph.nodes[-3:]] == [ops.adaptive_avg_pool2d, ops.flatten,
                                                     ops.linear]
    assert_equivalent(g, back.graph)


def test_the_conv_head_costs_h_times_w_the_macs():
    g = build("resnet.py", "resnet18", (1, 3, 64, 64))  # 512 x 2 x 2 before the pool
    before = cnnir.analyze(g).totals.macs
    after = cnnir.analyze(run_pipeline(g, ["linear-to-conv1x1"]).graph).totals.macs
    assert after - before == (2 * 2 - 1) * 512 * 1000


def mean_head(keepdim: bool, dropout_training: bool = False) -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("mean_head")
    x = g.add_input("x", TensorType((2, 5, 3, 4), "float64"))
    m = g.add_node(ops.mean, [x], ReduceAttrs((-2, -1), keepdim), name="pool")
    v = m.output
    if keepdim:
        v = g.add_node(ops.flatten, [v], FlattenAttrs(1), name="flat").output
    v = g.add_node(ops.dropout, [v], DropoutAttrs(0.2, dropout_training), name="drop").output
    w, b = constant(g, "fc.weight", rng.normal(size=(7, 5))), constant(g, "fc.bias",
                                                                      rng.normal(size=7))
    g.set_outputs([g.add_node(ops.linear, [v, w, b], name="fc").output])
    return g


@pytest.mark.parametrize("keepdim", [False, True])
def test_mean_heads_round_trip_exactly(keepdim):
    g = mean_head(keepdim)
    forward = run_pipeline(g, ["linear-to-conv1x1"]).graph
    assert forward.nodes[0].op is ops.conv2d and forward.nodes[1].op is ops.mean
    assert_equivalent(g, forward)
    back = run_pipeline(forward, ["linear-to-conv1x1"], direction="reverse").graph
    assert back.nodes[-1].op is ops.linear
    assert_equivalent(g, back)


def test_guards_keep_training_dropout_and_shared_pools():
    assert not run_pipeline(mean_head(True, dropout_training=True),
                            ["linear-to-conv1x1"]).modified
    g = mean_head(False)
    g.set_outputs([*g.outputs, g.nodes[0].output])  # the pooled features are an output too
    assert not run_pipeline(g, ["linear-to-conv1x1"]).modified


def test_reverse_keeps_a_4d_pool_result_and_rejects_bad_directions():
    """conv1x1 -> adaptive pool as the graph output: reversed, a reshape restores
    [N, O, 1, 1]. SqueezeNet's head has a relu between the two and is left alone."""
    rng = np.random.default_rng(0)
    g = Graph("conv_head")
    x = g.add_input("x", TensorType((2, 5, 3, 3), "float64"))
    w, b = constant(g, "w", rng.normal(size=(4, 5, 1, 1))), constant(g, "b", rng.normal(size=4))
    conv = g.add_node(ops.conv2d, [x, w, b], name="conv")
    g.set_outputs([g.add_node(ops.adaptive_avg_pool2d, [conv.output], name="pool").output])
    back = run_pipeline(g, ["linear-to-conv1x1"], direction="reverse").graph
    assert [n.op for n in back.nodes] == [ops.adaptive_avg_pool2d, ops.flatten, ops.linear,
                                          ops.reshape]
    assert_equivalent(g, back)
    squeeze = build("squeezenet.py", "squeezenet1_1", (1, 3, 64, 64))
    assert not run_pipeline(squeeze, ["linear-to-conv1x1"], direction="reverse").modified
    with pytest.raises(PassError, match="direction must be"):
        run_pipeline(g, ["linear-to-conv1x1"], direction="sideways")
