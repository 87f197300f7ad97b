"""fuse-conv-bn: fold an inference-mode batch_norm into the conv (or linear) before it.

With ``a = γ/√(rv + eps)`` per channel (γ = 1 and β = 0 when the BN has no affine
parameters) the BN is the affine map ``y = a·(z − rm) + β`` of the conv's output ``z``, so

    conv2d, deform_conv2d  W'[o]       = W[o]·a[o]          (any groups and dilation)
    conv_transpose2d       W'[ci, co'] = W[ci, co']·a[g(ci)·O/G + co']   (output channels
                           sit on weight dim 1, in group g(ci) = ci // (C_in/G))
    linear                 W'[o, :]    = W[o, :]·a[o]       (BatchNorm1d on [N, C])
    every case             b'          = (b − rm)·a + β     (b = 0 without a bias)

computed in float64 and cast to the weight's dtype, lazily: the pass allocates nothing, and
the arrays are made when something first reads them (running, saving, exporting).

Guards, as in onnxscript's fuse_batchnorm and TVM's FoldScaleAxis: the BN uses running
statistics (eval mode), the producer's output has no other user and is not a graph output,
and every parameter involved is a constant. The folded weights are new constants; old
constants that nothing uses any more are removed (a weight shared with another layer stays).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnir import ops
from cnnir.ir import ConstantData, Graph, Node, TensorType, Value
from cnnir.passes.manager import Pass, PassResult
from cnnir.passes.rewrite import (
    Splice,
    add_lazy,
    all_constant,
    constant_inputs,
    drop_constants,
    result_name,
    sole_user,
)

ScaleFn = Callable[[Any, np.ndarray, np.ndarray], np.ndarray]  # (attrs, w, a) -> factors of w


def bn_scale_shift(stats: list[ConstantData | None], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(a, c)`` with ``bn(z) = a·z + c`` per channel, in float64, from the BN's constants
    ``[running_mean, running_var, weight?, bias?]``."""
    rm, rv, gamma, beta = (None if d is None else np.asarray(d.array, np.float64)
                           for d in stats)
    a = 1.0 / np.sqrt(rv + eps)
    if gamma is not None:
        a = a * gamma
    shift = np.zeros_like(a) if beta is None else beta
    return a, shift - rm * a


def scale_out_channels(attrs: Any, w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """conv2d and linear: output channel o is weight row o (the factors ``a`` shaped to
    broadcast over the weight)."""
    return a.reshape((-1,) + (1,) * (w.ndim - 1))


def scale_transposed(attrs: Any, w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """conv_transpose2d: W[ci, co'] feeds output channel g(ci)·O/G + co' (the factors ``a``
    shaped to broadcast over the weight)."""
    c_in, per_group = w.shape[0], w.shape[1]
    g = np.arange(c_in) // (c_in // attrs.groups)
    index = g[:, None] * per_group + np.arange(per_group)[None, :]
    return a[index][:, :, None, None]


def _always(node: Node) -> bool:
    return True


def _linear_on_channels(node: Node) -> bool:
    return node.output.type.rank == 2  # BatchNorm1d on [N, C]: channels are linear's features


@dataclass(frozen=True)
class FoldRule:
    """How a layer's output channels sit in its weight, where its weight and bias inputs are,
    and a guard on the layer itself."""

    scale: ScaleFn
    weight: int = 1
    bias: int = 2
    applies: Callable[[Node], bool] = _always


FOLDERS: dict[ops.OpDef, FoldRule] = {
    ops.conv2d: FoldRule(scale_out_channels),
    ops.conv_transpose2d: FoldRule(scale_transposed),
    ops.deform_conv2d: FoldRule(scale_out_channels, weight=2, bias=3),
    ops.linear: FoldRule(scale_out_channels, applies=_linear_on_channels),
}


def _param(node: Node, index: int) -> Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def _foldable(graph: Graph, bn: Node) -> Node | None:
    """The producer ``bn`` can fold into, or None when a guard fails."""
    x = bn.inputs[0]
    producer = x.producer
    rule = FOLDERS.get(producer.op) if producer is not None else None
    if rule is None or not rule.applies(producer):
        return None
    if bn.attrs.training or bn.inputs[1] is None or bn.inputs[2] is None:
        return None
    if sole_user(graph, x) is not bn or producer.output is not x:
        return None
    params = [_param(producer, rule.weight), _param(producer, rule.bias)]
    if params[0] is None or not all_constant(bn.inputs[1:]) or not all_constant(params):
        return None
    return producer


def folded_weights(layer: Node, bn: Node) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """A cached thunk computing ``(W', b')``; it holds the constants' data, not the graph."""
    rule = FOLDERS[layer.op]
    attrs, eps = layer.attrs, bn.attrs.eps
    w_data = layer.inputs[rule.weight].const
    b_value = _param(layer, rule.bias)
    b_data = b_value.const if b_value is not None else None
    stats = [v.const if v is not None else None for v in bn.inputs[1:5]]

    @functools.cache
    def compute() -> tuple[np.ndarray, np.ndarray]:
        a, c = bn_scale_shift(stats, eps)
        w = w_data.array
        b = np.zeros_like(a) if b_data is None else np.asarray(b_data.array, np.float64)
        # the product in float64, rounded once into w's dtype, without a float64 copy of w
        # (ResNet-18's: 90 MB of new pages, most of a warm start's folding time)
        new_w = np.multiply(w, rule.scale(attrs, w, a), out=np.empty(w.shape, w.dtype),
                            dtype=np.float64, casting="same_kind")
        return new_w, (b * a + c).astype(w.dtype)

    return compute


def fold(graph: Graph, layer: Node, bn: Node) -> Value:
    """Replace ``layer -> bn`` by one layer whose weight and bias are folded (lazily: the
    arrays are computed when something first reads them)."""
    compute = folded_weights(layer, bn)
    rule = FOLDERS[layer.op]
    w_value = layer.inputs[rule.weight]
    bias_type = TensorType((bn.output.type.shape[1],), w_value.type.dtype)
    old_constants = constant_inputs([layer, bn])
    name = result_name(graph, layer, bn)
    splice = Splice(graph, [layer, bn], anchor=layer)
    drop_constants(graph, old_constants)
    w2 = add_lazy(graph, f"{layer.name}.weight", w_value.type, lambda: compute()[0], w_value,
                  fresh=True)
    b2 = add_lazy(graph, f"{layer.name}.bias", bias_type, lambda: compute()[1], w_value,
                  fresh=True)
    inputs = list(layer.inputs) + [None] * (rule.bias + 1 - len(layer.inputs))
    inputs[rule.weight], inputs[rule.bias] = w2, b2
    node = splice.add(layer.op, inputs, layer.attrs, like=layer, name=name)
    return splice.finish(bn.output, node.output)


def fuse_conv_bn(graph: Graph) -> PassResult:
    """Fold every eval-mode batch_norm that follows a conv2d, conv_transpose2d, deform_conv2d
    or linear."""
    folded = []
    for bn in [n for n in graph.nodes if n.op is ops.batch_norm]:
        layer = _foldable(graph, bn)
        if layer is not None:
            folded.append(f"{bn.name} -> {layer.name}")
            fold(graph, layer, bn)
    summary = f"folded {len(folded)} batch_norm layer(s)"
    return PassResult(graph, bool(folded), {"summary": summary, "folded": folded,
                                            "lines": folded})


PASS = Pass("fuse-conv-bn", fuse_conv_bn, preserves_semantics=True,
            summary="fold inference-mode BatchNorm into the preceding conv/linear")
