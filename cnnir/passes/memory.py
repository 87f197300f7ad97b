"""Activation memory of a schedule.

Running the nodes in graph order, a node's outputs are allocated before it runs, and a value
is freed right after its last user has run (graph outputs live to the end). The peak is the
largest total of live activation bytes at any node, inputs and outputs of that node included.
Constants (weights) are not activations and are not counted.
"""

from __future__ import annotations

from cnnir.ir import Graph
from cnnir.passes.shape_inference import TypeMap


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


def peak_activation_bytes(graph: Graph, types: TypeMap) -> int:
    keep = {id(v) for v in graph.outputs}
    last = last_uses(graph)
    live = sum(nbytes(types, v) for v in graph.inputs)
    peak = live
    for i, node in enumerate(graph.nodes):
        live += sum(nbytes(types, v) for v in node.outputs)
        peak = max(peak, live)
        dead = {id(v): v for v in (*node.inputs, *node.outputs)
                if v is not None and not v.is_constant and id(v) not in keep
                and last.get(id(v), i) == i}
        live -= sum(nbytes(types, v) for v in dead.values())
    return peak
