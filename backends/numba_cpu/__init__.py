"""The Numba CPU backend: ``cnnir.compile(graph, backend="numba")``.

Kernels are registered against OpDef objects in the ``lower_*`` modules. A compiled model
checks its inputs, binds symbolic dims on first use of each shape and keeps one execution
plan per input-shape combination.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnir.backends.numba_cpu import lower_conv, lower_loss, lower_misc  # noqa: F401
from cnnir.backends.numba_cpu.gemm import single_threaded_blas
from cnnir.backends.numba_cpu.plan import KERNELS, Program
from cnnir.errors import CnnirError
from cnnir.ir import Graph
from cnnir.ir.types import is_static

UNSUPPORTED: frozenset = frozenset()


class CompiledModel:
    """A graph compiled for the CPU: call it on numpy arrays (NCHW)."""

    def __init__(self, graph: Graph, dtype: str = "float32", seed: int = 0,
                 tune: bool | str = True) -> None:
        if np.dtype(dtype).kind != "f":
            raise CnnirError(f"dtype must be a float type, got {dtype!r}")
        self.graph = graph
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.tune = tune
        self._programs: dict[tuple, Program] = {}

    def _check(self, arrays: tuple[Any, ...]) -> list[np.ndarray]:
        inputs = self.graph.inputs
        if len(arrays) != len(inputs):
            raise CnnirError(f"{self.graph.name} takes {len(inputs)} input(s) "
                             f"({', '.join(v.name for v in inputs)}) but got {len(arrays)}")
        checked, env = [], {}
        for value, arr in zip(inputs, arrays):
            arr = np.asarray(arr)
            want = value.type
            expect_float = np.dtype(want.dtype).kind == "f"
            ok_dtype = arr.dtype == self.dtype if expect_float else arr.dtype.kind in "iu"
            if not ok_dtype:
                raise CnnirError(
                    f"input %{value.name} must be {self.dtype if expect_float else want.dtype}"
                    f" but got {arr.dtype}",
                    hint="cast explicitly, e.g. x.astype(np.float32); cnnir never casts inputs")
            if arr.ndim != want.rank or any(
                    (is_static(d) and d != s) or (not is_static(d) and env.setdefault(d, s) != s)
                    for d, s in zip(want.shape, arr.shape)):
                raise CnnirError(f"input %{value.name} must have shape "
                                 f"{list(want.shape)} but got {list(arr.shape)}")
            checked.append(arr)
        return checked

    def program(self, shapes: tuple[tuple[int, ...], ...]) -> Program:
        if shapes not in self._programs:
            with single_threaded_blas():
                self._programs[shapes] = Program(self.graph, list(shapes), self.dtype.name,
                                                 self.seed, self.tune)
        return self._programs[shapes]

    @property
    def planned_bytes(self) -> int | None:
        """Bytes of activation buffers of the most recently built plan (liveness-reused)."""
        if not self._programs:
            return None
        return next(reversed(self._programs.values())).buffer_bytes

    @property
    def choices(self) -> dict[str, str]:
        """The algorithm each node of the most recently built plan runs (by node name)."""
        if not self._programs:
            return {}
        return dict(next(reversed(self._programs.values())).builder.choices)

    def __call__(self, *arrays: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        checked = self._check(arrays)
        program = self.program(tuple(a.shape for a in checked))
        with single_threaded_blas():
            outs = program.run(checked)
        return outs[0] if len(outs) == 1 else tuple(outs)


def compile_graph(graph: Graph, dtype: str = "float32", seed: int = 0, optimize: bool = True,
                  tune: bool | str = True, **options: Any) -> CompiledModel:
    """Compile ``graph``; with ``optimize`` first apply the semantics-preserving inference
    pipeline (BN folding, conv+activation+residual fusion, ...), which the kernels exploit;
    with ``tune`` pick each convolution's algorithm by timing the candidates (``tune=False``:
    the first candidate; ``tune="winograd-f2x2-3x3"`` or another name from
    ``CompiledModel.choices``: that algorithm wherever it applies)."""
    if options:
        raise CnnirError(f"unknown numba backend options: {sorted(options)}")
    if optimize:
        from cnnir.passes.manager import DEFAULT_INFERENCE_PIPELINE, run_pipeline

        graph = run_pipeline(graph, DEFAULT_INFERENCE_PIPELINE, verify_each=False).graph
    model = CompiledModel(graph, dtype, seed, tune)
    if all(v.type.is_static for v in graph.inputs):
        model.program(tuple(tuple(v.type.shape) for v in graph.inputs))
    return model


__all__ = ["KERNELS", "UNSUPPORTED", "CompiledModel", "compile_graph"]
