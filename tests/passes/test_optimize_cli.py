"""`cnnir optimize` and `cnnir analyze --passes`: costs before/after, options, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnir.cli import main
from cnnir.passes import manager

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_optimize_json_reports_before_after_and_difference(capsys):
    code, out, _ = run_cli(capsys, "optimize", f"{EXAMPLES}/resnet.py:resnet18", "--passes",
                           "fuse-conv-bn,eliminate-dead-code", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["passes"] == ["fuse-conv-bn", "eliminate-dead-code"] and doc["modified"]
    assert doc["before"]["params"] == 11_689_512
    assert doc["difference"]["params"] == -4_800 and doc["difference"]["macs"] == 0
    assert all(type(v) is int for part in ("before", "after", "difference")
               for v in doc[part].values())
    assert doc["reports"][0]["name"] == "fuse-conv-bn" and len(doc["reports"][0]["folded"]) == 20


def test_optimize_table_with_O_and_options(capsys):
    code, out, _ = run_cli(capsys, "optimize", f"{EXAMPLES}/inception.py:googlenet", "-O",
                           "--passes", "stack-3x3", "--option", "init=kaiming",
                           "--option", "stride-position=last")
    assert code == 0
    assert "fuse-conv-bn: folded 57 batch_norm layer(s)" in out
    assert "conv1.conv: 7x7 -> 3x3 -> 3x3 -> 3x3/2 (m=3)" in out
    assert "MACs" in out and "difference" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_analyze_with_passes(capsys):
    code, out, _ = run_cli(capsys, "analyze", f"{EXAMPLES}/cifar.py", "--passes",
                           "fuse-conv-bn", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert not any(layer["op"] == "batch_norm" for layer in doc["layers"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--passes", "fuse-everything"], "unknown pass 'fuse-everything'"),
    (["--passes", "fuse-conv-bn", "--option", "widht=3"], "option(s) ['widht']"),
    ([], "needs passes"),
])
def test_optimize_errors(capsys, argv, message):
    code, _, err = run_cli(capsys, "optimize", f"{EXAMPLES}/cifar.py", *argv)
    assert code == 1 and message in err


def test_export_that_is_unavailable_is_a_clear_error(capsys, monkeypatch, tmp_path):
    import cnnir.api

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'cnnir.backends.onnx_export'")

    monkeypatch.setattr(cnnir.api, "export_onnx", missing)
    code, _, err = run_cli(capsys, "optimize", f"{EXAMPLES}/cifar.py", "-O", "-o",
                           str(tmp_path / "m.onnx"))
    assert code == 1 and "ONNX export is unavailable" in err


def test_O_is_the_default_inference_pipeline():
    assert manager.DEFAULT_INFERENCE_PIPELINE[-1] == "eliminate-dead-code"
