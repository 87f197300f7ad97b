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


def live_bytes(graph: Graph, types: TypeMap) -> list[int]:
    """Per node, the activation bytes live while it runs: the graph's inputs and every value
    still to be read, with its outputs allocated and nothing it frees released yet."""
    live = sum(nbytes(types, v) for v in graph.inputs)
    during = []
    dying = released_after(graph, {id(v) for v in graph.outputs})
    for node, dead in zip(graph.nodes, dying):
        live += sum(nbytes(types, v) for v in node.outputs)
        during.append(live)
        live -= sum(nbytes(types, v) for v in dead)
    return during


def peak_activation_bytes(graph: Graph, types: TypeMap) -> int:
    return max([sum(nbytes(types, v) for v in graph.inputs), *live_bytes(graph, types)])


@dataclass(frozen=True)
class Placement:
    """Where a value lives: ``nbytes`` from byte ``offset`` of the arena, in ``layout``."""

    offset: int
    nbytes: int
    layout: str = CONTIGUOUS


@dataclass
class MemoryPlan:
    """One arena of ``arena_bytes`` and the placement of every non-constant value
    (``id(value)`` keys)."""

    arena_bytes: int
    placements: dict[int, Placement]

    @property
    def total_bytes(self) -> int:
        return self.arena_bytes


ALIGNMENT = 64  # bytes: every value starts on a cache line (and a vector boundary)


def live_ranges(graph: Graph) -> dict[int, tuple[int, int, Value]]:
    """``id(value) -> (first, last, value)``: the node indices from the one that produces it
    (-1 for a graph input) to its last reader (a value nothing reads dies where it is made;
    graph outputs live to the end), as ``peak_activation_bytes`` counts them."""
    last = last_uses(graph)
    end = len(graph.nodes)
    ranges = {id(v): (-1, last.get(id(v), -1), v) for v in graph.inputs}
    for i, node in enumerate(graph.nodes):
        for v in node.outputs:
            ranges[id(v)] = (i, last.get(id(v), i), v)
    for v in graph.outputs:
        if not v.is_constant:
            first, _, _ = ranges[id(v)]
            ranges[id(v)] = (first, end, v)
    return ranges


def plan_buffers(graph: Graph, nbytes_of: Callable[[Value], int],
                 layout_of: Callable[[Value], str] = lambda value: CONTIGUOUS,
                 late_reads: dict[int, int] | None = None) -> MemoryPlan:
    """Place every input and node output at an offset of one arena so that values live at
    the same time never overlap: largest first, each at the lowest aligned offset clear of
    the values already placed whose live ranges meet its own ("greedy by size", as
    TensorFlow Lite's planner). Its size is at least ``peak_activation_bytes`` and, on the
    networks measured, equal to it or within a few percent. ``late_reads``: ``id(value) ->
    node index`` for values a backend also reads at a later node's step than their last
    reader's (a step that does the work of two nodes)."""
    ranges = live_ranges(graph)
    for key, index in (late_reads or {}).items():
        first, last, value = ranges[key]
        ranges[key] = (first, max(last, index), value)
    order = sorted(ranges.values(), key=lambda r: (-nbytes_of(r[2]), r[0]))
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    placements: dict[int, Placement] = {}
    for first, last, value in order:
        size = nbytes_of(value)
        offset = 0
        for lo, hi in sorted((o, e) for o, e, f, la in placed if f <= last and first <= la):
            if offset + size <= lo:
                break
            offset = max(offset, -(-hi // ALIGNMENT) * ALIGNMENT)
        placed.append((offset, offset + size, first, last))
        placements[id(value)] = Placement(offset, size, layout_of(value))
    arena = max((end for _, end, _, _ in placed), default=0)
    return MemoryPlan(max(1, arena), placements)
