"""Helpers shared by the rewriting passes, built on the Graph rewriter API.

A local rewrite matches a few nodes (``conv2d -> batch_norm``), removes them, inserts the
replacement where the last matched node stood (so every input of the replacement, including
a residual read by the last node, is already defined) and points the users of the old result
at the new one. ``Splice`` does exactly that; the guards passes share (a value with a single
user that is not a graph output, constant parameters) live here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from cnnir.ir import ConstantData, Graph, Node, TensorType, Value
from cnnir.ops import OpDef


def is_output(graph: Graph, value: Value) -> bool:
    return any(v is value for v in graph.outputs)


def sole_user(graph: Graph, value: Value) -> Node | None:
    """The only node reading ``value``, or None when it has several users or is an output."""
    if len(value.users) != 1 or is_output(graph, value):
        return None
    return value.users[0]


def all_constant(values: Iterable[Value | None]) -> bool:
    """True when every present value is a graph constant (absent optional inputs pass)."""
    return all(v is None or v.is_constant for v in values)


def array_of(value: Value | None) -> np.ndarray | None:
    return None if value is None else value.const.array


def drop_constant(graph: Graph, value: Value | None) -> bool:
    """Remove a constant nothing uses any more (shared weights stay while they have users)."""
    if value is None or not value.is_constant or value.users or is_output(graph, value):
        return False
    if graph.constants.get(value.name) is not value:
        return False
    graph.remove_constant(value)
    return True


def drop_constants(graph: Graph, values: Iterable[Value | None]) -> int:
    return sum(drop_constant(graph, v) for v in values)


def constant_inputs(nodes: Iterable[Node]) -> list[Value]:
    return [v for n in nodes for v in n.inputs if v is not None and v.is_constant]


def _kind_of(like: Value | None) -> tuple[str, bool]:
    return (like.const.kind, like.const.requires_grad) if like is not None else ("parameter", True)


def add_array(graph: Graph, base: str, array: np.ndarray, like: Value | None = None) -> Value:
    """A new constant holding ``array``, of the kind (parameter, buffer) of ``like``."""
    kind, grad = _kind_of(like)
    data = ConstantData(TensorType(array.shape, array.dtype.name), kind, array=array,
                        requires_grad=grad)
    return graph.add_constant(graph.unique_name(base), data)


def add_lazy(graph: Graph, base: str, type: TensorType, make: Callable[[], np.ndarray],
             like: Value | None = None, fresh: bool = False) -> Value:
    """A new constant whose array is computed on first use, so a pass that derives weights
    (BN folding, reshaped heads) allocates nothing until something runs the graph; ``fresh``
    when ``make`` returns a new array, never a view of another constant's
    (``ConstantData.fresh``)."""
    kind, grad = _kind_of(like)
    return graph.add_constant(graph.unique_name(base),
                              ConstantData(type, kind, make=make, requires_grad=grad,
                                           fresh=fresh))


def kaiming_init(shape: tuple[int, ...], dtype: str,
                 seed: tuple[int, ...]) -> Callable[[], np.ndarray]:
    """A maker of He-normal weights ``N(0, 2/fan_in)``, ``fan_in = ∏ shape[1:]`` (a conv's
    in_channels/groups·kh·kw), seeded so every call gives the same array."""
    fan_in = math.prod(shape[1:])

    def make() -> np.ndarray:
        rng = np.random.default_rng(seed)
        return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)

    return make


class Splice:
    """Replace ``matched`` nodes by new ones placed where the last matched node stood.

    >>> s = Splice(graph, [conv, bn])
    >>> new = s.add(ops.conv2d, [x, w2, b2], conv.attrs, like=conv)
    >>> s.finish(bn.output, new.output)

    The matched nodes are removed at construction (their names become free for the
    replacement); ``finish`` redirects every user of the old result, graph outputs included.
    """

    def __init__(self, graph: Graph, matched: Sequence[Node], anchor: Node | None = None) -> None:
        self.graph = graph
        fused = graph.fused_from
        self.origins = sorted({o for n in matched for o in fused.get(n.name, [n.name])})
        positions = {id(n): graph.nodes.index(n) for n in matched}
        anchor_pos = graph.nodes.index(anchor) if anchor is not None else max(positions.values())
        self.pos = anchor_pos - sum(p < anchor_pos for p in positions.values())
        for node in sorted(matched, key=lambda n: -positions[id(n)]):
            graph.remove_node(node, safe=False)

    def add(self, op: OpDef, inputs: Sequence[Value | None], attrs: Any = None, *,
            like: Node, name: str | None = None) -> Node:
        """A new node named ``name`` (default: ``like``'s), with ``like``'s scope and line."""
        node = self.graph.make_node(op, inputs, attrs, name=name or like.name, scope=like.scope,
                                    loc=like.loc)
        if self.origins != [node.name]:  # a node made of others: remember which (cnnir view)
            self.graph.fused_from[node.name] = self.origins
        before = self.graph.nodes[self.pos] if self.pos < len(self.graph.nodes) else None
        self.graph.insert_node(node, before=before)
        self.pos += 1
        return node

    def finish(self, old: Value, new: Value) -> Value:
        self.graph.replace_all_uses(old, new)
        return new


def result_name(graph: Graph, first: Node, last: Node) -> str:
    """The replacement is named after the first matched node, unless the last one's result is
    a graph output: output names stay stable across passes."""
    return last.name if is_output(graph, last.output) else first.name


__all__ = [
    "Splice", "add_array", "add_lazy", "all_constant", "array_of", "constant_inputs",
    "drop_constant", "drop_constants", "is_output", "kaiming_init", "result_name",
    "sole_user",
]
