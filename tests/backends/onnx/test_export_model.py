"""Model-level properties of the ONNX export (docs/semantics.md §7.1, §7.4): versions, names,
initializers, symbolic batch, validation, external data, errors; and every example model."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx_cases import EXAMPLE_FILES, EXAMPLE_SIZES, example_specs, run_ort
from op_cases import reference
from op_helpers import assert_close

import cnnir
from cnnir import nn
from cnnir.backends.onnx_export import export, to_model
from cnnir.errors import LoweringError


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def small(tmp_path) -> tuple[cnnir.Graph, str, onnx.ModelProto]:
    graph = cnnir.trace(Small().eval(), ("N", 3, 8, 8))
    path = str(tmp_path / "small.onnx")
    cnnir.export_onnx(graph, path)
    return graph, path, onnx.load(path)


def test_versions_producer_and_docs(small) -> None:
    _, _, m = small
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 19)]
    assert m.ir_version == 9 == onnx.helper.find_min_ir_version_for(m.opset_import)
    assert m.producer_name == "cnnir" and m.producer_version == cnnir.__version__
    assert m.doc_string and m.model_version == 1
    assert {p.key: p.value for p in m.metadata_props} == {"cnnir.graph": "Small"}


def test_weights_are_initializers_not_inputs(small) -> None:
    graph, _, m = small
    assert [v.name for v in m.graph.input] == ["x"]
    names = {t.name for t in m.graph.initializer}
    assert set(graph.parameters()) <= names
    kinds = {t.name: t.doc_string for t in m.graph.initializer}
    assert kinds["features.0.weight"] == "parameter"
    assert kinds["features.1.running_var"] == "buffer"


def test_names_follow_module_paths(small) -> None:
    _, _, m = small
    assert [n.name for n in m.graph.node] == [
        "features.0", "features.1", "features.2", "features.3", "pool", "flatten", "fc"]
    assert [o.name for o in m.graph.output] == ["fc"]


def test_symbolic_batch_is_a_dim_param_and_runs_at_batch_1_and_3(small) -> None:
    graph, path, m = small
    for v in (m.graph.input[0], m.graph.output[0]):
        assert v.type.tensor_type.shape.dim[0].dim_param == "N"
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    (y3,) = run_ort(path, [x])
    (y1,) = run_ort(path, [x[:1]])
    assert y3.shape == (3, 5) and y1.shape == (1, 5)
    np.testing.assert_allclose(y1[0], y3[0], rtol=1e-5, atol=1e-6)
    assert_close(y3, reference(graph, [x])[0], 72)


def test_the_file_passes_the_checker_and_strict_shape_inference(small) -> None:
    _, path, m = small
    onnx.checker.check_model(path, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True,
                                                 data_prop=True)
    assert inferred.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 5


def test_export_onnx_traces_a_module(tmp_path) -> None:
    path = str(tmp_path / "m.onnx")
    cnnir.export_onnx(nn.Conv2d(3, 2, 1), path, inputs=(1, 3, 4, 4))
    assert onnx.load(path).graph.node[0].op_type == "Conv"


def test_external_data_above_the_threshold(tmp_path) -> None:
    """The >2 GB path, with the threshold lowered instead of writing 2 GB."""
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Flatten(), nn.Linear(576, 4))
    graph = cnnir.trace(net.eval(), ("N", 3, 8, 8))
    path = tmp_path / "big.onnx"
    for _ in range(2):  # a second export replaces the data file instead of appending to it
        export(graph, path, large_model_bytes=100)
    data = tmp_path / "big.onnx.data"
    weights = sum(v.const.array.nbytes for v in graph.constants.values()
                  if v.const.array.nbytes >= 1024)
    assert data.stat().st_size == weights > 0
    m = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in m.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external == ["0.weight", "3.weight"]  # the tensors of 1 KiB or more
    onnx.checker.check_model(str(path), full_check=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert_close(run_ort(str(path), [x])[0], reference(graph, [x])[0], 576)
    back = cnnir.load_onnx(str(path))
    for name in external:
        np.testing.assert_array_equal(back.constants[name].const.array,
                                      graph.constants[name].const.array)


@pytest.mark.parametrize("opset", [18, 7, 99])
def test_unsupported_opsets_are_refused(opset: int) -> None:
    graph = cnnir.trace(nn.ReLU(), (1, 2))
    with pytest.raises(LoweringError, match=f"cannot export at opset {opset}"):
        to_model(graph, opset)


def test_a_newer_opset_exports_and_validates(tmp_path) -> None:
    graph = cnnir.trace(nn.Sequential(nn.Conv2d(2, 2, 3), nn.GELU()), ("N", 2, 5, 5))
    path = str(tmp_path / "m.onnx")
    export(graph, path, opset=21)
    m = onnx.load(path)
    assert m.opset_import[0].version == 21 and m.ir_version == 10
    assert [n.op_type for n in m.graph.node] == ["Conv", "Gelu"]


def test_an_unexportable_node_is_named() -> None:
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.AdaptiveMaxPool2d(4))
    graph = cnnir.trace(net, (1, 2, 6, 6))
    with pytest.raises(LoweringError, match=r"adaptive_max_pool2d '1' .*cannot be exported"):
        to_model(graph)


def test_graph_outputs_that_are_inputs_or_repeated(tmp_path) -> None:
    class Twice(nn.Module):
        def forward(self, x):
            y = x.relu()
            return x, y, y

    graph = cnnir.trace(Twice(), ("N", 2))
    path = str(tmp_path / "m.onnx")
    export(graph, path)
    x = np.arange(-2, 4, dtype=np.float32).reshape(3, 2)
    a, b, c = run_ort(path, [x])
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(b, np.maximum(x, 0))
    np.testing.assert_array_equal(c, b)


# -- every example model ---------------------------------------------------------------------

@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "vgg" else n
                                  for n in EXAMPLE_FILES])
def test_every_example_exports_validates_and_runs_at_batch_1_and_3(tmp_path, name) -> None:
    model, specs = example_specs(name)
    graph = cnnir.trace(model, specs)
    path = str(tmp_path / f"{name}.onnx")
    export(graph, path)
    onnx.checker.check_model(path, full_check=True)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, *s[1:])).astype(np.float32) for s in specs]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out3 = session.run(None, dict(zip(names, xs)))
    out1 = session.run(None, dict(zip(names, (x[:1] for x in xs))))
    for y3, y1, value in zip(out3, out1, graph.outputs):
        assert y3.shape[0] == 3 and y1.shape[0] == 1 and y3.ndim == value.type.rank
        np.testing.assert_allclose(y1[0], y3[0], rtol=1e-4, atol=1e-4)
    os.remove(path)


@pytest.mark.parametrize("name", ["cifar", "deformable", "siamese", "unet", "shufflenet"])
def test_small_examples_match_the_reference_executor(tmp_path, name) -> None:
    model, specs = example_specs(name)
    graph = cnnir.trace(model, specs)
    path = str(tmp_path / f"{name}.onnx")
    export(graph, path)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, *s[1:])).astype(np.float32) for s in specs]
    for got, ref in zip(run_ort(path, xs), reference(graph, xs)):
        assert_close(got, ref, 1000)


def test_example_table_is_complete() -> None:
    assert set(EXAMPLE_SIZES) <= set(EXAMPLE_FILES) and len(EXAMPLE_FILES) >= 14


def test_the_core_and_the_onnx_mappings_import_no_onnx() -> None:
    """OpDef.onnx mappings build plain data; only the exporter imports onnx."""
    import subprocess
    import sys

    code = ("import sys, cnnir; from cnnir import nn; "
            "g = cnnir.trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6()), (1, 3, 8, 8)); "
            "cnnir.analyze(g); "
            "print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_large_models_are_validated_as_a_skeleton(tmp_path, monkeypatch) -> None:
    import importlib

    exporter = importlib.import_module("cnnir.backends.onnx_export.export")
    seen: list[onnx.ModelProto] = []
    monkeypatch.setattr(exporter, "SKELETON_ABOVE_BYTES", 0)
    monkeypatch.setattr(exporter, "validate", seen.append)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 10))
    export(cnnir.trace(net, ("N", 3, 8, 8)), tmp_path / "m.onnx")
    (checked,) = seen
    assert [v.name for v in checked.graph.input] == ["x", "2.weight"]  # 5760 bytes
    assert {t.name for t in checked.graph.initializer} == {"0.weight", "0.bias", "2.bias"}
    onnx.checker.check_model(checked, full_check=True)


def test_an_invalid_model_fails_validation_with_a_lowering_error() -> None:
    from cnnir.backends.onnx_export import validate

    m = to_model(cnnir.trace(nn.ReLU(), ("N", 2)))
    m.graph.node[0].input[0] = "nowhere"
    with pytest.raises(LoweringError, match="failed validation.*nowhere"):
        validate(m)
