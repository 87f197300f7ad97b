"""Activation memory of a schedule, and the buffer plan that backends allocate from.

Running the nodes in graph order, a node's outputs are allocated before it runs, and a value
is freed right after its last user has run (graph outputs live to the end). The peak is the
largest total of live activation bytes at any node, inputs and outputs of that node included.
Constants (weights) are not activations and are not counted.

``plan_buffers`` turns the same liveness into storage, for any device: each value gets a
``Placement`` (a buffer, its size and its layout in that buffer), buffers freed after a last
use are reused best-fit by later values. The plan is data only; a backend allocates the
buffers (numpy arrays, device arrays) and views them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cnnir.ir import Graph, Value
from cnnir.passes.shape_inference import TypeMap

CONTIGUOUS = "contiguous"  # the value's type shape, row-major (NCHW for images)


def nbytes(types: TypeMap, value) -> int:
    t = types[id(value)]
    return t.numel * t.itemsize


def last_uses(graph: Graph) -> dict[int, int]:
    """``id(value) -> index of the last node that reads it``."""
    last: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v is not None and not v.is_constant:
                last[id(v)] = i
    return last


def released_after(graph: Graph, keep: set[int]) -> list[list[Value]]:
    """Per node index: the values that die once it has run (its inputs read for the last
    time, its outputs nobody reads), each listed once; values in ``keep`` never die."""
    last = last_uses(graph)
    released = []
    for i, node in enumerate(graph.nodes):
        dead = {id(v): v for v in (*node.inputs, *node.outputs)
                if v is not None and not v.is_constant and id(v) not in keep
                and last.get(id(v), i) == i}
        released.append(list(dead.values()))
    return released


def peak_activation_bytes(graph: Graph, types: TypeMap) -> int:
    live = sum(nbytes(types, v) for v in graph.inputs)
    peak = live
    dying = released_after(graph, {id(v) for v in graph.outputs})
    for node, dead in zip(graph.nodes, dying):
        live += sum(nbytes(types, v) for v in node.outputs)
        peak = max(peak, live)
        live -= sum(nbytes(types, v) for v in dead)
    return peak


@dataclass(frozen=True)
class Placement:
    """Where a value lives: ``nbytes`` from the start of buffer ``buffer``, in ``layout``."""

    buffer: int
    nbytes: int
    layout: str = CONTIGUOUS


@dataclass
class MemoryPlan:
    """Buffer sizes, and the placement of every non-constant value (``id(value)`` keys)."""

    buffer_bytes: list[int]
    placements: dict[int, Placement]

    @property
    def total_bytes(self) -> int:
        return sum(self.buffer_bytes)


def plan_buffers(graph: Graph, nbytes_of: Callable[[Value], int],
                 layout_of: Callable[[Value], str] = lambda value: CONTIGUOUS) -> MemoryPlan:
    """Place every input and node output; a buffer freed after a value's last use goes to
    the smallest later value it fits (best fit). Graph inputs and outputs keep their buffers
    for the whole run (inputs are written before it, outputs read after it)."""
    plan = MemoryPlan([], {})
    free: list[int] = []

    def place(value: Value) -> None:
        size = nbytes_of(value)
        fits = [b for b in free if plan.buffer_bytes[b] >= size]
        if fits:
            buffer = min(fits, key=lambda b: plan.buffer_bytes[b])
            free.remove(buffer)
        else:
            buffer = len(plan.buffer_bytes)
            plan.buffer_bytes.append(max(1, size))
        plan.placements[id(value)] = Placement(buffer, size, layout_of(value))

    for value in graph.inputs:
        place(value)
    keep = {id(v) for v in (*graph.inputs, *graph.outputs)}
    for node, dead in zip(graph.nodes, released_after(graph, keep)):
        for value in node.outputs:
            place(value)
        free.extend(plan.placements[id(v)].buffer for v in dead)
    return plan
