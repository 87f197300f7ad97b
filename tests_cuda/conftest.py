"""The CUDA backend's tests.

Without a GPU they run in numba's CUDA simulator, in their own process (``.ci/run`` does):
``NUMBA_ENABLE_CUDASIM=1 pytest tests_cuda`` (the variable must be set before numba is
imported). The simulator runs each CUDA thread as a Python thread, so the shapes are tiny
there, and the tests marked ``gpu`` (realistic shapes, whole networks) are deselected: they
run on a real GPU, ``pytest -m gpu tests_cuda`` (``benchmarks/gpu_check.sh``).
``tests/`` is put on ``sys.path`` for the shared op table.
"""

import os
import sys
from pathlib import Path

import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def pytest_configure(config: pytest.Config) -> None:
    if SIMULATOR:
        return
    from numba import cuda

    if not cuda.is_available():
        pytest.exit("tests_cuda needs a CUDA GPU, or numba's simulator: "
                    "NUMBA_ENABLE_CUDASIM=1 pytest tests_cuda", returncode=4)


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """In the simulator, the ``gpu`` tests (realistic shapes) are not collected."""
    if not SIMULATOR:
        return
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]
