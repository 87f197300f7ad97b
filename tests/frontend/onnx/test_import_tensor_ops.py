"""Slice, Gather, Squeeze/Unsqueeze, Expand, ReduceMean, Pow, Sqrt/Exp/Log, Split and
Where/comparisons as PyTorch's exporters write them (built here with onnx.helper at opsets
11-21, attribute and input forms), imported, run on the reference (float64) and Numba
(float32) backends and compared with onnxruntime on the same file."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from op_helpers import assert_close

import cnnir
from cnnir import ops
from cnnir.errors import ModelFormatError
from cnnir.frontend.onnx_import import loads

X = (2, 6, 4, 5)
INT64_MAX = np.iinfo(np.int64).max


def ints(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def floats(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def build(nodes, outputs, opset: int, initializers=(), inputs=(("x", X),)) -> bytes:
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    vo = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "tensor_ops", vi, vo, initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


def check(data: bytes, n_inputs: int = 1) -> cnnir.Graph:
    """Outputs of the imported graph on reference and numba against onnxruntime."""
    graph = loads(data)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(tuple(v.type.shape)).astype(np.float32) for v in graph.inputs]
    xs = xs[:n_inputs]
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    want = sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})
    ref = cnnir.compile(graph, backend="reference")(*[x.astype(np.float64) for x in xs])
    nb = cnnir.compile(graph, backend="numba")(*xs)
    ref = list(ref) if isinstance(ref, tuple) else [ref]
    nb = list(nb) if isinstance(nb, tuple) else [nb]
    assert len(ref) == len(want)
    for r, n, w in zip(ref, nb, want):
        w = np.asarray(w, dtype=np.float64)
        assert r.shape == w.shape and n.shape == w.shape
        np.testing.assert_allclose(r, w, rtol=1e-6, atol=1e-7)
        assert_close(n, w)
    return graph


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_slice_with_input_bounds(opset: int) -> None:
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a", "k"], ["y"]),
             helper.make_node("Slice", ["x", "s2", "e2"], ["z"])]
    inits = [ints("s", [1, -4]), ints("e", [INT64_MAX, 100]), ints("a", [1, -1]),
             ints("k", [2, 3]), ints("s2", [0, 0, 1]), ints("e2", [1, 3, -1])]
    graph = check(build(nodes, ["y", "z"], opset, inits))
    assert {n.op for n in graph.nodes} == {ops.slice_}


def test_slice_with_attributes_at_opset_9() -> None:
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, 0], ends=[3, -1], axes=[1, 3])
    check(build([node], ["y"], 9))


@pytest.mark.parametrize("opset", [11, 13])
def test_channel_split_written_as_two_slices(opset: int) -> None:
    """The legacy exporter's ShuffleNetV2 ``x.chunk(2, dim=1)``: two Slices on the channels,
    then the branches concatenated and shuffled."""
    nodes = [helper.make_node("Slice", ["x", "z", "h", "one"], ["left"]),
             helper.make_node("Slice", ["x", "h", "big", "one"], ["right"]),
             helper.make_node("Relu", ["right"], ["r"]),
             helper.make_node("Concat", ["left", "r"], ["y"], axis=1)]
    inits = [ints("z", [0]), ints("h", [3]), ints("big", [INT64_MAX]), ints("one", [1])]
    check(build(nodes, ["y"], opset, inits))


def test_negative_slice_steps_are_refused() -> None:
    node = helper.make_node("Slice", ["x", "s", "e", "a", "k"], ["y"])
    inits = [ints("s", [-1]), ints("e", [-INT64_MAX]), ints("a", [1]), ints("k", [-1])]
    with pytest.raises(ModelFormatError, match="positive steps"):
        loads(build([node], ["y"], 13, inits))


@pytest.mark.parametrize("opset", [11, 13, 21])
@pytest.mark.parametrize("indices, axis", [([4, 0, 0, -1], 1), (2, 1), ([[0, 3], [3, 1]], 3),
                                           (-1, 0)])
def test_gather_of_constant_indices(opset: int, indices, axis: int) -> None:
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)
    check(build([node], ["y"], opset, [ints("i", indices)]))


def test_gather_with_run_time_indices_is_refused() -> None:
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=1)
    data = build([node], ["y"], 13, inputs=(("x", X), ("i", (2,))))
    m = onnx.load_from_string(data)
    m.graph.input[1].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(ModelFormatError, match="run-time indices"):
        loads(m.SerializeToString())


def test_squeeze_unsqueeze_attribute_form_at_opset_11() -> None:
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0, 3]),
             helper.make_node("Squeeze", ["u"], ["y"], axes=[-3, 0])]
    check(build(nodes, ["y", "u"], 11))


@pytest.mark.parametrize("opset", [13, 21])
def test_squeeze_unsqueeze_input_form(opset: int) -> None:
    nodes = [helper.make_node("Unsqueeze", ["x", "a"], ["u"]),
             helper.make_node("Squeeze", ["u", "b"], ["y"])]
    check(build(nodes, ["y", "u"], opset, [ints("a", [0, -1]), ints("b", [0])]))


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_expand(opset: int) -> None:
    node = helper.make_node("Expand", ["x", "shape"], ["y"])
    inputs = (("x", (2, 1, 4, 1)),)
    check(build([node], ["y"], opset, [ints("shape", [3, 2, 6, 1, 5])], inputs))


@pytest.mark.parametrize("opset, keep", [(11, 1), (13, 0), (17, 1)])
def test_reduce_mean_attribute_axes(opset: int, keep: int) -> None:
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, -1], keepdims=keep)
    check(build([node], ["y"], opset))


@pytest.mark.parametrize("opset, keep", [(18, 1), (21, 0)])
def test_reduce_mean_input_axes(opset: int, keep: int) -> None:
    node = helper.make_node("ReduceMean", ["x", "a"], ["y"], keepdims=keep)
    check(build([node], ["y"], opset, [ints("a", [2, 3])]))


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_pow_sqrt_exp_log(opset: int) -> None:
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node("Add", ["sq", "c"], ["pos"]),
             helper.make_node("Pow", ["pos", "p"], ["y1"]),
             helper.make_node("Sqrt", ["pos"], ["y2"]),
             helper.make_node("Exp", ["x"], ["y3"]),
             helper.make_node("Log", ["pos"], ["y4"]),
             helper.make_node("Pow", ["x", "two"], ["y5"])]
    inits = [floats("c", 0.25), floats("p", [1.5]), floats("two", 2.0)]
    graph = check(build(nodes, ["y1", "y2", "y3", "y4", "y5"], opset, inits))
    assert [n.attrs.exponent for n in graph.nodes if n.op is ops.pow_] == [1.5, 2.0]


def test_pow_with_a_tensor_exponent_is_refused() -> None:
    node = helper.make_node("Pow", ["x", "x"], ["y"])
    with pytest.raises(ModelFormatError, match="constant scalar"):
        loads(build([node], ["y"], 13))


def test_split_sizes_attribute_form_at_opset_11() -> None:
    node = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, split=[1, 2, 3])
    check(build([node], ["a", "b", "c"], 11))


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_split_sizes_input_form(opset: int) -> None:
    node = helper.make_node("Split", ["x", "s"], ["a", "b"], axis=-1)
    check(build([node], ["a", "b"], opset, [ints("s", [2, 3])]))


@pytest.mark.parametrize("opset", [11, 13, 16, 21])
def test_where_of_comparisons(opset: int) -> None:
    """``torch.where(x > y, x, 0.5·y)`` and friends as the exporters write them (a bool
    condition from Greater/Less/Equal/Not); the mask comes back as cnnir's 0/1 float."""
    nodes = [helper.make_node("Greater", ["x", "y"], ["gt"]),
             helper.make_node("Mul", ["y", "half"], ["hy"]),
             helper.make_node("Where", ["gt", "x", "hy"], ["o1"]),
             helper.make_node("Less", ["x", "zero"], ["lt"]),
             helper.make_node("Where", ["lt", "zero", "x"], ["o2"]),
             helper.make_node("Equal", ["x", "x"], ["eq"]),
             helper.make_node("Not", ["eq"], ["neq"]),
             helper.make_node("Where", ["neq", "x", "y"], ["o3"])]
    inits = [floats("half", 0.5), floats("zero", 0.0)]
    inputs = (("x", X), ("y", (6, 1, 5)))
    check(build(nodes, ["o1", "o2", "o3"], opset, inits, inputs), n_inputs=2)


def test_greater_or_equal_and_less_or_equal_at_opset_12() -> None:
    nodes = [helper.make_node("GreaterOrEqual", ["x", "t"], ["ge"]),
             helper.make_node("LessOrEqual", ["x", "t"], ["le"]),
             helper.make_node("Where", ["ge", "x", "t"], ["o1"]),
             helper.make_node("Where", ["le", "x", "t"], ["o2"])]
    check(build(nodes, ["o1", "o2"], 12, [floats("t", 0.3)]))


def test_cnnir_exports_of_compare_and_where_come_back_as_one_op_each(tmp_path) -> None:
    """cnnir writes ``x > y`` as ``Where(Greater, 1, 0)`` and ``where(c, a, b)`` as
    ``Where(Not(Equal(c, 0)), a, b)``: each imports as the one op it was."""

    class Net(cnnir.nn.Module):
        def forward(self, x, y):
            return cnnir.where(x > y, x, y * 0.5), x != y

    graph = cnnir.trace(Net(), [X, X])
    path = tmp_path / "w.onnx"
    cnnir.export_onnx(graph, str(path))
    back = cnnir.load_onnx(str(path))
    assert [n.op for n in back.nodes] == [n.op for n in graph.nodes]
    assert [n.attrs for n in back.nodes if n.op is ops.compare] == [
        n.attrs for n in graph.nodes if n.op is ops.compare]
