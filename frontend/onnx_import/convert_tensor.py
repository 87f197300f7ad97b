"""Converters for matrix products, arithmetic, shape ops, slicing and gathering, elementwise
math and comparisons, reductions and losses.

``Gemm`` with a constant B and ``MatMul(x, W)`` + ``Add(b)`` with constant W and b are
``linear`` (``W = Bᵀ`` when transB=0, scaled by alpha); everything else is ``matmul`` plus
elementwise ops. ``Reshape → Transpose(0, 2, 1, 3, 4) → Reshape`` back to the input shape is
``channel_shuffle``. Reshape targets follow ONNX: ``0`` copies the input dim (unless
``allowzero``), ``-1`` is inferred; symbolic dims from folded shape chains stay symbolic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnir import ops
from cnnir.errors import CnnirError
from cnnir.ir import Value
from cnnir.ir.types import Dim, is_static, shape_str
from cnnir.ops.loss import CrossEntropyAttrs, NllAttrs
from cnnir.ops.registry import OpDef
from cnnir.ops.tensor import (
    ChannelShuffleAttrs,
    CompareAttrs,
    DimAttrs,
    ExpandAttrs,
    FlattenAttrs,
    GatherAttrs,
    PadAttrs,
    PowAttrs,
    ReduceAttrs,
    ReshapeAttrs,
    SliceAttrs,
    SplitAttrs,
    TransposeAttrs,
    broadcast_shapes,
    chunk_sizes,
)

from .context import ImportContext, OnnxNode, converter
from .convert_act import _unary
from .fold import as_dims


def _literal(ctx: ImportContext, value: float, like: Value) -> Value:
    return ctx.graph.add_literal(np.asarray(value, dtype=like.type.dtype), "scalar")


# -- matrix products -------------------------------------------------------------------------


def _linear_bias(ctx: ImportContext, name: str, scale: float, out_features: int) -> Value | None:
    """A constant C broadcastable to ``[out]`` as linear's bias (times ``scale``)."""
    if not name:
        return None
    c = ctx.const(name)
    if c is None or c.size not in (1, out_features) or (c.ndim == 2 and c.shape[0] != 1):
        return None
    bias = np.broadcast_to(c.reshape(-1), (out_features,)).astype(c.dtype)
    if scale == 1.0 and bias.shape == c.shape:
        return ctx.param(name)
    return ctx.constant_value(name, (bias * scale).astype(c.dtype), ctx.kinds.get(name,
                                                                                  "parameter"))


def _linear_weight(ctx: ImportContext, name: str, transposed: bool, scale: float) -> Value:
    """linear's ``[out, in]`` weight from a constant B (``[in, out]`` unless transposed)."""
    b = ctx.const(name)
    if transposed and scale == 1.0:
        return ctx.param(name)
    w = (b if transposed else b.T) * scale
    return ctx.constant_value(name, np.ascontiguousarray(w.astype(b.dtype)),
                              ctx.kinds.get(name, "parameter"))


@converter("Gemm", 1)
def gemm(ctx: ImportContext, n: OnnxNode) -> None:
    """``alpha·A'·B' + beta·C``; linear when A is not transposed and B, C are constants."""
    alpha, beta = n.attr("alpha", 1.0), n.attr("beta", 1.0)
    trans_a, trans_b = bool(n.attr("transA", 0)), bool(n.attr("transB", 0))
    b_const = ctx.const(n.input(1))
    if not trans_a and b_const is not None and b_const.ndim == 2:
        out_features = b_const.shape[0] if trans_b else b_const.shape[1]
        bias = _linear_bias(ctx, n.input(2), beta, out_features)
        if bias is not None or not n.input(2):
            w = _linear_weight(ctx, n.input(1), trans_b, alpha)
            ctx.bind(n.output(0), ctx.emit(n, ops.linear, [ctx.tensor(n.input(0)), w, bias]))
            return
    a, b = ctx.tensor(n.input(0)), ctx.tensor(n.input(1))
    if trans_a:
        a = ctx.emit(n, ops.transpose, [a], TransposeAttrs((1, 0)), suffix="/transA")
    if trans_b:
        b = ctx.emit(n, ops.transpose, [b], TransposeAttrs((1, 0)), suffix="/transB")
    y = ctx.emit(n, ops.matmul, [a, b], suffix="/matmul" if n.input(2) or alpha != 1 else "")
    if alpha != 1.0:
        y = ctx.emit(n, ops.mul, [y, _literal(ctx, alpha, y)], suffix="/alpha")
    if n.input(2):
        c = ctx.tensor(n.input(2))
        if beta != 1.0:
            c = ctx.emit(n, ops.mul, [c, _literal(ctx, beta, c)], suffix="/beta")
        y = ctx.emit(n, ops.add, [y, c])
    ctx.bind(n.output(0), y)


@converter("MatMul", 1)
def matmul(ctx: ImportContext, n: OnnxNode) -> None:
    """``MatMul(x, W)`` with a constant 2-D W is linear (absorbing a following ``Add`` of a
    constant ``[out]`` bias); otherwise matmul."""
    w = ctx.const(n.input(1))
    x = ctx.tensor(n.input(0))
    if w is None or w.ndim != 2 or x.type.rank < 1:
        ctx.bind(n.output(0), ctx.emit(n, ops.matmul, [x, ctx.tensor(n.input(1))]))
        return
    add, bias = ctx.sole_consumer(n.output(0)), None
    if add is not None and add.op_type == "Add":
        other = add.inputs[1] if add.inputs[0] == n.output(0) else add.inputs[0]
        c = ctx.const(other)
        if c is not None and c.shape == (w.shape[1],):
            bias = ctx.param(other)
    weight = _linear_weight(ctx, n.input(1), transposed=False, scale=1.0)
    if bias is None:
        ctx.bind(n.output(0), ctx.emit(n, ops.linear, [x, weight]))
        return
    ctx.skip(add)
    ctx.bind(add.output(0), ctx.emit(add, ops.linear, [x, weight, bias]))


def _binary(ctx: ImportContext, n: OnnxNode, op: OpDef) -> None:
    a, b = ctx.tensor(n.input(0)), ctx.tensor(n.input(1))
    ctx.bind(n.output(0), ctx.emit(n, op, [a, b]))


def _register(op_type: str, since: int, convert: Any, op: OpDef) -> None:
    """One converter calling ``convert(ctx, n, op)`` for ``op_type``."""
    converter(op_type, since)(lambda ctx, n: convert(ctx, n, op))


for _op_type, _op in (("Add", ops.add), ("Sub", ops.sub), ("Mul", ops.mul), ("Div", ops.div)):
    _register(_op_type, 7, _binary, _op)


# -- shape ops -------------------------------------------------------------------------------


@converter("Concat", 4)
def concat(ctx: ImportContext, n: OnnxNode) -> None:
    inputs = [ctx.tensor(name) for name in n.inputs if name]
    ctx.bind(n.output(0), ctx.emit(n, ops.cat, inputs, DimAttrs(n.attr("axis"))))


def _target_shape(ctx: ImportContext, n: OnnxNode, x: Value) -> tuple[Dim, ...]:
    shape = ctx.const(n.input(1))
    if shape is None:
        ctx.fail(n, f"has a shape '{n.input(1)}' computed at run time",
                 "cnnir folds shapes only from static or symbolic input dims")
    allow_zero = n.attr("allowzero", 0)
    target = []
    for i, d in enumerate(as_dims(shape)):
        if d == 0 and not allow_zero:
            if i >= x.type.rank:
                ctx.fail(n, f"copies dim {i} (0) of the {x.type.rank}-D input")
            d = x.type.shape[i]
        target.append(d)
    return tuple(target)


def _shuffle_groups(ctx: ImportContext, n: OnnxNode, x: Value,
                    grouped: tuple[Dim, ...]) -> tuple[int, OnnxNode] | None:
    """``Reshape[N, g, C/g, H, W] → Transpose(0, 2, 1, 3, 4) → Reshape[N, C, H, W]``: (g, the
    last Reshape), the channel shuffle cnnir exports."""
    t = x.type
    if t.rank != 4 or len(grouped) != 5 or grouped[3:] != t.shape[2:]:
        return None
    transpose = ctx.sole_consumer(n.output(0))
    if transpose is None or transpose.op_type != "Transpose":
        return None
    if list(transpose.attr("perm", [])) != [0, 2, 1, 3, 4]:
        return None
    back = ctx.sole_consumer(transpose.output(0))
    if back is None or back.op_type != "Reshape" or not ctx.is_const(back.input(1)):
        return None
    swapped = (grouped[0], grouped[2], grouped[1], *grouped[3:])
    shape = ctx.const(back.input(1)).reshape(-1).tolist()
    if len(shape) != 4 or not is_static(grouped[1]):
        return None
    if tuple(swapped[i] if d == 0 else d for i, d in enumerate(shape)) != t.shape:
        return None
    return int(grouped[1]), back


@converter("Reshape", 5)
def reshape(ctx: ImportContext, n: OnnxNode) -> None:
    x = ctx.tensor(n.input(0))
    target = _target_shape(ctx, n, x)
    try:
        grouped = ops.reshape.infer_types(ReshapeAttrs(target), [x.type])[0].shape
    except CnnirError:  # emitting the node below reports the bad target
        grouped = ()
    shuffle = _shuffle_groups(ctx, n, x, grouped)
    if shuffle is not None:
        groups, back = shuffle
        transpose = ctx.sole_consumer(n.output(0))
        ctx.skip(transpose)
        ctx.skip(back)
        y = ctx.emit(back, ops.channel_shuffle, [x], ChannelShuffleAttrs(groups))
        ctx.bind(back.output(0), y)
        return
    ctx.bind(n.output(0), ctx.emit(n, ops.reshape, [x], ReshapeAttrs(target)))


@converter("Expand", 8)
def expand(ctx: ImportContext, n: OnnxNode) -> None:
    """``Expand(X, shape)`` broadcasts both ways: the target is the broadcast of the input's
    shape with ``shape`` (a 1 there keeps the input's size, symbolic ones included)."""
    x = ctx.tensor(n.input(0))
    shape = ctx.const(n.input(1))
    if shape is None:
        ctx.fail(n, f"has a shape '{n.input(1)}' computed at run time",
                 "cnnir folds shapes only from static or symbolic input dims")
    target = broadcast_shapes(x.type.shape, tuple(as_dims(shape)))
    ctx.bind(n.output(0), ctx.emit(n, ops.expand, [x], ExpandAttrs(target)))


@converter("Flatten", 1)
def flatten(ctx: ImportContext, n: OnnxNode) -> None:
    """ONNX Flatten is always 2-D: ``(∏ dims[:axis], ∏ dims[axis:])``."""
    x = ctx.tensor(n.input(0))
    rank = x.type.rank
    axis = n.attr("axis", 1)
    axis = axis + rank if axis < 0 else axis
    if axis == 1 and rank >= 2:
        y = ctx.emit(n, ops.flatten, [x], FlattenAttrs(1, -1))
    elif axis in (0, rank):
        shape = (1, -1) if axis == 0 else (-1, 1)
        y = ctx.emit(n, ops.reshape, [x], ReshapeAttrs(shape))
    else:
        head = ctx.emit(n, ops.flatten, [x], FlattenAttrs(axis, -1), suffix="/tail")
        y = ctx.emit(n, ops.flatten, [head], FlattenAttrs(0, axis - 1))
    ctx.bind(n.output(0), y)


@converter("Transpose", 1)
def transpose(ctx: ImportContext, n: OnnxNode) -> None:
    x = ctx.tensor(n.input(0))
    perm = n.attr("perm", list(reversed(range(x.type.rank))))
    ctx.bind(n.output(0), ctx.emit(n, ops.transpose, [x], TransposeAttrs(tuple(perm))))


def _split_sizes(ctx: ImportContext, n: OnnxNode, length: Dim, count: int) -> tuple[int, ...]:
    name = n.input(1)
    if name:
        if not ctx.is_const(name):
            ctx.fail(n, f"has run-time split sizes '{name}'")
        return tuple(int(s) for s in ctx.const(name).reshape(-1))
    if n.attr("split") is not None:
        return tuple(n.attr("split"))
    if not is_static(length):
        ctx.fail(n, f"splits the symbolic dim {length!r}")
    if n.attr("num_outputs") is not None:
        return chunk_sizes(length, count)
    if length % count:
        ctx.fail(n, f"splits {length} into {count} equal parts")
    return (length // count,) * count


@converter("Split", 2)
def split(ctx: ImportContext, n: OnnxNode) -> None:
    x = ctx.tensor(n.input(0))
    axis = n.attr("axis", 0) % x.type.rank
    sizes = _split_sizes(ctx, n, x.type.shape[axis], len(n.outputs))
    outs = ctx.emit_all(n, ops.split, [x], SplitAttrs(sizes, axis))
    for name, value in zip(n.outputs, outs):
        ctx.bind(name, value)


def _axes(ctx: ImportContext, n: OnnxNode) -> list[int] | None:
    if n.input(1):
        if not ctx.is_const(n.input(1)):
            ctx.fail(n, f"has run-time axes '{n.input(1)}'")
        return [int(a) for a in ctx.const(n.input(1)).reshape(-1)]
    axes = n.attr("axes")
    return None if axes is None else list(axes)


@converter("Squeeze", 1)
def squeeze(ctx: ImportContext, n: OnnxNode) -> None:
    x = ctx.tensor(n.input(0))
    axes = _axes(ctx, n)
    rank = x.type.rank
    drop = {a % rank for a in axes} if axes is not None else {
        i for i, d in enumerate(x.type.shape) if d == 1}
    shape = tuple(d for i, d in enumerate(x.type.shape) if i not in drop)
    ctx.bind(n.output(0), ctx.emit(n, ops.reshape, [x], ReshapeAttrs(shape)))


@converter("Unsqueeze", 1)
def unsqueeze(ctx: ImportContext, n: OnnxNode) -> None:
    x = ctx.tensor(n.input(0))
    axes = _axes(ctx, n) or []
    rank = x.type.rank + len(axes)
    new = {a % rank for a in axes}
    dims = iter(x.type.shape)
    shape = tuple(1 if i in new else next(dims) for i in range(rank))
    ctx.bind(n.output(0), ctx.emit(n, ops.reshape, [x], ReshapeAttrs(shape)))


@converter("Cast", 6)
def cast(ctx: ImportContext, n: OnnxNode) -> None:
    """A Cast to the value's own dtype is an identity; cnnir has no dtype conversions."""
    from onnx import helper

    x = ctx.tensor(n.input(0))
    target = np.dtype(helper.tensor_dtype_to_np_dtype(n.attr("to"))).name
    if target != x.type.dtype:
        ctx.fail(n, f"casts {x.type.dtype} to {target}; cnnir has no dtype conversion op")
    ctx.bind(n.output(0), ctx.emit(n, ops.identity, [x]))


# -- reductions and padding ------------------------------------------------------------------


def _reduce(ctx: ImportContext, n: OnnxNode, op: OpDef) -> None:
    x = ctx.tensor(n.input(0))
    axes = _axes(ctx, n)
    if not axes:
        if n.attr("noop_with_empty_axes", 0):
            ctx.bind(n.output(0), ctx.emit(n, ops.identity, [x]))
            return
        axes = None
    attrs = ReduceAttrs(None if axes is None else tuple(axes), bool(n.attr("keepdims", 1)))
    ctx.bind(n.output(0), ctx.emit(n, op, [x], attrs))


for _op_type, _op in (("ReduceMean", ops.mean), ("ReduceSum", ops.sum_),
                      ("ReduceMax", ops.amax)):
    _register(_op_type, 1, _reduce, _op)


def _pad(ctx: ImportContext, n: OnnxNode, pads: list[int], value: float) -> None:
    """ONNX pads (all begins, then all ends) in torch's order (last dim first)."""
    if n.attr("mode", "constant") != "constant":
        ctx.fail(n, f"has mode={n.attr('mode')!r}; cnnir pads with a constant only")
    x = ctx.tensor(n.input(0))
    rank = x.type.rank
    if len(pads) != 2 * rank:
        ctx.fail(n, f"has {len(pads)} pads for a {rank}-D input {shape_str(x.type.shape)}")
    torch_pads = []
    for axis in reversed(range(rank)):
        torch_pads += [pads[axis], pads[rank + axis]]
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    attrs = PadAttrs(tuple(torch_pads), float(value))
    ctx.bind(n.output(0), ctx.emit(n, ops.pad, [x], attrs))


@converter("Pad", 2)
def pad_2(ctx: ImportContext, n: OnnxNode) -> None:
    _pad(ctx, n, list(n.attr("pads")), n.attr("value", 0.0))


@converter("Pad", 11)
def pad(ctx: ImportContext, n: OnnxNode) -> None:
    for i in (1, 2, 3):
        if n.input(i) and not ctx.is_const(n.input(i)):
            ctx.fail(n, f"has the run-time input '{n.input(i)}'")
    pads = [int(p) for p in ctx.const(n.input(1)).reshape(-1)]
    value = float(ctx.const(n.input(2)).reshape(-1)[0]) if n.input(2) else 0.0
    if n.input(3):
        rank = ctx.type(n.input(0)).rank
        axes = [int(a) % rank for a in ctx.const(n.input(3)).reshape(-1)]
        full = [0] * (2 * rank)
        for k, axis in enumerate(axes):
            full[axis], full[rank + axis] = pads[k], pads[len(axes) + k]
        pads = full
    _pad(ctx, n, pads, value)


# -- losses ----------------------------------------------------------------------------------


def _loss(ctx: ImportContext, n: OnnxNode, op: OpDef, attrs_cls: type) -> Value:
    ignore = n.attr("ignore_index", -100)
    attrs = attrs_cls(reduction=n.attr("reduction", "mean"), ignore_index=ignore)
    inputs = [ctx.tensor(n.input(0)), ctx.tensor(n.input(1)), ctx.param(n.input(2))]
    return ctx.emit(n, op, inputs, attrs)


@converter("SoftmaxCrossEntropyLoss", 12)
def softmax_cross_entropy(ctx: ImportContext, n: OnnxNode) -> None:
    """cross_entropy; the optional log_prob output is a separate ``log_softmax(dim=1)``."""
    ctx.bind(n.output(0), _loss(ctx, n, ops.cross_entropy, CrossEntropyAttrs))
    if n.output(1):
        from cnnir.ops.activation import SoftmaxAttrs

        lp = ctx.emit(n, ops.log_softmax, [ctx.tensor(n.input(0))], SoftmaxAttrs(1),
                      suffix="/log_prob")
        ctx.bind(n.output(1), lp)


@converter("NegativeLogLikelihoodLoss", 12)
def nll_loss(ctx: ImportContext, n: OnnxNode) -> None:
    ctx.bind(n.output(0), _loss(ctx, n, ops.nll_loss, NllAttrs))


# -- slicing, gathering, elementwise math, comparisons ---------------------------------------


def _const_ints(ctx: ImportContext, n: OnnxNode, i: int, what: str) -> list[int] | None:
    """Input ``i`` as a list of ints (None when absent); a run-time value is refused."""
    name = n.input(i)
    if not name:
        return None
    if not ctx.is_const(name):
        ctx.fail(n, f"has run-time {what} '{name}'", "cnnir slices with constant bounds only")
    return [int(v) for v in ctx.const(name).reshape(-1)]


def _slice(ctx: ImportContext, n: OnnxNode, starts: list[int], ends: list[int],
           axes: list[int] | None, steps: list[int] | None) -> None:
    x = ctx.tensor(n.input(0))
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if any(s <= 0 for s in steps):
        ctx.fail(n, f"has steps {steps}; cnnir slices with positive steps only")
    rank = x.type.rank
    attrs = SliceAttrs(tuple(a % rank if rank else a for a in axes), tuple(starts),
                       tuple(ends), tuple(steps))
    ctx.bind(n.output(0), ctx.emit(n, ops.slice_, [x], attrs))


@converter("Slice", 1)
def slice_1(ctx: ImportContext, n: OnnxNode) -> None:
    """Opset 1-9: starts, ends and axes are attributes."""
    axes = n.attr("axes")
    _slice(ctx, n, list(n.attr("starts")), list(n.attr("ends")),
           None if axes is None else list(axes), None)


@converter("Slice", 10)
def slice_10(ctx: ImportContext, n: OnnxNode) -> None:
    """``Slice(data, starts, ends, axes?, steps?)`` with constant bounds (the legacy torch
    exporter writes ShuffleNetV2's channel split this way)."""
    starts = _const_ints(ctx, n, 1, "starts")
    ends = _const_ints(ctx, n, 2, "ends")
    _slice(ctx, n, starts, ends, _const_ints(ctx, n, 3, "axes"),
           _const_ints(ctx, n, 4, "steps"))


@converter("Gather", 1)
def gather(ctx: ImportContext, n: OnnxNode) -> None:
    """``Gather(data, indices, axis)`` with constant indices: a ``gather`` of the flattened
    indices, reshaped when they are not 1-D (a scalar index drops the axis)."""
    x = ctx.tensor(n.input(0))
    if not ctx.is_const(n.input(1)):
        ctx.fail(n, f"has run-time indices '{n.input(1)}'", "cnnir gathers constant indices")
    indices = ctx.const(n.input(1))
    axis = n.attr("axis", 0) % max(1, x.type.rank)
    flat = tuple(int(i) for i in indices.reshape(-1))
    y = ctx.emit(n, ops.gather, [x], GatherAttrs(axis, flat),
                 suffix="" if indices.ndim == 1 else "/gather")
    if indices.ndim != 1:
        shape = (*x.type.shape[:axis], *indices.shape, *x.type.shape[axis + 1:])
        y = ctx.emit(n, ops.reshape, [y], ReshapeAttrs(tuple(shape)))
    ctx.bind(n.output(0), y)


for _op_type, _op in (("Sqrt", ops.sqrt), ("Exp", ops.exp), ("Log", ops.log)):
    _register(_op_type, 6, _unary, _op)


@converter("Pow", 7)
def pow_(ctx: ImportContext, n: OnnxNode) -> None:
    """``Pow(x, y)`` with a constant scalar exponent."""
    y = ctx.const(n.input(1))
    if y is None or y.size != 1:
        ctx.fail(n, f"has the exponent '{n.input(1)}', not a constant scalar",
                 "cnnir raises to constant powers only")
    attrs = PowAttrs(float(y.reshape(-1)[0]))
    ctx.bind(n.output(0), ctx.emit(n, ops.pow_, [ctx.tensor(n.input(0))], attrs))


def _is_scalar(ctx: ImportContext, name: str, value: float) -> bool:
    c = ctx.const(name)
    return c is not None and c.size == 1 and float(c.reshape(-1)[0]) == value


def _compare(ctx: ImportContext, n: OnnxNode, kind: str) -> None:
    """A comparison as cnnir's 0/1 float mask. cnnir's own exports come back as one op:
    ``Not`` after it flips the kind; a ``Where(·, 1, 0)`` after it is the mask itself; and
    ``Where(Not(Equal(c, 0)), a, b)`` is ``where(c, a, b)``."""
    last = n
    negate = ctx.sole_consumer(n.output(0))
    if negate is not None and negate.op_type == "Not":
        kind = {"eq": "ne", "ne": "eq", "gt": "le", "le": "gt", "lt": "ge", "ge": "lt"}[kind]
        ctx.skip(negate)
        last = negate
    select = ctx.sole_consumer(last.output(0))
    if select is not None and select.op_type == "Where" and select.input(0) == last.output(0):
        if _is_scalar(ctx, select.input(1), 1.0) and _is_scalar(ctx, select.input(2), 0.0):
            ctx.skip(select)
            last = select
        elif kind == "ne" and _is_scalar(ctx, n.input(1), 0.0) and all(
                _defined(ctx, select.input(i)) for i in (1, 2)):
            ctx.skip(select)
            inputs = [ctx.tensor(name) for name in (n.input(0), *select.inputs[1:3])]
            ctx.bind(select.output(0), ctx.emit(select, ops.where, inputs))
            return
    a, b = ctx.tensor(n.input(0)), ctx.tensor(n.input(1))
    ctx.bind(last.output(0), ctx.emit(n, ops.compare, [a, b], CompareAttrs(kind)))


def _defined(ctx: ImportContext, name: str) -> bool:
    """Whether ``name`` is already known (a value converted earlier, or a constant)."""
    return name in ctx.values or ctx.is_const(name)


for _op_type, _since, _kind in (("Greater", 7, "gt"), ("Less", 7, "lt"), ("Equal", 7, "eq"),
                                ("GreaterOrEqual", 12, "ge"), ("LessOrEqual", 12, "le")):
    converter(_op_type, _since)(lambda ctx, n, kind=_kind: _compare(ctx, n, kind))


@converter("Not", 1)
def not_(ctx: ImportContext, n: OnnxNode) -> None:
    """``1 − mask``."""
    mask = ctx.tensor(n.input(0))
    ctx.bind(n.output(0), ctx.emit(n, ops.sub, [_literal(ctx, 1.0, mask), mask]))


@converter("Where", 9)
def where(ctx: ImportContext, n: OnnxNode) -> None:
    """``where(mask, a, b)``: the condition is a mask from a comparison (nonzero: true)."""
    inputs = [ctx.tensor(n.input(i)) for i in range(3)]
    ctx.bind(n.output(0), ctx.emit(n, ops.where, inputs))
