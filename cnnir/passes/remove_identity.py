"""remove-identity: drop ops that return their input, and collapse chains of reshapes.

Identities (their users read the input directly):
    identity; dropout and dropout2d in eval mode (or with p = 0); a reshape or flatten whose
    output type equals its input type.
Chains: a reshape or flatten of a reshape or flatten is one reshape of the first input to the
final shape (``x.view(N, -1).flatten(1)`` is ``x.reshape(N, C·H·W)``); the inner one goes
when nothing else reads it.

A node whose result is a graph output is kept (output names stay stable).
"""

from __future__ import annotations

from collections.abc import Callable

from cnnir import ops
from cnnir.errors import CnnirError
from cnnir.ir import Graph, Node
from cnnir.ops.tensor import ReshapeAttrs
from cnnir.passes.manager import Pass, PassResult
from cnnir.passes.rewrite import Splice, is_output, sole_user


def _same_type(node: Node) -> bool:
    return node.output.type == node.inputs[0].type


def _inference_dropout(node: Node) -> bool:
    return not node.attrs.training or node.attrs.p == 0.0


IDENTITY_RULES: dict[ops.OpDef, Callable[[Node], bool]] = {
    ops.identity: lambda node: True,
    ops.dropout: _inference_dropout,
    ops.dropout2d: _inference_dropout,
    ops.reshape: _same_type,
    ops.flatten: _same_type,
}

RESHAPES = frozenset({ops.reshape, ops.flatten})


def is_identity(node: Node) -> bool:
    rule = IDENTITY_RULES.get(node.op)
    return rule is not None and rule(node)


def _collapse(graph: Graph, node: Node) -> str | None:
    """Rewrite ``reshape(reshape(x))`` as one reshape of x (or as x itself when the chain
    restores x's shape); the inner node goes when nothing else reads it."""
    inner = node.inputs[0].producer
    source = inner.inputs[0]
    attrs = ReshapeAttrs(node.output.type.shape)
    try:
        ops.reshape.infer_types(attrs, [source.type])
    except CnnirError:
        return None
    inner_dies = sole_user(graph, inner.output) is node
    splice = Splice(graph, [inner, node] if inner_dies else [node], anchor=node)
    if source.type == node.output.type:
        splice.finish(node.output, source)
        return f"{inner.name} -> {node.name} (restores the shape: both removed)"
    new = splice.add(ops.reshape, [source], attrs, like=node)
    splice.finish(node.output, new.output)
    return f"{inner.name} -> {node.name} (one reshape)"


def _reads_reshape(node: Node) -> bool:
    producer = node.inputs[0].producer
    return node.op in RESHAPES and producer is not None and producer.op in RESHAPES


def remove_identity(graph: Graph) -> PassResult:
    """Bypass identities and collapse reshape chains, in one walk over the nodes (a node made
    by a collapse is read by later nodes of a longer chain, which collapse onto it)."""
    changes: list[str] = []
    for node in list(graph.nodes):
        if is_output(graph, node.output):
            continue
        if is_identity(node):
            graph.replace_all_uses(node.output, node.inputs[0])
            graph.remove_node(node)
            changes.append(f"{node.name} ({node.op.name}) removed")
        elif _reads_reshape(node):
            change = _collapse(graph, node)
            if change is not None:
                changes.append(change)
    summary = f"removed or merged {len(changes)} identity/reshape node(s)"
    return PassResult(graph, bool(changes), {"summary": summary, "changes": changes,
                                             "lines": changes})


PASS = Pass("remove-identity", remove_identity, preserves_semantics=True,
            summary="drop identities and eval-mode dropout, collapse reshape chains")
