"""depthwise-separable changes the function: shapes, receptive fields and cost deltas
against the closed form, the reported fit, and exactness on separable kernels."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import assert_equivalent, build, constant

import cnnir
from cnnir import ops
from cnnir.ir import Graph, TensorType
from cnnir.ops.conv import Conv2dAttrs
from cnnir.passes.manager import run_pipeline


def test_resnet18_costs_follow_the_closed_form():
    """Each 3x3 C -> O becomes C·9 + C·O weights; MACs change by the same amount per output
    pixel. The 3-channel stem is below min_channels."""
    g = build("resnet.py", "resnet18", (1, 3, 64, 64))
    result = run_pipeline(g, ["depthwise-separable"], init="kaiming")
    report = result.report["passes"][0]
    assert [s["layer"] for s in report["skipped"]] == ["conv1"]
    want_params = want_macs = 0
    for node in g.nodes:
        if node.op is ops.conv2d and node.inputs[1].type.shape[2:] == (3, 3):
            o, c = node.inputs[1].type.shape[:2]
            delta = c * 9 + c * o - c * o * 9
            want_params += delta
            want_macs += int(np.prod(node.output.type.shape[2:])) * delta
    before, after = cnnir.analyze(g), cnnir.analyze(result.graph)
    assert after.totals.params - before.totals.params == want_params
    assert after.totals.macs - before.totals.macs == want_macs
    assert report["totals"]["params_saved"] == -want_params
    fields = {layer.name: layer.receptive_field for layer in after.layers}
    assert all(fields[layer.name] == layer.receptive_field for layer in before.layers)
    assert [v.type for v in result.graph.outputs] == [v.type for v in g.outputs]


def one_conv(w: np.ndarray, stride: int = 1, groups: int = 1) -> Graph:
    g = Graph("one")
    x = g.add_input("x", TensorType((1, w.shape[1] * groups, 9, 9), "float64"))
    b = constant(g, "conv.bias", np.linspace(-1, 1, w.shape[0]))
    conv = g.add_node(ops.conv2d, [x, constant(g, "conv.weight", w), b],
                      Conv2dAttrs(stride, 1, 1, groups), name="conv")
    g.set_outputs([conv.output])
    return g


def test_a_separable_kernel_is_factored_exactly():
    rng = np.random.default_rng(0)
    d, p = rng.normal(size=(16, 3, 3)), rng.normal(size=(20, 16))
    g = one_conv(p[:, :, None, None] * d[None], stride=2)
    result = run_pipeline(g, ["depthwise-separable"])
    assert [n.op for n in result.graph.nodes] == [ops.conv2d, ops.conv2d]
    assert result.graph.nodes[0].attrs.groups == 16 and result.graph.nodes[0].attrs.stride == \
        (2, 2)
    assert result.report["passes"][0]["layers"][0]["fit_error"] < 1e-12
    assert_equivalent(g, result.graph)


def test_the_reported_error_is_the_factored_kernel_s_error():
    w = np.random.default_rng(1).normal(size=(20, 16, 3, 3))
    result = run_pipeline(one_conv(w), ["depthwise-separable"])
    out = result.graph
    dw = out.nodes[0].inputs[1].const.array[:, 0]  # [C, 3, 3]
    pw = out.nodes[1].inputs[1].const.array[:, :, 0, 0]  # [O, C]
    approx = pw[:, :, None, None] * dw[None]
    measured = np.linalg.norm(approx - w) / np.linalg.norm(w)
    assert result.report["passes"][0]["layers"][0]["fit_error"] == pytest.approx(measured)
    for c in range(16):  # no rank-1 matrix is closer: the error is σ₂² + ... of W[:, c]
        s = np.linalg.svd(w[:, c].reshape(20, 9), compute_uv=False)
        assert np.linalg.norm(approx[:, c] - w[:, c]) == pytest.approx(np.sqrt(np.sum(s[1:] ** 2)))


def test_grouped_and_narrow_convs_are_left_alone():
    rng = np.random.default_rng(2)
    grouped = run_pipeline(one_conv(rng.normal(size=(32, 16, 3, 3)), groups=2),
                           ["depthwise-separable"])
    assert "grouped" in grouped.report["passes"][0]["skipped"][0]["reason"]
    narrow = run_pipeline(one_conv(rng.normal(size=(20, 16, 3, 3))), ["depthwise-separable"],
                          min_channels=17)
    assert not narrow.modified and "min_channels=17" in narrow.report["passes"][0]["skipped"][0][
        "reason"]


def test_a_fused_layer_keeps_its_epilogue_on_the_pointwise_conv():
    rng = np.random.default_rng(3)
    d, p = rng.normal(size=(16, 3, 3)), rng.normal(size=(16, 16))
    g = one_conv(p[:, :, None, None] * d[None])
    conv = g.nodes[0]
    total = g.add_node(ops.add, [g.inputs[0], conv.output], name="add")
    g.set_outputs([g.add_node(ops.hardswish, [total.output], name="act").output])
    out = run_pipeline(g, ["fuse-conv-activation", "depthwise-separable"]).graph
    assert [n.op for n in out.nodes] == [ops.conv2d, ops.conv2d_fused]
    assert out.nodes[1].attrs.activation is ops.hardswish and out.nodes[1].attrs.residual
    assert_equivalent(g, out)
