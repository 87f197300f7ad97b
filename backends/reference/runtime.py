"""The reference program: walk ``graph.nodes`` in order, one numpy kernel per node.

A program binds its inputs to the graph's input types (symbolic dims such as ``"N"`` match any
size but must agree across inputs), casts floating-point inputs and constants to the compute
dtype (float64 by default; integer class targets stay int64), runs every node's kernel on a
dictionary of values and returns one array, or a tuple for several graph outputs. After each
node it checks the produced shapes against the node's inferred types, so a disagreement
between an op's ``infer`` rule and its semantics is reported where it happens.

Kernels are plain functions registered against ``OpDef`` objects::

    @kernel(ops.conv2d)
    def conv2d(ctx, attrs, x, w, b): ...

They receive numpy arrays (``None`` for an absent optional input), never mutate them, and
return an array (a tuple for multi-output ops such as ``split``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnir.errors import CnnirError, LoweringError
from cnnir.ir import Graph, Node, Value
from cnnir.ir.types import Dim, evaluate_dim, is_static, shape_str
from cnnir.ops import OpDef

Kernel = Callable[..., Any]
KERNELS: dict[OpDef, Kernel] = {}


def kernel(op: OpDef) -> Callable[[Kernel], Kernel]:
    """Register ``fn`` as the reference kernel of ``op`` (keyed by the OpDef object)."""

    def register(fn: Kernel) -> Kernel:
        if op in KERNELS:
            raise ValueError(f"reference kernel for {op.name} registered twice")
        KERNELS[op] = fn
        return fn

    return register


@dataclass
class Context:
    """What a kernel may use besides its inputs: the random generator of random ops in
    training mode, the compute dtype, and the values bound to symbolic dims."""

    rng: np.random.Generator
    dtype: np.dtype
    env: dict[str, int] = field(default_factory=dict)

    def dim(self, d: Dim) -> int:
        """A dimension from an attribute (``ReshapeAttrs.shape``) with symbols substituted."""
        value = evaluate_dim(d, self.env)
        if not isinstance(value, int):
            raise LoweringError(f"symbolic dimension {d!r} is not bound by the graph inputs")
        return value


def is_float_dtype(dtype: str | np.dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def _as_compute(array: np.ndarray, type_dtype: str, dtype: np.dtype) -> np.ndarray:
    """Floats in the compute dtype; integer and boolean tensors as int64 / bool."""
    if is_float_dtype(type_dtype):
        return np.asarray(array, dtype=dtype)
    if np.dtype(type_dtype).kind == "b":
        return np.asarray(array, dtype=bool)
    return np.asarray(array, dtype=np.int64)


def _in_compute_dtype(result: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float results in the compute dtype (numpy promotes float32 with int64 to float64)."""
    return result.astype(dtype) if result.dtype.kind == "f" and result.dtype != dtype else result


def _frozen_constant(value: Value, dtype: np.dtype) -> np.ndarray:
    """A private, read-only copy of a constant: no kernel or caller can change it between
    calls, and the graph's own array is left untouched."""
    array = np.array(_as_compute(value.const.array, value.type.dtype, dtype), copy=True)
    array.flags.writeable = False
    return array


def _bind_symbol(env: dict[str, int], symbol: str, size: int, where: str) -> None:
    if env.setdefault(symbol, size) != size:
        raise LoweringError(
            f"{where} has size {size} for the symbolic dim '{symbol}', which another input "
            f"already bound to {env[symbol]}",
            hint="inputs sharing a symbol (e.g. the batch 'N') must agree on its size",
        )


def _check_input(value: Value, array: np.ndarray, env: dict[str, int]) -> None:
    """Match an array's shape against an input's type, binding bare symbols in ``env``."""
    want = value.type.shape
    where = f"input '{value.name}'"
    if array.ndim != len(want):
        raise LoweringError(
            f"{where} expects a {len(want)}-D array of shape {shape_str(want)} but got a "
            f"{array.ndim}-D array of shape {list(array.shape)}")
    for axis, (dim, size) in enumerate(zip(want, array.shape)):
        if is_static(dim) and dim != size:
            raise LoweringError(
                f"{where} expects shape {shape_str(want)} but got {list(array.shape)} "
                f"(dim {axis} is {size}, expected {dim})",
                hint="compile the graph for this shape, or trace it with a symbolic dim")
        if not is_static(dim) and dim.isidentifier():
            _bind_symbol(env, dim, size, where)


def _check_derived_dims(value: Value, array: np.ndarray, env: dict[str, int]) -> None:
    """Dims written as expressions (``"N * 2"``) must evaluate to the array's sizes."""
    for axis, (dim, size) in enumerate(zip(value.type.shape, array.shape)):
        if is_static(dim) or dim.isidentifier():
            continue
        expected = evaluate_dim(dim, env)
        if isinstance(expected, int) and expected != size:
            raise LoweringError(
                f"input '{value.name}' has size {size} on dim {axis}, but its type "
                f"{shape_str(value.type.shape)} gives {expected} for the bound symbols {env}")


def _check_outputs(node: Node, results: Sequence[np.ndarray], env: dict[str, int]) -> None:
    if len(results) != len(node.outputs):
        raise LoweringError(f"{node.describe()} produced {len(results)} outputs but has "
                            f"{len(node.outputs)} (reference kernel bug)")
    for value, result in zip(node.outputs, results):
        want = value.type.bind(env).shape
        matches = len(want) == result.ndim and all(
            not is_static(d) or d == s for d, s in zip(want, result.shape))
        if not matches:
            raise LoweringError(
                f"{node.describe()} produced shape {list(result.shape)} but its inferred type "
                f"is {shape_str(want)}",
                hint="the op's infer rule and its reference kernel disagree; one of them is wrong")


class ReferenceProgram:
    """A graph made callable on numpy arrays with the reference kernels.

    >>> run = cnnir.compile(graph, backend="reference", dtype="float64")
    >>> y = run(np.ones((1, 3, 32, 32)))
    """

    def __init__(self, graph: Graph, dtype: str = "float64", seed: int = 0) -> None:
        if not is_float_dtype(dtype):
            raise LoweringError(f"the reference backend computes in a float dtype, got {dtype!r}",
                                hint="use dtype='float64' (the default) or 'float32'")
        missing = sorted({n.op.name for n in graph.nodes if n.op not in KERNELS})
        if missing:
            raise LoweringError(f"the reference backend has no kernel for {missing}")
        self.graph = graph
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.constants = {id(v): _frozen_constant(v, self.dtype)
                          for v in graph.constants.values()}

    def bind_inputs(self, arrays: Sequence[Any]) -> tuple[dict[int, np.ndarray], dict[str, int]]:
        inputs = self.graph.inputs
        if len(arrays) != len(inputs):
            names = ", ".join(f"'{v.name}' {v.type}" for v in inputs)
            raise LoweringError(f"graph '{self.graph.name}' takes {len(inputs)} input(s) "
                                f"({names}) but was called with {len(arrays)}")
        env: dict[str, int] = {}
        values: dict[int, np.ndarray] = {}
        for value, raw in zip(inputs, arrays):
            array = self._input_array(value, raw)
            _check_input(value, array, env)
            values[id(value)] = array
        for value in inputs:
            _check_derived_dims(value, values[id(value)], env)
        return values, env

    def _input_array(self, value: Value, raw: Any) -> np.ndarray:
        try:
            array = np.asarray(raw)
        except (TypeError, ValueError) as e:
            raise LoweringError(f"input '{value.name}' is not an array: {e}") from None
        if array.dtype.kind not in "biuf":
            raise LoweringError(f"input '{value.name}' has dtype {array.dtype}, expected a "
                                f"numeric array for {value.type}")
        if not is_float_dtype(value.type.dtype) and array.dtype.kind == "f":
            raise LoweringError(
                f"input '{value.name}' is typed {value.type} (integer) but got a "
                f"{array.dtype} array", hint="pass class indices as an integer array")
        return _as_compute(array, value.type.dtype, self.dtype)

    def __call__(self, *arrays: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        values, env = self.bind_inputs(arrays)
        values.update(self.constants)
        ctx = Context(self.rng, self.dtype, env)
        with np.errstate(all="ignore"):
            for node in self.graph.nodes:
                results = self._run_node(ctx, node, values)
                for value, result in zip(node.outputs, results):
                    values[id(value)] = result
        outs = tuple(values[id(v)] for v in self.graph.outputs)
        return outs[0] if len(outs) == 1 else outs

    def _run_node(self, ctx: Context, node: Node,
                  values: dict[int, np.ndarray]) -> tuple[np.ndarray, ...]:
        args = [None if v is None else values[id(v)] for v in node.inputs]
        try:
            result = KERNELS[node.op](ctx, node.attrs, *args)
        except CnnirError as e:
            raise e.with_context(node.describe()) from None
        except (ArithmeticError, IndexError, TypeError, ValueError) as e:
            raise LoweringError(f"{node.describe()} failed in the reference backend: {e}",
                                hint="this is a reference kernel bug; please report it") from e
        results = tuple(result) if isinstance(result, tuple) else (result,)
        results = tuple(_in_compute_dtype(np.asarray(r), ctx.dtype) for r in results)
        _check_outputs(node, results, ctx.env)
        return results


def compile_graph(graph: Graph, dtype: str = "float64", seed: int = 0,
                  **options: Any) -> ReferenceProgram:
    """The graph as a callable on numpy arrays, computed by the reference kernels.

    ``seed`` seeds the generator of random ops in training mode (dropout, dropout2d, rrelu);
    successive calls draw fresh masks from it. No option is recognized beyond these.
    """
    if options:
        raise LoweringError(f"the reference backend takes no options {sorted(options)}",
                            hint="it accepts dtype and seed only")
    return ReferenceProgram(graph, dtype=dtype, seed=seed)


__all__ = ["KERNELS", "Context", "ReferenceProgram", "compile_graph", "kernel"]
