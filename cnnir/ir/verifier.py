"""``verify(graph)``: the IR's invariants, checked in one linear pass.

1. Every name is unique; every value has one definition.
2. Every node input is defined before the node (nodes are in topological order). When that
   fails the graph may be cyclic; the cycle is then found with networkx and named.
3. Every node's output types equal what its op's ``infer`` rule gives for its input types.
4. Every graph output is defined; user lists agree with node inputs.
"""

from __future__ import annotations

from cnnir.errors import CnnirError, VerificationError
from cnnir.ir.graph import Graph, Node


def _find_cycle(graph: Graph) -> list[str] | None:
    import networkx as nx

    dg = nx.DiGraph()
    for node in graph.nodes:
        dg.add_node(node.name)
        for v in node.inputs:
            if v is not None and v.producer is not None:
                dg.add_edge(v.producer.name, node.name)
    try:
        return [edge[0] for edge in nx.find_cycle(dg)]
    except nx.NetworkXNoCycle:
        return None


def _check_names(graph: Graph) -> None:
    seen: set[str] = set()
    values = [*graph.inputs, *graph.constants.values()]
    values += [v for n in graph.nodes for v in n.outputs]
    names = [v.name for v in values] + [n.name for n in graph.nodes if n.name != n.outputs[0].name]
    for name in names:
        if name in seen:
            raise VerificationError(f"graph '{graph.name}': duplicate value or node name '{name}'")
        seen.add(name)


def _check_order(graph: Graph) -> None:
    defined: set[int] = {id(v) for v in graph.inputs} | {id(v) for v in graph.constants.values()}
    for node in graph.nodes:
        for v in node.inputs:
            if v is not None and id(v) not in defined:
                cycle = _find_cycle(graph)
                if cycle is not None:
                    raise VerificationError(
                        f"graph '{graph.name}' is not acyclic: cycle {' -> '.join(cycle)}"
                        f" -> {cycle[0]}",
                        hint="a node consumes a value that depends on its own output",
                    )
                raise VerificationError(
                    f"{node.describe()} uses %{v.name}, which is not defined before it",
                    hint="nodes must be in topological order and inputs must belong to the graph",
                )
        defined.update(id(v) for v in node.outputs)
    for v in graph.outputs:
        if id(v) not in defined:
            raise VerificationError(f"graph output %{v.name} is not defined in '{graph.name}'")


def _check_types(node: Node) -> None:
    in_types = [v.type if v is not None else None for v in node.inputs]
    try:
        expected = node.op.infer_types(node.attrs, in_types)
    except CnnirError as e:
        raise VerificationError(f"{node.describe()} no longer type-checks: {e.message}") from e
    actual = [v.type for v in node.outputs]
    if list(expected) != actual:
        raise VerificationError(
            f"{node.describe()} declares outputs {[str(t) for t in actual]} but its inputs"
            f" give {[str(t) for t in expected]}"
        )


def _check_users(graph: Graph) -> None:
    for node in graph.nodes:
        for v in node.inputs:
            if v is not None and node not in v.users:
                raise VerificationError(f"%{v.name} does not list its user {node.describe()}")
        for v in node.outputs:
            if v.producer is not node:
                raise VerificationError(f"%{v.name} does not name {node.describe()} as producer")


def verify(graph: Graph) -> Graph:
    """Raise ``VerificationError`` naming the first broken invariant; return the graph."""
    _check_names(graph)
    _check_order(graph)
    _check_users(graph)
    for node in graph.nodes:
        _check_types(node)
    return graph


__all__ = ["verify"]
