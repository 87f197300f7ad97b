"""fuse-conv-activation: conv2d/linear + residual add + activation as one op, exact in
float64, with the same cost; guards; the fused op's own shape rule."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import as_float64, assert_equivalent, build, constant, randomize_bn

import cnnir
from cnnir import ops
from cnnir.errors import ShapeError
from cnnir.ir import Graph, TensorType
from cnnir.ops.activation import LeakyReluAttrs
from cnnir.ops.conv import Conv2dAttrs
from cnnir.ops.fused import Conv2dFusedAttrs
from cnnir.passes.manager import run_pipeline

ACTIVATIONS = [(ops.relu, None), (ops.relu6, None), (ops.leaky_relu, LeakyReluAttrs(0.2)),
               (ops.hardswish, None), (ops.sigmoid, None)]


def conv_graph(act, act_attrs, *, residual: bool, linear: bool = False,
               residual_shape=None) -> Graph:
    """x -> conv2d 3x3 (or linear) [-> add(·, r)] [-> act]; r is a second input."""
    rng = np.random.default_rng(0)
    g = Graph("epilogue")
    if linear:
        x = g.add_input("x", TensorType((3, 6), "float64"))
        w = constant(g, "w", rng.normal(size=(5, 6)))
        layer = g.add_node(ops.linear, [x, w, constant(g, "b", rng.normal(size=5))], name="l")
    else:
        x = g.add_input("x", TensorType((2, 3, 5, 5), "float64"))
        w = constant(g, "w", rng.normal(0, 0.5, size=(4, 3, 3, 3)))
        layer = g.add_node(ops.conv2d, [x, w, constant(g, "b", rng.normal(size=4))],
                           Conv2dAttrs(padding=1), name="conv")
    y = layer.output
    if residual:
        r = g.add_input("r", TensorType(residual_shape or y.type.shape, "float64"))
        y = g.add_node(ops.add, [r, y], name="add").output
    if act is not None:
        y = g.add_node(act, [y], act_attrs, name="act").output
    g.set_outputs([y])
    return g


@pytest.mark.parametrize("linear", [False, True], ids=["conv", "linear"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize(("act", "attrs"), ACTIVATIONS, ids=[a.name for a, _ in ACTIVATIONS])
def test_each_epilogue_fuses_exactly(act, attrs, residual, linear):
    g = conv_graph(act, attrs, residual=residual, linear=linear)
    out = run_pipeline(g, ["fuse-conv-activation"]).graph
    assert [n.op for n in out.nodes] == [ops.linear_fused if linear else ops.conv2d_fused]
    fused = out.nodes[0]
    assert fused.attrs.activation is act and fused.attrs.residual == residual
    assert fused.output.name == "act"  # the graph output keeps its name
    assert_equivalent(g, out)
    assert cnnir.analyze(out).totals.flops == cnnir.analyze(g).totals.flops


def test_residual_add_alone_fuses():
    g = conv_graph(None, None, residual=True)
    out = run_pipeline(g, ["fuse-conv-activation"]).graph
    assert out.nodes[0].op is ops.conv2d_fused and out.nodes[0].attrs.activation is None
    assert_equivalent(g, out)


def test_guards():
    broadcast = conv_graph(ops.relu, None, residual=True, residual_shape=(2, 4, 1, 1))
    assert not run_pipeline(broadcast, ["fuse-conv-activation"]).modified
    tanh = conv_graph(ops.tanh, None, residual=False)
    assert not run_pipeline(tanh, ["fuse-conv-activation"]).modified
    shared = conv_graph(ops.relu, None, residual=False)
    shared.set_outputs([*shared.outputs, shared.nodes[0].output])
    assert not run_pipeline(shared, ["fuse-conv-activation"]).modified
    peeked = conv_graph(ops.relu, None, residual=True)
    peeked.set_outputs([*peeked.outputs, peeked.nodes[1].output])  # the sum is read too
    out = run_pipeline(peeked, ["fuse-conv-activation"]).graph
    assert [n.op for n in out.nodes] == [ops.conv2d_fused, ops.relu]
    assert out.nodes[0].attrs.activation is None and out.nodes[0].attrs.residual
    assert_equivalent(peeked, out)


def test_resnet_blocks_fuse_after_bn_folding():
    g = randomize_bn(as_float64(build("resnet.py", "resnet18", (1, 3, 32, 32))))
    result = run_pipeline(g, ["fuse-conv-bn", "fuse-conv-activation"])
    fused = [n for n in result.graph.nodes if n.op is ops.conv2d_fused]
    assert len(fused) == 17  # the stem + two per basic block
    assert sum(n.attrs.residual for n in fused) == 8
    assert not any(n.op in (ops.relu, ops.add) for n in result.graph.nodes)
    assert_equivalent(g, result.graph)


def test_mobilenet_v2_projection_fuses_its_residual():
    g = randomize_bn(as_float64(build("mobilenet.py", "mobilenet_v2", (1, 3, 32, 32))))
    out = run_pipeline(g, ["fuse-conv-bn", "fuse-conv-activation"]).graph
    residual_only = [n for n in out.nodes if n.op is ops.conv2d_fused
                     and n.attrs.residual and n.attrs.activation is None]
    assert len(residual_only) == 10  # the inverted residual blocks with a skip connection
    assert_equivalent(g, out)


def test_fused_op_checks_its_residual():
    x = TensorType((1, 3, 5, 5))
    w = TensorType((4, 3, 3, 3))
    attrs = Conv2dFusedAttrs(padding=(1, 1, 1, 1), activation=ops.relu, residual=True)
    assert ops.conv2d_fused.infer_types(attrs, [x, w, None, TensorType((1, 4, 5, 5))]) == \
        [TensorType((1, 4, 5, 5))]
    with pytest.raises(ShapeError, match="residual of type"):
        ops.conv2d_fused.infer_types(attrs, [x, w, None, TensorType((1, 4, 1, 1))])
    with pytest.raises(ShapeError, match="no residual input"):
        ops.conv2d_fused.infer_types(attrs, [x, w, None])
    with pytest.raises(ShapeError, match="cannot fuse the activation"):
        Conv2dFusedAttrs(activation=ops.softmax)
