"""fuse-conv-activation: conv2d / linear, then a residual add, then an activation, as one op.

Patterns (each arrow is a value with that single user, which is not a graph output):

    conv2d -> act                     =>  conv2d_fused(x, W, b; act)
    conv2d -> add(·, r) [-> act]      =>  conv2d_fused(x, W, b, r; act or none, residual)
    linear -> ... (the same)          =>  linear_fused(...)

with act one of ``FUSABLE_ACTIVATIONS`` (relu, relu6, leaky_relu, hardswish, sigmoid). The
fused op computes ``act(conv(x) + b + r)`` in the same order as the unfused ops, so the
rewrite is exact. The residual must have the conv output's type (no broadcasting); it is
defined before the add, and the fused node takes the place of the last matched node, so
every input is defined before it. Run fuse-conv-bn first: BN sits between a conv and its
activation until it is folded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnir import ops
from cnnir.ir import Graph, Node, Value
from cnnir.ops.fused import FUSABLE_ACTIVATIONS, Conv2dFusedAttrs, LinearFusedAttrs
from cnnir.passes.manager import Pass, PassResult
from cnnir.passes.rewrite import Splice, result_name, sole_user

FUSED: dict[ops.OpDef, ops.OpDef] = {ops.conv2d: ops.conv2d_fused, ops.linear: ops.linear_fused}


@dataclass
class Match:
    layer: Node
    add: Node | None = None
    residual: Value | None = None
    act: Node | None = None
    nodes: list[Node] = field(default_factory=list)

    @property
    def last(self) -> Node:
        return self.nodes[-1]


def _residual_of(add: Node, value: Value) -> Value | None:
    """The other operand of ``add(value, r)`` or ``add(r, value)`` when it has the same type."""
    a, b = add.inputs
    other = b if a is value else a
    return other if other is not value and other.type == value.type else None


def match(graph: Graph, layer: Node) -> Match | None:
    """The longest fusable chain after ``layer``, or None when nothing can be fused."""
    m = Match(layer, nodes=[layer])
    user = sole_user(graph, layer.output)
    if user is not None and user.op is ops.add:
        m.residual = _residual_of(user, layer.output)
        if m.residual is not None:
            m.add = user
            m.nodes.append(user)
            user = sole_user(graph, user.output)
    if user is not None and user.op in FUSABLE_ACTIVATIONS:
        m.act = user
        m.nodes.append(user)
    return m if len(m.nodes) > 1 else None


def _attrs(m: Match) -> object:
    epilogue = {"activation": m.act.op if m.act else None,
                "activation_attrs": m.act.attrs if m.act else None,
                "residual": m.add is not None}
    if m.layer.op is ops.conv2d:
        a = m.layer.attrs
        return Conv2dFusedAttrs(a.stride, a.padding, a.dilation, a.groups, **epilogue)
    return LinearFusedAttrs(**epilogue)


def fuse(graph: Graph, m: Match) -> Node:
    name = result_name(graph, m.layer, m.last)
    attrs = _attrs(m)
    inputs = ([*m.layer.inputs, None])[:3] + ([m.residual] if m.add is not None else [])
    splice = Splice(graph, m.nodes)
    node = splice.add(FUSED[m.layer.op], inputs, attrs, like=m.layer, name=name)
    splice.finish(m.last.output, node.output)
    return node


def _describe(m: Match) -> str:
    parts = [m.layer.op.name] + (["add"] if m.add else []) + ([m.act.op.name] if m.act else [])
    return f"{m.layer.name}: {' + '.join(parts)}"


def fuse_conv_activation(graph: Graph) -> PassResult:
    """Fuse every conv2d/linear with the residual add and activation that follow it."""
    fused: list[str] = []
    for layer in [n for n in graph.nodes if n.op in FUSED]:
        m = match(graph, layer)
        if m is not None:
            fused.append(_describe(m))
            fuse(graph, m)
    summary = f"fused {len(fused)} layer(s) with their epilogue"
    return PassResult(graph, bool(fused), {"summary": summary, "fused": fused, "lines": fused})


PASS = Pass("fuse-conv-activation", fuse_conv_activation, preserves_semantics=True,
            summary="fuse conv2d/linear with a following residual add and activation")
