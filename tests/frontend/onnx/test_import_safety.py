"""Loading untrusted ONNX files (docs/semantics.md §9.1, §9.3, §9.5 #15-17, #20): every bad input is
a ModelFormatError with a message naming the problem, never a crash, a read outside the
model's folder, a RecursionError or an allocation of the declared size."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

import cnnir
from cnnir.errors import ModelFormatError
from cnnir.frontend.onnx_import import load, loads

WEIGHT = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4) / 100


def conv_model(opset: int = 19) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 1, 1])],
        initializer=[numpy_helper.from_array(WEIGHT, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def write_external(folder, data_file: str = "w.bin", pointer: str | None = None,
                   **entries: str) -> str:
    """conv_model with its weight in ``folder/data_file`` (offset 16), the proto's location
    ``pointer`` (default ``data_file``), and the given external-data keys."""
    data = folder / data_file
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_bytes(b"\0" * 16 + WEIGHT.tobytes())
    m = conv_model()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    location = data_file if pointer is None else pointer
    keys = {"location": location, "offset": "16", "length": str(WEIGHT.nbytes), **entries}
    for k, v in keys.items():
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    path = folder / "model.onnx"
    path.write_bytes(m.SerializeToString())
    return str(path)


def test_external_data_inside_the_folder_loads(tmp_path) -> None:
    graph = load(write_external(tmp_path, "sub/w.bin"))
    np.testing.assert_array_equal(graph.constants["w"].const.array, WEIGHT)
    y = cnnir.compile(graph, backend="reference")(np.ones((1, 3, 4, 4), np.float32))
    assert y.shape == (1, 2, 1, 1)


@pytest.mark.parametrize("location, match", [
    ("../w.bin", "contains '..'"),
    ("sub/../../w.bin", "contains '..'"),
    ("sub\\..\\..\\w.bin", "contains '..'"),
    ("/etc/passwd", "absolute location"),
    ("C:\\Windows\\win.ini", "absolute location"),
    ("", "has no location"),
    ("missing.bin", "cannot be read"),
])
def test_bad_external_locations_are_refused(tmp_path, location: str, match: str) -> None:
    path = write_external(tmp_path / "model", pointer=location)
    with pytest.raises(ModelFormatError, match=match):
        load(path)


def test_an_external_file_that_is_a_symlink_is_refused(tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    path = write_external(tmp_path / "model")
    real = tmp_path / "model" / "w.bin"
    os.replace(real, outside / "w.bin")
    os.symlink(outside / "w.bin", real)
    with pytest.raises(ModelFormatError, match="leaves the model's folder|symlink"):
        load(path)


def test_a_symlink_inside_the_folder_is_refused_too(tmp_path) -> None:
    path = write_external(tmp_path, "real.bin", pointer="alias.bin")
    os.symlink(tmp_path / "real.bin", tmp_path / "alias.bin")
    with pytest.raises(ModelFormatError, match="goes through the symlink"):
        load(path)


def test_a_symlinked_parent_folder_is_refused(tmp_path) -> None:
    path = write_external(tmp_path, "real/w.bin", pointer="linked/w.bin")
    os.symlink(tmp_path / "real", tmp_path / "linked")
    with pytest.raises(ModelFormatError, match="goes through the symlink"):
        load(path)


def test_a_hard_link_is_refused(tmp_path) -> None:
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"\0" * 16 + WEIGHT.tobytes())
    path = write_external(tmp_path / "model", "w.bin", pointer="hard.bin")
    os.link(outside, tmp_path / "model" / "hard.bin")
    with pytest.raises(ModelFormatError, match="is a hard link"):
        load(path)


@pytest.mark.parametrize("entries, match", [
    ({"offset": str(16 + 8)}, "past the end"),
    ({"offset": str(2**70)}, "past the end"),
    ({"length": "8"}, f"has length 8 but its shape \\[2, 3, 4, 4\\] needs {WEIGHT.nbytes}"),
    ({"length": str(2**64 + WEIGHT.nbytes)}, "needs 384 bytes"),
    ({"offset": "-1"}, "negative offset"),
    ({"offset": "ten"}, "non-integer offset"),
    ({"setattr_payload": "x"}, "unknown key 'setattr_payload'"),
])
def test_offsets_lengths_and_keys_are_checked(tmp_path, entries: dict, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match):
        load(write_external(tmp_path, **entries))


def test_huge_declared_dims_are_checked_in_python_ints(tmp_path) -> None:
    path = write_external(tmp_path, length="")
    m = onnx.load(path, load_external_data=False)
    del m.graph.initializer[0].dims[:]
    m.graph.initializer[0].dims.extend([2**40, 2**40, 2**40])  # int64 products would wrap
    (tmp_path / "model.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(ModelFormatError, match="past the end"):
        load(path)


def test_truncated_and_garbage_files_wrap_the_decode_error(tmp_path) -> None:
    data = conv_model().SerializeToString()
    for name, content in [("truncated", data[: len(data) // 2]),
                          ("garbage", b"\xff\xfe not onnx \x00" * 7)]:
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(content)
        with pytest.raises(ModelFormatError, match="is not a valid ONNX model") as info:
            load(path)
        assert isinstance(info.value.__cause__, DecodeError)


def test_an_empty_file_is_not_an_onnx_model(tmp_path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="is not an ONNX model"):
        load(tmp_path / "empty.onnx")


def test_a_missing_file(tmp_path) -> None:
    with pytest.raises(ModelFormatError, match="cannot read ONNX file"):
        load(tmp_path / "nope.onnx")


def test_files_over_the_protobuf_limit_are_refused_before_parsing(tmp_path) -> None:
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:
        f.truncate(2**31)  # sparse: no disk space, and never read
    with pytest.raises(ModelFormatError, match="over the 2 GiB protobuf limit"):
        load(path)


def relu_chain(length: int) -> onnx.ModelProto:
    names = ["x"] + [f"v{i}" for i in range(length)]
    nodes = [helper.make_node("Relu", [a], [b]) for a, b in zip(names, names[1:])]
    g = helper.make_graph(nodes, "chain",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    return m


def test_a_10k_deep_graph_imports_without_recursion() -> None:
    graph = loads(relu_chain(10_000).SerializeToString())
    assert len(graph.nodes) == 10_000


def test_node_count_and_depth_are_capped() -> None:
    data = relu_chain(50).SerializeToString()
    with pytest.raises(ModelFormatError, match="50 nodes, over the limit of 20"):
        loads(data, max_nodes=20)
    with pytest.raises(ModelFormatError, match="more than 30 nodes deep"):
        loads(data, max_depth=30)


def test_a_cycle_is_named() -> None:
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="A"),
             helper.make_node("Relu", ["a"], ["b"], name="B"),
             helper.make_node("Add", ["x", "b"], ["y"], name="C")]
    g = helper.make_graph(nodes, "loop", [helper.make_tensor_value_info("x", 1, [2])],
                          [helper.make_tensor_value_info("y", 1, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(ModelFormatError, match="not acyclic: cycle (A -> B -> A|B -> A -> B)"):
        loads(m.SerializeToString())


@pytest.mark.parametrize("nodes, match", [
    ([helper.make_node("Relu", ["ghost"], ["y"], name="R")], "uses 'ghost', which nothing "
                                                              "defines"),
    ([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["y"])],
     "'y' is defined twice"),
])
def test_undefined_and_doubly_defined_values(nodes, match: str) -> None:
    g = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", 1, [2])],
                          [helper.make_tensor_value_info("y", 1, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(ModelFormatError, match=match):
        loads(m.SerializeToString())


def test_an_input_without_a_shape_is_refused() -> None:
    m = conv_model()
    m.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(ModelFormatError, match="graph input 'x' has no shape"):
        loads(m.SerializeToString())


def test_load_onnx_runs_no_code_and_round_trips(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model().SerializeToString())
    graph = cnnir.load_onnx(str(path))
    assert graph.inputs[0].type.shape == ("N", 3, 4, 4)
    assert cnnir.analyze(graph).totals.params == WEIGHT.size


def test_input_shapes_bind_symbolic_dims(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(conv_model().SerializeToString())
    graph = load(path, input_shapes=[(2, 3, 4, 4)])
    assert graph.inputs[0].type.shape == (2, 3, 4, 4)
    assert graph.outputs[0].type.shape == (2, 2, 1, 1)
    with pytest.raises(ModelFormatError, match=r"input shape \[2, 5, 4, 4\] does not fit"):
        load(path, input_shapes=[(2, 5, 4, 4)])
    with pytest.raises(ModelFormatError, match="got 2 input shape"):
        load(path, input_shapes=[(2, 3, 4, 4)] * 2)
