"""linear-to-conv1x1: a classifier head as a 1x1 convolution before the global pool.

Global average pooling is linear, so it commutes with any affine map of the channels:

    linear(flatten(gap(x)), W, b) = 1/(HW)·Σ_hw (W·x[:, :, h, w] + b)
                                  = flatten(gap(conv2d(x, W[:, :, None, None], b)))

(the bias survives the average because the mean of a constant is the constant). ``gap`` is
``adaptive_avg_pool2d`` to 1x1 or ``mean`` over dims (2, 3); eval-mode dropout and identity
between the flatten and the linear are identities and are dropped with it. The rewrite is
exact in real arithmetic (float64 results agree to rounding). It costs H·W times the head's
MACs, which is why ``-O`` leaves it out: it is the layout for fully convolutional deployment.

``direction="reverse"`` rewrites ``gap(conv1x1(x))`` (stride 1, no padding, one group) the
other way, into ``linear(flatten(gap(x)))``, followed by a reshape when the pool's 4-D result
was used directly. Every intermediate value must have a single user.
"""

from __future__ import annotations

from collections.abc import Callable

from cnnir import ops
from cnnir.errors import CnnirError, PassError
from cnnir.ir import Graph, Node, TensorType, Value
from cnnir.ops.conv import Conv2dAttrs
from cnnir.ops.tensor import FlattenAttrs, ReshapeAttrs
from cnnir.passes.manager import Pass, PassResult
from cnnir.passes.remove_identity import is_identity
from cnnir.passes.rewrite import Splice, add_lazy, drop_constants, sole_user
from cnnir.passes.shape_inference import batch_bindings, bind_types


def _adaptive_global(node: Node) -> bool:
    return node.attrs.output_size == (1, 1)


def _mean_global(node: Node) -> bool:
    x = node.inputs[0].type
    dims = node.attrs.dims
    return x.rank == 4 and dims is not None and {d % 4 for d in dims} == {2, 3}


GLOBAL_POOLS: dict[ops.OpDef, Callable[[Node], bool]] = {
    ops.adaptive_avg_pool2d: _adaptive_global,
    ops.mean: _mean_global,
}


def _is_flatten_1(node: Node) -> bool:
    """``flatten(x, 1)``: [N, C, 1, 1] -> [N, C]."""
    if node.op is not ops.flatten:
        return False
    last_dim = node.inputs[0].type.rank - 1
    return node.attrs.start_dim == 1 and node.attrs.end_dim in (-1, last_dim)


def _single_producer(graph: Graph, value: Value, user: Node) -> Node | None:
    producer = value.producer
    return producer if producer is not None and sole_user(graph, value) is user else None


def match_head(graph: Graph, linear: Node) -> list[Node] | None:
    """``[pool, flatten?, identities..., linear]`` ending at ``linear``, or None."""
    if linear.inputs[0].type.rank != 2 or not linear.inputs[1].is_constant:
        return None
    chain = [linear]
    node = _single_producer(graph, linear.inputs[0], linear)
    while node is not None and is_identity(node) and node.op is not ops.flatten:
        chain.insert(0, node)
        node = _single_producer(graph, node.inputs[0], node)
    if node is not None and _is_flatten_1(node):
        chain.insert(0, node)
        node = _single_producer(graph, node.inputs[0], node)
    if node is None or node.op not in GLOBAL_POOLS or not GLOBAL_POOLS[node.op](node):
        return None
    return [node, *chain]


def to_conv1x1(graph: Graph, chain: list[Node]) -> Value:
    """``linear(flatten(gap(x)))`` -> ``flatten(gap(conv1x1(x)))``; the conv takes the
    linear's name, the pool and flatten keep theirs."""
    pool, linear = chain[0], chain[-1]
    w_value = linear.inputs[1]
    w_data, (out_f, in_f) = w_value.const, w_value.type.shape
    flatten = next((n for n in chain if n.op is ops.flatten), None)
    splice = Splice(graph, chain)
    drop_constants(graph, [w_value])
    w4 = add_lazy(graph, f"{linear.name}.weight", TensorType((out_f, in_f, 1, 1),
                                                             w_value.type.dtype),
                  lambda: w_data.array.reshape(out_f, in_f, 1, 1), w_value)
    conv = splice.add(ops.conv2d, [pool.inputs[0], w4, linear.inputs[2]], Conv2dAttrs(),
                      like=linear)
    out = splice.add(pool.op, [conv.output], pool.attrs, like=pool).output
    if flatten is not None:
        out = splice.add(ops.flatten, [out], flatten.attrs, like=flatten).output
    return splice.finish(linear.output, out)


def _is_pointwise(conv: Node) -> bool:
    a, w = conv.attrs, conv.inputs[1]
    return (w.is_constant and w.type.shape[2:] == (1, 1) and a.stride == (1, 1)
            and a.padding == (0, 0, 0, 0) and a.groups == 1)


def match_conv_head(graph: Graph, conv: Node) -> list[Node] | None:
    """``[conv1x1, pool, flatten?]`` starting at ``conv``, or None."""
    if not _is_pointwise(conv):
        return None
    pool = sole_user(graph, conv.output)
    if pool is None or pool.op not in GLOBAL_POOLS or not GLOBAL_POOLS[pool.op](pool):
        return None
    after = sole_user(graph, pool.output)
    return [conv, pool, after] if after is not None and _is_flatten_1(after) else [conv, pool]


def to_linear(graph: Graph, chain: list[Node]) -> Value:
    """``gap(conv1x1(x))`` -> ``linear(flatten(gap(x)))`` (reshaped back to 4-D if needed)."""
    conv, pool, last = chain[0], chain[1], chain[-1]
    w_value = conv.inputs[1]
    w_data, (out_c, in_c) = w_value.const, w_value.type.shape[:2]
    splice = Splice(graph, chain)
    drop_constants(graph, [w_value])
    w2 = add_lazy(graph, f"{conv.name}.weight", TensorType((out_c, in_c), w_value.type.dtype),
                  lambda: w_data.array.reshape(out_c, in_c), w_value)
    out = splice.add(pool.op, [conv.inputs[0]], pool.attrs, like=pool).output
    if out.type.rank == 4:
        out = splice.add(ops.flatten, [out], FlattenAttrs(1), like=last,
                         name=f"{pool.name}.flatten").output
    out = splice.add(ops.linear, [out, w2, conv.inputs[2]], like=conv).output
    if out.type != last.output.type:
        out = splice.add(ops.reshape, [out], ReshapeAttrs(last.output.type.shape),
                         like=last, name=f"{conv.name}.reshape").output
    return splice.finish(last.output, out)


def head_macs(chain: list[Node], types: dict, forward: bool) -> tuple[int | None, int | None]:
    """MACs of the head's linear or 1x1 conv before and after the rewrite (batch bound to 1):
    the conv runs at every pixel of the pool's input, the linear once."""
    layer = chain[-1] if forward else chain[0]
    pool = chain[0] if forward else chain[1]
    x = types.get(id(pool.inputs[0]), pool.inputs[0].type)
    if not x.is_static:  # symbolic H, W: the MACs are not numbers
        return None, None
    n, _, h, w = x.shape
    out_c, in_c = layer.inputs[1].type.shape[:2]
    conv, linear = n * h * w * in_c * out_c, n * in_c * out_c
    return (linear, conv) if forward else (conv, linear)


def linear_to_conv1x1(graph: Graph, *, direction: str = "forward") -> PassResult:
    """Rewrite classifier heads between ``linear(flatten(gap(x)))`` (the traced form) and
    ``flatten(gap(conv1x1(x)))``; ``direction`` is "forward" (to the conv) or "reverse".
    The report gives each head's MACs before and after, and a warning when they grow."""
    if direction not in ("forward", "reverse"):
        raise PassError(f"linear-to-conv1x1: direction must be 'forward' or 'reverse', got "
                        f"{direction!r}")
    forward = direction == "forward"
    try:
        types = bind_types(graph, batch_bindings(graph))
    except CnnirError:  # a symbol beyond the batch: no MACs to report
        types = {}
    heads: list[dict] = []
    for node in [n for n in graph.nodes if n.op is (ops.linear if forward else ops.conv2d)]:
        chain = match_head(graph, node) if forward else match_conv_head(graph, node)
        if chain is not None:
            before, after = head_macs(chain, types, forward)
            (to_conv1x1 if forward else to_linear)(graph, chain)
            heads.append({"head": " -> ".join(f"{n.name} ({n.op.name})" for n in chain),
                          "layer": node.name, "macs_before": before, "macs_after": after})
    known = [h for h in heads if h["macs_before"] is not None]
    lines = [f"{h['head']}: MACs {h['macs_before']:,} -> {h['macs_after']:,}"
             if h in known else h["head"] for h in heads]
    warnings = [f"linear-to-conv1x1 adds MACs: the classifier {h['layer']} now runs at every "
                f"pixel before the pool, {h['macs_before']:,} -> {h['macs_after']:,} MACs (a "
                f"layout for fully convolutional deployment, not a speed-up)"
                for h in known if h["macs_after"] > h["macs_before"]]
    added = sum(h["macs_after"] - h["macs_before"] for h in known)
    summary = f"rewrote {len(heads)} head(s) ({direction}); MACs {added:+,}"
    return PassResult(graph, bool(heads), {"summary": summary,
                                           "heads": [h["head"] for h in heads],
                                           "layers": heads, "lines": lines + [
                                               f"warning: {w}" for w in warnings],
                                           "warnings": warnings})


PASS = Pass("linear-to-conv1x1", linear_to_conv1x1, preserves_semantics=True,
            summary="global-pool + linear heads as 1x1 conv + global pool (or the reverse); "
                    "forward multiplies the head's MACs by the pooled H·W")
