"""fuse-activation-grad: an activation's gradient into the BatchNorm gradient reading it.

Pattern (the arrow is a value with that single user, which is not a graph output):

    activation_grad(a, g) -> batch_norm_grad(x, rm, rv, γ, ·)
        =>  batch_norm_grad(x, rm, rv, γ, g, a; activation)

the backward of every conv → BN → activation chain. The fused node multiplies g by the
activation's derivative at ``a`` as it reads it, exactly as activation_grad did, so the
rewrite is exact; the backend saves a pass over the tensor and its buffer.
"""

from __future__ import annotations

from dataclasses import replace

from cnnir import ops
from cnnir.ir import Graph, Node
from cnnir.ops.norm import batch_norm_grad
from cnnir.passes.manager import Pass, PassResult
from cnnir.passes.rewrite import Splice, sole_user


def bn_reading(graph: Graph, act: Node) -> Node | None:
    """The batch_norm_grad whose grad_output is ``act``'s result and nothing else of it."""
    user = sole_user(graph, act.output)
    if (user is None or user.op is not batch_norm_grad or user.attrs.activation is not None
            or any(v is act.output for v in user.inputs[:4])):
        return None
    return user


def fuse(graph: Graph, act: Node, bn: Node) -> Node:
    a, g = act.inputs
    attrs = replace(bn.attrs, activation=act.attrs.activation,
                    activation_attrs=act.attrs.activation_attrs)
    splice = Splice(graph, [act, bn])
    node = splice.add(batch_norm_grad, [*bn.inputs[:4], g, a], attrs, like=bn)
    for old, new in zip(bn.outputs, node.outputs):
        splice.finish(old, new)
    return node


def fuse_activation_grad(graph: Graph) -> PassResult:
    """Fuse every activation_grad whose only reader is a batch_norm_grad into it."""
    fused: list[str] = []
    for act in [n for n in graph.nodes if n.op is ops.activation_grad]:
        bn = bn_reading(graph, act)
        if bn is not None:
            fused.append(f"{bn.name}: {act.attrs.activation.name} gradient")
            fuse(graph, act, bn)
    summary = f"fused {len(fused)} activation gradient(s) into batch_norm_grad"
    return PassResult(graph, bool(fused), {"summary": summary, "fused": fused, "lines": fused})


PASS = Pass("fuse-activation-grad", fuse_activation_grad, preserves_semantics=True,
            summary="fuse an activation's gradient into the batch_norm_grad that reads it")
