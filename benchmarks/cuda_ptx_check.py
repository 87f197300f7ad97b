"""Compile every CUDA kernel the simulator suite launches with numba's real CUDA compiler, to
PTX for sm_90, without a GPU: the simulator runs kernels as Python and accepts code the
compiler refuses (typing, ``min``/``max`` on floats, dynamic shared-array shapes).

    python benchmarks/cuda_ptx_check.py            # runs tests_cuda in the simulator, recording
                                                   # each launch's argument types, then compiles
Needs libnvvm (the CUDA toolkit's NVVM, e.g. from the ``nvidia-cuda-nvcc`` wheels); no driver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RECORDER = '''
import atexit, json, os, numpy as np
from numba.cuda.simulator import kernel as _k
_seen = {}
_call = _k.FakeCUDAKernel.__call__
def _spec(a):
    a = getattr(a, "_ary", a)
    if isinstance(a, np.ndarray):
        return ["array", a.dtype.name, a.ndim, bool(a.flags.c_contiguous)]
    if isinstance(a, (bool, np.bool_)):
        return ["bool"]
    if isinstance(a, (int, np.integer)):
        return ["int64"]
    if isinstance(a, (float, np.floating)):
        return ["float32" if isinstance(a, np.float32) else "float64"]
    if isinstance(a, tuple):
        return ["tuple", [_spec(x) for x in a]]
    return ["unknown", type(a).__name__]
def _recording(self, *args):
    if not self._device:
        key = (self.fn.__module__, self.fn.__name__)
        _seen.setdefault(key, set()).add(json.dumps([_spec(a) for a in args]))
    return _call(self, *args)
_k.FakeCUDAKernel.__call__ = _recording
@atexit.register
def _dump():
    with open(os.environ["CNNIR_PTX_RECORD"], "w") as f:
        json.dump([[m, n, sorted(s)] for (m, n), s in _seen.items()], f)
'''


def numba_type(spec):
    from numba import types

    kind = spec[0]
    if kind == "array":
        return types.Array(getattr(types, spec[1]), spec[2], "C" if spec[3] else "A")
    if kind == "tuple":
        return types.Tuple([numba_type(s) for s in spec[1]])
    return {"bool": types.boolean, "int64": types.int64, "float32": types.float32,
            "float64": types.float64}[kind]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "launches.json"
        (Path(tmp) / "sitecustomize.py").write_text(RECORDER)
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", CNNIR_PTX_RECORD=str(record),
                   PYTHONPATH=os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")])))
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "tests_cuda"], cwd=ROOT,
                       env=env, check=False)
        launches = json.loads(record.read_text())
    import importlib

    import numpy as np

    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
    import types as pytypes

    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    # device functions ask the current device for its compute capability: there is none
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=(9, 0))
    failures, unreached = 0, []
    for module, name, signatures in sorted(launches):
        kernel = getattr(importlib.import_module(module), name, None)
        if kernel is None:  # made by a factory (a specialized tile size): not at module level
            unreached.append(f"{module}.{name}")
            continue
        for signature in signatures:
            args = tuple(numba_type(s) for s in json.loads(signature))
            try:
                cuda.compile_ptx(kernel.py_func, args, cc=(9, 0))
            except Exception as e:  # noqa: BLE001 - report every failure, then fail
                failures += 1
                print(f"FAIL {module}.{name}{args}: {str(e).splitlines()[0][:300]}")
    total = sum(len(s) for _, _, s in launches)
    print(f"{len(launches)} kernels, {total} signatures compiled to PTX, {failures} failed; "
          f"not reachable by name (unchecked): {', '.join(unreached) or 'none'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
