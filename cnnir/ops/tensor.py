"""Tensor ops: broadcasting arithmetic, concatenation, reshapes, permutations, splits,
reductions, channel shuffle, constant padding, identity, slicing and constant-index gathers,
and the elementwise math of torch's top level (sqrt, exp, log, pow, clamp, comparisons as
0/1 masks, where).

FLOPs: add/sub/mul/div cost one per output element; sum and amax one per input element;
mean one per input element plus one division per output element; everything that only moves
data (cat, reshape, flatten, transpose, split, channel_shuffle, pad, identity, expand, slice,
gather) costs 0. sqrt, exp, log, pow, compare and where cost one per output element, clamp
two (a comparison per bound). amax_grad (backward-only) 3·E_in + E_out.

Gradients: each op's ``vjp`` undoes its data movement (split ↔ cat, pad ↔ crop, a shuffle by
its inverse, a transpose by the inverse permutation, a slice by zero interleaving and padding,
a gather by gathers from the gradient with a zero slot appended) or sums over broadcast axes.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnir.errors import ShapeError
from cnnir.ir.types import (
    Dim,
    TensorType,
    dim_add,
    dim_mul,
    is_static,
    numel,
    shape_str,
)
from cnnir.ops.registry import (
    GLOBAL,
    Cost,
    OpDef,
    elementwise_cost,
    free_cost,
    register,
    require,
    same_dtype,
    static_numel,
)

if TYPE_CHECKING:
    from cnnir.ir.graph import Node, Value


def normalize_dim(dim: int, rank: int, what: str = "dim") -> int:
    if not isinstance(dim, int) or not -rank <= dim < max(rank, 1):
        raise ShapeError(f"{what}={dim} is out of range for a {rank}-D tensor",
                         hint=f"use a value in [{-rank}, {rank - 1}]")
    return dim % rank if rank else 0


def broadcast_shapes(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """numpy broadcasting: align from the right; size-1 or missing dims stretch."""
    out: list[Dim] = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(
                f"cannot broadcast {shape_str(a)} with {shape_str(b)}: dim {-i} is {da} vs {db}",
                hint="the shapes must be equal or 1 in every dimension (no silent broadcast)",
            )
    return tuple(reversed(out))


def infer_broadcast(attrs: object, types: list[TensorType | None]) -> list[TensorType]:
    a, b = types
    return [TensorType(broadcast_shapes(a.shape, b.shape), same_dtype([a, b]))]


def onnx_binary(op_type: str) -> Any:
    """ONNX mapping: ``Add``/``Sub``/``Mul``/``Div`` (multidirectional numpy broadcasting)."""

    def mapping(b: Any, node: Node) -> list[str]:
        return [b.op(op_type, [b.input(0), b.input(1)])]

    return mapping


def _binary(name: str, symbol: str, onnx_type: str, vjp: Any) -> OpDef:
    return register(OpDef(
        name=name,
        inputs=("input", "other"),
        infer=infer_broadcast,
        cost=elementwise_cost(1),
        flop_rule=f"one {symbol} per output element",
        onnx=onnx_binary(onnx_type),
        vjp=vjp,
    ))


def negated(ad: Any, g: Value) -> Value:
    return ad.op(mul, [g, ad.literal(-1.0, g.type.dtype)])


def vjp_add(ad: Any, node: Node, grads: list) -> list:
    """Each operand gets the gradient summed over the axes it was broadcast along."""
    g = grads[0]
    return [ad.sum_to(g, v.type) if ad.needs(i) else None for i, v in enumerate(node.inputs)]


def vjp_sub(ad: Any, node: Node, grads: list) -> list:
    g = grads[0]
    a, b = node.inputs
    return [ad.sum_to(g, a.type) if ad.needs(0) else None,
            ad.sum_to(negated(ad, g), b.type) if ad.needs(1) else None]


def vjp_mul(ad: Any, node: Node, grads: list) -> list:
    g = grads[0]
    a, b = node.inputs
    return [ad.sum_to(ad.op(mul, [g, b]), a.type) if ad.needs(0) else None,
            ad.sum_to(ad.op(mul, [g, a]), b.type) if ad.needs(1) else None]


def vjp_div(ad: Any, node: Node, grads: list) -> list:
    """``d(a/b) = da/b − (a/b)·db/b``: the second uses the node's own output."""
    g = grads[0]
    a, b = node.inputs
    ga = ad.op(div, [g, b]) if ad.needs(0) or ad.needs(1) else None
    gb = ad.op(mul, [negated(ad, ga), node.output]) if ad.needs(1) else None
    return [ad.sum_to(ga, a.type) if ad.needs(0) else None,
            ad.sum_to(gb, b.type) if ad.needs(1) else None]


add = _binary("add", "+", "Add", vjp_add)
sub = _binary("sub", "-", "Sub", vjp_sub)
mul = _binary("mul", "*", "Mul", vjp_mul)
div = _binary("div", "/", "Div", vjp_div)


@dataclass(frozen=True)
class DimAttrs:
    dim: int = 0


def infer_cat(a: DimAttrs, types: list[TensorType | None]) -> list[TensorType]:
    require(len(types) >= 1, "expects at least one tensor")
    first = types[0]
    dim = normalize_dim(a.dim, first.rank)
    dtype = same_dtype(types)
    total: Dim = 0
    for i, t in enumerate(types):
        same_rest = t.rank == first.rank and all(
            t.shape[k] == first.shape[k] for k in range(first.rank) if k != dim)
        require(same_rest,
                f"expects all inputs to match except in dim {dim}, but input 0 is "
                f"{shape_str(first.shape)} and input {i} is {shape_str(t.shape)}",
                "concatenation never broadcasts; resize or crop the inputs first")
        total = dim_add(total, t.shape[dim])
    shape = list(first.shape)
    shape[dim] = total
    return [TensorType(tuple(shape), dtype)]


def onnx_cat(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Concat(axis)``."""
    axis = normalize_dim(node.attrs.dim, node.inputs[0].type.rank)
    return [b.op("Concat", [b.input(i) for i in range(len(node.inputs))], axis=axis)]


def vjp_cat(ad: Any, node: Node, grads: list) -> list:
    """The gradient split back into the pieces."""
    dim = normalize_dim(node.attrs.dim, node.output.type.rank)
    sizes = tuple(v.type.shape[dim] for v in node.inputs)
    if not all(is_static(s) for s in sizes):
        ad.fail(f"cannot split a gradient along the symbolic dim {dim}")
    return ad.ops(split, [grads[0]], SplitAttrs(sizes, dim))


cat = register(OpDef(
    name="cat", inputs=("tensors*",), attrs=DimAttrs, infer=infer_cat, cost=free_cost,
    flop_rule="0 (data movement)", onnx=onnx_cat, vjp=vjp_cat,
))


def _monomial(dim: str) -> tuple[int, list[str]]:
    """``"N * 2"`` -> (2, ["N"]); any expression that is not a product stays one symbol."""
    node = ast.parse(dim, mode="eval").body
    coef, names, stack = 1, [], [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult):
            stack += [n.left, n.right]
        elif isinstance(n, ast.Constant) and isinstance(n.value, int):
            coef *= n.value
        elif isinstance(n, ast.Name):
            names.append(n.id)
        else:
            return 1, [dim]
    return coef, names


def _factor(shape: tuple[Dim, ...]) -> tuple[int, tuple[str, ...]]:
    """An element count as (integer coefficient, sorted symbolic factors)."""
    coef, syms = 1, []
    for d in shape:
        if is_static(d):
            coef *= d
        else:
            c, names = _monomial(str(d))
            coef *= c
            syms += names
    return coef, tuple(sorted(syms))


def resolve_shape(src: tuple[Dim, ...], target: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """``target`` with its one ``-1`` resolved so the element counts of src and target agree."""
    holes = [i for i, d in enumerate(target) if d == -1]
    require(len(holes) <= 1, f"only one dimension can be -1, got {list(target)}")
    require(all(d == -1 or not is_static(d) or d >= 0 for d in target),
            f"invalid shape dimension in {list(target)}")
    src_coef, src_syms = _factor(src)
    known = tuple(d for d in target if d != -1)
    dst_coef, dst_syms = _factor(known)
    mismatch = ShapeError(
        f"cannot reshape {shape_str(src)} ({numel(src)} elements) to {list(target)} "
        f"({numel(known) if not holes else 'a multiple of ' + str(numel(known))} elements)",
        hint="the element count must stay the same",
    )
    if not holes:
        if (src_coef, src_syms) != (dst_coef, dst_syms):
            raise mismatch
        return tuple(target)
    rest = list(src_syms)
    for s in dst_syms:
        if s not in rest:
            raise mismatch
        rest.remove(s)
    if dst_coef == 0 or src_coef % dst_coef:
        raise mismatch
    fill: Dim = src_coef // dst_coef
    for s in rest:
        fill = dim_mul(fill, s)
    out = list(target)
    out[holes[0]] = fill
    return tuple(out)


@dataclass(frozen=True)
class ReshapeAttrs:
    shape: tuple[Dim, ...] = ()


def infer_reshape(a: ReshapeAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    return [TensorType(resolve_shape(x.shape, a.shape), x.dtype)]


def onnx_reshape_to(b: Any, x: str, src: tuple[Dim, ...], target: tuple[Dim, ...]) -> str:
    """``Reshape(x, shape)`` from ``src`` to the fully resolved ``target``, keeping symbolic
    dims dynamic: a symbol equal to the input dim at the same index becomes ``0`` (copy, with
    ``allowzero=0``); one other symbol becomes ``-1``; more are gathered from ``Shape(x)``."""
    copy_ok = 0 not in target
    entries: list[Dim] = [
        d if is_static(d) else (0 if copy_ok and i < len(src) and src[i] == d else None)
        for i, d in enumerate(target)
    ]
    holes = [i for i, d in enumerate(entries) if d is None]
    if len(holes) == 1:
        entries[holes[0]] = -1
    if len(holes) <= 1:
        shape = b.const(np.asarray(entries, dtype=np.int64), "shape")
        return b.op("Reshape", [x, shape], allowzero=int(not copy_ok))
    shape_of = b.op("Shape", [x])
    pieces = []
    for i, d in enumerate(target):
        if entries[i] is not None:
            pieces.append(b.const(np.asarray([entries[i]], dtype=np.int64), "dim"))
        elif d in src:
            index = b.const(np.asarray([src.index(d)], dtype=np.int64), "index")
            pieces.append(b.op("Gather", [shape_of, index], axis=0))
        else:
            b.fail(f"cannot express the symbolic dim {d!r} of {shape_str(target)} from the "
                   f"input shape {shape_str(src)}", "reshape with at most one derived dim")
    return b.op("Reshape", [x, b.op("Concat", pieces, axis=0)], allowzero=int(not copy_ok))


def onnx_reshape(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Reshape`` to the inferred output shape (see ``onnx_reshape_to``)."""
    return [onnx_reshape_to(b, b.input(0), node.inputs[0].type.shape, node.output.type.shape)]


def vjp_reshape(ad: Any, node: Node, grads: list) -> list:
    """reshape, flatten and identity: the gradient in the input's shape."""
    shape = node.inputs[0].type.shape
    g = grads[0]
    return [g if g.type.shape == shape else ad.op(reshape, [g], ReshapeAttrs(tuple(shape)))]


reshape = register(OpDef(
    name="reshape", inputs=("input",), attrs=ReshapeAttrs, infer=infer_reshape,
    cost=free_cost, flop_rule="0 (data movement)", onnx=onnx_reshape, vjp=vjp_reshape,
    reshapes=True,
))


@dataclass(frozen=True)
class FlattenAttrs:
    start_dim: int = 1
    end_dim: int = -1


def infer_flatten(a: FlattenAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    if x.rank == 0:
        return [TensorType((1,), x.dtype)]
    start = normalize_dim(a.start_dim, x.rank, "start_dim")
    end = normalize_dim(a.end_dim, x.rank, "end_dim")
    require(start <= end, f"start_dim={a.start_dim} must not come after end_dim={a.end_dim}")
    merged = numel(x.shape[start:end + 1])
    return [TensorType((*x.shape[:start], merged, *x.shape[end + 1:]), x.dtype)]


def flatten_window(a: FlattenAttrs, types: list[TensorType | None]) -> str | None:
    return GLOBAL if types[0].rank == 4 and a.start_dim in (0, 1) else None


def onnx_flatten(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Flatten(axis=1)`` for flatten(1, -1), the only case where ONNX's
    always-2-D Flatten equals torch's; every other flatten is a ``Reshape``."""
    x, a = node.inputs[0].type, node.attrs
    if x.rank >= 2 and normalize_dim(a.start_dim, x.rank) == 1 and a.end_dim in (-1, x.rank - 1):
        return [b.op("Flatten", [b.input(0)], axis=1)]
    return [onnx_reshape_to(b, b.input(0), x.shape, node.output.type.shape)]


flatten = register(OpDef(
    name="flatten", inputs=("input",), attrs=FlattenAttrs, infer=infer_flatten,
    cost=free_cost, window=flatten_window, flop_rule="0 (data movement)", onnx=onnx_flatten,
    vjp=vjp_reshape, reshapes=True,
))


@dataclass(frozen=True)
class TransposeAttrs:
    perm: tuple[int, ...] = ()


def infer_transpose(a: TransposeAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    perm = tuple(normalize_dim(p, x.rank, "perm entry") for p in a.perm)
    require(sorted(perm) == list(range(x.rank)),
            f"perm {list(a.perm)} is not a permutation of the {x.rank} dims of "
            f"{shape_str(x.shape)}")
    return [TensorType(tuple(x.shape[p] for p in perm), x.dtype)]


def onnx_transpose(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Transpose(perm)``."""
    rank = node.inputs[0].type.rank
    perm = [normalize_dim(p, rank, "perm entry") for p in node.attrs.perm]
    return [b.op("Transpose", [b.input(0)], perm=perm)]


def vjp_transpose(ad: Any, node: Node, grads: list) -> list:
    """The gradient transposed back (the inverse permutation)."""
    rank = node.inputs[0].type.rank
    perm = [normalize_dim(p, rank, "perm entry") for p in node.attrs.perm]
    inverse = tuple(perm.index(i) for i in range(rank))
    return [ad.op(transpose, [grads[0]], TransposeAttrs(inverse))]


transpose = register(OpDef(
    name="transpose", inputs=("input",), attrs=TransposeAttrs, infer=infer_transpose,
    cost=free_cost, flop_rule="0 (data movement)", onnx=onnx_transpose, vjp=vjp_transpose,
))


@dataclass(frozen=True)
class SplitAttrs:
    sizes: tuple[int, ...] = ()
    dim: int = 0


def chunk_sizes(length: int, chunks: int) -> tuple[int, ...]:
    """torch.chunk: pieces of ceil(L / chunks), the last smaller; possibly fewer pieces."""
    require(chunks >= 1, f"chunks must be >= 1, got {chunks}")
    step = -(-length // chunks) if length else 0
    if step == 0:
        return (0,) * chunks
    return tuple(min(step, length - i) for i in range(0, length, step))


def infer_split(a: SplitAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    dim = normalize_dim(a.dim, x.rank)
    length = x.shape[dim]
    require(is_static(length), f"cannot split the symbolic dim {length}")
    require(sum(a.sizes) == length and min(a.sizes, default=0) >= 0,
            f"split sizes {list(a.sizes)} must add up to {length}, the size of dim {dim} of "
            f"{shape_str(x.shape)}")
    outs = []
    for size in a.sizes:
        shape = list(x.shape)
        shape[dim] = size
        outs.append(TensorType(tuple(shape), x.dtype))
    return outs


def onnx_split(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Split(X, split, axis)`` (sizes are an input since opset 13)."""
    a = node.attrs
    sizes = b.const(np.asarray(a.sizes, dtype=np.int64), "split")
    axis = normalize_dim(a.dim, node.inputs[0].type.rank)
    outputs = b.op("Split", [b.input(0), sizes], axis=axis, n_out=len(a.sizes))
    return outputs if len(a.sizes) > 1 else [outputs]


def vjp_split(ad: Any, node: Node, grads: list) -> list:
    """The pieces' gradients concatenated; a piece nothing depends on contributes zeros."""
    pieces = [g if g is not None else ad.zeros(v.type) for g, v in zip(grads, node.outputs)]
    if len(pieces) == 1:
        return pieces
    return [ad.op(cat, pieces, DimAttrs(node.attrs.dim))]


split = register(OpDef(
    name="split", inputs=("input",), attrs=SplitAttrs, infer=infer_split, cost=free_cost,
    flop_rule="0 (data movement)", onnx=onnx_split, vjp=vjp_split,
))


@dataclass(frozen=True)
class ReduceAttrs:
    dims: tuple[int, ...] | None = None
    keepdim: bool = False


def infer_reduce(a: ReduceAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    dims = range(x.rank) if a.dims is None else [normalize_dim(d, x.rank) for d in a.dims]
    dims = set(dims)
    if a.keepdim:
        shape = tuple(1 if i in dims else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in dims)
    return [TensorType(shape, x.dtype)]


def reduce_window(a: ReduceAttrs, types: list[TensorType | None]) -> str | None:
    x = types[0]
    dims = range(x.rank) if a.dims is None else [d % x.rank for d in a.dims]
    return GLOBAL if x.rank == 4 and ({2, 3} & set(dims)) else None


def cost_reduce(per_output: int):
    def cost(a: ReduceAttrs, ins: list[TensorType | None], outs: list[TensorType]) -> Cost:
        return Cost(flops=static_numel(ins[0]) + per_output * static_numel(outs[0]))

    return cost


def onnx_reduce(op_type: str) -> Any:
    """ONNX mapping: ``Reduce*(X, axes?, keepdims)`` (axes an input since opset 18; no axes
    reduces everything). mean over (2, 3) of a 4-D input with keepdim is ``GlobalAveragePool``.
    """

    def mapping(b: Any, node: Node) -> list[str]:
        a, rank = node.attrs, node.inputs[0].type.rank
        dims = None if a.dims is None else sorted({normalize_dim(d, rank) for d in a.dims})
        if op_type == "ReduceMean" and rank == 4 and dims == [2, 3] and a.keepdim:
            return [b.op("GlobalAveragePool", [b.input(0)])]
        inputs = [b.input(0)]
        if dims is not None:
            inputs.append(b.const(np.asarray(dims, dtype=np.int64), "axes"))
        return [b.op(op_type, inputs, keepdims=int(a.keepdim))]

    return mapping


def _reduction(name: str, per_output: int, rule: str, onnx_type: str,
               vjp: Any = None) -> OpDef:
    return register(OpDef(
        name=name, inputs=("input",), attrs=ReduceAttrs, infer=infer_reduce,
        cost=cost_reduce(per_output), window=reduce_window, flop_rule=rule,
        onnx=onnx_reduce(onnx_type), vjp=vjp,
    ))


def reduced_dims(a: ReduceAttrs, rank: int) -> tuple[int, ...]:
    return tuple(range(rank)) if a.dims is None else tuple(
        sorted({normalize_dim(d, rank) for d in a.dims}))


def spread(ad: Any, node: Node, g: Value) -> Value:
    """A reduction's gradient broadcast back over the reduced dims of its input."""
    x = node.inputs[0].type
    dims = reduced_dims(node.attrs, x.rank)
    kept = tuple(1 if i in dims else d for i, d in enumerate(x.shape))
    if g.type.shape != kept:
        g = ad.op(reshape, [g], ReshapeAttrs(kept))
    return ad.op(expand, [g], ExpandAttrs(tuple(x.shape)))


def vjp_sum(ad: Any, node: Node, grads: list) -> list:
    return [spread(ad, node, grads[0])]


def vjp_mean(ad: Any, node: Node, grads: list) -> list:
    """``sum``'s gradient divided by the count of averaged elements."""
    x = node.inputs[0].type
    count = numel(tuple(x.shape[i] for i in reduced_dims(node.attrs, x.rank)))
    if not is_static(count):
        ad.fail(f"cannot differentiate a mean over the symbolic size {count}",
                "trace with concrete shapes, or reduce the loss inside the loss op "
                "(reduction='mean')")
    return [ad.op(mul, [spread(ad, node, grads[0]), ad.literal(1.0 / count, x.dtype)])]


mean = _reduction("mean", 1, "E_in adds + E_out divisions", "ReduceMean", vjp_mean)
sum_ = _reduction("sum", 0, "E_in adds", "ReduceSum", vjp_sum)


def vjp_amax(ad: Any, node: Node, grads: list) -> list:
    """The gradient goes to the maxima, split evenly between ties (as torch.amax): one
    ``amax_grad`` node reading the input, the forward's output and its gradient."""
    return [ad.op(amax_grad, [node.inputs[0], node.output, grads[0]], node.attrs)]


amax = _reduction("amax", 0, "E_in comparisons", "ReduceMax", vjp_amax)


def infer_amax_grad(a: ReduceAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x, y, g = types
    (want,) = infer_reduce(a, [x])
    for name, t in (("output", y), ("grad_output", g)):
        require(t.shape == want.shape,
                lambda name=name, t=t: f"expects {name} shaped like amax's output "
                                       f"{shape_str(want.shape)} but it is {shape_str(t.shape)}")
    return [TensorType(x.shape, same_dtype(types))]


def cost_amax_grad(a: ReduceAttrs, ins: list[TensorType | None],
                   outs: list[TensorType]) -> Cost:
    """Per input element a comparison with the maximum, an add counting the ties and a
    multiply; per output element a division of its gradient by the count."""
    return Cost(flops=3 * static_numel(ins[0]) + static_numel(ins[2]))


# Backward-only: amax's gradient ``gx = (x == y)·g / count(x == y)`` per reduced slice.
amax_grad = register(OpDef(
    name="amax_grad", inputs=("input", "output", "grad_output"), attrs=ReduceAttrs,
    infer=infer_amax_grad, cost=cost_amax_grad, backward=True, differentiable=False,
    flop_rule="3·E_in (compare, count, multiply) + E_out divisions",
))


@dataclass(frozen=True)
class ChannelShuffleAttrs:
    groups: int = 1

    def __post_init__(self) -> None:
        require(isinstance(self.groups, int) and self.groups >= 1,
                f"groups must be an int >= 1, got {self.groups!r}")


def infer_channel_shuffle(a: ChannelShuffleAttrs,
                          types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    require(x.rank >= 3, f"expects an input of at least 3 dims (N, C, ...) but it is "
            f"{shape_str(x.shape)}")
    require(not is_static(x.shape[1]) or x.shape[1] % a.groups == 0,
            f"has groups={a.groups}, which must divide the {x.shape[1]} channels of "
            f"{shape_str(x.shape)}")
    return [x]


def onnx_channel_shuffle(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Reshape[0, g, C/g, H, W] → Transpose(perm=[0, 2, 1, 3, 4]) →
    Reshape[0, C, H, W]``; the ``0`` copies the batch dim and keeps it dynamic."""
    x, g = node.inputs[0].type, node.attrs.groups
    n, channels, *rest = x.shape
    if not is_static(channels):
        b.fail(f"needs a static channel count, got {shape_str(x.shape)}")
    grouped = (n, g, channels // g, *rest)
    y = onnx_reshape_to(b, b.input(0), x.shape, grouped)
    perm = [0, 2, 1, *range(3, len(grouped))]
    swapped = tuple(grouped[p] for p in perm)
    return [onnx_reshape_to(b, b.op("Transpose", [y], perm=perm), swapped, x.shape)]


def vjp_channel_shuffle(ad: Any, node: Node, grads: list) -> list:
    """The inverse permutation: a shuffle of C channels in g groups is undone by one in C/g."""
    channels = node.inputs[0].type.shape[1]
    if not is_static(channels):
        ad.fail(f"needs a static channel count, got {channels}")
    inverse = ChannelShuffleAttrs(channels // node.attrs.groups)
    return [ad.op(channel_shuffle, [grads[0]], inverse)]


channel_shuffle = register(OpDef(
    name="channel_shuffle", inputs=("input",), attrs=ChannelShuffleAttrs,
    infer=infer_channel_shuffle, cost=free_cost, flop_rule="0 (data movement)",
    onnx=onnx_channel_shuffle, vjp=vjp_channel_shuffle,
))


@dataclass(frozen=True)
class PadAttrs:
    """Torch order: (left, right) of the last dim first, then the dim before it, ..."""

    pads: tuple[int, ...] = ()
    value: float = 0.0

    def __post_init__(self) -> None:
        require(len(self.pads) % 2 == 0, f"pad needs an even number of sizes, got {self.pads}")


def infer_pad(a: PadAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    require(len(a.pads) // 2 <= x.rank,
            f"pads {list(a.pads)} cover more dims than the input {shape_str(x.shape)} has")
    shape = list(x.shape)
    for i in range(len(a.pads) // 2):
        axis = x.rank - 1 - i
        size = dim_add(shape[axis], a.pads[2 * i] + a.pads[2 * i + 1])
        require(not is_static(size) or size >= 0,
                f"pads {list(a.pads)} leave a negative size on dim {axis} of "
                f"{shape_str(x.shape)}")
        shape[axis] = size
    return [TensorType(tuple(shape), x.dtype)]


def onnx_pad(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Pad(X, pads, value)`` mode 'constant'. torch lists (begin, end) from
    the last dim backwards; ONNX lists all begins, then all ends, from the first dim."""
    a, x = node.attrs, node.inputs[0].type
    begins, ends = [0] * x.rank, [0] * x.rank
    for i in range(len(a.pads) // 2):
        begins[x.rank - 1 - i], ends[x.rank - 1 - i] = a.pads[2 * i], a.pads[2 * i + 1]
    pads = b.const(np.asarray(begins + ends, dtype=np.int64), "pads")
    value = b.scalar(a.value, x.dtype)
    return [b.op("Pad", [b.input(0), pads, value], mode="constant")]


def vjp_pad(ad: Any, node: Node, grads: list) -> list:
    """Padding's gradient is the crop of the same sizes (negative pads crop); a cropped
    border gets zeros back (the same negative pads pad with zeros)."""
    return [ad.op(pad, [grads[0]], PadAttrs(tuple(-p for p in node.attrs.pads)))]


pad = register(OpDef(
    name="pad", inputs=("input",), attrs=PadAttrs, infer=infer_pad, cost=free_cost,
    flop_rule="0 (data movement)", onnx=onnx_pad, vjp=vjp_pad,
))


def infer_identity(attrs: object, types: list[TensorType | None]) -> list[TensorType]:
    return [types[0]]


def onnx_identity(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Identity``."""
    return [b.op("Identity", [b.input(0)])]


identity = register(OpDef(
    name="identity", inputs=("input",), infer=infer_identity, cost=free_cost, flop_rule="0",
    onnx=onnx_identity, vjp=vjp_reshape, reshapes=True,
))


@dataclass(frozen=True)
class ExpandAttrs:
    shape: tuple[Dim, ...] = ()


def infer_expand(a: ExpandAttrs, types: list[TensorType | None]) -> list[TensorType]:
    """torch.Tensor.expand / numpy.broadcast_to: the input broadcast to ``shape``."""
    x = types[0]
    lead = len(a.shape) - x.rank
    require(lead >= 0 and all(d in (1, t) for d, t in zip(x.shape, a.shape[lead:])),
            f"cannot expand {shape_str(x.shape)} to {shape_str(a.shape)}",
            "each input dim must equal the target's or be 1")
    return [TensorType(tuple(a.shape), x.dtype)]


def onnx_expand(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Expand(X, shape)``; a symbolic target dim that the input already has
    becomes 1 (Expand broadcasts, so the input's own size stays)."""
    src, target = node.inputs[0].type.shape, node.attrs.shape
    aligned = (None,) * (len(target) - len(src)) + tuple(src)
    dims = []
    for d, s in zip(target, aligned):
        if not is_static(d) and d != s:
            b.fail(f"cannot expand to the symbolic dim {d!r}")
        dims.append(d if is_static(d) else 1)
    return [b.op("Expand", [b.input(0), b.const(np.asarray(dims, dtype=np.int64), "shape")])]


def vjp_expand(ad: Any, node: Node, grads: list) -> list:
    return [ad.sum_to(grads[0], node.inputs[0].type)]


expand = register(OpDef(
    name="expand", inputs=("input",), attrs=ExpandAttrs, infer=infer_expand,
    cost=free_cost, flop_rule="0 (data movement)", onnx=onnx_expand, vjp=vjp_expand,
))

# -- slicing and gathering ---------------------------------------------------------------


@dataclass(frozen=True)
class SliceAttrs:
    """``x[starts:ends:steps]`` along ``axes`` (Python/ONNX clamping: out-of-range bounds are
    clipped, negative ones count from the end); steps are positive (torch refuses others)."""

    axes: tuple[int, ...] = ()
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.axes)
        require(len(self.starts) == n and len(self.ends) == n and len(self.steps) == n,
                f"slice needs one start, end and step per axis, got axes={list(self.axes)}, "
                f"starts={list(self.starts)}, ends={list(self.ends)}, steps={list(self.steps)}")
        require(len(set(self.axes)) == n, f"slice names an axis twice: {list(self.axes)}")
        require(all(isinstance(k, int) and k >= 1 for k in self.steps),
                f"slice steps must be positive, got {list(self.steps)}",
                "torch refuses negative steps too; use torch.flip-free indexing (a gather "
                "with the reversed indices: x[:, [3, 2, 1, 0]])")


def slice_bounds(a: SliceAttrs, shape: tuple[Dim, ...]) -> list[tuple[int, int, int, int]]:
    """``(axis, start, stop, step)`` per sliced axis, normalized and clamped to ``shape``."""
    bounds = []
    for axis, start, end, step in zip(a.axes, a.starts, a.ends, a.steps):
        axis = normalize_dim(axis, len(shape), "slice axis")
        length = shape[axis]
        require(is_static(length), f"cannot slice the symbolic dim {length!r} of "
                f"{shape_str(shape)}", "slice only dims of a known size")
        start, stop, _ = slice(start, end, step).indices(length)
        bounds.append((axis, start, max(stop, start), step))
    return sorted(bounds)


def infer_slice(a: SliceAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    shape = list(x.shape)
    for axis, start, stop, step in slice_bounds(a, x.shape):
        shape[axis] = len(range(start, stop, step))
    return [TensorType(tuple(shape), x.dtype)]


def onnx_slice(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Slice(data, starts, ends, axes, steps)`` on the clamped bounds."""
    bounds = slice_bounds(node.attrs, node.inputs[0].type.shape)
    arrays = [np.asarray([bd[k] for bd in bounds], dtype=np.int64) for k in (1, 2, 0, 3)]
    names = [b.const(arr, hint) for arr, hint in zip(arrays, ("starts", "ends", "axes",
                                                               "steps"))]
    return [b.op("Slice", [b.input(0), *names])]


def _unslice(ad: Any, g: Value, axis: int, start: int, step: int, length: int) -> Value:
    """The gradient of one sliced axis: ``step − 1`` zeros after each element, then zero
    padding (or cropping of trailing zeros) to ``length``, the element at ``start``."""
    shape, dtype = tuple(g.type.shape), g.type.dtype
    count = shape[axis]
    if step > 1:
        lifted = (*shape[:axis + 1], 1, *shape[axis + 1:])
        holes = (*shape[:axis + 1], step - 1, *shape[axis + 1:])
        g = ad.op(reshape, [g], ReshapeAttrs(lifted))
        g = ad.op(cat, [g, ad.zeros(TensorType(holes, dtype))], DimAttrs(axis + 1))
        g = ad.op(reshape, [g], ReshapeAttrs((*shape[:axis], count * step, *shape[axis + 1:])))
    pads = [0] * (2 * (len(shape) - axis))
    pads[-2:] = [start, length - start - count * step]
    return ad.op(pad, [g], PadAttrs(tuple(pads)))


def vjp_slice(ad: Any, node: Node, grads: list) -> list:
    """The gradient scattered back into zeros: interleaved zeros for the step, padding for
    the bounds (``cat`` and ``pad``, so no backward-only op)."""
    x = node.inputs[0].type
    g = grads[0]
    for axis, start, _, step in slice_bounds(node.attrs, x.shape):
        g = _unslice(ad, g, axis, start, step, x.shape[axis])
    return [g]


slice_ = register(OpDef(
    name="slice", inputs=("input",), attrs=SliceAttrs, infer=infer_slice, cost=free_cost,
    flop_rule="0 (data movement)", onnx=onnx_slice, vjp=vjp_slice,
))


@dataclass(frozen=True)
class GatherAttrs:
    """``x.index_select(dim, indices)`` with constant indices (negative ones from the end)."""

    dim: int = 0
    indices: tuple[int, ...] = ()


def gather_indices(a: GatherAttrs, shape: tuple[Dim, ...]) -> tuple[int, tuple[int, ...]]:
    """The normalized (dim, indices) of a gather from ``shape``."""
    dim = normalize_dim(a.dim, len(shape))
    length = shape[dim]
    require(is_static(length), f"cannot index the symbolic dim {length!r} of "
            f"{shape_str(shape)}", "index only dims of a known size")
    bad = [i for i in a.indices if not -length <= i < length]
    require(not bad, f"indices {bad} are out of range for dim {dim} of {shape_str(shape)}",
            f"use indices in [{-length}, {length - 1}]")
    return dim, tuple(i % length for i in a.indices)


def infer_gather(a: GatherAttrs, types: list[TensorType | None]) -> list[TensorType]:
    x = types[0]
    dim, indices = gather_indices(a, x.shape)
    shape = list(x.shape)
    shape[dim] = len(indices)
    return [TensorType(tuple(shape), x.dtype)]


def onnx_gather(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Gather(data, indices, axis)`` with the indices as an initializer."""
    dim, indices = gather_indices(node.attrs, node.inputs[0].type.shape)
    index = b.const(np.asarray(indices, dtype=np.int64), "indices")
    return [b.op("Gather", [b.input(0), index], axis=dim)]


def vjp_gather(ad: Any, node: Node, grads: list) -> list:
    """A gather of the gradient with one zero slot appended: each input position takes the
    gradient of the output that read it, or the zero. An index read ``r`` times needs ``r``
    such gathers, summed (each takes one of its occurrences)."""
    x = node.inputs[0].type
    dim, indices = gather_indices(node.attrs, x.shape)
    g = grads[0]
    zero_shape = list(g.type.shape)
    zero_shape[dim] = 1
    padded = ad.op(cat, [g, ad.zeros(TensorType(tuple(zero_shape), g.type.dtype))],
                   DimAttrs(dim))
    rounds: list[list[int]] = []
    for j, i in enumerate(indices):
        r = next((k for k, inv in enumerate(rounds) if inv[i] == len(indices)), len(rounds))
        if r == len(rounds):
            rounds.append([len(indices)] * x.shape[dim])
        rounds[r][i] = j
    total = None
    for inverse in rounds:
        part = ad.op(gather, [padded], GatherAttrs(dim, tuple(inverse)))
        total = part if total is None else ad.op(add, [total, part])
    return [total]


gather = register(OpDef(
    name="gather", inputs=("input",), attrs=GatherAttrs, infer=infer_gather, cost=free_cost,
    flop_rule="0 (data movement)", onnx=onnx_gather, vjp=vjp_gather,
))


# -- elementwise math: sqrt, exp, log, pow, clamp, comparisons, where ----------------------


def onnx_unary(op_type: str) -> Any:
    def mapping(b: Any, node: Node) -> list[str]:
        return [b.op(op_type, [b.input(0)])]

    return mapping


def vjp_sqrt(ad: Any, node: Node, grads: list) -> list:
    """``g / (2·√x)`` from the node's own output."""
    twice = ad.op(mul, [node.output, ad.literal(2.0, node.output.type.dtype)])
    return [ad.op(div, [grads[0], twice])]


def vjp_exp(ad: Any, node: Node, grads: list) -> list:
    return [ad.op(mul, [grads[0], node.output])]


def vjp_log(ad: Any, node: Node, grads: list) -> list:
    return [ad.op(div, [grads[0], node.inputs[0]])]


def _math(name: str, flops: int, vjp: Any) -> OpDef:
    return register(OpDef(
        name=name, inputs=("input",), infer=infer_identity, cost=elementwise_cost(flops),
        flop_rule=f"{flops} per element", onnx=onnx_unary(name.capitalize()), vjp=vjp,
    ))


sqrt = _math("sqrt", 1, vjp_sqrt)
exp = _math("exp", 1, vjp_exp)
log = _math("log", 1, vjp_log)


@dataclass(frozen=True)
class PowAttrs:
    """``x ** exponent`` with a constant exponent."""

    exponent: float = 2.0

    def __post_init__(self) -> None:
        require(isinstance(self.exponent, (int, float)) and not isinstance(self.exponent, bool),
                f"pow needs a constant number as exponent, got {self.exponent!r}",
                "a tensor exponent is not supported")


def onnx_pow(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Pow(x, exponent)`` with a scalar exponent of x's dtype."""
    dtype = node.inputs[0].type.dtype
    return [b.op("Pow", [b.input(0), b.scalar(float(node.attrs.exponent), dtype)])]


def vjp_pow(ad: Any, node: Node, grads: list) -> list:
    """``g·p·x^(p−1)``."""
    p, dtype = float(node.attrs.exponent), node.output.type.dtype
    if p == 1.0:
        return [grads[0]]
    slope = node.inputs[0] if p == 2.0 else ad.op(pow_, [node.inputs[0]], PowAttrs(p - 1.0))
    return [ad.op(mul, [grads[0], ad.op(mul, [slope, ad.literal(p, dtype)])])]


pow_ = register(OpDef(
    name="pow", inputs=("input",), attrs=PowAttrs, infer=infer_identity,
    cost=elementwise_cost(1), flop_rule="1 per element", onnx=onnx_pow, vjp=vjp_pow,
))


@dataclass(frozen=True)
class ClampAttrs:
    """torch.clamp: ``min(max(x, min), max)``; either bound may be None."""

    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        require(self.min is not None or self.max is not None,
                "clamp needs at least one of min and max")


def onnx_clamp(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Clip(x, min, max)`` (bounds as inputs since opset 11; "" = none)."""
    a, dtype = node.attrs, node.inputs[0].type.dtype
    bounds = ["" if v is None else b.scalar(float(v), dtype) for v in (a.min, a.max)]
    return [b.op("Clip", [b.input(0), *bounds])]


def vjp_clamp(ad: Any, node: Node, grads: list) -> list:
    """The gradient where ``min <= x <= max`` (bounds included, as torch), else 0."""
    x, dtype = node.inputs[0], node.inputs[0].type.dtype
    inside = None
    for kind, bound in (("ge", node.attrs.min), ("le", node.attrs.max)):
        if bound is None:
            continue
        mask = ad.op(compare, [x, ad.literal(float(bound), dtype)], CompareAttrs(kind))
        inside = mask if inside is None else ad.op(mul, [inside, mask])
    return [ad.op(mul, [grads[0], inside])]


clamp = register(OpDef(
    name="clamp", inputs=("input",), attrs=ClampAttrs, infer=infer_identity,
    cost=elementwise_cost(2), flop_rule="2 comparisons per element", onnx=onnx_clamp,
    vjp=vjp_clamp,
))

COMPARISONS = {"gt": "Greater", "lt": "Less", "ge": "GreaterOrEqual", "le": "LessOrEqual",
               "eq": "Equal", "ne": "Equal"}  # ONNX op types (ne: Not after Equal)
NUMPY_COMPARISONS = {"gt": np.greater, "lt": np.less, "ge": np.greater_equal,
                     "le": np.less_equal, "eq": np.equal, "ne": np.not_equal}


@dataclass(frozen=True)
class CompareAttrs:
    """``x > y`` and the like as a mask of x's float dtype: 1.0 where true, 0.0 where not
    (cnnir has no bool tensors; ``where`` reads any nonzero as true)."""

    kind: str = "gt"

    def __post_init__(self) -> None:
        require(self.kind in COMPARISONS,
                f"comparison must be one of {sorted(COMPARISONS)}, got {self.kind!r}")


def onnx_compare(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Greater``/``Less``/... (``Not(Equal)`` for ne), then ``Where`` to a
    0/1 mask in the input's dtype."""
    kind, dtype = node.attrs.kind, node.output.type.dtype
    test = b.op(COMPARISONS[kind], [b.input(0), b.input(1)])
    if kind == "ne":
        test = b.op("Not", [test])
    return [b.op("Where", [test, b.scalar(1.0, dtype), b.scalar(0.0, dtype)])]


def vjp_none(ad: Any, node: Node, grads: list) -> list:
    """A comparison is piecewise constant: no gradient flows through it."""
    return [None] * len(node.inputs)


compare = register(OpDef(
    name="compare", inputs=("input", "other"), attrs=CompareAttrs, infer=infer_broadcast,
    cost=elementwise_cost(1), flop_rule="one comparison per output element",
    onnx=onnx_compare, vjp=vjp_none,
))


def infer_where(attrs: object, types: list[TensorType | None]) -> list[TensorType]:
    cond, a, b = types
    shape = broadcast_shapes(broadcast_shapes(cond.shape, a.shape), b.shape)
    return [TensorType(shape, same_dtype(types))]


def onnx_where(b: Any, node: Node) -> list[str]:
    """ONNX mapping: ``Where(Not(Equal(cond, 0)), input, other)``."""
    zero = b.scalar(0.0, node.inputs[0].type.dtype)
    test = b.op("Not", [b.op("Equal", [b.input(0), zero])])
    return [b.op("Where", [test, b.input(1), b.input(2)])]


def vjp_where(ad: Any, node: Node, grads: list) -> list:
    """The gradient goes to ``input`` where the condition holds and to ``other`` elsewhere."""
    cond, a, other = node.inputs
    g = grads[0]
    zero = ad.literal(0.0, g.type.dtype)
    ga = ad.sum_to(ad.op(where, [cond, g, zero]), a.type) if ad.needs(1) else None
    gb = ad.sum_to(ad.op(where, [cond, zero, g]), other.type) if ad.needs(2) else None
    return [None, ga, gb]


where = register(OpDef(
    name="where", inputs=("condition", "input", "other"), infer=infer_where,
    cost=elementwise_cost(1), flop_rule="one test per output element", onnx=onnx_where,
    vjp=vjp_where,
))

__all__ = [
    "add", "amax", "broadcast_shapes", "cat", "channel_shuffle", "chunk_sizes", "clamp",
    "compare", "div", "exp", "expand", "flatten", "gather", "identity", "log", "mean", "mul",
    "normalize_dim", "pad", "pow_", "reshape", "slice_", "split", "sqrt", "sub", "sum_",
    "transpose", "where",
]
