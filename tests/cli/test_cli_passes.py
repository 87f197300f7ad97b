"""`cnnir optimize` around passes that change the function or add work, and the pass catalogue
(`cnnir passes`, `cnnir optimize --list`, docs/passes.md, README)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_cli import EXAMPLES, run_cli

from cnnir.passes import manager

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def five_by_five(tmp_path) -> str:
    """3 -> 4 channels through a 5x5 (the only layer stack-3x3 rewrites), then a 3x3."""
    path = tmp_path / "five.py"
    path.write_text(textwrap.dedent("""
        from cnnir import nn

        def model():
            nn.manual_seed(0)  # the same weights each time the file is loaded
            return nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(),
                                 nn.Conv2d(4, 2, 3, padding=1))

        input_shape = (1, 3, 16, 16)
    """))
    return str(path)


def output_change_by_hand(model_file: str, options: dict) -> float:
    """The relative L2 change the warning must quote, recomputed here: the same seeded input
    (standard normal, seed 0), both graphs run by the float64 reference backend."""
    import cnnir
    from cnnir.frontend.model_file import load_model_file
    from cnnir.passes.manager import run_pipeline

    loaded = load_model_file(model_file, None)
    graph = cnnir.trace(loaded.module, loaded.inputs, training=False)
    after = run_pipeline(graph, ["stack-3x3"], **options).graph
    x = np.random.default_rng(0).standard_normal(graph.inputs[0].type.shape)
    want, got = (cnnir.compile(g, backend="reference", dtype="float64")(x)
                 for g in (graph, after))
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_a_function_changing_pass_warns_with_the_measured_change(capsys, five_by_five):
    code, out, err = run_cli(capsys, "optimize", five_by_five, "--passes", "stack-3x3")
    assert code == 0
    match = re.search(r"warning: stack-3x3 changed the network's function: the outputs moved "
                      r"by ([0-9.e+-]+) \(relative L2", err)
    assert match, err
    assert float(match.group(1)) == pytest.approx(output_change_by_hand(five_by_five, {}),
                                                  rel=2e-3)
    assert "Function: CHANGED by stack-3x3" in out
    code, out, err = run_cli(capsys, "optimize", five_by_five, "-O")
    assert code == 0 and "warning" not in err and "Function: preserved" in out


def test_an_exact_stack_with_exact_borders_measures_no_change(capsys, five_by_five):
    code, out, err = run_cli(capsys, "optimize", five_by_five, "--passes", "stack-3x3",
                             "--option", "width=27", "--option", "borders=exact",
                             "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["approximate"] == ["stack-3x3"] and doc["output_change"] < 1e-6
    assert doc["reports"][0]["layers"][0]["fit_error"] < 1e-6


def test_o_refuses_an_approximate_model_unless_allowed(capsys, five_by_five, tmp_path):
    target = tmp_path / "stacked.onnx"
    code, _, err = run_cli(capsys, "optimize", five_by_five, "--passes", "stack-3x3",
                           "-o", str(target))
    assert code == 1 and not target.exists()
    assert "CnnirError: refusing to write" in err and "--allow-approximate" in err
    assert "Traceback" not in err
    code, out, _ = run_cli(capsys, "optimize", five_by_five, "--passes", "stack-3x3",
                           "-o", str(target), "--allow-approximate")
    assert code == 0 and target.exists() and f"wrote {target}" in out


def test_depthwise_separable_is_flagged_too(capsys, tmp_path):
    path = tmp_path / "wide.py"
    path.write_text("from cnnir import nn\nmodel = lambda: nn.Conv2d(16, 16, 3, padding=1)\n"
                    "input_shape = (1, 16, 8, 8)\n")
    code, _, err = run_cli(capsys, "optimize", str(path), "--passes", "depthwise-separable",
                           "-o", str(tmp_path / "m.onnx"))
    assert code == 1 and "warning: depthwise-separable changed the network's function" in err


def test_linear_to_conv1x1_reports_and_warns_about_the_macs_it_adds(capsys):
    code, out, err = run_cli(capsys, "optimize", f"{EXAMPLES}/resnet.py:resnet18",
                             "--input-shape", "1x3x64x64", "--passes", "linear-to-conv1x1",
                             "--format", "json")
    assert code == 0
    doc = json.loads(out)
    (head,) = doc["reports"][0]["layers"]
    # 512 -> 1000 classifier: once before, at each of the 2x2 pixels before the pool after
    assert (head["macs_before"], head["macs_after"]) == (512_000, 4 * 512_000)
    assert doc["difference"]["macs"] == 3 * 512_000
    assert "warning: linear-to-conv1x1 adds MACs: the classifier fc" in err
    assert "512,000 -> 2,048,000" in err
    assert doc["approximate"] == []  # it keeps the function


@pytest.mark.parametrize("argv", [["passes"], ["optimize", "--list"]])
def test_the_catalogue_names_every_pass_and_flags_the_approximate_ones(capsys, argv):
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    blocks = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            name = line.split()[0]
            blocks[name] = ""
        blocks[name] += line + "\n"
    assert list(blocks) == list(manager.PASS_MODULES)
    for p in manager.all_passes():
        block = blocks[p.name]
        assert p.summary.split()[0] in block
        flag = "function: preserved" if p.preserves_semantics else "function: CHANGED"
        assert flag in block, block
        for option, default in p.defaults.items():
            assert f"{option}={default!r}" in " ".join(block.split())
    assert "function: CHANGED" in blocks["stack-3x3"]
    assert "function: CHANGED" in blocks["depthwise-separable"]


def test_optimize_without_a_model_says_so(capsys):
    code, _, err = run_cli(capsys, "optimize", "--passes", "stack-3x3")
    assert code == 1 and "needs a model" in err


def test_docs_and_readme_list_every_pass_as_the_catalogue_does():
    docs = (ROOT / "docs" / "passes.md").read_text()
    assert manager.format_catalogue(markdown=True) in docs
    readme = (ROOT / "README.md").read_text()
    for p in manager.all_passes():
        assert f"`{p.name}`" in readme
