"""eliminate-dead-code: remove nodes whose results reach no graph output, and unused literals.

A node is live when one of its outputs is a graph output or is read by a live node; one
backward walk over the topologically ordered node list finds them all. Nodes with an effect
beyond their result are kept even when dead: an op in training mode (``has_training_mode``
and ``attrs.training``), since a training-mode batch_norm updates its running statistics.

Unused literal constants (scalars and tables the trace made) are removed. Parameters and
buffers are kept so a report's parameter count stays the model's, unless
``prune_constants=True`` drops every unused constant (e.g. ``num_batches_tracked`` buffers
and weights that a folding pass left without users).
"""

from __future__ import annotations

from cnnir.ir import Graph, Node
from cnnir.passes.manager import Pass, PassResult
from cnnir.passes.rewrite import drop_constant


def has_effect(node: Node) -> bool:
    return node.op.has_training_mode and bool(getattr(node.attrs, "training", False))


def live_nodes(graph: Graph) -> set[int]:
    """``id`` of every node that contributes to an output or has an effect."""
    needed = {id(v) for v in graph.outputs}
    live: set[int] = set()
    for node in reversed(graph.nodes):
        if has_effect(node) or any(id(v) in needed for v in node.outputs):
            live.add(id(node))
            needed.update(id(v) for v in node.inputs if v is not None)
    return live


def eliminate_dead_code(graph: Graph, *, prune_constants: bool = False) -> PassResult:
    """Remove dead nodes (last first, so users go before producers) and unused constants."""
    live = live_nodes(graph)
    dead = [n for n in graph.nodes if id(n) not in live]
    for node in reversed(dead):
        graph.remove_node(node)
    kinds = {"literal", "parameter", "buffer"} if prune_constants else {"literal"}
    dropped = [v.name for v in list(graph.constants.values())
               if v.const.kind in kinds and drop_constant(graph, v)]
    summary = f"removed {len(dead)} dead node(s) and {len(dropped)} unused constant(s)"
    lines = [f"node {n.name} ({n.op.name})" for n in dead] + [f"constant {c}" for c in dropped]
    return PassResult(graph, bool(dead or dropped),
                      {"summary": summary, "nodes": [n.name for n in dead],
                       "constants": dropped, "lines": lines})


PASS = Pass("eliminate-dead-code", eliminate_dead_code, preserves_semantics=True,
            summary="remove nodes that reach no output and unused literal constants")
