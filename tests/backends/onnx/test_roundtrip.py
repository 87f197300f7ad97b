"""DSL → ONNX → cnnir: the imported graph has the original's cost report (params and MACs
per layer, totals) and computes the same outputs (float64 reference executor on both)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_cases import EXAMPLE_FILES, REIMPORTED, example_specs
from op_cases import Case, make_inputs, reference, trace

import cnnir
from cnnir.backends.onnx_export import export
from cnnir.passes.cost import CostReport

# ONNX has no adaptive pooling: a divisible adaptive average pool comes back as avg_pool2d,
# whose FLOP rule does not count the E_out divisions that adaptive_avg_pool2d's does.
FLOP_RULE_CHANGES = {"adaptive-avg-divisible", "adaptive-avg-keep-dim", "alexnet", "vgg"}


def round_trip(tmp_path, graph: cnnir.Graph) -> cnnir.Graph:
    path = str(tmp_path / "rt.onnx")
    export(graph, path)
    return cnnir.load_onnx(path)


def layer_costs(report: CostReport) -> list[tuple[str, int, int]]:
    return [(layer.name, layer.params, layer.macs) for layer in report.layers
            if layer.params or layer.macs]


def analyzable(graph: cnnir.Graph) -> bool:
    """Cost analysis binds a symbolic batch only; other symbols need concrete sizes."""
    return all(isinstance(d, int) for v in graph.inputs for d in v.type.shape[1:])


def assert_same_costs(original: cnnir.Graph, imported: cnnir.Graph, flops: bool) -> None:
    if not analyzable(original):
        return
    a, b = cnnir.analyze(original), cnnir.analyze(imported)
    assert layer_costs(b) == layer_costs(a)
    assert (b.totals.params, b.totals.trainable_params, b.totals.macs) == (
        a.totals.params, a.totals.trainable_params, a.totals.macs)
    if flops:
        assert b.totals.flops == a.totals.flops


@pytest.mark.parametrize("case", REIMPORTED, ids=[c.name for c in REIMPORTED])
def test_ops_round_trip(tmp_path, case: Case) -> None:
    graph = trace(case)
    back = round_trip(tmp_path, graph)
    assert [v.type for v in back.inputs] == [v.type for v in graph.inputs]
    assert [v.type for v in back.outputs] == [v.type for v in graph.outputs]
    assert_same_costs(graph, back, flops=case.name not in FLOP_RULE_CHANGES)
    inputs = make_inputs(case)
    for got, want in zip(reference(back, inputs), reference(graph, inputs)):
        # float attributes (slopes, eps) are float32 in ONNX
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12)


def test_round_trip_keeps_weight_names_and_kinds(tmp_path) -> None:
    from op_helpers import bn_with_stats

    net = cnnir.nn.Sequential(cnnir.nn.Conv2d(3, 4, 3), bn_with_stats(4), cnnir.nn.PReLU(4),
                              cnnir.nn.Flatten(), cnnir.nn.Linear(16, 2))
    graph = cnnir.trace(net.eval(), ("N", 3, 4, 4))
    back = round_trip(tmp_path, graph)
    kinds = {name: v.const.kind for name, v in back.constants.items()}
    assert kinds == {name: v.const.kind for name, v in graph.constants.items()
                     if v.users and name != "1.num_batches_tracked"}
    assert [n.name for n in back.nodes] == [n.name for n in graph.nodes]
    assert [n.op for n in back.nodes] == [n.op for n in graph.nodes]


@pytest.mark.parametrize("name", [n for n in EXAMPLE_FILES if n != "vgg"])
def test_examples_round_trip_with_the_same_cost_report(tmp_path, name) -> None:
    model, specs = example_specs(name)
    graph = cnnir.trace(model, specs)
    back = round_trip(tmp_path, graph)
    assert_same_costs(graph, back, flops=name not in FLOP_RULE_CHANGES)


@pytest.mark.parametrize("name", ["cifar", "siamese", "deformable", "shufflenet"])
def test_examples_round_trip_with_the_same_outputs(tmp_path, name) -> None:
    model, specs = example_specs(name)
    graph = cnnir.trace(model, specs)
    back = round_trip(tmp_path, graph)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, *s[1:])) for s in specs]
    for got, want in zip(reference(back, xs), reference(graph, xs)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
