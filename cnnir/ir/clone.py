"""``clone_graph``: an independent copy of a graph, for passes that must not touch their input.

The copy has new ``Value`` and ``Node`` objects with the same names, types, attributes and
source locations, in the same order. Constants share their ``ConstantData`` (arrays are never
mutated in place, and lazy weights stay lazy), so copying a 60M-parameter network allocates no
weights. Attributes are frozen dataclasses and are shared too.
"""

from __future__ import annotations

import copy

from cnnir.errors import VerificationError
from cnnir.ir.graph import Graph, Node, Value

_OWN_FIELDS = {"name", "inputs", "outputs", "nodes", "constants", "_names", "_counters"}


def _mapped(values: dict[int, Value], value: Value | None, graph: Graph, user: str) -> Value | None:
    if value is None:
        return None
    try:
        return values[id(value)]
    except KeyError:
        raise VerificationError(f"cannot copy graph '{graph.name}': {user} uses %{value.name}, "
                                f"which is not defined before it") from None


def clone_graph(graph: Graph) -> Graph:
    """A deep copy of ``graph``'s structure; ``clone_graph(g)`` prints exactly like ``g``.

    >>> g2 = clone_graph(g)
    >>> str(g2) == str(g) and g2.nodes[0] is not g.nodes[0]
    True
    """
    new = Graph(graph.name)
    new._names = set(graph._names)
    new._counters = dict(graph._counters)
    values: dict[int, Value] = {}
    for v in graph.inputs:
        values[id(v)] = Value(v.name, v.type)
        new.inputs.append(values[id(v)])
    for name, v in graph.constants.items():
        values[id(v)] = new.constants[name] = Value(v.name, v.type, const=v.const)
    for node in graph.nodes:
        inputs = [_mapped(values, v, graph, node.describe()) for v in node.inputs]
        twin = Node(node.op, node.attrs, inputs, node.name, node.scope, node.loc)
        for v in inputs:
            if v is not None:
                v.users.append(twin)
        for v in node.outputs:
            values[id(v)] = Value(v.name, v.type, producer=twin)
            twin.outputs.append(values[id(v)])
        new.nodes.append(twin)
    new.outputs = [_mapped(values, v, graph, "the graph output") for v in graph.outputs]
    for key, value in vars(graph).items():
        if key not in _OWN_FIELDS:
            setattr(new, key, copy.copy(value))
    return new


__all__ = ["clone_graph"]
