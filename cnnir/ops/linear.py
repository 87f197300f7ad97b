"""Fully connected layers and matrix products.

linear: ``y = x·Wᵀ + b`` over the last dim, W ``[out, in]``, any number of leading dims.
    MACs = (∏ leading dims)·in·out (every leading dim counts); FLOPs = 2·MACs (+ outputs
    with a bias).
matmul: torch.matmul's rules (1-D operands are promoted and squeezed; batch dims broadcast).
    MACs = (∏ output batch dims)·M·K·N; FLOPs = 2·MACs.
Gradients are matmuls too (``vjp_linear``, ``vjp_matmul``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnir.errors import ShapeError
from cnnir.ir.types import TensorType, shape_str
from cnnir.ops.registry import Cost, OpDef, register, require, same_dtype, static_numel
from cnnir.ops.tensor import (
    ReduceAttrs,
    ReshapeAttrs,
    TransposeAttrs,
    broadcast_shapes,
    reshape,
    sum_,
    transpose,
)

if TYPE_CHECKING:
    from cnnir.ir.graph import Node, Value


def infer_linear(attrs: object, types: list[TensorType | None]) -> list[TensorType]:
    x, w, b = (types + [None])[:3]
    dtype = same_dtype([x, w, b])
    require(w.rank == 2, f"expects a weight [out_features, in_features] but it is "
            f"{shape_str(w.shape)}")
    require(x.rank >= 1, "expects an input with at least one dimension")
    out_f, in_f = w.shape
    if x.shape[-1] != in_f:
        hint = ("flatten the input first (x.flatten(1), cnnir.flatten(x, 1) or nn.Flatten())"
                if x.rank > 2 else "check in_features against the previous layer's output")
        raise ShapeError(f"expects {in_f} input features (weight {shape_str(w.shape)}) but its "
                         f"input is {shape_str(x.shape)}", hint=hint)
    if b is not None and b.shape != (out_f,):
        raise ShapeError(f"expects a bias of shape [{out_f}] but it is {shape_str(b.shape)}")
    return [TensorType((*x.shape[:-1], out_f), dtype)]


def cost_linear(attrs: object, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    out_elems = static_numel(outs[0])
    macs = out_elems * ins[1].shape[1]
    return Cost(macs=macs, flops=2 * macs + (out_elems if ins[2] is not None else 0))


def onnx_linear(b: Any, node: Node) -> list[str]:
    """ONNX mapping: 2-D input ``Gemm(X, W, B?, transB=1)``; otherwise ``MatMul(X, Wᵀ)``
    (+ ``Add(B)``), the transpose being a ``Transpose`` of the stored ``[out, in]`` weight."""
    x, w, bias = b.input(0), b.input(1), b.input(2)
    if node.inputs[0].type.rank == 2:
        return [b.op("Gemm", [x, w, bias], transB=1)]
    y = b.op("MatMul", [x, b.op("Transpose", [w], perm=[1, 0])])
    return [b.op("Add", [y, bias]) if bias else y]


def as_rows(ad: Any, v: Value, width: int) -> Value:
    """``v`` as a matrix of rows of ``width`` (every leading dim flattened)."""
    return v if v.type.rank == 2 else ad.op(reshape, [v], ReshapeAttrs((-1, width)))


def vjp_linear(ad: Any, node: Node, grads: list) -> list:
    """``gx = g·W``; ``gW = gᵀ·x`` and ``gb = Σ g`` over every leading dim (the rows of g
    and x flattened to matrices)."""
    g = grads[0]
    x, w, bias = node.inputs
    out_f, in_f = w.type.shape
    gx = ad.op(matmul, [g, w]) if ad.needs(0) else None
    gw = gb = None
    if ad.needs(1):
        rows_g, rows_x = as_rows(ad, g, out_f), as_rows(ad, x, in_f)
        gw = ad.op(matmul, [ad.op(transpose, [rows_g], TransposeAttrs((1, 0))), rows_x])
    if bias is not None and ad.needs(2):
        lead = tuple(range(g.type.rank - 1))
        gb = ad.op(sum_, [g], ReduceAttrs(lead)) if lead else g
    return [gx, gw, gb]


linear = register(OpDef(
    name="linear",
    inputs=("input", "weight", "bias?"),
    params=("weight", "bias"),
    infer=infer_linear,
    cost=cost_linear,
    onnx=onnx_linear,
    flop_rule="2·MACs, plus one add per output element with a bias",
    vjp=vjp_linear,
))


def infer_matmul(attrs: object, types: list[TensorType | None]) -> list[TensorType]:
    a, b = types
    dtype = same_dtype([a, b])
    require(a.rank >= 1 and b.rank >= 1, "expects operands with at least one dimension")
    a_shape = (1, *a.shape) if a.rank == 1 else a.shape
    b_shape = (*b.shape, 1) if b.rank == 1 else b.shape
    require(a_shape[-1] == b_shape[-2],
            f"cannot multiply {shape_str(a.shape)} by {shape_str(b.shape)}: inner dimensions "
            f"{a_shape[-1]} and {b_shape[-2]} differ")
    batch = broadcast_shapes(a_shape[:-2], b_shape[:-2])
    out = [*batch]
    if a.rank > 1:
        out.append(a_shape[-2])
    if b.rank > 1:
        out.append(b_shape[-1])
    return [TensorType(tuple(out), dtype)]


def cost_matmul(attrs: object, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
    macs = static_numel(outs[0]) * ins[0].shape[-1]
    return Cost(macs=macs, flops=2 * macs)


def onnx_matmul(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``MatMul`` (numpy matmul semantics, as torch.matmul)."""
    return [b.op("MatMul", [b.input(0), b.input(1)])]


def swap_last(ad: Any, v: Value) -> Value:
    perm = (*range(v.type.rank - 2), v.type.rank - 1, v.type.rank - 2)
    return ad.op(transpose, [v], TransposeAttrs(perm))


def vjp_matmul(ad: Any, node: Node, grads: list) -> list:
    """``gA = g·Bᵀ``, ``gB = Aᵀ·g``, each summed over the batch dims it was broadcast along.
    Operands must have two or more dims (1-D operands are promoted: not yet differentiable)."""
    g = grads[0]
    a, b = node.inputs
    if a.type.rank < 2 or b.type.rank < 2:
        ad.fail("cannot differentiate matmul with a 1-D operand",
                "unsqueeze the vector to a matrix (reshape) first")
    ga = ad.sum_to(ad.op(matmul, [g, swap_last(ad, b)]), a.type) if ad.needs(0) else None
    gb = ad.sum_to(ad.op(matmul, [swap_last(ad, a), g]), b.type) if ad.needs(1) else None
    return [ga, gb]


matmul = register(OpDef(
    name="matmul",
    inputs=("input", "other"),
    infer=infer_matmul,
    cost=cost_matmul,
    onnx=onnx_matmul,
    flop_rule="2·MACs",
    vjp=vjp_matmul,
))
