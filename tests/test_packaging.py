"""Import hygiene: the core stays light, the mapped packages live under cnnir only."""

from __future__ import annotations

import importlib.util
import subprocess
import sys


def test_import_cnnir_loads_no_numba_or_onnx():
    code = ("import sys, cnnir, cnnir.nn.functional; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('numba', 'onnx', "
            "'onnxruntime', 'networkx', 'scipy')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/")
    assert out.stdout.strip() == "[]"


def test_frontend_and_backends_are_cnnir_subpackages_only():
    assert importlib.util.find_spec("cnnir.frontend") is not None
    assert importlib.util.find_spec("cnnir.backends") is not None
    out = subprocess.run(
        [sys.executable, "-c",
         "import importlib.util as u; print(u.find_spec('frontend'), u.find_spec('backends'))"],
        capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "None None"
