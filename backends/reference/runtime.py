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

from cnnir.backend import KernelTable, check_call
from cnnir.errors import CnnirError, LoweringError
from cnnir.ir import Graph, Node, Value
from cnnir.ir.types import Dim, evaluate_dim, is_static, shape_str
from cnnir.ops import OpDef

Kernel = Callable[..., Any]
KERNELS = KernelTable("reference")


def kernel(op: OpDef) -> Callable[[Kernel], Kernel]:
    """Register ``fn`` as the reference kernel of ``op`` (keyed by the OpDef object)."""
    return KERNELS.register(op)


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
        KERNELS.check_supports(graph)
        self.graph = graph
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.constants = {id(v): _frozen_constant(v, self.dtype)
                          for v in graph.constants.values()}

    def bind_inputs(self, arrays: Sequence[Any]) -> tuple[dict[int, np.ndarray], dict[str, int]]:
        """The inputs in the compute dtype, after the shared call-time checks
        (``cnnir.backend.check_call``; this backend converts float inputs it is given)."""
        arrays, env = check_call(self.graph, arrays, self.dtype, cast=True)
        return {id(v): _as_compute(a, v.type.dtype, self.dtype)
                for v, a in zip(self.graph.inputs, arrays)}, env

    def reseed(self, seed: int) -> None:
        """Restart the random ops' generator from ``seed``."""
        self.rng = np.random.default_rng(seed)

    planned_bytes = None  # no buffer plan: every value is a fresh numpy array
    choices: dict[str, str] = {}  # one kernel per op, nothing to choose

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


def evaluate(node: Node, arrays: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """One node computed by its reference kernel on constant inputs, floats in float64, the
    results in the dtypes of the node's outputs: the evaluator of ``fold-constants``."""
    args = [a.astype(np.float64) if a is not None and a.dtype.kind == "f" else a
            for a in arrays]
    result = KERNELS[node.op](Context(np.random.default_rng(0), np.dtype(np.float64)),
                              node.attrs, *args)
    results = result if isinstance(result, tuple) else (result,)
    return [np.asarray(r, dtype=v.type.dtype) for r, v in zip(results, node.outputs)]


def check_available() -> None:
    """numpy is all this backend needs: it runs everywhere."""


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


__all__ = ["KERNELS", "Context", "ReferenceProgram", "check_available", "compile_graph",
           "evaluate", "kernel"]
