"""eliminate-common-subexpressions: one node per (op, attributes, inputs).

Walking the nodes in order, a node whose op, attributes (compared by value) and input values
(compared by identity) equal an earlier node's is a duplicate: its users are redirected to the
earlier node's outputs and it is removed. Equal small literal constants (the scalars a trace
makes for ``x * 0.5``) are merged first so such nodes compare equal too.

Not merged: random ops in training mode (two dropouts draw two masks), ops in training mode
with an effect (batch_norm updates its statistics once per call), duplicates whose
output is a graph output (output names stay stable), and the recomputed nodes of activation
checkpointing (``Graph.recomputed``: merging them back would keep the values they recompute).
"""

from __future__ import annotations

from typing import Any

from cnnir.ir import Graph, Node, Value
from cnnir.passes.manager import Pass, PassResult
from cnnir.passes.rewrite import drop_constant, is_output

SMALL_LITERAL = 64  # elements; larger literals are compared by identity only


def _mergeable(node: Node) -> bool:
    training = bool(getattr(node.attrs, "training", False))
    return not ((node.op.random or node.op.has_training_mode) and training)


def _attrs_key(attrs: Any) -> Any:
    try:
        hash(attrs)
        return attrs
    except TypeError:
        return repr(attrs)


def merge_literals(graph: Graph) -> int:
    """Point users of equal small literals at one of them; returns how many were merged."""
    seen: dict[tuple, Value] = {}
    merged = 0
    for value in list(graph.constants.values()):
        if value.const.kind != "literal" or not value.type.is_static:
            continue
        if value.type.numel > SMALL_LITERAL or is_output(graph, value):
            continue
        array = value.const.array
        key = (value.type, array.tobytes())
        keep = seen.setdefault(key, value)
        if keep is not value:
            graph.replace_all_uses(value, keep)
            merged += drop_constant(graph, value)
    return merged


def eliminate_common_subexpressions(graph: Graph) -> PassResult:
    """Merge duplicate nodes (same op, equal attrs, same inputs) into their first occurrence.

    Users are redirected as soon as a duplicate is found, so chains of duplicates
    (``f(x), f(x)`` then ``g`` of each) collapse in one walk."""
    literals = merge_literals(graph)
    table: dict[tuple, Node] = {}
    merged: list[str] = []
    recomputed = getattr(graph, "recomputed", None) or set()
    for node in list(graph.nodes):
        if not _mergeable(node) or node.name in recomputed:
            continue
        key = (node.op, _attrs_key(node.attrs),
               tuple(id(v) if v is not None else None for v in node.inputs))
        first = table.setdefault(key, node)
        if first is node or any(is_output(graph, v) for v in node.outputs):
            continue
        for old, new in zip(node.outputs, first.outputs):
            graph.replace_all_uses(old, new)
        graph.remove_node(node)
        merged.append(f"{node.name} = {first.name}")
    summary = f"merged {len(merged)} duplicate node(s) and {literals} duplicate literal(s)"
    return PassResult(graph, bool(merged or literals),
                      {"summary": summary, "merged": merged, "lines": merged})


PASS = Pass("eliminate-common-subexpressions", eliminate_common_subexpressions,
            preserves_semantics=True,
            summary="merge nodes with the same op, attributes and inputs")
