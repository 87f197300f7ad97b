"""The reference program: kernel coverage, input checking, dtype handling, outputs, seeds."""

from __future__ import annotations

import numpy as np
import pytest

import cnnir
from cnnir import nn, ops
from cnnir.backends import reference
from cnnir.backends.reference import compile_graph
from cnnir.errors import CnnirError, LoweringError
from cnnir.ir import Graph, TensorType, verify
from cnnir.ops.activation import DropoutAttrs
from cnnir.ops.loss import CrossEntropyAttrs
from cnnir.ops.tensor import SplitAttrs


def test_every_registered_op_has_a_kernel():
    assert reference.UNSUPPORTED == frozenset()
    missing = [name for name, op in ops.REGISTRY.items() if op not in reference.KERNELS]
    assert missing == []
    assert set(reference.KERNELS) == set(ops.REGISTRY.values())


def two_input_graph() -> Graph:
    """y = a + b with a: [N, 3], b: [N, 1]."""
    g = Graph("pair")
    a = g.add_input("a", TensorType(("N", 3)))
    b = g.add_input("b", TensorType(("N", 1)))
    g.set_outputs(g.add_node(ops.add, [a, b]).outputs)
    return verify(g)


def test_symbolic_dims_bind_per_call():
    run = compile_graph(two_input_graph())
    for n in (1, 4):
        a, b = np.ones((n, 3)), np.arange(n, dtype=np.float32).reshape(n, 1)
        y = run(a, b)
        assert y.dtype == np.float64
        np.testing.assert_array_equal(y, a + b)


@pytest.mark.parametrize("args, pattern", [
    ((np.ones((2, 3)),), r"takes 2 input\(s\) \('a' float32\[N, 3\], 'b' float32\[N, 1\]\) "
                         r"but was called with 1"),
    ((np.ones((2, 3)), np.ones(2)), r"input 'b' expects a 2-D array of shape \[N, 1\] but got a "
                                    r"1-D array of shape \[2\]"),
    ((np.ones((2, 4)), np.ones((2, 1))), r"input 'a' expects shape \[N, 3\] but got \[2, 4\] "
                                         r"\(dim 1 is 4, expected 3\)"),
    ((np.ones((2, 3)), np.ones((3, 1))), r"input 'b' has size 3 for the symbolic dim 'N', which "
                                         r"another input already bound to 2"),
    ((np.ones((2, 3)), "text"), r"input 'b' is a str, not an array"),
    ((np.ones((2, 3)), np.array([["x"], ["y"]])), r"input 'b' has dtype <U1"),
])
def test_bad_inputs_raise_lowering_errors(args, pattern):
    run = compile_graph(two_input_graph())
    with pytest.raises(LoweringError, match=pattern):
        run(*args)


def test_integer_targets_stay_int64_and_reject_floats():
    g = Graph("ce")
    x = g.add_input("x", TensorType((2, 3), "float32"))
    t = g.add_input("t", TensorType((2,), "int64"))
    g.set_outputs(g.add_node(ops.cross_entropy, [x, t, None], CrossEntropyAttrs("none")).outputs)
    run = compile_graph(verify(g))
    logits = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]], np.float32)
    y = run(logits, np.array([2, 0], np.int32))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, [np.log(1 + np.exp(-1) + np.exp(-2)), np.log(3)], rtol=1e-15)
    with pytest.raises(LoweringError, match="input 't' is typed int64.*float64 array"):
        run(logits, np.array([2.0, 0.0]))


def test_float_constants_are_cast_to_the_compute_dtype():
    g = Graph("scale")
    x = g.add_input("x", TensorType((2,), "float32"))
    c = g.add_literal(np.array([0.1, 0.2], np.float32), "c")
    g.set_outputs(g.add_node(ops.mul, [x, c]).outputs)
    y64 = compile_graph(verify(g))(np.array([1.0, 1.0]))
    assert y64.dtype == np.float64 and y64[0] == np.float64(np.float32(0.1))
    y32 = compile_graph(g, dtype="float32")(np.array([1.0, 1.0]))
    assert y32.dtype == np.float32


def test_float32_mode_keeps_every_float_result_in_float32():
    model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.AvgPool2d(2, ceil_mode=True, padding=1),
                          nn.Upsample(scale_factor=1.5, mode="bilinear"))
    y = compile_graph(cnnir.trace(model, (1, 2, 7, 7)), dtype="float32")(np.ones((1, 2, 7, 7)))
    assert y.dtype == np.float32 and y.shape == (1, 2, 4, 4)


def test_constants_are_private_and_read_only():
    g = Graph("const")
    array = np.array([1.0, 2.0])
    c = g.add_literal(array, "c")
    g.set_outputs(g.add_node(ops.identity, [c]).outputs)
    y = compile_graph(verify(g))()
    with pytest.raises(ValueError):
        y[0] = 5.0
    assert array.flags.writeable


def test_multiple_outputs_come_back_as_a_tuple_in_order():
    g = Graph("split")
    x = g.add_input("x", TensorType((5, 2), "float64"))
    node = g.add_node(ops.split, [x], SplitAttrs(sizes=(2, 3), dim=0))
    g.set_outputs([node.outputs[1], x, node.outputs[0]])
    data = np.arange(10.0).reshape(5, 2)
    second, same, first = compile_graph(verify(g))(data)
    np.testing.assert_array_equal(second, data[2:])
    np.testing.assert_array_equal(same, data)
    np.testing.assert_array_equal(first, data[:2])


def test_random_ops_are_seeded_and_draw_fresh_masks():
    g = Graph("drop")
    x = g.add_input("x", TensorType((64,), "float64"))
    g.set_outputs(g.add_node(ops.dropout, [x], DropoutAttrs(0.5, training=True)).outputs)
    ones = np.ones(64)
    run_a, run_b = compile_graph(g, seed=7), compile_graph(g, seed=7)
    first = run_a(ones)
    np.testing.assert_array_equal(first, run_b(ones))
    assert not np.array_equal(first, run_a(ones))


def test_options_and_dtypes_are_checked():
    with pytest.raises(LoweringError, match="takes no options"):
        compile_graph(two_input_graph(), threads=4)
    with pytest.raises(LoweringError, match="float dtype"):
        compile_graph(two_input_graph(), dtype="int32")


def test_cnnir_compile_reaches_the_reference_backend():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    model.load_state_dict({"0.weight": np.array([[1.0, -1.0, 0.5], [0.0, 2.0, 0.0]]),
                           "0.bias": np.array([0.5, -5.0])})
    run = cnnir.compile(model, (1, 3), backend="reference", dtype="float64")
    np.testing.assert_allclose(run(np.array([[1.0, 2.0, 4.0]])), [[1.5, 0.0]], rtol=1e-15)


def test_kernel_errors_name_the_node():
    model = nn.CrossEntropyLoss()
    g = cnnir.trace(model, [TensorType((2, 3)), TensorType((2,), "int64")])
    with pytest.raises(CnnirError, match=r"^cross_entropy '.*' .*target 3 out of bounds"):
        compile_graph(g)(np.zeros((2, 3)), np.array([0, 3]))
