"""Every op exported at opset 19 and run in onnxruntime, against the float64 reference
executor (docs/semantics.md §8 float32 tolerance), plus the ONNX form of each mapping (§7.2,
§7.3)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx_cases import EXPORTED, run_ort
from op_cases import Case, make_inputs, reference, untested_ops
from op_helpers import T, assert_close, fn

import cnnir
import cnnir.nn.functional as F
from cnnir import nn, ops
from cnnir.backends.onnx_export import export, to_model
from cnnir.errors import LoweringError
from cnnir.ops import REGISTRY
from cnnir.ops.activation import DropoutAttrs, RReluAttrs


def exported(tmp_path, model: nn.Module, inputs: list, name: str = "m.onnx") -> tuple:
    graph = cnnir.trace(model, inputs)
    path = str(tmp_path / name)
    export(graph, path)
    return graph, path, onnx.load(path)


@pytest.mark.parametrize("case", EXPORTED, ids=[c.name for c in EXPORTED])
def test_export_runs_in_onnxruntime_like_the_reference(tmp_path, case: Case) -> None:
    graph, path, model = exported(tmp_path, case.build(), case.inputs)
    onnx.checker.check_model(path, full_check=True)
    inputs = make_inputs(case)
    got, ref = run_ort(path, inputs, case.ort_optimize), reference(graph, inputs)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert_close(g, r, case.reduction)


def test_every_op_has_an_onnx_mapping() -> None:
    """Except the backward ops autodiff emits: ONNX has no standard op for them."""
    unmapped = [op.name for op in REGISTRY.values() if op.onnx is None and not op.backward]
    assert unmapped == []


def test_the_table_exercises_every_op() -> None:
    training_only = {ops.rrelu, ops.dropout, ops.dropout2d}  # eval forms are in the table;
    fused = {ops.conv2d_fused, ops.linear_fused}  # training forms and fused ops: tests below
    untested = untested_ops(EXPORTED) - {op.name for op in fused}
    assert untested <= {op.name for op in training_only}, untested


def nodes_of(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op_type]


def attrs_of(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def const_of(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def single(model: onnx.ModelProto, op_type: str) -> onnx.NodeProto:
    found = nodes_of(model, op_type)
    assert len(found) == 1, [n.op_type for n in model.graph.node]
    return found[0]


def test_conv_pads_are_top_left_bottom_right(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.Conv2d(3, 4, (2, 4), padding="same"), [T(1, 3, 6, 6)])
    a = attrs_of(single(m, "Conv"))
    assert a["pads"] == [0, 1, 1, 2] and "auto_pad" not in a
    assert a["kernel_shape"] == [2, 4] and a["group"] == 1


def test_depthwise_conv_has_group_c(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.Conv2d(4, 8, 3, groups=4), [T(1, 4, 6, 6)])
    assert attrs_of(single(m, "Conv"))["group"] == 4


def test_conv_transpose_uses_output_padding_not_output_shape(tmp_path) -> None:
    layer = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
    _, _, m = exported(tmp_path, layer, [T(1, 4, 5, 5)])
    a = attrs_of(single(m, "ConvTranspose"))
    assert a["output_padding"] == [1, 1] and a["pads"] == [1, 1, 1, 1]
    assert "output_shape" not in a


def test_deform_conv_inputs_are_x_w_offset_b_mask(tmp_path) -> None:
    net = fn(lambda s, x, off, m: s.d(x, off, m), d=nn.DeformConv2d(4, 6, 3))()
    _, _, m = exported(tmp_path, net, [T(1, 4, 5, 5), T(1, 18, 3, 3), T(1, 9, 3, 3)])
    x, offset, mask = (v.name for v in m.graph.input)
    node = single(m, "DeformConv")
    assert list(node.input) == [x, "d.weight", offset, "d.bias", mask]
    assert attrs_of(node)["offset_group"] == 1 and attrs_of(node)["group"] == 1


def test_deform_conv_without_bias_passes_empty_name_before_mask(tmp_path) -> None:
    net = fn(lambda s, x, off, m: s.d(x, off, m), d=nn.DeformConv2d(4, 6, 3, bias=False))()
    _, _, m = exported(tmp_path, net, [T(1, 4, 5, 5), T(1, 18, 3, 3), T(1, 9, 3, 3)])
    node = single(m, "DeformConv")
    assert len(node.input) == 5 and node.input[3] == ""


RESIZE_VARIANTS = [
    (nn.Upsample(scale_factor=2), ("nearest", "asymmetric", "floor"), "scales"),
    (nn.Upsample(size=(5, 7), mode="nearest-exact"), ("nearest", "half_pixel",
                                                      "round_prefer_ceil"), "sizes"),
    (nn.Upsample(scale_factor=1.5, mode="bilinear"), ("linear", "half_pixel", "floor"),
     "scales"),
    (nn.UpsamplingBilinear2d(scale_factor=2), ("linear", "align_corners", "floor"), "scales"),
    (fn(lambda s, x: F.interpolate(x, scale_factor=0.5, mode="bilinear",
                                   align_corners=True))(), ("linear", "align_corners", "floor"),
     "sizes"),
    (fn(lambda s, x: F.interpolate(x, scale_factor=1.5, recompute_scale_factor=True))(),
     ("nearest", "asymmetric", "floor"), "sizes"),
]


@pytest.mark.parametrize("layer, modes, second", RESIZE_VARIANTS)
def test_resize_sets_all_three_attributes_and_axes(tmp_path, layer, modes, second) -> None:
    _, _, m = exported(tmp_path, layer, [T("N", 2, 6, 8)])
    node = single(m, "Resize")
    a = attrs_of(node)
    got = (a["mode"].decode(), a["coordinate_transformation_mode"].decode(),
           a["nearest_mode"].decode())
    assert got == modes and a["axes"] == [2, 3]
    assert node.input[1] == ""  # roi
    if second == "scales":
        assert len(node.input) == 3 and const_of(m, node.input[2]).shape == (2,)
    else:
        assert node.input[2] == "" and const_of(m, node.input[3]).dtype == np.int64


def test_prelu_slope_is_c11(tmp_path) -> None:
    _, path, m = exported(tmp_path, nn.PReLU(4), [T("N", 4, 3, 3)])
    shape = const_of(m, single(m, "Reshape").input[1])
    assert shape.tolist() == [4, 1, 1]


@pytest.mark.parametrize("include", [True, False])
def test_average_pool_always_states_count_include_pad(tmp_path, include: bool) -> None:
    _, _, m = exported(tmp_path, nn.AvgPool2d(3, 2, 1, count_include_pad=include),
                       [T(1, 2, 6, 6)])
    assert attrs_of(single(m, "AveragePool"))["count_include_pad"] == int(include)


def test_divisor_override_is_decomposed(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.AvgPool2d(2, divisor_override=3), [T("N", 2, 6, 6)])
    assert attrs_of(single(m, "AveragePool"))["count_include_pad"] == 1
    factor = const_of(m, single(m, "Mul").input[1])
    assert factor.shape == () and factor == pytest.approx(4 / 3)


def test_channel_shuffle_is_reshape_transpose_reshape(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.ChannelShuffle(3), [T("N", 6, 4, 5)])
    assert [n.op_type for n in m.graph.node] == ["Reshape", "Transpose", "Reshape"]
    first, _, last = m.graph.node
    assert const_of(m, first.input[1]).tolist() == [0, 3, 2, 4, 5]
    assert attrs_of(m.graph.node[1])["perm"] == [0, 2, 1, 3, 4]
    assert const_of(m, last.input[1]).tolist() == [0, 6, 4, 5]


def test_relu6_is_clip_with_min_and_max_inputs(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.ReLU6(), [T(1, 2, 3)])
    node = single(m, "Clip")
    assert [float(const_of(m, name)) for name in node.input[1:]] == [0.0, 6.0]


def test_hardsigmoid_uses_torch_alpha_and_beta(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.Hardsigmoid(), [T(1, 2, 3)])
    a = attrs_of(single(m, "HardSigmoid"))
    assert a["alpha"] == pytest.approx(1 / 6) and a["beta"] == pytest.approx(0.5)


def test_silu_is_x_times_sigmoid_x(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.SiLU(), [T(1, 2, 3)])
    sig, mul = m.graph.node
    assert (sig.op_type, mul.op_type) == ("Sigmoid", "Mul")
    assert list(mul.input) == ["x", sig.output[0]] and mul.name == "silu"


def test_linear_is_gemm_for_2d_and_matmul_add_otherwise(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.Linear(4, 3), [T("N", 4)])
    assert attrs_of(single(m, "Gemm"))["transB"] == 1
    _, _, m = exported(tmp_path, nn.Linear(4, 3), [T("N", 2, 4)], "b.onnx")
    assert [n.op_type for n in m.graph.node] == ["Transpose", "MatMul", "Add"]


def test_flatten_uses_flatten_only_for_start_1_end_last(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.Flatten(), [T("N", 2, 3, 4)])
    assert attrs_of(single(m, "Flatten"))["axis"] == 1
    _, _, m = exported(tmp_path, nn.Flatten(1, 2), [T("N", 2, 3, 4)], "b.onnx")
    assert const_of(m, single(m, "Reshape").input[1]).tolist() == [0, 6, 4]


@pytest.mark.parametrize("layer, op_type, kernel", [
    (nn.AdaptiveAvgPool2d(1), "GlobalAveragePool", None),
    (nn.AdaptiveAvgPool2d((3, 2)), "AveragePool", [2, 4]),
    (nn.AdaptiveMaxPool2d(1), "GlobalMaxPool", None),
])
def test_adaptive_pool_forms(tmp_path, layer, op_type, kernel) -> None:
    _, _, m = exported(tmp_path, layer, [T("N", 2, 6, 8)])
    a = attrs_of(single(m, op_type))
    if kernel is not None:
        assert a["kernel_shape"] == kernel == a["strides"]


def test_adaptive_pool_that_does_not_divide_is_refused_naming_the_node() -> None:
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.AdaptiveAvgPool2d((3, 3)))
    g = cnnir.trace(net, (1, 2, 7, 7))
    with pytest.raises(LoweringError, match=r"adaptive_avg_pool2d '1'.*output_size \(3, 3\) "
                                            r"must divide the static input size \[7, 7\]"):
        to_model(g)


def test_mean_over_hw_is_global_average_pool_else_reduce_mean_with_axes_input(tmp_path) -> None:
    _, _, m = exported(tmp_path, fn(lambda s, x: x.mean((2, 3), keepdim=True))(),
                       [T(1, 2, 3, 4)])
    single(m, "GlobalAveragePool")
    _, _, m = exported(tmp_path, fn(lambda s, x: x.mean((-1, 2)))(), [T(1, 2, 3, 4)], "b.onnx")
    node = single(m, "ReduceMean")
    assert const_of(m, node.input[1]).tolist() == [2, 3] and attrs_of(node)["keepdims"] == 0


def test_cross_entropy_is_softmax_cross_entropy_loss(tmp_path) -> None:
    net = fn(lambda s, x, t: F.cross_entropy(x, t, ignore_index=3, reduction="sum"))()
    _, _, m = exported(tmp_path, net, [T(4, 5), T(4, dtype="int64")])
    a = attrs_of(single(m, "SoftmaxCrossEntropyLoss"))
    assert a["reduction"] == b"sum" and a["ignore_index"] == 3


def test_label_smoothing_is_decomposed(tmp_path) -> None:
    net = fn(lambda s, x, t: F.cross_entropy(x, t, label_smoothing=0.1))()
    _, _, m = exported(tmp_path, net, [T(4, 5), T(4, dtype="int64")])
    assert not nodes_of(m, "SoftmaxCrossEntropyLoss") and nodes_of(m, "LogSoftmax")


def test_unbatched_cross_entropy_cannot_be_exported() -> None:
    g = cnnir.trace(fn(lambda s, x, t: F.cross_entropy(x, t))(), [T(5), T(dtype="int64")])
    with pytest.raises(LoweringError, match="cross_entropy .* cannot be exported"):
        to_model(g)


def test_dropout_eval_is_identity_and_training_is_dropout(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.Dropout(0.3).eval(), [T(2, 3)])
    single(m, "Identity")
    _, path, m = exported(tmp_path, nn.Dropout(0.25).train(), [T(200, 50)], "b.onnx")
    node = single(m, "Dropout")
    assert float(const_of(m, node.input[1])) == 0.25 and bool(const_of(m, node.input[2]))
    x = np.random.default_rng(0).uniform(1, 2, (200, 50)).astype(np.float32)
    (y,) = run_ort(path, [x])
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)
    assert 0.7 < kept.mean() < 0.8


def test_dropout2d_training_drops_whole_channels(tmp_path) -> None:
    _, path, _ = exported(tmp_path, nn.Dropout2d(0.5).train(), [T("N", 64, 3, 3)])
    x = np.random.default_rng(0).uniform(1, 2, (4, 64, 3, 3)).astype(np.float32)
    (y,) = run_ort(path, [x])
    per_channel = (y != 0).reshape(4, 64, 9)
    assert np.all(per_channel.all(-1) | ~per_channel.any(-1))
    np.testing.assert_allclose(y[y != 0], 2 * x[y != 0], rtol=1e-6)
    assert 0.3 < per_channel.all(-1).mean() < 0.7


def test_rrelu_eval_and_training_forms(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.RReLU().eval(), [T(2, 3)])
    assert attrs_of(single(m, "LeakyRelu"))["alpha"] == pytest.approx((1 / 8 + 1 / 3) / 2)
    _, path, m = exported(tmp_path, nn.RReLU(0.1, 0.3).train(), [T(100, 100)], "b.onnx")
    single(m, "RandomUniformLike")
    x = -np.ones((100, 100), np.float32)
    (y,) = run_ort(path, [x])
    assert -0.3 <= y.min() and y.max() <= -0.1 and y.std() > 0.03


def random_op_graph(op, attrs, shape: tuple, read_second: bool) -> cnnir.Graph:
    """x -> op in training mode; the graph outputs y, and the op's multiplier (its second
    output: dropout's scaled mask, rrelu's slopes) when ``read_second``."""
    from cnnir.ir import Graph

    g = Graph(op.name)
    node = g.add_node(op, [g.add_input("x", T(*shape))], attrs, name="r")
    g.set_outputs(node.outputs if read_second else node.outputs[:1])
    return g


def test_training_dropout_mask_output_is_onnx_mask_scaled(tmp_path) -> None:
    """Read, the scaled mask is ``Mul(CastLike(Dropout's mask), 1/(1 − p))``."""
    path = str(tmp_path / "m.onnx")
    export(random_op_graph(ops.dropout, DropoutAttrs(0.25, training=True), (50, 40), True), path)
    onnx.checker.check_model(path, full_check=True)
    x = np.random.default_rng(0).uniform(1, 2, (50, 40)).astype(np.float32)
    y, mask = run_ort(path, [x])
    assert set(np.unique(mask)) == {0.0, np.float32(1 / 0.75)}
    np.testing.assert_allclose(y, x * mask, rtol=1e-6)


def test_training_dropout_unread_mask_adds_no_node_and_reimports(tmp_path) -> None:
    graph = random_op_graph(ops.dropout, DropoutAttrs(0.25, training=True), (6, 7), False)
    path = str(tmp_path / "m.onnx")
    export(graph, path)
    onnx.checker.check_model(path, full_check=True)
    m = onnx.load(path)
    assert [n.op_type for n in m.graph.node] == ["Dropout"] and len(m.graph.node[0].output) == 2
    back = cnnir.load_onnx(path)
    (node,) = back.nodes
    assert node.op is ops.dropout and node.attrs == DropoutAttrs(0.25, training=True)
    x = np.random.default_rng(1).standard_normal((6, 7))
    np.testing.assert_array_equal(reference(back, [x])[0], reference(graph, [x])[0])


def test_training_dropout2d_mask_output_is_per_channel(tmp_path) -> None:
    path = str(tmp_path / "m.onnx")
    export(random_op_graph(ops.dropout2d, DropoutAttrs(0.5, training=True), (4, 16, 3, 3), True),
           path)
    x = np.random.default_rng(0).uniform(1, 2, (4, 16, 3, 3)).astype(np.float32)
    y, mask = run_ort(path, [x])
    assert mask.shape == (4, 16, 1, 1) and set(np.unique(mask)) == {0.0, 2.0}
    np.testing.assert_allclose(y, x * mask, rtol=1e-6)


def test_training_rrelu_multiplier_output_is_where_positive_one_else_slope(tmp_path) -> None:
    path = str(tmp_path / "m.onnx")
    export(random_op_graph(ops.rrelu, RReluAttrs(0.1, 0.3, training=True), (40, 50), True),
           path)
    onnx.checker.check_model(path, full_check=True)
    x = np.random.default_rng(0).standard_normal((40, 50)).astype(np.float32)
    y, multiplier = run_ort(path, [x])
    assert (multiplier[x > 0] == 1).all()
    slopes = multiplier[x <= 0]
    assert (0.1 <= slopes).all() and (slopes <= 0.3).all() and slopes.std() > 0.03
    np.testing.assert_allclose(y, x * multiplier, rtol=1e-6)


def test_batch_norm_eval_has_one_output_and_onnx_momentum(tmp_path) -> None:
    _, _, m = exported(tmp_path, nn.BatchNorm2d(3, momentum=0.2).eval(), [T(1, 3, 2, 2)])
    node = single(m, "BatchNormalization")
    a = attrs_of(node)
    assert len(node.output) == 1 and a["training_mode"] == 0
    assert a["momentum"] == pytest.approx(0.8) and a["epsilon"] == pytest.approx(1e-5)


@pytest.mark.parametrize("activation", [None, ops.relu, ops.relu6, ops.leaky_relu,
                                        ops.hardswish, ops.sigmoid])
def test_fused_ops_export_as_plain_ops(tmp_path, activation) -> None:
    from cnnir.ir import ConstantData, Graph
    from cnnir.ops.activation import LeakyReluAttrs
    from cnnir.ops.fused import Conv2dFusedAttrs, LinearFusedAttrs

    rng = np.random.default_rng(2)
    g = Graph("fused")
    x = g.add_input("x", T("N", 4, 5, 5))
    act_attrs = LeakyReluAttrs(0.3) if activation is ops.leaky_relu else None
    w = g.add_constant("w", ConstantData(T(4, 4, 3, 3), "parameter",
                                         array=rng.standard_normal((4, 4, 3, 3), np.float32)))
    conv = g.add_node(ops.conv2d_fused, [x, w, None, x], Conv2dFusedAttrs(
        padding=(1, 1, 1, 1), activation=activation, activation_attrs=act_attrs, residual=True))
    flat = g.add_node(ops.flatten, [conv.output])
    w2 = g.add_constant("w2", ConstantData(T(3, 100), "parameter",
                                           array=rng.standard_normal((3, 100), np.float32)))
    fc = g.add_node(ops.linear_fused, [flat.output, w2], LinearFusedAttrs(activation=activation,
                                                                          activation_attrs=act_attrs))
    g.set_outputs([fc.output])
    path = str(tmp_path / "f.onnx")
    export(g, path)
    xs = [rng.standard_normal((2, 4, 5, 5)).astype(np.float32)]
    assert_close(run_ort(path, xs)[0], reference(g, xs)[0], 36)

