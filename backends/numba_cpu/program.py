"""The compiled execution plan of the CPU backend: a schedule of steps over numpy buffers.

Compilation binds the input shapes, infers every value's static type, places every value in
a buffer of the shared memory plan (``cnnir.passes.memory.plan_buffers``), and lowers each
node to a step: a closure calling a kernel on fixed arrays. Parameters and buffers come from
the ``ProgramState`` by reference, packed weights are its derived forms. A call copies the
inputs in, runs the steps and copies the outputs out; the steady state allocates nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from cnnir.backend import KernelTable
from cnnir.backends.lowering import HOST_MEMORY, Builder, ProgramState, Step, lower_nodes
from cnnir.backends.numba_cpu import tuning
from cnnir.backends.numba_cpu.blas import stop_blas_workers
from cnnir.backends.numba_cpu.kernels import activation as ak
from cnnir.backends.numba_cpu.kernels.jit import PARALLEL_MIN_ELEMENTS
from cnnir.backends.numba_cpu.layout import blocked_values
from cnnir.ir import Graph, Node, Value
from cnnir.passes.shape_inference import bind_types

KERNELS = KernelTable("numba")
Lowering = Callable[[Builder, Node], Step | None]


def lower(op) -> Callable[[Lowering], Lowering]:
    """Register the lowering of ``op`` (keyed by the OpDef object)."""
    return KERNELS.register(op)


def unary(b: Builder, node: Node) -> tuple[np.ndarray, np.ndarray]:
    """The input and output arrays of a one-input op."""
    return b.array(node.inputs[0]), b.array(node.output)


def elapsed(step: Step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


class CpuBuilder(Builder):
    """The builder on numpy arrays, tuning by the CPU's clock; its choices are remembered
    on disk (``tuning``)."""

    memory = HOST_MEMORY

    def __init__(self, *args, layout: str = "auto", **kwargs) -> None:
        self.layout = layout
        super().__init__(*args, **kwargs)

    def elapsed(self, step: Step) -> float:
        return elapsed(step)

    def blocked_values(self) -> dict[int, tuple[int, ...]]:
        return blocked_values(self, self.layout)

    def late_reads(self) -> dict[int, int]:
        """A convolution fused with the node that alone reads it (a depthwise conv, a max
        pool: ``lower_conv.fuse_pair``) runs at the reader's step: its input lives until
        then."""
        from cnnir.backends.numba_cpu.lower_conv import fused_reader

        position = {id(node): i for i, node in enumerate(self.graph.nodes)}
        return {id(node.inputs[0]): position[id(reader)] for node in self.graph.nodes
                if (reader := fused_reader(self, node)) is not None}

    def view_outputs(self) -> dict[int, Value]:
        """The outputs of ``OpDef.reshapes`` ops on computed values: views of their memory."""
        views: dict[int, Value] = {}
        for node in self.graph.nodes:
            source = node.inputs[0] if node.inputs else None
            if (node.op.reshapes and source is not None and not source.is_constant
                    and id(source) not in self.aliases and id(node.output) not in self.aliases):
                views[id(node.output)] = views.get(id(source), source)
        return views

    def recall(self, node: Node) -> str | None:
        remembered = tuning.cache()
        return None if remembered is None else remembered.get(self.signature(node))

    def remember(self, node: Node, name: str) -> None:
        remembered = tuning.cache()
        if remembered is not None:
            remembered.put(self.signature(node), name)


class Program:
    """One compiled plan for fixed input shapes, reading its weights from ``state``."""

    def __init__(self, graph: Graph, env: dict[str, int], state: ProgramState, seed: int = 0,
                 tune: bool | str = True, in_place: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 layout: str = "auto") -> None:
        self.builder = b = CpuBuilder(graph, bind_types(graph, env), state, seed, tune, in_place,
                                      layout=layout)
        self.schedule = lower_nodes(b, KERNELS, progress)
        self.steps = [step for _, step in self.schedule]
        self.inputs = [b.array(v) for v in graph.inputs]
        self.outputs = [b.array(v) for v in graph.outputs]
        self.copied = [id(v) not in b.aliases for v in graph.outputs]  # else a state array
        self.ready = ready_after(graph, self.schedule)

    @property
    def buffer_bytes(self) -> int:
        return self.builder.plan.total_bytes

    def profile(self, arrays: list[np.ndarray], repeat: int = 10) -> dict[str, float]:
        """Seconds per run on ``arrays`` spent in each op (with the algorithm chosen), summed
        over nodes (the inputs are copied in before every run: later values reuse their
        memory)."""
        totals: dict[str, float] = {}
        for _ in range(repeat):
            self.copy_in(arrays)
            for node, step in self.schedule:
                key = self.builder.choices.get(node.name, node.op.name)
                totals[key] = totals.get(key, 0.0) + elapsed(step) / repeat
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def copy_in(self, arrays: list[np.ndarray]) -> None:
        for dst, src in zip(self.inputs, arrays):
            copy(src, dst)

    def run(self, arrays: list[np.ndarray],
            on_ready: Callable[[int, np.ndarray], None] | None = None) -> list[np.ndarray]:
        """The outputs on ``arrays``; ``on_ready(k, value)`` is called as soon as output k is
        final, while later steps are still to run (data-parallel training sends gradients
        then)."""
        stop_blas_workers()
        self.copy_in(arrays)
        if on_ready is None:
            for step in self.steps:
                step()
        else:
            for k in self.ready[0]:
                on_ready(k, self.outputs[k])
            for step, outputs in zip(self.steps, self.ready[1:]):
                step()
                for k in outputs:
                    on_ready(k, self.outputs[k])
        return [copy(out, np.empty_like(out)) if copied else out
                for out, copied in zip(self.outputs, self.copied)]


def copy(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``dst[...] = src`` (casting "same_kind"): large contiguous arrays of one dtype by both
    threads, each the part it reads in the next step (``kernels.activation.copy``)."""
    if (src.size >= PARALLEL_MIN_ELEMENTS and src.dtype == dst.dtype
            and src.flags.c_contiguous and dst.flags.c_contiguous):
        ak.copy(src.reshape(-1), dst.reshape(-1))
    else:
        np.copyto(dst, src, casting="same_kind")
    return dst


def ready_after(graph: Graph, schedule: list[tuple[Node, Step]]) -> list[list[int]]:
    """Per step (after an entry for "before the first"), the outputs it makes final: the
    last step among an output's producer and, through nodes that lowered to no step (views of
    their inputs), their inputs' producers."""
    position = {id(node): i for i, (node, _) in enumerate(schedule)}

    def last_step(value: Value | None) -> int:
        node = None if value is None else value.producer
        if node is None:
            return -1
        if id(node) in position:
            return position[id(node)]
        return max((last_step(v) for v in node.inputs), default=-1)

    ready: list[list[int]] = [[] for _ in range(len(schedule) + 1)]
    for k, value in enumerate(graph.outputs):
        ready[last_step(value) + 1].append(k)
    return ready
