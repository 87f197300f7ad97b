"""The bad inputs of docs/semantics.md §9.5 that tracing and analysis must handle.

Each test asserts the exception type (a ``cnnir.CnnirError`` subclass) and a message regex.
The models are written in this file, so the ``file:line`` that errors quote points here.
"""

from __future__ import annotations

import pickle
import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cnnir
from cnnir import (
    Graph,
    ModelFormatError,
    ShapeError,
    TensorType,
    VerificationError,
    nn,
    ops,
    verify,
)
from cnnir.frontend.module import LazyArray

HERE = r"\S*test_bad_inputs\.py"  # how a message quotes this file (relative or absolute)


class ConvNet(nn.Module):
    def __init__(self, kernel_size: int = 3, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size, padding=padding)

    def forward(self, x):
        return self.conv(x)


CONV_CALL_LINE = ConvNet.forward.__code__.co_firstlineno + 1


class Lambda(nn.Module):
    """A forward given as a function of the inputs (cat, add, reshape, ...)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = nn.functional.relu(self.bn(self.conv(x)))
        return self.fc(x.flatten(1))


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        return self.fc(x)


# -- 1, 2, 3, 5, 6: conv channels and attributes ----------------------------------------------


def test_conv_in_channels_mismatch_names_layer_channels_and_line() -> None:
    where = rf"conv2d 'conv' \({HERE}:{CONV_CALL_LINE}\)"
    with pytest.raises(ShapeError, match=rf"{where} expects 3 input channels .*\[1, 4, 8, 8\]"):
        cnnir.trace(ConvNet(), (1, 4, 8, 8))


@pytest.mark.parametrize(("in_ch", "out_ch"), [(4, 6), (6, 8)])
def test_groups_must_divide_both_channel_counts(in_ch: int, out_ch: int) -> None:
    pattern = (rf"Conv2d \({HERE}:\d+\) groups=3 must divide both in_channels={in_ch} "
               rf"and out_channels={out_ch}")
    with pytest.raises(ShapeError, match=pattern):
        nn.Conv2d(in_ch, out_ch, 3, groups=3)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"stride": 0}, r"stride must be >= 1, got 0"),
    ({"stride": (1, 0)}, r"stride must be >= 1"),
    ({"dilation": 0}, r"dilation must be >= 1, got 0"),
    ({"kernel_size": 0}, r"kernel_size must be >= 1, got 0"),
    ({"padding": -1}, r"padding must be >= 0, got -1"),
    ({"padding": (0, -2)}, r"padding must be >= 0"),
    ({"padding": "same", "stride": 2}, r"padding='same' needs stride 1"),
])
def test_bad_conv_attributes_rejected_at_construction(kwargs: dict, match: str) -> None:
    args = {"kernel_size": 3, **kwargs}
    with pytest.raises(ShapeError, match=rf"Conv2d \({HERE}:\d+\) {match}"):
        nn.Conv2d(3, 8, **args)


def test_conv_transpose_output_padding_rejected_at_construction() -> None:
    with pytest.raises(ShapeError, match=r"output padding must be smaller than either stride"):
        nn.ConvTranspose2d(3, 8, 3, stride=2, output_padding=2)


# -- 4: kernel larger than the padded input -----------------------------------------------------


def test_kernel_larger_than_padded_input() -> None:
    pattern = (rf"conv2d 'conv' \({HERE}:{CONV_CALL_LINE}\) has an effective kernel H of 7 "
               r".*larger than the padded input H of 6")
    with pytest.raises(ShapeError, match=pattern):
        cnnir.trace(ConvNet(kernel_size=7, padding=1), (1, 3, 4, 4))


# -- 7, 8, 9: concat, add, linear ---------------------------------------------------------------


def test_cat_of_mismatched_spatial_sizes() -> None:
    model = Lambda(lambda a, b: cnnir.cat([a, b], 1))
    with pytest.raises(ShapeError, match=r"cat .* match except in dim 1.*\[1, 3, 8, 7\]"):
        cnnir.trace(model, [(1, 3, 8, 8), (1, 3, 8, 7)])


def test_add_with_mismatched_channels_does_not_broadcast() -> None:
    model = Lambda(lambda a, b: a + b)
    with pytest.raises(ShapeError, match=r"add .*cannot broadcast \[1, 3, 8, 8\] with "
                                         r"\[1, 4, 8, 8\]: dim -3 is 3 vs 4"):
        cnnir.trace(model, [(1, 3, 8, 8), (1, 4, 8, 8)])


def test_linear_on_unflattened_input_hints_flatten() -> None:
    with pytest.raises(ShapeError, match=r"(?s)linear 'fc' .*expects 48 input features .*"
                                         r"\[1, 3, 4, 4\].*hint: flatten"):
        cnnir.trace(Head(), (1, 3, 4, 4))


def test_linear_in_features_mismatch() -> None:
    with pytest.raises(ShapeError, match=r"expects 48 input features .*\[2, 47\]"):
        cnnir.trace(Head(), (2, 47))


def test_reshape_to_a_different_element_count() -> None:
    model = Lambda(lambda x: x.view(1, 50))
    with pytest.raises(ShapeError, match=rf"reshape .*\({HERE}:\d+\) cannot reshape "
                                         r"\[1, 3, 4, 4\] \(48 elements\)"):
        cnnir.trace(model, (1, 3, 4, 4))


# -- 11: dtype mismatch --------------------------------------------------------------------------


def test_float64_input_into_float32_weights_is_rejected() -> None:
    with pytest.raises(ShapeError, match=r"conv2d 'conv' .*one dtype.*float32.*float64"):
        cnnir.trace(ConvNet(), TensorType((1, 3, 8, 8), "float64"))


# -- 12: batch 0 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (1, 3, 0, 8)])
def test_batch_of_zero_is_refused_naming_the_input(shape) -> None:
    model = Classifier().eval()
    shown = re.escape(str(list(shape)))
    for entry in (cnnir.trace, cnnir.analyze):
        with pytest.raises(ShapeError, match=rf"input 'x' has shape {shown}, size 0 on dim \d: "
                                             r"cnnir refuses empty inputs"):
            entry(model, shape)


# -- 13, 14 and dangling values: hand-built graphs -------------------------------------------


def chain(name: str, length: int) -> tuple[Graph, list]:
    """x -> relu -> relu -> ... built with the rewriter API."""
    g = Graph(name)
    value = g.add_input("x", TensorType((1, 4)))
    nodes = []
    for _ in range(length):
        nodes.append(g.add_node(ops.relu, [value]))
        value = nodes[-1].output
    g.set_outputs([value])
    return g, nodes


def test_hand_built_cycle_is_reported_with_its_nodes() -> None:
    g, (a, b, c) = chain("cyclic", 3)
    verify(g)
    a.inputs = [c.output]  # a now consumes the value that depends on its own output
    with pytest.raises(VerificationError,
                       match=r"graph 'cyclic' is not acyclic: cycle relu -> relu_1 -> relu_2 "
                             r"-> relu"):
        verify(g)


def test_duplicate_value_names_are_rejected() -> None:
    g = Graph("dup")
    g.add_input("x", TensorType((1, 3)))
    with pytest.raises(VerificationError, match=r"duplicate name 'x' in graph 'dup'"):
        g.add_input("x", TensorType((1, 3)))


def test_use_of_a_value_from_another_graph_is_dangling() -> None:
    other = Graph("other")
    foreign = other.add_input("y", TensorType((1, 4)))
    g = Graph("main")
    x = g.add_input("x", TensorType((1, 4)))
    node = g.add_node(ops.add, [x, foreign], name="sum")
    g.set_outputs([node.output])
    with pytest.raises(VerificationError, match=r"add 'sum' uses %y, which is not defined"):
        verify(g)


def test_graph_output_from_another_graph_is_dangling() -> None:
    other = Graph("other")
    foreign = other.add_input("y", TensorType((1, 4)))
    g = Graph("main")
    g.add_input("x", TensorType((1, 4)))
    g.set_outputs([foreign])
    with pytest.raises(VerificationError, match=r"graph output %y is not defined in 'main'"):
        verify(g)


# -- 19, 20: huge shapes and deep graphs ----------------------------------------------------------


def test_huge_conv_analyzes_symbolically_with_exact_ints() -> None:
    model = ConvNet()
    tracemalloc.start()
    try:
        report = cnnir.analyze(model, (1, 3, 1_000_000, 1_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    side = 1_000_000 - 2
    assert report.layers[0].output_shapes == [[1, 8, side, side]]
    assert report.totals.macs == 1 * 8 * side * side * 3 * 3 * 3
    assert report.totals.flops == 2 * (1 * 8 * side * side * 3 * 3 * 3) + 8 * side * side
    assert report.totals.activation_bytes == 8 * side * side * 4
    assert all(type(v) is int for v in report.totals.to_dict().values())
    assert peak < 16 * 2**20, f"analysis allocated {peak} bytes"


def test_analysis_never_materializes_weights() -> None:
    model = Classifier()
    cnnir.analyze(model, (1, 3, 8, 8))
    assert all(isinstance(p, LazyArray) and p._data is None for p in model.parameters())


def test_ten_thousand_layer_chain_traces_and_analyzes() -> None:
    layers = [nn.Conv2d(2, 2, 1) if i % 2 == 0 else nn.ReLU() for i in range(10_000)]
    graph = cnnir.trace(nn.Sequential(*layers), (1, 2, 4, 4))
    assert len(graph.nodes) == 10_000
    report = cnnir.analyze(graph)
    assert report.totals.macs == 5_000 * (1 * 2 * 4 * 4 * 2 * 1 * 1)
    assert report.totals.params == 5_000 * (2 * 2 + 2)


def test_cycle_in_a_ten_thousand_node_chain_is_found_without_recursion() -> None:
    g, nodes = chain("long", 10_000)
    nodes[0].inputs = [nodes[-1].output]
    with pytest.raises(VerificationError, match=r"graph 'long' is not acyclic"):
        verify(g)


# -- 18: checkpoints -------------------------------------------------------------------------


def test_load_state_dict_reports_every_mismatch_at_once() -> None:
    model = Classifier()
    state = model.state_dict()
    del state["conv.bias"]
    state["head.weight"] = np.zeros((10, 4), np.float32)
    state["fc.weight"] = np.zeros((10, 3), np.float32)
    pattern = (r"(?s)cannot load state_dict into Classifier: "
               r"wrong shapes: fc\.weight: checkpoint \[10, 3\] vs model \[10, 256\]"
               r".*missing keys: conv\.bias.*unexpected keys: head\.weight")
    with pytest.raises(ModelFormatError, match=pattern):
        model.load_state_dict(state)


def test_load_state_dict_not_strict_still_refuses_wrong_shapes() -> None:
    model = Classifier()
    with pytest.raises(ModelFormatError, match=r"wrong shapes: bn\.weight"):
        model.load_state_dict({"bn.weight": np.zeros(5, np.float32)}, strict=False)


def write_object_npy(path: Path) -> None:
    np.save(path, np.array([{"conv.weight": 1}], dtype=object), allow_pickle=True)


def write_object_npz(path: Path) -> None:
    np.savez(path, **{"conv.weight": np.array([{"a": 1}], dtype=object)})


def write_raw_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"conv.weight": np.zeros((8, 3, 3, 3))}))


@pytest.mark.parametrize(("filename", "write"), [
    ("weights.npy", write_object_npy),
    ("weights.npz", write_object_npz),
    ("weights.npz", write_raw_pickle),
], ids=["object-npy", "object-npz", "raw-pickle"])
def test_pickled_weights_are_refused(tmp_path: Path, filename: str,
                                     write: Callable[[Path], None]) -> None:
    path = tmp_path / filename
    write(path)
    with pytest.raises(ModelFormatError, match=r"(?s)cannot read weights from .*pickle"):
        cnnir.load(ConvNet(), path)


def test_plain_npy_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.npy"
    np.save(path, np.zeros((8, 3, 3, 3), np.float32))
    with pytest.raises(ModelFormatError, match=r"cannot read weights from"):
        cnnir.load(ConvNet(), path)


def test_saved_weights_round_trip(tmp_path: Path) -> None:
    source, target = ConvNet(), ConvNet()
    cnnir.save(source, tmp_path / "w.npz")
    cnnir.load(target, tmp_path / "w.npz")
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value)
