"""The compiled execution plan: a schedule of steps over preallocated buffers.

Compilation binds the input shapes, infers every value's static type, assigns each value a
buffer by liveness (best-fit reuse of buffers freed after their last use), pre-packs weights,
and lowers each node to a step: a closure calling a kernel on fixed arrays. A call copies the
inputs in, runs the steps and copies the outputs out; the steady state allocates nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cnnir.errors import CnnirError, LoweringError
from cnnir.ir import Graph, Node, Value
from cnnir.ir.types import is_static
from cnnir.ops import OpDef
from cnnir.passes.memory import last_uses
from cnnir.passes.shape_inference import TypeMap, bind_types

Step = Callable[[], None]
TUNING_ROUNDS = 5
Lowering = Callable[["Builder", Node], Step | None]
KERNELS: dict[OpDef, Lowering] = {}


def lower(op: OpDef) -> Callable[[Lowering], Lowering]:
    """Register the lowering of ``op`` (keyed by the OpDef object)."""

    def register(fn: Lowering) -> Lowering:
        KERNELS[op] = fn
        return fn

    return register


def _is_float(dtype: str) -> bool:
    return np.dtype(dtype).kind == "f"


class Builder:
    """What a lowering sees: arrays for values and constants, scratch space, the dtype."""

    def __init__(self, graph: Graph, types: TypeMap, dtype: str, seed: int,
                 tune: bool | str = True) -> None:
        self.graph = graph
        self.types = types
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.arrays: dict[int, np.ndarray] = {}
        self.value_buffers: dict[int, np.ndarray] = {}
        self.buffers: list[np.ndarray] = []
        self._scratch: dict[tuple, np.ndarray] = {}
        self.packed: dict[Any, Any] = {}
        self.choices: dict[str, str] = {}
        self.tune = tune

    def value_dtype(self, value: Value) -> np.dtype:
        t = self.types[id(value)]
        return self.dtype if _is_float(t.dtype) else np.dtype(t.dtype)

    def array(self, value: Value | None) -> np.ndarray | None:
        if value is None:
            return None
        if id(value) not in self.arrays and value.is_constant:
            self.arrays[id(value)] = np.ascontiguousarray(
                value.const.array, dtype=self.value_dtype(value))
        return self.arrays[id(value)]

    def scratch(self, shape: tuple[int, ...], dtype: np.dtype | None = None,
                owner: int = 0) -> np.ndarray:
        """Working memory shared by every step that asks for the same shape (``owner``
        separates the buffers of concurrent worker threads)."""
        key = (tuple(shape), np.dtype(dtype or self.dtype).name, owner)
        if key not in self._scratch:
            self._scratch[key] = np.zeros(shape, dtype or self.dtype)
        return self._scratch[key]

    def choose(self, node: Node, candidates: dict[str, Step]) -> Step:
        """Per-op algorithm choice by measurement: run each candidate (after a warm-up that
        also compiles or loads its kernels) and keep the fastest; recorded in ``choices``.
        ``tune=False`` takes the first candidate; ``tune="<name>"`` takes that algorithm where
        it applies and the first candidate elsewhere."""
        if isinstance(self.tune, str):
            name = self.tune if self.tune in candidates else next(iter(candidates))
        elif len(candidates) == 1 or not self.tune:
            name = next(iter(candidates))
        else:
            for step in candidates.values():
                step()  # compiles or loads its kernels
            # interleaved rounds, best of each: robust to a machine whose speed drifts
            timings = {key: float("inf") for key in candidates}
            for _ in range(TUNING_ROUNDS):
                for key, step in candidates.items():
                    timings[key] = min(timings[key], _elapsed(step))
            name = min(timings, key=timings.get)
        self.choices[node.name] = name
        return candidates[name]

    def pack(self, key: Any, make: Callable[[], Any]) -> Any:
        """Pre-packed weights, made once per compile and shared between steps."""
        if key not in self.packed:
            self.packed[key] = make()
        return self.packed[key]


def _elapsed(step: Step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def plan_buffers(b: Builder) -> None:
    """Give every non-constant value an array; reuse freed buffers (best fit by bytes)."""
    graph = b.graph
    last = last_uses(graph)
    keep = {id(v) for v in graph.outputs} | {id(v) for v in graph.inputs}
    free: list[np.ndarray] = []

    def take(value: Value) -> None:
        t = b.types[id(value)]
        dtype = b.value_dtype(value)
        nbytes = max(1, t.numel * dtype.itemsize)
        fits = [i for i, buf in enumerate(free) if buf.nbytes >= nbytes]
        if fits:
            buf = free.pop(min(fits, key=lambda i: free[i].nbytes))
        else:
            buf = np.zeros(nbytes, np.uint8)
            b.buffers.append(buf)
        b.arrays[id(value)] = buf[:t.numel * dtype.itemsize].view(dtype).reshape(t.shape)
        b.value_buffers[id(value)] = buf

    for value in graph.inputs:
        take(value)
    for i, node in enumerate(graph.nodes):
        for value in node.outputs:
            take(value)
        for value in {id(v): v for v in (*node.inputs, *node.outputs) if v is not None}.values():
            if not value.is_constant and id(value) not in keep and last.get(id(value), i) == i:
                free.append(b.value_buffers[id(value)])


class Program:
    """One compiled plan for fixed input shapes."""

    def __init__(self, graph: Graph, shapes: list[tuple[int, ...]], dtype: str,
                 seed: int = 0, tune: bool | str = True) -> None:
        env = bind_env(graph, shapes)
        types = bind_types(graph, env)
        self.builder = b = Builder(graph, types, dtype, seed, tune)
        plan_buffers(b)
        self.steps: list[Step] = []
        self.schedule: list[tuple[Node, Step]] = []
        for node in graph.nodes:
            lowering = KERNELS.get(node.op)
            if lowering is None:
                raise LoweringError(f"{node.describe()}: the numba backend has no kernel for "
                                    f"{node.op.name}")
            try:
                step = lowering(b, node)
            except CnnirError as e:
                raise e.with_context(node.describe()) from e
            if step is not None:
                self.steps.append(step)
                self.schedule.append((node, step))
        self.inputs = [b.arrays[id(v)] for v in graph.inputs]
        self.outputs = [b.array(v) for v in graph.outputs]

    @property
    def buffer_bytes(self) -> int:
        return sum(buf.nbytes for buf in self.builder.buffers)

    def profile(self, repeat: int = 10) -> dict[str, float]:
        """Seconds per run spent in each op (with the algorithm chosen), summed over nodes."""
        totals: dict[str, float] = {}
        for _ in range(repeat):
            for node, step in self.schedule:
                key = self.builder.choices.get(node.name, node.op.name)
                totals[key] = totals.get(key, 0.0) + _elapsed(step) / repeat
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        for dst, src in zip(self.inputs, arrays):
            np.copyto(dst, src, casting="same_kind")
        for step in self.steps:
            step()
        return [out.copy() for out in self.outputs]


def bind_env(graph: Graph, shapes: list[tuple[int, ...]]) -> dict[str, int]:
    env: dict[str, int] = {}
    for value, shape in zip(graph.inputs, shapes):
        for dim, size in zip(value.type.shape, shape):
            if not is_static(dim):
                env.setdefault(dim, size)
    return env
