"""The IR: tensor types, the printer, the verifier, the rewriter API, shared weights and
state_dict names."""

from __future__ import annotations

import numpy as np
import pytest

import cnnir
from cnnir import Graph, ShapeError, TensorType, VerificationError, nn, ops, verify
from cnnir.ir import ConstantData
from cnnir.ir.printer import format_graph
from cnnir.ops.conv import Conv2dAttrs
from cnnir.ops.tensor import FlattenAttrs, SplitAttrs

# -- TensorType ----------------------------------------------------------------------------


def test_int_dims_stay_ints() -> None:
    t = TensorType((1, 3, 224, 224))
    assert t.shape == (1, 3, 224, 224)
    assert (t.dtype, t.rank, t.numel, t.is_static) == ("float32", 4, 3 * 224 * 224, True)


def test_numpy_ints_become_python_ints() -> None:
    t = TensorType((np.int64(2), np.int32(3), np.uint8(4)))
    assert t.shape == (2, 3, 4)
    assert all(type(d) is int for d in t.shape)
    assert TensorType(np.array([2, 3])).shape == (2, 3)


def test_list_shape_becomes_tuple() -> None:
    assert TensorType([1, 2]).shape == (1, 2)


def test_symbols_are_stripped_and_kept() -> None:
    t = TensorType((" N ", 3, 32, 32))
    assert t.shape == ("N", 3, 32, 32)
    assert (t.is_static, t.symbols) == (False, {"N"})
    assert t == TensorType(("N", 3, 32, 32))
    assert t.bind({"N": 8}) == TensorType((8, 3, 32, 32))


def test_text_forms() -> None:
    t = TensorType(("N", 3, 224, 224))
    assert str(t) == "float32[N, 3, 224, 224]"
    assert repr(t) == "TensorType(float32[N, 3, 224, 224])"
    assert str(TensorType((), "int64")) == "int64[]"


def test_dtype_is_normalized_to_a_numpy_name() -> None:
    assert TensorType((1,), np.float32).dtype == "float32"
    assert TensorType((1,), "f8").dtype == "float64"
    assert TensorType((1,), np.dtype("int64")).dtype == "int64"


def test_types_are_hashable_values() -> None:
    assert len({TensorType((1, 2)), TensorType([1, 2]), TensorType((np.int64(1), 2))}) == 1


@pytest.mark.parametrize(("dim", "match"), [
    (-1, r"a dimension must be >= 0, got -1"),
    (np.int64(-2), r"a dimension must be >= 0, got -2"),
    (3.0, r"must be an int or a symbol name, got 3\.0"),
    (True, r"must be an int or a symbol name, got True"),
    (None, r"must be an int or a symbol name, got None"),
    ("", r"must be an int or a symbol name, got ''"),
    ("  ", r"must be an int or a symbol name"),
    ((2, 2), r"must be an int or a symbol name, got \(2, 2\)"),
])
def test_bad_dims_are_rejected(dim: object, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        TensorType((1, dim))


@pytest.mark.parametrize("shape", [5, "N"])
def test_shape_must_be_a_sequence(shape: object) -> None:
    with pytest.raises(ShapeError, match=r"a shape must be a sequence of dimensions"):
        TensorType(shape)  # type: ignore[arg-type]


def test_unknown_dtype_is_rejected() -> None:
    with pytest.raises(ShapeError, match=r"unknown dtype 'float33'"):
        TensorType((1,), "float33")


@pytest.mark.parametrize("dim", ["2N", "batch size"])
def test_malformed_symbol_is_rejected_at_construction(dim: str) -> None:
    with pytest.raises(ShapeError, match=r"symbol"):
        TensorType((dim, 3)).symbols  # noqa: B018


# -- a 3-node graph: printer and verifier ---------------------------------------------------


def three_node_graph() -> Graph:
    g = Graph("tiny")
    x = g.add_input("x", TensorType((1, 3, 8, 8)))
    w = g.add_constant("conv.weight", ConstantData(TensorType((4, 3, 3, 3)), "parameter"))
    conv = g.add_node(ops.conv2d, [x, w, None], Conv2dAttrs(padding=1), name="conv")
    relu = g.add_node(ops.relu, [conv.output], name="relu")
    flat = g.add_node(ops.flatten, [relu.output], FlattenAttrs(), name="flat")
    g.set_outputs([flat.output])
    return g


TINY_TEXT = (
    "graph tiny(%x: float32[1, 3, 8, 8]) -> (%flat)\n"
    "  parameter %conv.weight: float32[4, 3, 3, 3]\n"
    "  %conv: float32[1, 4, 8, 8] = conv2d(%x, %conv.weight, _) "
    "{stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1}\n"
    "  %relu: float32[1, 4, 8, 8] = relu(%conv)\n"
    "  %flat: float32[1, 256] = flatten(%relu) {start_dim=1, end_dim=-1}\n"
    "  return %flat"
)


def test_printer_text_is_stable() -> None:
    g = three_node_graph()
    assert str(g) == TINY_TEXT
    assert str(three_node_graph()) == str(g)
    assert repr(g) == "<Graph tiny: 1 inputs, 3 nodes>"


def test_printer_shows_buffers_symbols_and_locations() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(x)

    line = Net.forward.__code__.co_firstlineno + 1
    g = cnnir.trace(Net().eval(), TensorType(("N", 2, 4, 4)))
    text = format_graph(g, with_loc=True)
    assert "graph Net(%x: float32[N, 2, 4, 4]) -> (%bn)" in text
    assert "  buffer %bn.num_batches_tracked: int64[]" in text
    node_line = next(s for s in text.splitlines() if s.startswith("  %bn:"))
    assert node_line.endswith(f"test_graph.py:{line}")
    assert "test_graph.py" not in str(g)  # locations only on request


def test_verify_accepts_good_graphs() -> None:
    g = three_node_graph()
    assert verify(g) is g
    g2 = Graph("multi")
    x = g2.add_input("x", TensorType(("N", 6)))
    parts = g2.add_node(ops.split, [x], SplitAttrs((2, 4), 1))
    total = g2.add_node(ops.add, [parts.outputs[0], parts.outputs[0]])
    g2.set_outputs([total.output, parts.outputs[1]])
    assert [v.name for v in parts.outputs] == ["split", "split.1"]
    verify(g2)


def test_default_node_names_are_made_unique() -> None:
    g = Graph()
    x = g.add_input("x", TensorType((1, 4)))
    a = g.add_node(ops.relu, [x])
    b = g.add_node(ops.relu, [a.output])
    c = g.add_node(ops.relu, [b.output], name="relu")
    assert [a.name, b.name, c.name] == ["relu", "relu_1", "relu_2"]


def test_verify_catches_a_stale_type() -> None:
    g = three_node_graph()
    conv = g.nodes[0]
    conv.outputs[0].type = TensorType((1, 4, 6, 6))
    with pytest.raises(VerificationError, match=r"conv2d 'conv' declares outputs "
                                                r"\['float32\[1, 4, 6, 6\]'\]"):
        verify(g)


def test_verify_catches_a_user_list_out_of_sync() -> None:
    g = three_node_graph()
    g.nodes[0].output.users.clear()
    with pytest.raises(VerificationError, match=r"%conv does not list its user relu 'relu'"):
        verify(g)


# -- the rewriter API --------------------------------------------------------------------------


def test_replace_all_uses_moves_users_and_graph_outputs() -> None:
    g = three_node_graph()
    conv, relu, flat = g.nodes
    replacement = g.add_node(ops.flatten, [conv.output], FlattenAttrs(), name="flat2")
    g.replace_all_uses(flat.output, replacement.output)
    assert g.outputs == [replacement.output]
    assert flat.output.users == []
    g.replace_all_uses(relu.output, conv.output)
    assert flat.inputs == [conv.output]
    assert relu.output.users == []
    assert sorted(n.name for n in conv.output.users) == ["flat", "flat2", "relu"]
    verify(g)


def test_remove_node_refuses_while_used_and_names_the_users() -> None:
    g = three_node_graph()
    conv = g.nodes[0]
    with pytest.raises(VerificationError,
                       match=r"cannot remove conv2d 'conv': its outputs are still used by "
                             r"\['relu'\]"):
        g.remove_node(conv)
    assert g.nodes[0] is conv  # nothing changed


def test_remove_node_refuses_a_graph_output() -> None:
    g = three_node_graph()
    with pytest.raises(VerificationError, match=r"cannot remove flatten 'flat'"):
        g.remove_node(g.nodes[-1])


def test_remove_node_refusal_names_the_graph_output() -> None:
    g = three_node_graph()
    with pytest.raises(VerificationError, match=r"graph output %flat"):
        g.remove_node(g.nodes[-1])


def test_remove_unused_node_after_rewiring() -> None:
    g = three_node_graph()
    conv, relu, flat = g.nodes
    g.replace_all_uses(relu.output, conv.output)
    g.remove_node(relu)
    assert [n.name for n in g.nodes] == ["conv", "flat"]
    assert conv.output.users == [flat]
    verify(g)
    assert str(g) == TINY_TEXT.replace("  %relu: float32[1, 4, 8, 8] = relu(%conv)\n", "").replace(
        "flatten(%relu)", "flatten(%conv)")


def test_removed_names_can_be_reused() -> None:
    g = three_node_graph()
    conv, relu, flat = g.nodes
    g.replace_all_uses(relu.output, conv.output)
    g.remove_node(relu)
    again = g.make_node(ops.relu, [conv.output], name="relu")
    assert again.name == "relu"


def test_insert_node_before_an_existing_node() -> None:
    g = three_node_graph()
    conv, relu, flat = g.nodes
    # a sigmoid between conv and relu: build it unplaced, rewire conv's users, then place it
    gate = g.make_node(ops.sigmoid, [conv.output], name="gate")
    g.replace_all_uses(conv.output, gate.output)
    g.insert_node(gate, before=relu)
    assert [n.name for n in g.nodes] == ["conv", "gate", "relu", "flat"]
    assert relu.inputs == [gate.output]
    assert conv.output.users == [gate]
    verify(g)
    assert "  %gate: float32[1, 4, 8, 8] = sigmoid(%conv)\n  %relu: float32[1, 4, 8, 8] = " \
           "relu(%gate)" in str(g)


def test_insert_node_in_the_wrong_place_fails_verification() -> None:
    g = three_node_graph()
    conv, relu, flat = g.nodes
    late = g.make_node(ops.sigmoid, [relu.output], name="late")
    g.insert_node(late, before=relu)  # reads relu's output before relu runs
    with pytest.raises(VerificationError, match=r"sigmoid 'late' uses %relu, which is not "
                                                r"defined before it"):
        verify(g)


def test_replacing_with_a_differently_typed_value_fails_verification() -> None:
    g = three_node_graph()
    conv, relu, flat = g.nodes
    other = g.add_input("y", TensorType((1, 4, 2, 2)))
    g.replace_all_uses(relu.output, other)
    with pytest.raises(VerificationError, match=r"flatten 'flat' declares outputs"):
        verify(g)


# -- shared weights ----------------------------------------------------------------------------


class Tower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x).relu()


class Siamese(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tower = Tower()

    def forward(self, a, b):
        return self.tower(a), self.tower(b)


def test_siamese_towers_share_one_constant() -> None:
    g = cnnir.trace(Siamese(), [(1, 1, 8, 8), (1, 1, 8, 8)])
    assert list(g.parameters()) == ["tower.conv.weight", "tower.conv.bias"]
    convs = [n for n in g.nodes if n.op is ops.conv2d]
    assert [n.name for n in convs] == ["tower.conv", "tower.conv_1"]
    assert convs[0].inputs[1] is convs[1].inputs[1] is g.constants["tower.conv.weight"]
    assert [n.name for n in g.constants["tower.conv.weight"].users] == ["tower.conv",
                                                                        "tower.conv_1"]
    assert [v.name for v in g.outputs] == ["tower.relu", "tower.relu_1"]


def test_shared_weights_count_once_and_each_call_costs() -> None:
    totals = cnnir.analyze(Siamese(), [(1, 1, 8, 8), (1, 1, 8, 8)]).totals
    assert totals.params == 4 * 1 * 3 * 3 + 4
    assert totals.macs == 2 * (1 * 4 * 6 * 6 * 1 * 3 * 3)


# -- state_dict names ----------------------------------------------------------------------------


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4),
                                      nn.ReLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def test_state_dict_uses_pytorch_key_names() -> None:
    state = SmallNet().state_dict()
    assert list(state) == [
        "features.0.weight",
        "features.1.weight", "features.1.bias",
        "features.1.running_mean", "features.1.running_var", "features.1.num_batches_tracked",
        "fc.weight", "fc.bias",
    ]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    counter = state["features.1.num_batches_tracked"]
    assert (counter.shape, counter.dtype, int(counter)) == ((), np.int64, 0)
    np.testing.assert_array_equal(state["features.1.running_var"], np.ones(4, np.float32))


def test_graph_constants_follow_state_dict_names() -> None:
    g = cnnir.trace(SmallNet(), (1, 3, 8, 8))
    assert set(g.constants) == set(SmallNet().state_dict())
    assert list(g.buffers()) == ["features.1.running_mean", "features.1.running_var",
                                 "features.1.num_batches_tracked"]


def test_named_parameters_and_buffers() -> None:
    net = SmallNet()
    assert [n for n, _ in net.named_parameters()] == [
        "features.0.weight", "features.1.weight", "features.1.bias", "fc.weight", "fc.bias"]
    assert [n for n, _ in net.named_buffers()] == [
        "features.1.running_mean", "features.1.running_var", "features.1.num_batches_tracked"]


class Aliased(nn.Module):
    """One Linear registered under two names, as weight-tied PyTorch models do."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 2)
        self.decoder = self.encoder

    def forward(self, x):
        return self.decoder(self.encoder(x))


def test_state_dict_keeps_every_name_of_a_shared_module() -> None:
    assert list(Aliased().state_dict()) == ["encoder.weight", "encoder.bias",
                                            "decoder.weight", "decoder.bias"]
