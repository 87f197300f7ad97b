"""The pass manager: registry, options, copy-on-run, verification after each pass, errors."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import build, conv_bn_graph

from cnnir import ops
from cnnir.api import run_passes
from cnnir.errors import PassError
from cnnir.ir import ConstantData, TensorType
from cnnir.ir.clone import clone_graph
from cnnir.passes import manager
from cnnir.passes.manager import (
    DEFAULT_INFERENCE_PIPELINE,
    PASS_MODULES,
    Pass,
    PassManager,
    PassResult,
    get_pass,
    run_pipeline,
    semantics_preserving,
)


def test_every_registered_pass_loads_with_its_kebab_case_name():
    for name in PASS_MODULES:
        p = get_pass(name)
        assert p.name == name and name == name.lower() and "_" not in name
        assert p.run.__doc__, f"{name} has no docstring"


def test_only_the_reparameterizing_passes_change_semantics():
    changing = {p.name for p in manager.all_passes() if not p.preserves_semantics}
    assert changing == {"stack-3x3", "depthwise-separable"}
    assert set(DEFAULT_INFERENCE_PIPELINE) <= set(semantics_preserving())
    assert "linear-to-conv1x1" in semantics_preserving()
    assert not changing & set(semantics_preserving())


def test_unknown_pass_names_the_choices():
    with pytest.raises(PassError, match="(?s)unknown pass .fuse-everything.*fuse-conv-bn"):
        run_pipeline(conv_bn_graph(), ["fuse-everything"])


def test_the_input_graph_is_never_mutated():
    g = conv_bn_graph()
    text = str(g)
    result = run_passes(g, DEFAULT_INFERENCE_PIPELINE)
    assert result.modified and str(g) == text
    assert not any(n.op is ops.batch_norm for n in result.graph.nodes)
    assert any(n.op is ops.batch_norm for n in g.nodes)


def test_clone_prints_the_same_and_shares_no_structure():
    g = build("resnet.py", "resnet18", (1, 3, 32, 32))
    copy = clone_graph(g)
    assert str(copy) == str(g)
    originals = {id(v) for n in g.nodes for v in (*n.inputs, *n.outputs) if v is not None}
    copies = {id(v) for n in copy.nodes for v in (*n.inputs, *n.outputs) if v is not None}
    assert not originals & copies
    assert copy.constants["conv1.weight"].const is g.constants["conv1.weight"].const


def test_options_go_to_the_passes_that_declare_them():
    g = conv_bn_graph()
    result = run_pipeline(g, ["eliminate-dead-code"], prune_constants=True)
    assert result.report["passes"][0]["name"] == "eliminate-dead-code"
    with pytest.raises(PassError, match=r"option\(s\) \['widht'\]"):
        run_pipeline(g, ["stack-3x3"], widht=3)
    assert get_pass("stack-3x3").options[:2] == ("width", "stride_position")


def _install(monkeypatch, name: str, fn) -> None:
    monkeypatch.setitem(PASS_MODULES, name, "unused")
    monkeypatch.setitem(manager._LOADED, name, Pass(name, fn, preserves_semantics=True))


def test_a_pass_that_breaks_the_graph_is_named_with_the_passes_before_it(monkeypatch):
    def corrupt(graph):
        node = graph.nodes[0]
        node.outputs[0].type = TensorType((9, 9), node.outputs[0].type.dtype)
        return PassResult(graph, True)

    _install(monkeypatch, "corrupt-types", corrupt)
    with pytest.raises(PassError) as err:
        run_pipeline(conv_bn_graph(), ["remove-identity", "fuse-conv-bn", "corrupt-types"])
    msg = str(err.value)
    assert "pass 'corrupt-types' left an invalid graph after the passes " \
           "['remove-identity', 'fuse-conv-bn']" in msg
    assert "declares outputs" in msg
    run_pipeline(conv_bn_graph(), ["corrupt-types"], verify_each=False)  # debug checks off


def test_a_crashing_pass_is_a_pass_error(monkeypatch):
    def crash(graph):
        raise KeyError("boom")

    _install(monkeypatch, "crash", crash)
    with pytest.raises(PassError, match="pass 'crash' crashed \\(the first pass\\): KeyError"):
        run_pipeline(conv_bn_graph(), ["crash"])


def test_fixpoint_reruns_until_nothing_changes(monkeypatch):
    calls = []

    def countdown(graph):
        calls.append(1)
        return PassResult(graph, len(calls) < 3)

    _install(monkeypatch, "countdown", countdown)
    result = PassManager(["countdown"], fixpoint=True).run(conv_bn_graph())
    assert len(calls) == 3 and result.modified
    assert [r["modified"] for r in result.report["passes"]] == [True, True, False]


def test_dead_code_option_prunes_parameters():
    g = conv_bn_graph()
    extra = ConstantData(TensorType((3,), "float64"), "parameter", array=np.zeros(3))
    g.add_constant("unused.weight", extra)
    kept = run_pipeline(g, ["eliminate-dead-code"]).graph
    pruned = run_pipeline(g, ["eliminate-dead-code"], prune_constants=True).graph
    assert "unused.weight" in kept.constants and "unused.weight" not in pruned.constants
