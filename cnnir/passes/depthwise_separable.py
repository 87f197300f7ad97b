"""depthwise-separable: a k×k conv C → O as a depthwise k×k conv and a pointwise 1x1 conv.
THIS PASS CHANGES THE NETWORK'S FUNCTION (MobileNet's factorization): ``cnnir optimize`` warns
with the measured output change and writes ``-o`` only with ``--allow-approximate``.

    conv2d(x, W[O, C, kh, kw], b)  ->  conv2d(conv2d(x, D[C, 1, kh, kw], groups=C), P[O, C], b)

The depthwise conv keeps the layer's stride, padding and dilation, so the output shape and
receptive field are the layer's; a ``conv2d_fused`` layer (after fuse-conv-activation) keeps
its activation and residual on the pointwise conv. The pair computes the kernel
``Ŵ[o, c] = P[o, c]·D[c]``: one spatial filter per input channel. ``init="lstsq"`` (default)
takes, for every input channel c, the best rank-1 approximation of the matrix
``W[:, c, :, :]`` (O × kh·kw) from its SVD (Eckart–Young: ``P[:, c] = √σ₁·u₁``,
``D[c] = √σ₁·v₁``), which is the least-squares optimum, and reports ``‖Ŵ − W‖/‖W‖``;
``init="kaiming"`` draws He-normal weights lazily.

Weights go from ``C·O·kh·kw`` to ``C·kh·kw + C·O``, and MACs by the same ratio. Only ungrouped
convs with a kernel larger than 1x1 and at least ``min_channels`` input and output channels
are rewritten; the others of size above 1x1 are listed with the reason.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cnnir import ops
from cnnir.errors import PassError
from cnnir.ir import Graph, Node, TensorType, Value
from cnnir.ops.conv import Conv2dAttrs
from cnnir.passes.manager import Pass, PassResult
from cnnir.passes.rewrite import (
    Splice,
    add_array,
    add_lazy,
    drop_constant,
    kaiming_init,
    result_name,
)
from cnnir.passes.shape_inference import batch_bindings, bind_types

CONVS = frozenset({ops.conv2d, ops.conv2d_fused})  # the pointwise conv keeps an epilogue


def skip_reason(node: Node, min_channels: int) -> str | None:
    o, per_group, kh, kw = node.inputs[1].type.shape
    if node.attrs.groups != 1:
        return f"grouped conv (groups={node.attrs.groups})"
    if min(per_group, o) < min_channels:
        return f"{per_group} -> {o} channels, below min_channels={min_channels}"
    if not node.inputs[1].is_constant:
        return "its weight is not a constant"
    if per_group * kh * kw + per_group * o >= per_group * o * kh * kw:
        return "the factorization would not save weights"
    return None


def rank1_factors(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(D [C, 1, kh, kw], P [O, C, 1, 1], relative error)`` of the best per-channel rank-1
    approximation ``W[:, c] ≈ P[:, c] ⊗ D[c]``."""
    o, c, kh, kw = w.shape
    per_channel = np.asarray(w, np.float64).transpose(1, 0, 2, 3).reshape(c, o, kh * kw)
    u, s, vt = np.linalg.svd(per_channel, full_matrices=False)
    root = np.sqrt(s[:, 0])
    depthwise = (vt[:, 0, :] * root[:, None]).reshape(c, 1, kh, kw)
    pointwise = (u[:, :, 0] * root[:, None]).T.reshape(o, c, 1, 1)
    total = float(np.sum(s ** 2))
    error = math.sqrt(max(total - float(np.sum(s[:, 0] ** 2)), 0.0) / total) if total else 0.0
    return depthwise.astype(w.dtype), pointwise.astype(w.dtype), error


def _weights(graph: Graph, node: Node, init: str, seed: int,
             index: int) -> tuple[Value, Value, float | None]:
    w_value = node.inputs[1]
    o, c, kh, kw = w_value.type.shape
    names = (f"{node.name}.depthwise.weight", f"{node.name}.weight")
    shapes = ((c, 1, kh, kw), (o, c, 1, 1))
    dtype = w_value.type.dtype
    if init == "kaiming":
        d, p = (add_lazy(graph, n, TensorType(s, dtype), kaiming_init(s, dtype, (seed, index, i)),
                         w_value) for i, (n, s) in enumerate(zip(names, shapes)))
        return d, p, None
    depthwise, pointwise, error = rank1_factors(w_value.const.array)
    return (add_array(graph, names[0], depthwise, w_value),
            add_array(graph, names[1], pointwise, w_value), error)


def separate(graph: Graph, node: Node, init: str, seed: int, index: int) -> float | None:
    """Replace ``node`` by depthwise + pointwise convs; returns the fit error (lstsq)."""
    name = result_name(graph, node, node)
    a = node.attrs
    c = node.inputs[1].type.shape[1]
    w_value = node.inputs[1]
    splice = Splice(graph, [node])
    drop_constant(graph, w_value)
    d, p, error = _weights(graph, node, init, seed, index)
    dw_attrs = Conv2dAttrs(a.stride, a.padding, a.dilation, groups=c)
    dw = splice.add(ops.conv2d, [node.inputs[0], d, None], dw_attrs, like=node,
                    name=f"{node.name}.depthwise")
    pw_attrs = dataclasses.replace(a, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1))
    pw = splice.add(node.op, [dw.output, p, *node.inputs[2:]], pw_attrs, like=node, name=name)
    splice.finish(node.output, pw.output)
    return error


def _row(node: Node, types: dict) -> dict:
    o, c, kh, kw = node.inputs[1].type.shape
    out = types[id(node.output)]
    pixels = math.prod(out.shape) // o
    before_macs = ops.conv2d.cost(node.attrs, [types[id(node.inputs[0])], node.inputs[1].type,
                                               None], [out]).macs
    after_macs = pixels * (c * kh * kw + c * o)
    before, after = c * o * kh * kw, c * kh * kw + c * o
    return {"layer": node.name, "kernel": [kh, kw], "channels": [c, o],
            "params_before": before, "params_after": after, "params_saved": before - after,
            "macs_before": before_macs, "macs_after": after_macs,
            "macs_saved": before_macs - after_macs, "fit_error": None}


def depthwise_separable(graph: Graph, *, min_channels: int = 16, init: str = "lstsq",
                        seed: int = 0) -> PassResult:
    """Factor every eligible k×k conv2d into depthwise k×k + pointwise 1x1."""
    if init not in ("lstsq", "kaiming"):
        raise PassError(f"depthwise-separable: init must be 'lstsq' or 'kaiming', got {init!r}")
    types = bind_types(graph, batch_bindings(graph))
    planned, skipped = [], []
    for node in [n for n in graph.nodes if n.op in CONVS]:
        if node.inputs[1].type.shape[2:] == (1, 1):
            continue
        reason = skip_reason(node, min_channels)
        if reason is None:
            planned.append((node, _row(node, types)))
        else:
            skipped.append({"layer": node.name, "reason": reason})
    for index, (node, row) in enumerate(planned):
        row["fit_error"] = separate(graph, node, init, seed, index)
    rows = [row for _, row in planned]
    keys = ("params_before", "params_after", "params_saved", "macs_before", "macs_after",
            "macs_saved")
    totals = {"layers": len(rows), **{k: sum(r[k] for r in rows) for k in keys}}
    lines = [f"{r['layer']}: {r['kernel'][0]}x{r['kernel'][1]} {r['channels'][0]}->"
             f"{r['channels'][1]}, params {r['params_before']:,} -> {r['params_after']:,}, "
             f"MACs {r['macs_before']:,} -> {r['macs_after']:,}"
             + ("" if r["fit_error"] is None else f", fit error {r['fit_error']:.3g}")
             for r in rows]
    lines += [f"{s['layer']}: left alone ({s['reason']})" for s in skipped]
    summary = (f"separated {len(rows)} conv(s), left {len(skipped)} alone; params saved "
               f"{totals['params_saved']:,}, MACs saved {totals['macs_saved']:,}")
    return PassResult(graph, bool(rows), {"summary": summary, "layers": rows,
                                          "skipped": skipped, "totals": totals,
                                          "lines": lines})


PASS = Pass("depthwise-separable", depthwise_separable, preserves_semantics=False,
            summary="factor k×k convs into depthwise + pointwise convs (changes the function)")
