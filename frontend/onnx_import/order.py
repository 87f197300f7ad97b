"""Structural checks of an untrusted ONNX graph, all iterative (no recursion anywhere).

* at most ``max_nodes`` nodes (checked before anything walks them);
* every value defined once (SSA) and every input defined by a graph input, an initializer
  or a node;
* acyclic: Kahn's algorithm gives the execution order (the file's own order when it is
  valid); nodes left over lie on or behind a cycle, and one cycle is named;
* the longest path is at most ``max_depth`` nodes.
"""

from __future__ import annotations

import heapq

import onnx

from cnnir.errors import ModelFormatError

MAX_NODES = 1_000_000
MAX_DEPTH = 100_000


def _producers(graph: onnx.GraphProto) -> dict[str, int]:
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    producers: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.output:
            if not name:
                continue
            if name in producers or name in defined:
                raise ModelFormatError(f"ONNX value '{name}' is defined twice (by node "
                                       f"'{node.name or node.op_type}')",
                                       hint="ONNX graphs are in SSA form")
            producers[name] = i
    return producers


def _edges(graph: onnx.GraphProto, producers: dict[str, int]) -> list[list[int]]:
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    preds: list[list[int]] = []
    for node in graph.node:
        mine = []
        for name in node.input:
            if not name or name in defined and name not in producers:
                continue
            if name not in producers:
                raise ModelFormatError(f"ONNX node '{node.name or node.op_type}' uses "
                                       f"'{name}', which nothing defines")
            mine.append(producers[name])
        preds.append(mine)
    return preds


def _cycle(preds: list[list[int]], left: set[int], graph: onnx.GraphProto) -> list[str]:
    """Walk predecessors inside the leftover set until a node repeats."""
    seen: dict[int, int] = {}
    path: list[int] = []
    current = min(left)
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = next(p for p in preds[current] if p in left)
    loop = path[seen[current]:][::-1]
    return [graph.node[i].name or graph.node[i].op_type for i in loop]


def execution_order(graph: onnx.GraphProto, max_nodes: int = MAX_NODES,
                    max_depth: int = MAX_DEPTH) -> list[int]:
    """Node indices in a valid execution order, after the checks above."""
    if len(graph.node) > max_nodes:
        raise ModelFormatError(f"the ONNX graph has {len(graph.node)} nodes, over the limit "
                               f"of {max_nodes}", hint="raise max_nodes if you trust the file")
    preds = _edges(graph, _producers(graph))
    succs: list[list[int]] = [[] for _ in preds]
    waiting = [len(p) for p in preds]
    for i, mine in enumerate(preds):
        for p in mine:
            succs[p].append(i)
    depth = [1] * len(preds)
    ready = [i for i, w in enumerate(waiting) if w == 0]  # a heap: keep the file's order
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        if depth[i] > max_depth:
            raise ModelFormatError(f"the ONNX graph is more than {max_depth} nodes deep",
                                   hint="raise max_depth if you trust the file")
        for s in succs[i]:
            depth[s] = max(depth[s], depth[i] + 1)
            waiting[s] -= 1
            if waiting[s] == 0:
                heapq.heappush(ready, s)
    if len(order) < len(preds):
        left = set(range(len(preds))) - set(order)
        cycle = _cycle(preds, left, graph)
        raise ModelFormatError(f"the ONNX graph is not acyclic: cycle "
                               f"{' -> '.join(cycle)} -> {cycle[0]}")
    return order
