"""Constant folding on import: ``Constant`` nodes, and shape arithmetic on known types.

Exporters write dynamic-batch reshapes as ``Shape → Gather → Unsqueeze → Concat → Reshape``.
``Shape`` of a value whose type is known folds to its dims; a symbolic dim ("N") is kept
as a string in an object array, and Gather/Unsqueeze/Squeeze/Concat/Slice/Cast/Reshape and
integer arithmetic fold such vectors exactly, so the Reshape receives ``("N", -1)``.
Any other node whose inputs are all numeric constants is evaluated once with
``onnx.reference`` (random ops never fold).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from cnnir.errors import ModelFormatError
from cnnir.ir.types import Dim, dim_add, dim_floordiv, dim_mul, is_static, numel

from .context import ImportContext, OnnxNode

RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike",
                        "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})
# Ops that are folded from the input's *type*: the input itself need not be constant.
TYPE_OPS = frozenset({"Shape", "Size"})
MAX_FOLD_ELEMENTS = 1 << 24  # a fold may also produce as many elements as it reads
MAX_SHAPE_DATA = 1 << 16  # constant inputs shape inference reads the values of (shapes...)


def may_fold(op_type: str) -> bool:
    return op_type not in RANDOM_OPS


def can_fold(ctx: ImportContext, n: OnnxNode) -> bool:
    if not may_fold(n.op_type) or n.domain not in ("", "ai.onnx"):
        return False
    if n.op_type == "Constant":
        return True
    if n.op_type in TYPE_OPS:
        return True
    present = [name for name in n.inputs if name]
    return bool(present) and all(ctx.is_const(name) for name in present)


def as_dims(array: np.ndarray) -> list[Dim]:
    """A folded shape vector as dims: Python ints and symbol strings."""
    return [int(d) if isinstance(d, (int, np.integer)) else d for d in array.reshape(-1).tolist()]


def _normalized(array: np.ndarray) -> np.ndarray:
    """An object array of dims becomes int64 once every entry is a number."""
    if array.dtype == object:
        if all(isinstance(d, (int, np.integer)) for d in array.flat):
            return array.astype(np.int64)
        return np.asarray(as_dims(array), dtype=object).reshape(array.shape)
    return array


# -- symbolic-aware folds (numpy semantics on object arrays of dims) -----------------------


def _axes(n: OnnxNode, arrays: list[np.ndarray | None], index: int) -> list[int] | None:
    if len(arrays) > index and arrays[index] is not None:
        return [int(a) for a in np.asarray(arrays[index]).reshape(-1)]
    axes = n.attr("axes")
    return None if axes is None else list(axes)


def _gather(n: OnnxNode, a: list) -> list[np.ndarray]:
    return [np.take(a[0], a[1].astype(np.int64), axis=n.attr("axis", 0))]


def _unsqueeze(n: OnnxNode, a: list) -> list[np.ndarray]:
    axes = _axes(n, a, 1)
    rank = a[0].ndim + len(axes)
    out = a[0]
    for axis in sorted(x % rank for x in axes):
        out = np.expand_dims(out, axis)
    return [out]


def _squeeze(n: OnnxNode, a: list) -> list[np.ndarray]:
    axes = _axes(n, a, 1)
    if axes is None:
        return [np.squeeze(a[0])]
    return [np.squeeze(a[0], axis=tuple(x % a[0].ndim for x in axes))]


def _concat(n: OnnxNode, a: list) -> list[np.ndarray]:
    return [np.concatenate([x for x in a if x is not None], axis=n.attr("axis"))]


def _slice(n: OnnxNode, a: list) -> list[np.ndarray]:
    data = a[0]
    if len(a) > 1:  # opset 10+: starts, ends, axes?, steps? are inputs
        starts, ends = a[1].tolist(), a[2].tolist()
        axes = a[3].tolist() if len(a) > 3 and a[3] is not None else list(range(len(starts)))
        steps = a[4].tolist() if len(a) > 4 and a[4] is not None else [1] * len(starts)
    else:
        starts, ends = n.attr("starts"), n.attr("ends")
        axes = n.attr("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis % data.ndim] = slice(int(start), int(end), int(step))
    return [data[tuple(index)]]


def _cast(n: OnnxNode, a: list) -> list[np.ndarray]:
    if a[0].dtype == object:
        return [a[0]]
    return [a[0].astype(helper.tensor_dtype_to_np_dtype(n.attr("to")))]


def _reshape(n: OnnxNode, a: list) -> list[np.ndarray]:
    shape = [int(d) for d in a[1]]
    shape = [a[0].shape[i] if d == 0 and not n.attr("allowzero", 0) else d
             for i, d in enumerate(shape)]
    return [a[0].reshape(shape)]


def _dim_div(x: Dim, y: Dim) -> Dim:
    if not is_static(y):
        raise ModelFormatError(f"cannot divide the dim {x!r} by the symbolic dim {y!r}")
    return dim_floordiv(x, y)


def _dim_sub(x: Dim, y: Dim) -> Dim:
    if not is_static(y):
        raise ModelFormatError(f"cannot subtract the symbolic dim {y!r}")
    return dim_add(x, -y)


def _arith(fn: Callable[[Dim, Dim], Dim]) -> Callable[[OnnxNode, list], list[np.ndarray]]:
    def fold(n: OnnxNode, a: list) -> list[np.ndarray]:
        if a[0].dtype != object and a[1].dtype != object:
            raise KeyError(n.op_type)  # numeric: let onnx.reference do it with ONNX's rules
        return [np.frompyfunc(fn, 2, 1)(a[0].astype(object), a[1].astype(object))]

    return fold


SYMBOLIC_FOLDS: dict[str, Callable[[OnnxNode, list], list[np.ndarray]]] = {
    "Identity": lambda n, a: [a[0]],
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": _concat,
    "Slice": _slice,
    "Cast": _cast,
    "Reshape": _reshape,
    "Add": _arith(dim_add),
    "Mul": _arith(dim_mul),
    "Sub": _arith(_dim_sub),
    "Div": _arith(_dim_div),
}


def _type_fold(ctx: ImportContext, n: OnnxNode) -> list[np.ndarray]:
    shape = ctx.type(n.input(0)).shape
    if n.op_type == "Size":
        return [_normalized(np.asarray(numel(shape), dtype=object))]
    start, end = n.attr("start", 0), n.attr("end")
    dims = list(shape)[start:end]
    return [_normalized(np.asarray(dims, dtype=object).reshape(len(dims)))]


def _constant(n: OnnxNode) -> list[np.ndarray]:
    for key, dtype in (("value", None), ("value_float", np.float32),
                       ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in n.attrs:
            value = n.attrs[key]
            return [np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)]
    raise ModelFormatError(f"{n.describe()} has no supported value attribute "
                           f"(got {sorted(n.attrs)})", hint="sparse and string constants are "
                                                            "not supported")


def _check_size(ctx: ImportContext, n: OnnxNode, proto: onnx.NodeProto,
                feeds: dict[str, np.ndarray]) -> None:
    """Refuse a fold whose outputs would hold more than ``max(MAX_FOLD_ELEMENTS, its
    inputs' elements)`` values (a ConstantOfShape, Expand, Range, Tile or broadcast that
    blows a few bytes up to 10¹² elements), from onnx's shape inference on the constant
    inputs, before anything is evaluated or allocated."""
    from onnx import numpy_helper, shape_inference

    limit = max(MAX_FOLD_ELEMENTS, sum(a.size for a in feeds.values()))
    try:
        schema = onnx.defs.get_schema(n.op_type, ctx.opset, "")
        types = {name: helper.make_tensor_type_proto(
            helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for name, a in feeds.items()}
        data = {name: numpy_helper.from_array(a, name) for name, a in feeds.items()
                if a.size <= MAX_SHAPE_DATA}
        inferred = shape_inference.infer_node_outputs(schema, proto, types, data)
    except Exception as e:  # onnx raises many types on bad inputs
        raise ModelFormatError(f"its constant inputs do not fit ONNX {n.op_type} "
                               f"({type(e).__name__}: {e})") from e
    for name in (o for o in n.outputs if o):
        t = inferred.get(name)
        dims = t.tensor_type.shape.dim if t is not None and t.HasField("tensor_type") and \
            t.tensor_type.HasField("shape") else None
        if dims is None or not all(d.HasField("dim_value") for d in dims):
            raise ModelFormatError(f"cannot be folded: the size of its output '{name}' is "
                                   f"unknown before evaluating it")
        count = 1
        for d in dims:
            count *= max(d.dim_value, 0)
        if count > limit:
            raise ModelFormatError(f"would fold to a constant of {count} elements "
                                   f"{[d.dim_value for d in dims]}, over the limit of {limit}",
                                   hint="cnnir folds only small constant subgraphs")


def _reference(ctx: ImportContext, n: OnnxNode, proto: onnx.NodeProto,
               arrays: list[np.ndarray | None]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    feeds = {name: a for name, a in zip(n.inputs, arrays) if name}
    _check_size(ctx, n, proto, feeds)
    evaluator = ReferenceEvaluator(proto, opsets={"": ctx.opset})
    return [np.asarray(v) for v in evaluator.run(None, feeds)]


def fold(ctx: ImportContext, n: OnnxNode, proto: onnx.NodeProto) -> None:
    """Evaluate ``n`` on its constant inputs and bind its outputs as constants."""
    try:
        outputs = _fold_outputs(ctx, n, proto)
    except ModelFormatError as e:
        raise ModelFormatError(f"{n.describe()}: {e.message}", hint=e.hint) from e
    except Exception as e:  # onnx.reference raises many types on bad constant inputs
        raise ModelFormatError(f"{n.describe()} could not be evaluated on its constant "
                               f"inputs: {type(e).__name__}: {e}") from e
    origin = n.input(0) if n.op_type in ("Reshape", "Transpose", "Squeeze", "Unsqueeze",
                                         "Identity") else None
    for name, array in zip(n.outputs, outputs):
        ctx.bind_const(name, _normalized(np.asarray(array)), origin)


def _fold_outputs(ctx: ImportContext, n: OnnxNode, proto: onnx.NodeProto) -> list[np.ndarray]:
    if n.op_type == "Constant":
        return _constant(n)
    if n.op_type in TYPE_OPS:
        return _type_fold(ctx, n)
    arrays = [ctx.const(name) if name else None for name in n.inputs]
    symbolic = any(a is not None and a.dtype == object for a in arrays)
    if n.op_type in SYMBOLIC_FOLDS:
        try:
            results = SYMBOLIC_FOLDS[n.op_type](n, arrays)
        except KeyError:
            pass
        else:  # numpy turns a picked symbol into a str scalar: keep dims as objects
            return [np.asarray(r, dtype=object) if symbolic else np.asarray(r) for r in results]
    if symbolic:
        raise ModelFormatError(f"computes with the symbolic dims {_symbols(arrays)}, which "
                               f"cnnir folds only through shape ops",
                               hint="give the model static input shapes")
    return _reference(ctx, n, proto, arrays)


def _symbols(arrays: list[np.ndarray | None]) -> list[str]:
    return sorted({str(d) for a in arrays if a is not None and a.dtype == object
                   for d in a.flat if not is_static(d)})


__all__ = ["as_dims", "can_fold", "fold", "may_fold"]
