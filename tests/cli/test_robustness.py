"""What a new user types wrong on the command line, and the clear errors it gets (issue 13)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

from cnnir.cli import CompileProgress, main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONV = """
    from cnnir import nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    input_shape = {shape}
"""


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys, *argv: str) -> str:
    """The message of an argparse error (exit status 2)."""
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


def write(tmp_path: Path, body: str, name: str = "model.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"cnnir {version('cnnir')}"


# -- 1. empty inputs ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "analyze"])
@pytest.mark.parametrize("shape", ["0x3x8x8", "1x3x0x8", "0,3,8,8"])
def test_zero_sizes_on_the_command_line_are_refused(capsys, tmp_path, command, shape):
    path = write(tmp_path, CONV.format(shape=(1, 3, 8, 8)))
    err = usage_error(capsys, command, path, "--input-shape", shape)
    assert "bad shape" in err and "a size is 0" in err and "refuses empty inputs" in err


@pytest.mark.parametrize("command", ["run", "analyze", "export"])
def test_zero_batch_in_a_model_file_is_a_shape_error(capsys, tmp_path, command):
    path = write(tmp_path, CONV.format(shape=(0, 3, 8, 8)))
    extra = ["-o", str(tmp_path / "m.onnx")] if command == "export" else []
    code, _, err = run_cli(capsys, command, path, *extra)
    assert code == 1
    assert "ShapeError: input 'x' has shape [0, 3, 8, 8], size 0 on dim 0" in err
    assert "refuses empty inputs" in err and "PyTorch would return empty outputs" in err
    assert not (tmp_path / "m.onnx").exists()


# -- 2. input count ----------------------------------------------------------------------------
def test_too_many_or_too_few_input_shapes_name_the_forward_inputs(capsys, tmp_path):
    path = write(tmp_path, """
        from cnnir import nn
        class Pair(nn.Module):
            def forward(self, left, right, scale=1.0):
                return left + right
        model = Pair()
        input_shape = [(1, 4), (1, 4)]
    """)
    code, _, err = run_cli(capsys, "analyze", path, "--input-shape", "1x4")
    assert code == 1
    assert "Pair.forward takes 2 to 3 input(s) (left, right, scale) but 1 input shape(s)" in err
    code, _, err = run_cli(capsys, "analyze", path, *["--input-shape", "1x4"] * 4)
    assert code == 1 and "but 4 input shape(s) were given" in err
    assert "one --input-shape per input" in err and "TypeError" not in err


# -- 3. output folders -------------------------------------------------------------------------
def test_export_to_a_missing_directory(capsys, tmp_path):
    target = tmp_path / "nonexistent" / "dir" / "x.onnx"
    code, _, err = run_cli(capsys, "export", f"{EXAMPLES}/cifar.py", "-o", str(target))
    assert code == 1
    assert f"cannot write {target}: the directory {target.parent} does not exist" in err
    assert "FileNotFoundError" not in err


def test_optimize_to_a_missing_directory(capsys, tmp_path):
    target = tmp_path / "missing" / "x.onnx"
    code, _, err = run_cli(capsys, "optimize", f"{EXAMPLES}/cifar.py", "-O", "-o", str(target))
    assert code == 1 and f"the directory {target.parent} does not exist" in err


# -- 4. locations ------------------------------------------------------------------------------
LAMBDA_MODEL = """
    from cnnir import nn
    model = lambda: nn.Sequential(nn.Conv2d(3, 8, 3),
                                  nn.Conv2d(4, 8, 3))
    input_shape = (1, 3, 16, 16)
"""


def test_a_sequential_layer_error_points_at_the_model_file_line(capsys, tmp_path):
    path = write(tmp_path, LAMBDA_MODEL)
    code, _, err = run_cli(capsys, "analyze", path)
    assert code == 1
    assert "ShapeError: conv2d '1' (" in err and "model.py:4)" in err
    assert "test_robustness.py" not in err  # not the frame that called main()


def console_scripts() -> list[list[str]]:
    script = Path(sys.executable).with_name("cnnir")
    return [[sys.executable, "-m", "cnnir.cli"]] + ([[str(script)]] if script.exists() else [])


@pytest.mark.parametrize("command", console_scripts(), ids=lambda c: Path(c[-1]).name)
def test_locations_skip_the_console_script_and_runpy(tmp_path, command):
    path = write(tmp_path, LAMBDA_MODEL)
    done = subprocess.run([*command, "analyze", path], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 1
    assert "(model.py:4)" in done.stderr, done.stderr
    assert "bin/cnnir" not in done.stderr and "runpy" not in done.stderr


# -- 5. what a file can build ------------------------------------------------------------------
def test_unknown_name_lists_what_can_be_built(capsys, tmp_path):
    path = write(tmp_path, """
        from cnnir import nn
        from cnnir.nn import Conv2d

        class Net(nn.Module):
            def __init__(self, width=4):
                super().__init__()
                self.conv = nn.Conv2d(3, width, 3)

            def forward(self, x):
                return self.conv(x)

        def conv3x3(cin, cout):
            return nn.Conv2d(cin, cout, 3)

        def tiny(classes=10, *layers, **options):
            return Net()

        model = Net()
        helper_value = 3
        input_shape = (1, 3, 8, 8)
    """)
    code, _, err = run_cli(capsys, "analyze", path + ":nosuch")
    assert code == 1
    assert "defines no callable 'nosuch' (what it can build: Net, model, tiny)" in err
    code, _, err = run_cli(capsys, "analyze", f"{EXAMPLES}/resnet.py:nosuch")
    assert code == 1 and "resnet18" in err and "conv1x1" not in err and "conv3x3" not in err


# -- 6. shapes ---------------------------------------------------------------------------------
def test_a_list_of_ints_is_one_input_shape(capsys, tmp_path):
    path = write(tmp_path, CONV.format(shape=[2, 3, 8, 8]))
    code, out, _ = run_cli(capsys, "graph", path)
    assert code == 0 and "float32[2, 3, 8, 8]" in out


def test_commas_and_symbols_on_the_command_line(capsys, tmp_path):
    path = write(tmp_path, CONV.format(shape=(1, 3, 8, 8)))
    code, out, _ = run_cli(capsys, "graph", path, "--input-shape", "N,3,8,8")
    assert code == 0 and "float32[N, 3, 8, 8]" in out


@pytest.mark.parametrize("shape, why", [
    ((1, 3, 8.0, 8), "has a float 8.0 as a size"),
    ((1, True, 8, 8), "has a bool True as a size"),
    ((1, -3, 8, 8), "has a negative size -3"),
])
def test_bad_shapes_in_a_model_file(capsys, tmp_path, shape, why):
    path = write(tmp_path, CONV.format(shape=shape))
    code, _, err = run_cli(capsys, "analyze", path)
    assert code == 1 and "ShapeError: input shape" in err and why in err
    assert "1x3x224x224" in err and "(1, 3, 224, 224)" in err  # the accepted forms


@pytest.mark.parametrize("shape, why", [
    ("abc", "it has no size, only symbols"),
    ("1x3x8.5x8", "'8.5' is neither a whole number nor a symbol name"),
    ("1,-3,8,8", "'-3' is neither"),
])
def test_bad_shapes_on_the_command_line(capsys, tmp_path, shape, why):
    err = usage_error(capsys, "analyze", f"{EXAMPLES}/cifar.py", "--input-shape", shape)
    assert why in err and "1x3x224x224, Nx3x224x224" in err and "N,3,224,224" in err


# -- 8. numbers --------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["analyze", "--depth", "0"], "argument --depth: must be at least 1, got 0"),
    (["analyze", "--depth", "-1"], "argument --depth: must be at least 1, got -1"),
    (["analyze", "--depth", "two"], "argument --depth: expected a whole number, got 'two'"),
    (["run", "--repeat", "-3"], "argument --repeat: must be at least 0, got -3"),
])
def test_numeric_arguments_are_validated(capsys, argv, message):
    err = usage_error(capsys, argv[0], f"{EXAMPLES}/cifar.py", *argv[1:])
    assert message in err


# -- 9. file kinds -----------------------------------------------------------------------------
def test_only_py_and_onnx_files_are_models(capsys, tmp_path):
    marker = tmp_path / "ran"
    path = write(tmp_path, f"open({str(marker)!r}, 'w').close()\n", name="notmodel.txt")
    code, _, err = run_cli(capsys, "analyze", path)
    assert code == 1
    assert "notmodel.txt is neither a .py model file nor an .onnx file" in err
    assert not marker.exists()  # the text file was not run as Python


# -- 10. the dtype run reports -----------------------------------------------------------------
@pytest.mark.parametrize("argv, dtype", [
    (["--backend", "reference"], "float64"),
    (["--backend", "reference", "--dtype", "float32"], "float32"),
    (["--backend", "numba"], "float32"),
])
def test_run_prints_the_dtype_it_computes_in(capsys, tmp_path, argv, dtype):
    path = write(tmp_path, CONV.format(shape=(1, 3, 8, 8)))
    code, out, _ = run_cli(capsys, "run", path, "--repeat", "0", *argv)
    assert code == 0 and f"dtype: {dtype}" in out and "outputs: [1, 5]" in out


# -- 16. compile progress ----------------------------------------------------------------------
def test_progress_bar_shows_after_the_delay_only_when_enabled(capsys):
    bar = CompileProgress(True, after_s=0.0)
    for done in (1, 2, 3):
        bar(done, 3)
    assert (bar.bar.n, bar.bar.total) == (3, 3)
    bar.close()
    assert "compiling:" in capsys.readouterr().err
    quiet = CompileProgress(False, after_s=0.0)
    slow = CompileProgress(True, after_s=3600.0)
    for done in (1, 2, 3):
        quiet(done, 3)
        slow(done, 3)
    quiet.close()
    slow.close()
    assert capsys.readouterr().err == ""


def test_run_quiet_writes_nothing_to_stderr(capsys, tmp_path):
    path = write(tmp_path, CONV.format(shape=(1, 3, 8, 8)))
    code, out, err = run_cli(capsys, "run", path, "--repeat", "1", "--quiet")
    assert code == 0 and "latency over 1 runs" in out and err == ""
