"""The numba.cuda backend: ``cnnir.compile(graph, backend="cuda")``.

It implements the backend contract of ``cnnir.backend`` on the shared lowering of
``cnnir.backends.lowering``: ``KERNELS`` (lowerings registered against OpDefs in one module
per op family), ``UNSUPPORTED`` (the ops without a kernel, with the reason; each refused by name),
``check_available`` and ``compile_graph``. A ``CompiledModel`` takes numpy arrays (one copy in,
one copy out) or device arrays (numba device arrays, or anything with
``__cuda_array_interface__``: CuPy, PyTorch CUDA tensors), whose outputs stay on the device.
Weights are uploaded once, into the model's ``ProgramState``.

Without a usable GPU, ``check_available`` raises ``BackendUnavailable`` with the ways forward
(a GPU machine, the CUDA simulator, the CPU backend) instead of a numba traceback. The
simulator (``NUMBA_ENABLE_CUDASIM=1`` before numba is imported) runs every kernel in Python:
``tests_cuda/`` runs there in CI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from cnnir.backend import bind_input_shapes, check_call
from cnnir.backends.lowering import ProgramState
from cnnir.backends.numba_cuda import (  # noqa: F401  (lowerings register on import)
    backward,
    conv,
    elementwise,
    linear,
    loss,
    loss_grad,
    norm,
    pool,
    tensor,
)
from cnnir.backends.numba_cuda.runtime import (
    CUDA_MEMORY,
    KERNELS,
    Program,
    as_device_array,
    cuda,
    is_device_array,
)
from cnnir.errors import BackendUnavailable, CnnirError, LoweringError
from cnnir.ir import Graph

# Ops without a CUDA kernel, each with the reason: compiling a graph with one is a
# LoweringError naming it. Written out, not derived, so that a new op without a CUDA kernel
# fails tests_cuda's registry test until it gets a kernel or a reason here.
UNSUPPORTED: dict = {}


def check_available() -> None:
    """Raise BackendUnavailable unless numba.cuda sees a GPU (or the simulator)."""
    if not cuda.is_available():
        raise BackendUnavailable(
            "the cuda backend found no CUDA GPU (numba.cuda.is_available() is False)",
            hint="run on a machine with an NVIDIA GPU and driver; to run the kernels in numba's "
                 "CUDA simulator set NUMBA_ENABLE_CUDASIM=1 before importing cnnir (slow, for "
                 "tests); backend='numba' runs on the CPU")


class CompiledModel:
    """A graph compiled for the GPU (see the module docstring)."""

    def __init__(self, graph: Graph, dtype: str = "float32", seed: int = 0,
                 tune: bool | str = False, state: ProgramState | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        if np.dtype(dtype).kind != "f":
            raise CnnirError(f"dtype must be a float type, got {dtype!r}")
        self.graph = graph
        self.dtype = np.dtype(dtype)
        self.seed, self.tune, self.progress = seed, tune, progress
        self.state = state if state is not None else ProgramState(self.dtype, CUDA_MEMORY,
                                                                  snapshot=True)
        self._programs: dict[tuple, Program] = {}
        self._lock = threading.Lock()

    def _check(self, arrays: tuple[Any, ...]) -> list[Any]:
        """The contract shared by every backend (``cnnir.backend.check_call``); integer host
        arrays are converted to the input's integer dtype, device arrays must match it."""
        arrays, _ = check_call(self.graph, arrays, self.dtype,
                               is_array=lambda a: isinstance(a, np.ndarray) or is_device_array(a))
        checked = []
        for value, a in zip(self.graph.inputs, arrays):
            want = self.dtype if np.dtype(value.type.dtype).kind == "f" else \
                np.dtype(value.type.dtype)
            if isinstance(a, np.ndarray):
                checked.append(a if a.dtype == want else a.astype(want))
                continue
            if np.dtype(a.dtype) != want:
                raise LoweringError(f"input '{value.name}' must be {want} but got {a.dtype}",
                                    hint="device arrays are never cast: convert it first")
            checked.append(as_device_array(a))
        return checked

    def program(self, shapes: tuple[tuple[int, ...], ...]) -> Program:
        if shapes not in self._programs:
            env = bind_input_shapes(self.graph.inputs, shapes)
            self._programs[shapes] = Program(self.graph, env, self.state, self.seed, self.tune,
                                             self.progress)
        return self._programs[shapes]

    def _latest(self) -> Program | None:
        return next(reversed(self._programs.values()), None)

    @property
    def planned_bytes(self) -> int | None:
        latest = self._latest()
        return None if latest is None else latest.buffer_bytes

    @property
    def choices(self) -> dict[str, str]:
        latest = self._latest()
        return {} if latest is None else dict(latest.builder.choices)

    def __call__(self, *arrays: Any) -> Any:
        checked = self._check(arrays)
        on_device = any(not isinstance(a, np.ndarray) for a in checked)
        with self._lock:
            program = self.program(tuple(tuple(a.shape) for a in checked))
            self.state.refresh()
            outs = program.run(checked, on_device)
        return outs[0] if len(outs) == 1 else tuple(outs)


def compile_graph(graph: Graph, dtype: str = "float32", seed: int = 0, optimize: bool = True,
                  tune: bool | str = False, state: ProgramState | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  **options: Any) -> CompiledModel:
    """Compile ``graph`` for the GPU; ``optimize`` first applies the inference pipeline
    (BatchNorm folding, conv + activation + residual fusion: fewer launches);
    ``progress(done, total)`` hears of each node as it is lowered."""
    if options:
        raise CnnirError(f"unknown cuda backend options: {sorted(options)}")
    if optimize:
        from cnnir.api import run_passes
        from cnnir.passes.manager import DEFAULT_INFERENCE_PIPELINE

        graph = run_passes(graph, DEFAULT_INFERENCE_PIPELINE, verify_each=False).graph
    KERNELS.check_supports(graph)
    model = CompiledModel(graph, dtype, seed, tune, state, progress)
    if all(v.type.is_static for v in graph.inputs):
        model.program(tuple(tuple(v.type.shape) for v in graph.inputs))
    return model


__all__ = ["KERNELS", "UNSUPPORTED", "BackendUnavailable", "CompiledModel", "LoweringError",
           "check_available", "compile_graph"]
