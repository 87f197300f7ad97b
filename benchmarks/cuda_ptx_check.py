"""Compile every CUDA kernel the simulator suite launches with numba's real CUDA compiler, to
PTX for sm_90, without a GPU: the simulator runs kernels as Python and accepts code the
compiler refuses (typing, ``min``/``max`` on floats, dynamic shared-array shapes).

    python benchmarks/cuda_ptx_check.py            # runs tests_cuda in the simulator, recording
                                                   # each launch's argument types, then compiles
Needs libnvvm (the CUDA toolkit's NVVM, e.g. from the ``nvidia-cuda-nvcc`` wheels); no driver.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

RECORDER = '''
import atexit, inspect, json, os, numpy as np
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
def _variant(fn):
    # a factory-made kernel: the cnnir device functions its closure holds, by free variable
    cells = zip(fn.__code__.co_freevars, fn.__closure__ or ())
    picked = {}
    for name, cell in cells:
        f = getattr(cell.cell_contents, "fn", cell.cell_contents)
        if inspect.isfunction(f) and f.__module__.startswith("cnnir"):
            picked[name] = f.__name__
    return json.dumps(picked, sort_keys=True)
def _recording(self, *args):
    if not self._device:
        key = (self.fn.__module__, self.fn.__name__, _variant(self.fn))
        _seen.setdefault(key, set()).add(json.dumps([_spec(a) for a in args]))
    return _call(self, *args)
_k.FakeCUDAKernel.__call__ = _recording
@atexit.register
def _dump():
    with open(os.environ["CNNIR_PTX_RECORD"], "w") as f:
        json.dump([[m, n, v, sorted(s)] for (m, n, v), s in _seen.items()], f)
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


def kernels_named(module, name: str, variant: dict, dtype: np.dtype) -> list:
    """The kernel a launch named ``module.name`` ran: the module-level kernel, or one a factory
    specializes per dtype (shared and local arrays need their type at compile time), remade
    with the device functions the recorded closure held (``variant``, by parameter name)."""
    kernel = getattr(module, name, None)
    if kernel is not None:
        return [kernel]
    from cnnir.backends.numba_cuda import conv, linear

    factories = {"cnnir.backends.numba_cuda.linear.gemm": linear.tiled_gemm,
                 "cnnir.backends.numba_cuda.conv.depthwise_stencil": conv.depthwise_stencil_kernel}
    make = factories.get(f"{module.__name__}.{name}")
    if make is None:
        return []
    params = inspect.signature(make).parameters
    helpers = {k: getattr(conv, v, None) or getattr(linear, v) for k, v in variant.items()
               if k in params}
    return [make(dtype, **helpers)]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "launches.json"
        (Path(tmp) / "sitecustomize.py").write_text(RECORDER)
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", CNNIR_PTX_RECORD=str(record),
                   PYTHONPATH=os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")])))
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "tests_cuda"],
                               cwd=ROOT, env=env, check=False)
        if tests.returncode:  # the launches of a failing suite would be an incomplete record
            return tests.returncode
        launches = json.loads(record.read_text())
    import importlib

    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
    import types as pytypes

    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    # device functions ask the current device for its compute capability: there is none
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=(9, 0))
    failures, unreached = 0, []
    for module, name, variant, signatures in sorted(launches):
        for signature in signatures:
            args = tuple(numba_type(s) for s in json.loads(signature))
            kernels = kernels_named(importlib.import_module(module), name, json.loads(variant),
                                    np.dtype(args[0].dtype.name))
            if not kernels:
                unreached.append(f"{module}.{name}")
            for kernel in kernels:
                try:
                    cuda.compile_ptx(kernel.py_func, args, cc=(9, 0))
                except Exception as e:  # noqa: BLE001 - report every failure, then fail
                    failures += 1
                    print(f"FAIL {module}.{name}{args}: {str(e).splitlines()[0][:300]}")
    total = sum(len(s) for *_, s in launches)
    print(f"{len(launches)} kernels, {total} signatures compiled to PTX, {failures} failed; "
          f"not reachable by name (unchecked): {', '.join(unreached) or 'none'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
