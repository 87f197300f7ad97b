"""The Numba CPU backend: ``cnnir.compile(graph, backend="numba")``.

It implements the backend contract of ``cnnir.backend``: ``KERNELS`` (lowerings registered
against OpDefs in the ``lower_*`` modules, one per op family), ``UNSUPPORTED``,
``check_available`` and ``compile_graph``. A ``CompiledModel`` checks its inputs, binds
symbolic dims on first use of each shape and keeps one ``Program`` per input-shape
combination; all its programs read one ``ProgramState`` (parameters, buffers and the packed
forms derived from them). Calls are safe from several threads: each model runs one call at a
time, models running at once share nothing mutable, and BLAS's process-wide thread setting,
which the steps that call BLAS lower to one thread, is reference-counted
(``blas.single_threaded_blas``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from cnnir.backend import bind_input_shapes, check_call
from cnnir.backends.lowering import HOST_MEMORY, ProgramState
from cnnir.backends.numba_cpu import (  # noqa: F401  (lowerings register on import)
    lower_activation,
    lower_conv,
    lower_linear,
    lower_loss,
    lower_norm,
    lower_optim,
    lower_pool,
    lower_tensor,
    warm,
)
from cnnir.backends.numba_cpu.blas import single_threaded_blas
from cnnir.backends.numba_cpu.layout import check_layout
from cnnir.backends.numba_cpu.program import KERNELS, Program
from cnnir.errors import CnnirError, LoweringError
from cnnir.ir import Graph

UNSUPPORTED: frozenset = frozenset()

warm.start_if_cold()  # with an empty kernel cache, a second process starts compiling too

# Numba's "workqueue" threading layer (its fallback where neither OpenMP nor TBB loads) aborts
# the process when two threads launch parallel kernels at once: there, models take turns.
_TURNS = threading.Lock() if numba.threading_layer() == "workqueue" else contextlib.nullcontext()


def check_available() -> None:
    """Numba is a dependency of cnnir: this backend runs wherever cnnir installs."""


class CompiledModel:
    """A graph compiled for the CPU: call it on numpy arrays (NCHW).

    ``state`` holds the parameters and buffers it reads (by reference) and their packed
    forms; ``state.assign(name, array)`` changes one for the next call."""

    def __init__(self, graph: Graph, dtype: str = "float32", seed: int = 0,
                 tune: bool | str = True, state: ProgramState | None = None,
                 in_place: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 layout: str = "auto") -> None:
        if np.dtype(dtype).kind != "f":
            raise CnnirError(f"dtype must be a float type, got {dtype!r}")
        self.graph = graph
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.tune = tune
        self.in_place = in_place
        self.progress = progress
        self.layout = check_layout(layout)
        self.state = state if state is not None else ProgramState(self.dtype, HOST_MEMORY)
        if self.state.dtype != self.dtype:
            raise LoweringError(f"a {self.state.dtype} program state cannot serve a "
                                f"{self.dtype} model", hint="compile both in one dtype")
        self._programs: dict[tuple, Program] = {}
        self._lock = threading.Lock()
        self._checked: tuple | None = None  # the signature of the last call that passed
        # called with (k, value) as output k becomes final during a call (Program.run)
        self.on_output_ready: Callable[[int, np.ndarray], None] | None = None

    def _check(self, arrays: tuple[Any, ...]) -> list[np.ndarray]:
        return check_call(self.graph, arrays, self.dtype)[0]  # the contract of every backend

    def program(self, shapes: tuple[tuple[int, ...], ...]) -> Program:
        """The plan for these input shapes, built (and tuned) on first use."""
        if shapes not in self._programs:
            env = bind_input_shapes(self.graph.inputs, shapes)
            with single_threaded_blas():
                self._programs[shapes] = Program(self.graph, env, self.state, self.seed,
                                                 self.tune, self.in_place, self.progress,
                                                 self.layout)
        return self._programs[shapes]

    def reseed(self, seed: int) -> None:
        """Restart the random ops' generator (dropout masks) from ``seed``, in every plan."""
        self.seed = seed
        for program in self._programs.values():
            program.builder.rng = np.random.default_rng(seed)

    def _latest(self) -> Program | None:
        return next(reversed(self._programs.values()), None)

    @property
    def planned_bytes(self) -> int | None:
        """Bytes of activation buffers of the most recently built plan (liveness-reused)."""
        latest = self._latest()
        return None if latest is None else latest.buffer_bytes

    @property
    def choices(self) -> dict[str, str]:
        """The algorithm each node of the most recently built plan runs (by node name)."""
        latest = self._latest()
        return {} if latest is None else dict(latest.builder.choices)

    def __call__(self, *arrays: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        signature = _signature(arrays)
        repeat = signature is not None and signature == self._checked
        checked = list(arrays) if repeat else self._check(arrays)
        with self._lock, _TURNS:
            program = self.program(tuple(a.shape for a in checked))
            self.state.refresh()
            outs = program.run(checked, self.on_output_ready)
        self._checked = signature
        return outs[0] if len(outs) == 1 else tuple(outs)


def _signature(arrays: tuple[Any, ...]) -> tuple | None:
    """The shapes and dtypes of a call's arguments when they are all numpy arrays: a call like
    the last one that passed ``check_call`` passes it again, and skips it (a few µs)."""
    if all(type(a) is np.ndarray for a in arrays):
        return tuple((a.shape, a.dtype) for a in arrays)
    return None


def compile_graph(graph: Graph, dtype: str = "float32", seed: int = 0, optimize: bool = True,
                  tune: bool | str = True, state: ProgramState | None = None,
                  in_place: bool = False, progress: Callable[[int, int], None] | None = None,
                  layout: str = "auto", **options: Any) -> CompiledModel:
    """Compile ``graph``; with ``optimize`` first apply the semantics-preserving inference
    pipeline (BN folding, conv+activation+residual fusion, ...), which the kernels exploit;
    with ``tune`` pick each convolution's algorithm by timing the candidates (``tune=False``:
    the first candidate; ``tune="winograd-f2x2-3x3"`` or another name from
    ``CompiledModel.choices``: that algorithm wherever it applies). ``state`` shares the
    parameters and packed weights of another compiled model of the same network.

    The inference pipeline folds BatchNorm and constant subgraphs into new constants, which
    are snapshots of the parameters at compile time, so an optimized model snapshots every
    parameter (a later ``load_state_dict`` never reaches half of it); with
    ``optimize=False`` every parameter stays bound to ``state`` by reference.

    ``in_place`` lets update ops (an optimizer step, BatchNorm's running statistics) write
    the new values of parameters and buffers into the state's arrays, which the call then
    returns as those outputs (uncopied): the training step. Without it a graph stays a pure
    function of its inputs and constants. ``progress(done, total)`` hears of each node as
    it is lowered (its kernels compiled and tuned): the command line's progress bar.
    ``layout`` keeps runs of 1x1 and depthwise convolutions channel-blocked (``"nchwc"``),
    or not (``"nchw"``); ``"auto"`` blocks on the AVX2 path (``layout``'s docstring). The
    inputs and outputs are NCHW in every layout."""
    if options:
        raise CnnirError(f"unknown numba backend options: {sorted(options)}")
    if optimize:
        from cnnir.api import run_passes
        from cnnir.passes.manager import DEFAULT_INFERENCE_PIPELINE

        graph = run_passes(graph, DEFAULT_INFERENCE_PIPELINE, verify_each=False).graph
        if state is None:
            state = ProgramState(dtype, HOST_MEMORY, snapshot=True)
    model = CompiledModel(graph, dtype, seed, tune, state, in_place, progress, layout)
    if all(v.type.is_static for v in graph.inputs):
        model.program(tuple(tuple(v.type.shape) for v in graph.inputs))
    return model


__all__ = ["KERNELS", "UNSUPPORTED", "CompiledModel", "check_available", "compile_graph"]
