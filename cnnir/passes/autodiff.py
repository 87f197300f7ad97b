"""Reverse-mode automatic differentiation as a graph transformation.

``differentiate(graph, loss, wrt)`` appends the backward computation to ``graph`` as ordinary
IR nodes and returns the gradient value of each ``wrt`` value. It sweeps the forward nodes in
reverse topological order; each node's ``OpDef.vjp`` rule receives the cotangents of the
node's outputs and emits the ops computing those of its inputs (a convolution's input
gradient is a ``conv_transpose2d``, as in JAX's transpose rules). Cotangents of a value with
several users (a skip connection, a weight shared by the branches of a Siamese net) are
summed. Only nodes on a path from a ``wrt`` value to the loss are differentiated, and a rule
is told which inputs need a gradient (``GradBuilder.needs``), so the first layer computes no
gradient for the image. The result is verified, printed, costed and lowered like any graph;
running eliminate-dead-code on it leaves only the forward values the backward reads.

Activation checkpointing (``cnnir.utils.checkpoint``): the nodes of a checkpointed segment
(``Graph.checkpoint_segments``) are emitted again, from the segment's inputs, when the sweep
reaches the segment, and their vjp rules run on those recomputed nodes, so no forward value
inside the segment is read by the backward. The recomputed nodes are listed in
``Graph.recomputed`` (eliminate-common-subexpressions must not merge them back). Random ops
are not recomputed: their outputs stay saved, so the backward sees the forward's draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnir.errors import PassError
from cnnir.ir import Graph, Node, Value
from cnnir.ir.types import TensorType, is_static, shape_str
from cnnir.ops import OpDef, add, expand, reshape, sum_
from cnnir.ops.tensor import ExpandAttrs, ReduceAttrs, ReshapeAttrs


class GradBuilder:
    """What a ``vjp`` rule sees: emits backward nodes into the graph, named after the forward
    node (``layer1.0.conv1.grad``) and carrying its source location, so an error in the
    backward still points at the user's line."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.node: Node | None = None
        self._needs: list[bool] = []

    def begin(self, node: Node, needs: list[bool]) -> None:
        self.node, self._needs = node, needs

    def needs(self, index: int) -> bool:
        """Whether input ``index`` of the node being differentiated wants a gradient."""
        return self._needs[index]

    def ops(self, op: OpDef, inputs: Sequence[Value | None], attrs: Any = None) -> list[Value]:
        """All outputs of a new backward node."""
        node = self.node
        added = self.graph.add_node(op, inputs, attrs, name=f"{node.name}.grad",
                                    scope=node.scope, loc=node.loc)
        return added.outputs

    def op(self, op: OpDef, inputs: Sequence[Value | None], attrs: Any = None) -> Value:
        """The output of a new one-output backward node."""
        return self.ops(op, inputs, attrs)[0]

    def literal(self, value: float, dtype: str) -> Value:
        """A scalar constant in ``dtype``."""
        return self.graph.add_literal(np.asarray(value, dtype=dtype), f"{self.node.name}.c")

    def zeros(self, type: TensorType) -> Value:
        """Zeros of ``type`` (a scalar literal expanded: no array of that size is stored)."""
        zero = self.literal(0.0, type.dtype)
        return zero if type.rank == 0 else self.op(expand, [zero], ExpandAttrs(type.shape))

    def fail(self, message: str, hint: str | None = None) -> None:
        """Refuse to differentiate the current node, naming it."""
        raise PassError(f"{self.node.describe()}: {message}", hint=hint)

    def sum_to(self, grad: Value, type: TensorType) -> Value:
        """``grad`` summed over the axes along which ``type`` was broadcast to grad's shape
        (numpy rules: missing leading axes and size-1 axes), reshaped to ``type``."""
        shape, target = grad.type.shape, type.shape
        lead = len(shape) - len(target)
        axes = tuple(range(lead)) + tuple(
            lead + i for i, d in enumerate(target) if d == 1 and shape[lead + i] != 1)
        if axes:
            grad = self.op(sum_, [grad], ReduceAttrs(axes, keepdim=True))
        if grad.type.shape != target:
            grad = self.op(reshape, [grad], ReshapeAttrs(tuple(target)))
        return grad


def _reaching(graph: Graph, sources: Sequence[Value]) -> set[int]:
    """Ids of the values computed from ``sources`` (the sources included)."""
    reached = {id(v) for v in sources}
    for node in graph.nodes:
        if any(v is not None and id(v) in reached for v in node.inputs):
            reached.update(id(v) for v in node.outputs)
    return reached


def depends_on(graph: Graph, sink: Value) -> set[int]:
    """Ids of the values ``sink`` is computed from (itself included): in a gradient graph,
    with the loss as ``sink``, the forward pass."""
    needed = {id(sink)}
    for node in reversed(graph.nodes):
        if any(id(v) in needed for v in node.outputs):
            needed.update(id(v) for v in node.inputs if v is not None)
    return needed


def _check_loss(loss: Value) -> None:
    shape = loss.type.shape
    if not all(is_static(d) and d == 1 for d in shape) or np.dtype(loss.type.dtype).kind != "f":
        raise PassError(f"can only differentiate a scalar float loss, but %{loss.name} is "
                        f"{loss.type}", hint="reduce the loss to one value (reduction='mean' "
                                              "or 'sum', or .mean()/.sum())")


def _check_gradient(node: Node, value: Value, grad: Value) -> None:
    if grad.type.shape != value.type.shape or grad.type.dtype != value.type.dtype:
        raise PassError(f"the vjp rule of {node.describe()} gave input %{value.name} "
                        f"({value.type}) a gradient of type {shape_str(grad.type.shape)} "
                        f"{grad.type.dtype}", hint="this is a bug in the op's vjp rule")


def differentiate(graph: Graph, loss: Value, wrt: Sequence[Value]) -> list[Value | None]:
    """Append the backward of ``loss`` to ``graph``; the gradient of each ``wrt`` value, or
    None when the loss does not depend on it."""
    _check_loss(loss)
    active = _reaching(graph, wrt) & depends_on(graph, loss)
    ad = GradBuilder(graph)
    forward = list(graph.nodes)
    ad.node = forward[-1] if forward else None
    grads: dict[int, Value] = {}
    if id(loss) in active:
        ad.node = loss.producer
        grads[id(loss)] = _ones_like(ad, loss)
    replay = Replay(graph, forward)
    for node in reversed(forward):
        out_grads = [grads.get(id(v)) for v in node.outputs]
        needs = [v is not None and id(v) in active for v in node.inputs]
        if not any(out_grads) or not any(needs):
            continue
        if node.op.vjp is None:
            raise PassError(f"{node.describe()} cannot be differentiated: {node.op.name} has "
                            f"no vjp rule", hint="differentiate a graph without it, or with "
                                                 "its parameters frozen (requires_grad=False)")
        target = replay.node_for(node)
        ad.begin(target, needs)
        in_grads = node.op.vjp(ad, target, out_grads)
        for value, grad, wanted in zip(node.inputs, in_grads, needs):
            if grad is None or not wanted:
                continue
            _check_gradient(node, value, grad)
            previous = grads.get(id(value))
            grads[id(value)] = grad if previous is None else _accumulate(ad, previous, grad)
    return [grads.get(id(v)) for v in wrt]


class Replay:
    """The recomputed twins of checkpointed nodes (see the module docstring), emitted per
    segment the first time the reverse sweep asks for one of its nodes."""

    def __init__(self, graph: Graph, forward: list[Node]) -> None:
        self.graph = graph
        self.segment_of = getattr(graph, "checkpoint_segments", None) or {}
        self.members: dict[int, list[Node]] = {}
        for node in forward:
            segment = self.segment_of.get(node.name)
            if segment is not None:
                self.members.setdefault(segment, []).append(node)
        self.twins: dict[int, Node] = {}
        self.done: set[int] = set()

    def node_for(self, node: Node) -> Node:
        """``node``'s recomputed twin when it belongs to a segment, else ``node`` itself."""
        segment = self.segment_of.get(node.name)
        if segment is None:
            return node
        if segment not in self.done:
            self.done.add(segment)
            self._recompute(self.members[segment])
        return self.twins.get(id(node), node)

    def _recompute(self, nodes: list[Node]) -> None:
        recomputed = getattr(self.graph, "recomputed", None)
        if recomputed is None:
            recomputed = self.graph.recomputed = set()
        values: dict[int, Value] = {}
        for node in nodes:
            if node.op.random:
                continue
            inputs = [None if v is None else values.get(id(v), v) for v in node.inputs]
            twin = self.graph.add_node(node.op, inputs, node.attrs,
                                       name=f"{node.name}.recompute", scope=node.scope,
                                       loc=node.loc)
            recomputed.add(twin.name)
            values.update((id(old), new) for old, new in zip(node.outputs, twin.outputs))
            self.twins[id(node)] = twin


def _ones_like(ad: GradBuilder, value: Value) -> Value:
    one = ad.literal(1.0, value.type.dtype)
    return one if value.type.rank == 0 else ad.op(reshape, [one],
                                                  ReshapeAttrs(tuple(value.type.shape)))


def _accumulate(ad: GradBuilder, a: Value, b: Value) -> Value:
    return ad.op(add, [a, b])


__all__ = ["GradBuilder", "depends_on", "differentiate"]
