"""The backend contract (``cnnir.backend``): every backend implements it, covers every op or
says which it lacks, and an unavailable backend is a clear CnnirError, never a traceback."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnir
from cnnir import nn
from cnnir.backend import BACKENDS, Backend, CompiledGraph, KernelTable, get_backend
from cnnir.errors import LoweringError
from cnnir.ops import REGISTRY


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_module_implements_the_contract(name: str) -> None:
    module = importlib.import_module(BACKENDS[name])
    assert isinstance(module, Backend)
    assert isinstance(module.KERNELS, KernelTable)
    missing = {op for op in REGISTRY.values() if op not in module.KERNELS}
    assert missing == set(module.UNSUPPORTED), sorted(op.name for op in missing)


@pytest.mark.parametrize("name", ["numba", "reference"])
def test_compiled_graphs_report_plan_and_choices(name: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    run = cnnir.compile(model, (1, 3, 8, 8), backend=name)
    assert isinstance(run, CompiledGraph)
    y = run(np.ones((1, 3, 8, 8), np.float32 if name == "numba" else np.float64))
    assert y.shape == (1, 4, 8, 8)
    if name == "numba":
        assert run.planned_bytes >= 2 * 4 * 3 * 8 * 8  # its input and output at least
        assert set(run.choices.values()) <= {"im2col-microkernel", "direct-microkernel",
                                            "winograd-f2x2-3x3", "winograd-f4x4-3x3"}
    else:
        assert run.planned_bytes is None and run.choices == {}


def test_kernel_tables_refuse_a_second_registration() -> None:
    table = KernelTable("demo")
    table.register(cnnir.ops.relu)(lambda: None)
    with pytest.raises(ValueError, match="registers relu twice"):
        table.register(cnnir.ops.relu)(lambda: None)


def test_an_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(LoweringError, match="(?s)unknown backend 'tpu'.*'cuda', 'numba'"):
        get_backend("tpu")


def run_without_gpu(code: str, simulator: bool = False) -> subprocess.CompletedProcess:
    """``code`` in a fresh process that sees no GPU (or only numba's CUDA simulator)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env)


CUDA_COMPILE = ("import cnnir\nfrom cnnir import nn\n"
                "try:\n"
                "    cnnir.compile(nn.ReLU(), (1, 4), backend='cuda')\n"
                "except cnnir.CnnirError as e:\n"
                "    print(type(e).__name__); print(e)\n")


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    out = run_without_gpu(CUDA_COMPILE)
    assert out.returncode == 0, out.stderr
    kind, message = out.stdout.split("\n", 1)
    assert kind == "BackendUnavailable"
    assert "found no CUDA GPU" in message and "NUMBA_ENABLE_CUDASIM=1" in message
    assert "backend='numba'" in message


def test_cuda_in_the_simulator_runs_the_graph() -> None:
    """(Ops without a kernel are refused by name: tests_cuda/test_cuda_ops.py.)"""
    out = run_without_gpu("import numpy as np, cnnir\nfrom cnnir import nn\n"
                          "run = cnnir.compile(nn.ReLU(), (1, 4), backend='cuda')\n"
                          "print(run(np.array([[-1, 2, -3, 4]], np.float32)).tolist())\n",
                          simulator=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[0.0, 2.0, 0.0, 4.0]]"


def test_cli_run_on_cuda_without_a_gpu(tmp_path) -> None:
    model = tmp_path / "m.py"
    model.write_text("from cnnir import nn\nmodel = nn.ReLU()\ninput_shape = (1, 4)\n")
    out = run_without_gpu(f"from cnnir.cli import main\nraise SystemExit(main(['run', "
                          f"{str(model)!r}, '--backend', 'cuda']))")
    assert out.returncode == 1
    assert out.stderr.startswith("BackendUnavailable: the cuda backend found no CUDA GPU")
    assert "Traceback" not in out.stderr
