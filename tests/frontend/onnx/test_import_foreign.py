"""ONNX files written the way other exporters write them (built here with onnx.helper),
imported and run on the reference executor against onnxruntime (docs/semantics.md §7.6)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnnir
from cnnir import ops
from cnnir.errors import ModelFormatError
from cnnir.frontend.onnx_import import import_model, loads
from cnnir.frontend.onnx_import.context import find_converter

RNG = np.random.default_rng(0)


def tensor(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def const_node(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=tensor(name, array))


def weights(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]) or 1)).astype(np.float32)


def model(nodes, inputs, outputs, opset: int = 13, initializers=(), ir: int | None = None,
          domains=()) -> onnx.ModelProto:
    vi = [i if isinstance(i, onnx.ValueInfoProto) else
          helper.make_tensor_value_info(i[0], i[2] if len(i) > 2 else TensorProto.FLOAT, i[1])
          for i in inputs]
    vo = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    g = helper.make_graph(nodes, "foreign", vi, vo, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    m = helper.make_model(g, opset_imports=opsets, producer_name="other")
    m.ir_version = ir or helper.find_min_ir_version_for(opsets)
    return m


def ort_run(m: onnx.ModelProto, xs: list[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})


def cnnir_run(graph: cnnir.Graph, xs: list[np.ndarray]) -> list[np.ndarray]:
    out = cnnir.compile(graph, backend="reference")(*xs)
    return list(out) if isinstance(out, tuple) else [out]


def assert_matches_ort(m: onnx.ModelProto, *shapes: tuple, graph: cnnir.Graph | None = None,
                       **kw) -> cnnir.Graph:
    graph = graph or loads(m.SerializeToString(), **kw)
    xs = [RNG.standard_normal(s).astype(np.float32) for s in shapes]
    for got, want in zip(cnnir_run(graph, xs), ort_run(m, xs)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return graph


def torch_style_cnn() -> onnx.ModelProto:
    """Constant weights, dynamic batch, Flatten written as a Shape chain."""
    nodes = [
        const_node("conv.weight", weights(8, 3, 3, 3)),
        const_node("conv.bias", weights(8)),
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"],
                         name="/conv/Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["p"], ["shape"]),
        const_node("zero", np.array(0, np.int64)),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        const_node("axes", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
        const_node("minus_one", np.array([-1], np.int64)),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["p", "target"], ["flat"]),
        const_node("fc.weight", weights(4, 128)),
        const_node("fc.bias", weights(4)),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    return model(nodes, [("input", ["batch_size", 3, 8, 8])], ["logits"])


def test_constant_weights_and_a_shape_chain_for_dynamic_batch() -> None:
    m = torch_style_cnn()
    graph = loads(m.SerializeToString())
    assert graph.inputs[0].type.shape == ("batch_size", 3, 8, 8)
    assert [n.op for n in graph.nodes] == [ops.conv2d, ops.relu, ops.max_pool2d, ops.reshape,
                                           ops.linear]
    assert graph.nodes[3].attrs.shape == ("batch_size", -1)
    assert sorted(graph.parameters()) == ["conv.bias", "conv.weight", "fc.bias", "fc.weight"]
    assert cnnir.analyze(graph).totals.params == 8 * 27 + 8 + 4 * 128 + 4
    for batch in (1, 3):
        assert_matches_ort(m, (batch, 3, 8, 8), graph=graph)


def test_weights_listed_as_graph_inputs_ir3() -> None:
    w = weights(4, 3, 1, 1)
    inputs = [("x", [1, 3, 4, 4]), ("w", [4, 3, 1, 1])]
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    m = model(nodes, inputs, ["y"], opset=9, initializers=[tensor("w", w)], ir=3)
    graph = assert_matches_ort(m, (1, 3, 4, 4))
    assert [v.name for v in graph.inputs] == ["x"] and "w" in graph.parameters()


@pytest.mark.parametrize("opset", [11, 13])
def test_resize_nearest_with_empty_roi_and_scales(opset: int) -> None:
    nodes = [const_node("roi", np.array([], np.float32)),
             const_node("scales", np.array([1, 1, 2, 3], np.float32)),
             helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    m = model(nodes, [("x", ["N", 2, 3, 4])], ["y"], opset=opset)
    graph = assert_matches_ort(m, (2, 2, 3, 4))
    a = graph.nodes[0].attrs
    assert (a.mode, a.scale_factor) == ("nearest", (2.0, 3.0))


def test_resize_linear_with_sizes_from_a_shape_chain() -> None:
    """torch's F.interpolate(size=...) at opset 13: sizes = Concat(Shape(x)[:2], [H, W])."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             const_node("start", np.array([0], np.int64)),
             const_node("end", np.array([2], np.int64)),
             helper.make_node("Slice", ["s", "start", "end"], ["nc"]),
             const_node("hw", np.array([7, 5], np.int64)),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                              coordinate_transformation_mode="pytorch_half_pixel")]
    m = model(nodes, [("x", ["N", 2, 4, 6])], ["y"], opset=13)
    graph = assert_matches_ort(m, (3, 2, 4, 6))
    assert graph.nodes[0].attrs.size == (7, 5) and graph.nodes[0].attrs.mode == "bilinear"


def nearest_upsample(x: np.ndarray, sh: int, sw: int) -> np.ndarray:
    return x.repeat(sh, axis=2).repeat(sw, axis=3)


def test_legacy_upsample_opset9() -> None:
    nodes = [const_node("scales", np.array([1, 1, 2, 2], np.float32)),
             helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")]
    m = model(nodes, [("x", [1, 2, 3, 3])], ["y"], opset=9)
    graph = assert_matches_ort(m, (1, 2, 3, 3))
    x = RNG.standard_normal((1, 2, 3, 3))
    np.testing.assert_array_equal(cnnir_run(graph, [x])[0], nearest_upsample(x, 2, 2))


def test_legacy_upsample_opset7_attribute_scales() -> None:
    nodes = [helper.make_node("Upsample", ["x"], ["y"], mode="nearest",
                              scales=[1.0, 1.0, 3.0, 2.0])]
    m = model(nodes, [("x", [1, 2, 3, 3])], ["y"], opset=7)
    x = RNG.standard_normal((1, 2, 3, 3))
    for convert in (True, False):
        graph = assert_matches_ort(m, (1, 2, 3, 3), graph=import_model(m, convert=convert))
        np.testing.assert_array_equal(cnnir_run(graph, [x])[0], nearest_upsample(x, 3, 2))


def legacy_opset7_net() -> onnx.ModelProto:
    c = 3
    inits = [tensor(n, a) for n, a in [
        ("w", weights(c, 2, 3, 3)), ("scale", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
        ("bias", weights(c)), ("mean", weights(c)),
        ("var", RNG.uniform(0.5, 2, c).astype(np.float32)),
        ("slope", np.full((c, 1, 1), 0.2, np.float32))]]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"],
                              ["b"], epsilon=1e-3),
             helper.make_node("Dropout", ["b"], ["d"], ratio=0.3),
             helper.make_node("PRelu", ["d", "slope"], ["p"]),
             helper.make_node("Softmax", ["p"], ["y"], axis=1)]
    return model(nodes, [("x", [2, 2, 4, 4])], ["y"], opset=7, initializers=inits)


@pytest.mark.parametrize("convert", [True, False])
def test_opset7_bn_dropout_prelu_and_legacy_softmax(convert: bool) -> None:
    """Softmax-1 flattens at ``axis``; without conversion the version-1 converters run."""
    m = legacy_opset7_net()
    graph = assert_matches_ort(m, (2, 2, 4, 4), graph=import_model(m, convert=convert))
    kinds = {n: v.const.kind for n, v in graph.constants.items()}
    assert kinds["mean"] == kinds["var"] == "buffer" and kinds["w"] == "parameter"
    assert ops.prelu in {n.op for n in graph.nodes} and ops.dropout in {n.op for n in graph.nodes}


def test_converter_choice_is_the_largest_version_not_above_the_opset() -> None:
    assert find_converter("Dropout", 11).__name__ == "dropout_7"
    assert find_converter("Dropout", 28).__name__ == "dropout"
    assert find_converter("Softmax", 12).__name__ == "softmax_1"
    assert find_converter("Softmax", 13).__name__ == "softmax"
    assert find_converter("Resize", 10).__name__ == "resize_10"
    assert find_converter("Resize", 19).__name__ == "resize"
    assert find_converter("Clip", 10).__name__ == "clip_6"
    assert find_converter("DeformConv", 18) is None


def test_matmul_add_with_constant_weight_is_linear() -> None:
    inits = [tensor("W", weights(6, 4)), tensor("b", weights(4))]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["y"])]
    m = model(nodes, [("x", ["N", 3, 6])], ["y"], initializers=inits)
    graph = assert_matches_ort(m, (2, 3, 6))
    assert [n.op for n in graph.nodes] == [ops.linear]
    assert graph.constants["W"].type.shape == (4, 6)


@pytest.mark.parametrize("attrs, const_b", [
    ({"alpha": 0.5, "beta": 2.0}, True), ({"transA": 1, "transB": 1}, True),
    ({"alpha": 2.0, "transB": 1}, False)])
def test_gemm_variants(attrs: dict, const_b: bool) -> None:
    a_shape = (5, 3) if attrs.get("transA") else (3, 5)
    b = weights(4, 5) if attrs.get("transB") else weights(5, 4)
    inits = [tensor("C", weights(4))] + ([tensor("B", b)] if const_b else [])
    inputs = [("A", list(a_shape))] + ([] if const_b else [("B", list(b.shape))])
    nodes = [helper.make_node("Gemm", ["A", "B", "C"], ["y"], **attrs)]
    m = model(nodes, inputs, ["y"], initializers=inits)
    assert_matches_ort(m, a_shape, *([] if const_b else [b.shape]))


def test_auto_pad_same_pools_and_convs() -> None:
    """Asymmetric SAME pads: max pool pads with −∞, average pool (count_include_pad=0)
    rescales by the real pixel count, conv takes (top, left, bottom, right) directly."""
    inits = [tensor("w", weights(3, 2, 2, 2))]
    nodes = [helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[2, 2], strides=[2, 2],
                              auto_pad="SAME_UPPER"),
             helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2],
                              auto_pad="SAME_LOWER"),
             helper.make_node("Conv", ["x", "w"], ["c"], auto_pad="SAME_UPPER")]
    m = model(nodes, [("x", [2, 2, 5, 7])], ["m", "a", "c"], initializers=inits)
    assert_matches_ort(m, (2, 2, 5, 7))


def test_conv_transpose_with_output_shape_and_1d_layers() -> None:
    inits = [tensor("wt", weights(2, 3, 3, 3)), tensor("w1", weights(4, 2, 3))]
    nodes = [helper.make_node("ConvTranspose", ["x", "wt"], ["t"], strides=[2, 2],
                              output_shape=[10, 12]),
             helper.make_node("Conv", ["s", "w1"], ["c1"], pads=[1, 0], strides=[2]),
             helper.make_node("MaxPool", ["s"], ["p1"], kernel_shape=[3], pads=[1, 1]),
             helper.make_node("AveragePool", ["s"], ["a1"], kernel_shape=[2], strides=[2])]
    m = model(nodes, [("x", [1, 2, 4, 5]), ("s", ["N", 2, 9])], ["t", "c1", "p1", "a1"],
              initializers=inits)
    assert_matches_ort(m, (1, 2, 4, 5), (3, 2, 9))


def test_pad_squeeze_unsqueeze_split_reduce() -> None:
    nodes = [const_node("pads", np.array([0, 0, 1, 0, 0, 0, 2, 1], np.int64)),
             const_node("v", np.array(0.5, np.float32)),
             helper.make_node("Pad", ["x", "pads", "v"], ["p"]),
             const_node("split", np.array([1, 2], np.int64)),
             helper.make_node("Split", ["p", "split"], ["s0", "s1"], axis=1),
             helper.make_node("ReduceMean", ["s1"], ["r"], axes=[2, 3], keepdims=0),
             const_node("ax", np.array([1], np.int64)),
             helper.make_node("Unsqueeze", ["r", "ax"], ["u"]),
             helper.make_node("Squeeze", ["s0", "ax"], ["q"])]
    m = model(nodes, [("x", [2, 3, 4, 5])], ["u", "q"])
    assert_matches_ort(m, (2, 3, 4, 5))


def test_dim_params_become_symbols() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    m = model(nodes, [("x", ["batch size", "2seq", 4])], ["y"])
    assert loads(m.SerializeToString()).inputs[0].type.shape == ("batch_size", "d_2seq", 4)


def test_eval_dropout_mask_output_is_all_true() -> None:
    nodes = [helper.make_node("Dropout", ["x"], ["y", "mask"])]
    vo = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
          helper.make_tensor_value_info("mask", TensorProto.BOOL, None)]
    m = model(nodes, [("x", [2, 3])], [])
    m.graph.output.extend(vo)
    y, mask = cnnir_run(loads(m.SerializeToString()), [np.ones((2, 3), np.float32)])
    assert mask.dtype == bool and mask.all() and (y == 1).all()


def test_unsupported_ops_are_listed_in_one_error() -> None:
    nodes = [helper.make_node("Erf", ["x"], ["a"]), helper.make_node("Sin", ["a"], ["b"]),
             helper.make_node("Foo", ["b"], ["y"], domain="com.example")]
    m = model(nodes, [("x", [2])], ["y"], domains=["com.example"], ir=9)
    with pytest.raises(ModelFormatError, match=r"unsupported ONNX ops \(opset 19\): Erf, Sin, "
                                               r"com\.example\.Foo") as info:
        loads(m.SerializeToString())
    assert "Conv" in info.value.hint and "Resize" in info.value.hint


@pytest.mark.parametrize("opset", [6, 29])
def test_opsets_outside_7_to_28_are_refused(opset: int) -> None:
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2])], ["y"], opset=opset, ir=8)
    with pytest.raises(ModelFormatError, match=f"uses opset {opset}; cnnir imports opsets 7-28"):
        loads(m.SerializeToString())


@pytest.mark.parametrize("node, match", [
    (helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic"), "mode='cubic'"),
    (helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest",
                      coordinate_transformation_mode="tf_half_pixel_for_nn"),
     "match no torch interpolate mode"),
    (helper.make_node("HardSigmoid", ["x"], ["y"]), "alpha=0.2, beta=0.5"),
    (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2]),
     "has dilations"),
])
def test_unsupported_attribute_values_are_refused_not_approximated(node, match: str) -> None:
    inits = [tensor("s", np.array([1, 1, 2, 2], np.float32)),
             tensor("lo", np.array(-1, np.float32)), tensor("hi", np.array(1, np.float32))]
    m = model([node], [("x", [1, 1, 4, 4])], ["y"], opset=19, initializers=inits)
    with pytest.raises(ModelFormatError, match=match):
        loads(m.SerializeToString())


def test_opset_21_model_imports() -> None:
    nodes = [helper.make_node("Gelu", ["x"], ["g"]), helper.make_node("Relu", ["g"], ["y"])]
    m = model(nodes, [("x", [2, 3])], ["y"], opset=21)
    graph = loads(m.SerializeToString())
    assert [n.op for n in graph.nodes] in ([ops.gelu, ops.relu],)
