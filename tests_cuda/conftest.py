"""The CUDA backend's tests in numba's CUDA simulator: run them in their own process,
``NUMBA_ENABLE_CUDASIM=1 pytest tests_cuda`` (``.ci/run`` does), since the variable must be
set before numba is imported. The simulator runs each CUDA thread as a Python thread, so the
shapes here are tiny. ``tests/`` is put on ``sys.path`` for the shared op table."""

import os
import sys
from pathlib import Path

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.exit("tests_cuda runs in numba's CUDA simulator: NUMBA_ENABLE_CUDASIM=1 pytest "
                "tests_cuda", returncode=4)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
