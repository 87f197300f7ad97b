"""The command line: formats, model-file conventions and user-facing errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from cnnir.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

TOTAL_KEYS = {"params", "trainable_params", "buffers", "macs", "flops", "param_bytes",
              "activation_bytes"}
LAYER_KEYS = {"name", "op", "output_shapes", "params", "macs", "flops"}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_json_follows_schema(capsys):
    code, out, _ = run_cli(capsys, "analyze", f"{EXAMPLES}/resnet.py:resnet18", "--format",
                           "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["model"] == "resnet18"
    assert doc["inputs"] == [{"name": "x", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert TOTAL_KEYS <= set(doc["totals"])
    assert all(type(v) is int for v in doc["totals"].values())
    assert doc["totals"]["params"] == 11_689_512
    assert doc["totals"]["macs"] == 1_814_073_344
    for layer in doc["layers"]:
        assert LAYER_KEYS <= set(layer)
        assert all(type(layer[k]) is int for k in ("params", "macs", "flops"))
    assert sum(layer["macs"] for layer in doc["layers"]) == doc["totals"]["macs"]
    assert sum(layer["params"] for layer in doc["layers"]) == doc["totals"]["params"]


def test_table_fits_100_columns_and_names_blocks(capsys):
    code, out, _ = run_cli(capsys, "analyze", f"{EXAMPLES}/resnet.py:resnet50", "--depth", "2")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "layer1.0" in out and "25,557,032" in out and "4,089,184,256" in out
    assert "Bottleneck (" in out  # module rows carry their class


def test_csv_and_markdown(capsys):
    code, out, _ = run_cli(capsys, "analyze", f"{EXAMPLES}/cifar.py", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sum(int(r["macs"]) for r in rows) == 10_323_200
    code, out, _ = run_cli(capsys, "analyze", f"{EXAMPLES}/cifar.py", "--format", "markdown")
    assert code == 0 and out.startswith("| Layer |")


def test_input_shape_override_and_symbolic_batch(capsys):
    code, out, _ = run_cli(capsys, "analyze", f"{EXAMPLES}/cifar.py", "--input-shape",
                           "Nx3x32x32", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["per_sample"] is True
    assert doc["inputs"][0]["shape"] == ["N", 3, 32, 32]
    assert doc["totals"]["macs"] == 10_323_200


def test_graph_text_and_dot(capsys):
    code, out, _ = run_cli(capsys, "graph", f"{EXAMPLES}/cifar.py")
    assert code == 0 and "conv2d(" in out and "cifar.py:" in out
    code, out, _ = run_cli(capsys, "graph", f"{EXAMPLES}/cifar.py", "--format", "dot")
    assert code == 0 and out.startswith("digraph") and "->" in out


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "model.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_model_that_raises_at_import_is_a_user_code_error(capsys, tmp_path):
    path = write(tmp_path, """
        raise RuntimeError("boom in user code")
    """)
    code, _, err = run_cli(capsys, "analyze", path)
    assert code == 1
    assert "UserCodeError" in err and "boom in user code" in err and "model.py" in err


def test_file_without_a_network(capsys, tmp_path):
    path = write(tmp_path, """
        def helper():
            return 1
    """)
    code, _, err = run_cli(capsys, "analyze", path)
    assert code == 1 and "defines no network" in err and "helper" in err


def test_unknown_builder_and_missing_input_shape(capsys, tmp_path):
    path = write(tmp_path, """
        from cnnir import nn
        model = nn.Sequential(nn.ReLU())
    """)
    code, _, err = run_cli(capsys, "analyze", path + ":nope")
    assert code == 1 and "nope" in err
    code, _, err = run_cli(capsys, "analyze", path)
    assert code == 1 and "input_shape" in err


def test_shape_error_names_user_line(capsys, tmp_path):
    path = write(tmp_path, """
        from cnnir import nn
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(4, 8, 3))
        input_shape = (1, 3, 16, 16)
    """)
    code, _, err = run_cli(capsys, "analyze", path)
    assert code == 1
    assert "ShapeError: conv2d '1'" in err and "expects 4 input channels" in err


def test_console_script_runs_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-m", "cnnir.cli", "analyze",
                          f"{EXAMPLES}/cifar.py", "--format", "json"],
                         capture_output=True, text=True, check=True, cwd="/")
    assert json.loads(out.stdout)["totals"]["params"] > 0


def test_run_prints_shapes_latency_and_memory(capsys):
    code, out, _ = run_cli(capsys, "run", f"{EXAMPLES}/cifar.py", "--repeat", "3")
    assert code == 0
    assert "outputs: [1, 10]" in out and "latency over 3 runs" in out
    assert "MiB planned" in out


def test_run_on_the_reference_backend_with_several_inputs(capsys):
    code, out, _ = run_cli(capsys, "run", f"{EXAMPLES}/siamese.py:triplet", "--backend",
                           "reference", "--repeat", "1")
    assert code == 0 and out.count("[1, 64]") == 3
