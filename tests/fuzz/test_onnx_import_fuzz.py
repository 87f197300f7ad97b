"""Fuzzing the ONNX importer (``onnx_mutations.py``): mutated valid models must each be
imported or refused with a ``CnnirError``, within 5 s and 400 MB, in a worker process that a
crash or a hang cannot take down with the tests. Then each bug the fuzzer found, as a fixed
file; ``benchmarks/fuzz_onnx_import.py`` runs the campaign for longer."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_mutations import Worker, campaign

import cnnir
from cnnir.errors import ModelFormatError

FILES = 500


@pytest.fixture(scope="module")
def worker():
    with Worker(memory_mb=400, seconds=5) as w:
        yield w


def test_mutated_models_are_imported_or_refused_within_bounds(tmp_path, worker) -> None:
    results = campaign(FILES, seed=2026, folder=tmp_path, worker=worker)
    outcomes = collections.Counter(r.outcome for r in results)
    bad = [f"{r.outcome} {r.mutation} {r.path}: {r.detail}" for r in results
           if r.outcome not in ("imported", "refused")]
    assert not bad, "\n".join(bad[:5])
    assert outcomes["imported"] > 0 and outcomes["refused"] > 0, outcomes
    assert max(r.seconds for r in results) < 5


# -- the fixed bugs ---------------------------------------------------------------------------

def model(nodes, inputs, outputs, inits=(), opset=19) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)


def save(tmp_path, m: onnx.ModelProto) -> str:
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    return str(path)


def refused(tmp_path, m: onnx.ModelProto, *fragments: str) -> None:
    with pytest.raises(ModelFormatError) as info:
        cnnir.load_onnx(save(tmp_path, m))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_a_tensor_declaring_1e12_elements_over_16_bytes_is_refused(tmp_path) -> None:
    """numpy_helper.to_array raised a ValueError (and would allocate with data present)."""
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10**6, 10**6],
                       raw_data=bytes(16))
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [X], [Y], [huge])
    refused(tmp_path, m, "tensor 'w'", "[1000000, 1000000]", "stores 16 bytes")


@pytest.mark.parametrize("field, values", [("float_data", [1.0, 2.0]), ("raw_data", b"")])
def test_tensor_data_disagreeing_with_its_dims_is_refused(tmp_path, field, values) -> None:
    t = TensorProto(name="b", data_type=TensorProto.FLOAT, dims=[3])
    if field == "raw_data":
        t.raw_data = values
    else:
        t.float_data.extend(values)
    m = model([helper.make_node("Add", ["x", "b"], ["y"])], [X], [Y], [t])
    refused(tmp_path, m, "tensor 'b'", "declares dims [3]")


def test_negative_dims_and_unknown_data_types_are_refused(tmp_path) -> None:
    t = TensorProto(name="b", data_type=TensorProto.FLOAT, dims=[-1], raw_data=bytes(4))
    refused(tmp_path, model([helper.make_node("Add", ["x", "b"], ["y"])], [X], [Y], [t]),
            "negative dims")
    t = TensorProto(name="b", data_type=999, dims=[1], raw_data=bytes(4))
    refused(tmp_path, model([helper.make_node("Add", ["x", "b"], ["y"])], [X], [Y], [t]),
            "unknown data type")
    x = helper.make_tensor_value_info("x", 999, [1])
    refused(tmp_path, model([helper.make_node("Relu", ["x"], ["y"])], [x], [Y]),
            "unsupported element type 999")


@pytest.mark.parametrize("nodes, inits", [
    ([helper.make_node("ConstantOfShape", ["s"], ["c"])],
     [numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "s")]),
    ([helper.make_node("Range", ["a", "b", "d"], ["c"])],
     [numpy_helper.from_array(np.array(v, np.float32), n)
      for n, v in (("a", 0.0), ("b", 1e12), ("d", 1.0))]),
    ([helper.make_node("Mul", ["a", "b"], ["c"])],
     [numpy_helper.from_array(np.ones((10**5, 1), np.float32), "a"),
      numpy_helper.from_array(np.ones((1, 10**5), np.float32), "b")]),
], ids=["constant-of-shape", "range", "broadcast-mul"])
def test_a_fold_to_a_huge_constant_is_refused_before_evaluating(tmp_path, nodes, inits) -> None:
    """onnx.reference allocated the result (10¹⁰-10¹² elements) before this check."""
    m = model([*nodes, helper.make_node("Add", ["x", "c"], ["y"])], [X], [Y], inits)
    refused(tmp_path, m, "would fold to a constant of")


def test_small_folds_still_import(tmp_path) -> None:
    inits = [numpy_helper.from_array(np.array([1, 2, 1, 1], np.int64), "s")]
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"],
                              value=numpy_helper.from_array(np.array([2.0], np.float32))),
             helper.make_node("Mul", ["x", "c"], ["y"])]
    graph = cnnir.load_onnx(save(tmp_path, model(nodes, [X], [Y], inits)))
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4))
    np.testing.assert_allclose(cnnir.compile(graph, backend="reference")(x), 2 * x)


@pytest.mark.parametrize("attr", [helper.make_attribute("axis", "one"),
                                  helper.make_attribute("axis", [1, 2]),
                                  helper.make_attribute("axis", 1.5)])
def test_an_attribute_of_the_wrong_type_is_refused_naming_the_node(tmp_path, attr) -> None:
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm")
    node.attribute.append(attr)
    refused(tmp_path, model([node], [X], [Y]), "Softmax node 'sm'")


def test_the_version_converter_never_sees_a_node_off_its_schema(tmp_path, worker) -> None:
    """onnx's version converter segfaulted on ReduceMean(axes="text") at opset 13."""
    node = helper.make_node("ReduceMean", ["x"], ["y"], keepdims=1)
    node.attribute.append(helper.make_attribute("axes", "text"))
    path = tmp_path / "m.onnx"
    path.write_bytes(model([node], [X], [Y], opset=13).SerializeToString())
    result = worker.run(path, "axes-as-string")
    assert result.outcome == "refused", result


def test_names_that_are_not_utf8_are_refused(tmp_path) -> None:
    """protobuf returns such strings as bytes, which crashed the symbol naming."""
    m = model([helper.make_node("Relu", ["x"], ["y"])], [X], [Y])
    data = m.SerializeToString().replace(b"\n\x01x", b"\n\x01\xff")  # every name "x"
    assert data != m.SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelFormatError):
        cnnir.load_onnx(str(path))


def test_a_cycle_through_a_name_that_is_not_utf8_is_refused(tmp_path) -> None:
    """The cycle message joined node names, one of them bytes: a TypeError."""
    nodes = [helper.make_node("Relu", ["x", "b"], ["a"], name="r1"),
             helper.make_node("Relu", ["a"], ["b"], name="r2")]
    data = model(nodes, [X], [Y]).SerializeToString().replace(b"r2", b"\xff\xfe")
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelFormatError, match="UTF-8"):
        cnnir.load_onnx(str(path))


def test_an_external_location_that_is_not_utf8_is_refused(tmp_path) -> None:
    """pathlib raised a TypeError on the bytes protobuf returned for it."""
    t = TensorProto(name="b", data_type=TensorProto.FLOAT, dims=[1],
                    data_location=TensorProto.EXTERNAL)
    entry = t.external_data.add()
    entry.key, entry.value = "location", "w.bin"
    m = model([helper.make_node("Add", ["x", "b"], ["y"])], [X], [Y], [t])
    (tmp_path / "w.bin").write_bytes(bytes(4))
    data = m.SerializeToString().replace(b"w.bin", b"\xff.bin")  # same length
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelFormatError, match="not UTF-8"):
        cnnir.load_onnx(str(path))


def test_an_external_tensor_of_an_unknown_data_type_is_refused(tmp_path) -> None:
    """The external-data size check looked the type up unguarded: a KeyError."""
    t = TensorProto(name="b", data_type=999, dims=[1], data_location=TensorProto.EXTERNAL)
    entry = t.external_data.add()
    entry.key, entry.value = "location", "w.bin"
    (tmp_path / "w.bin").write_bytes(bytes(4))
    refused(tmp_path, model([helper.make_node("Add", ["x", "b"], ["y"])], [X], [Y], [t]),
            "unknown data type 999")


def test_a_huge_resize_is_refused_without_allocating(tmp_path) -> None:
    """The nearest-mode tie check built an array as long as the output (10¹² rows here)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 10**6, 1])
    scales = numpy_helper.from_array(np.array([1, 1, 1e6, 1], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest",
                            coordinate_transformation_mode="half_pixel",
                            nearest_mode="round_prefer_floor")
    refused(tmp_path, model([node], [x], [Y], [scales]), "Resize")
