"""The backend contract: what a package under ``backends/`` provides, and what the core asks.

A backend is a module (``cnnir.backends.numba_cpu``, ``...reference``, ``...numba_cuda``) that
implements ``Backend``:

- ``KERNELS``: its kernel table, a ``KernelTable`` keyed by ``OpDef`` objects (never names);
- ``UNSUPPORTED``: the ops it knowingly lacks (a test fails on any op in neither);
- ``check_available()``: raises ``BackendUnavailable`` with a hint when it cannot run here
  (no GPU, a missing optional extra), so a user never meets an ``AttributeError`` or a
  driver traceback;
- ``compile_graph(graph, **options)``: a ``CompiledGraph``, callable on arrays.

A ``CompiledGraph`` reports ``planned_bytes`` (activation buffers of its latest plan),
``choices`` (the algorithm each node runs) and ``state``: the parameters and buffers it reads,
bound by reference (``cnnir.backends.lowering.ProgramState``), so that a training step can
update them in place and every program sharing the state sees the change.

Every backend checks a call with ``check_call`` (one array per input, its shape, no empty
input, its dtype: the same LoweringError messages everywhere, docs/api.md).

``get_backend(name)`` imports a backend lazily, by name, and checks it is available: the core
itself never imports one (``import cnnir`` stays free of numba).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cnnir.errors import LoweringError, ShapeError
from cnnir.ir import Graph, Value
from cnnir.ir.types import evaluate_dim, is_static, shape_str
from cnnir.ops import OpDef

BACKENDS: dict[str, str] = {
    "numba": "cnnir.backends.numba_cpu",
    "reference": "cnnir.backends.reference",
    "cuda": "cnnir.backends.numba_cuda",
}

EMPTY_HINT = ("cnnir refuses empty tensors where PyTorch would return empty outputs: give "
              "every input at least one sample and a size of at least 1 on every dim")


class KernelTable(dict):
    """A backend's kernels (or lowerings), registered against OpDef objects:

    >>> KERNELS = KernelTable("numba")
    >>> @KERNELS.register(ops.relu)
    ... def relu(builder, node): ...
    """

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.backend = backend

    def register(self, op: OpDef) -> Callable[[Any], Any]:
        def add(kernel: Any) -> Any:
            if op in self:
                raise ValueError(f"the {self.backend} backend registers {op.name} twice")
            self[op] = kernel
            return kernel

        return add

    def check_supports(self, graph: Graph) -> None:
        """Raise a LoweringError naming every node whose op has no kernel here."""
        missing = [n for n in graph.nodes if n.op not in self]
        if missing:
            ops = sorted({n.op.name for n in missing})
            raise LoweringError(
                f"the {self.backend} backend has no kernel for {', '.join(ops)} (first at "
                f"{missing[0].describe()})",
                hint="run the graph on another backend (backend='reference' runs every op)")


@runtime_checkable
class CompiledGraph(Protocol):
    """A graph compiled for fixed or symbolic input shapes: call it on arrays."""

    graph: Graph

    @property
    def planned_bytes(self) -> int | None: ...

    @property
    def choices(self) -> dict[str, str]: ...

    def __call__(self, *arrays: Any) -> Any: ...


@runtime_checkable
class Backend(Protocol):
    """What a backend module provides (see the module docstring)."""

    KERNELS: Mapping[OpDef, Any]
    UNSUPPORTED: Collection[OpDef]  # a frozenset, or a mapping to the reason

    def check_available(self) -> None: ...

    def compile_graph(self, graph: Graph, **options: Any) -> CompiledGraph: ...


def get_backend(name: str) -> Backend:
    """The backend called ``name``, imported on first use and checked to be available."""
    if name not in BACKENDS:
        raise LoweringError(f"unknown backend {name!r}", hint=f"choose one of {sorted(BACKENDS)}")
    module: Any = importlib.import_module(BACKENDS[name])
    module.check_available()
    return module


def bind_input_shapes(inputs: Sequence[Value], shapes: Iterable[tuple[int, ...]]) -> dict[str, int]:
    """Match concrete input shapes against the inputs' types and return the sizes of the
    symbolic dims (``{"N": 8}``). Inputs sharing a symbol must agree on its size; dims written
    as expressions (``"N * 2"``) must evaluate to the given size."""
    shapes = [tuple(s) for s in shapes]
    if len(shapes) != len(inputs):
        names = ", ".join(f"'{v.name}' {v.type}" for v in inputs)
        raise LoweringError(f"the graph takes {len(inputs)} input(s) ({names}) but was called "
                            f"with {len(shapes)}")
    env: dict[str, int] = {}
    for value, shape in zip(inputs, shapes):
        _bind_symbols(value, shape, env)
    for value, shape in zip(inputs, shapes):
        _check_derived_dims(value, shape, env)
    return env


def _bind_symbols(value: Value, shape: tuple[int, ...], env: dict[str, int]) -> None:
    want = value.type.shape
    where = f"input '{value.name}'"
    if len(shape) != len(want):
        raise LoweringError(f"{where} expects a {len(want)}-D array of shape {shape_str(want)} "
                            f"but got a {len(shape)}-D array of shape {list(shape)}")
    for axis, (dim, size) in enumerate(zip(want, shape)):
        if is_static(dim) and dim != size:
            raise LoweringError(
                f"{where} expects shape {shape_str(want)} but got {list(shape)} (dim {axis} "
                f"is {size}, expected {dim})",
                hint="compile the graph for this shape, or trace it with a symbolic dim")
        if not is_static(dim) and dim.isidentifier() and env.setdefault(dim, size) != size:
            raise LoweringError(
                f"{where} has size {size} for the symbolic dim '{dim}', which another input "
                f"already bound to {env[dim]}",
                hint="inputs sharing a symbol (e.g. the batch 'N') must agree on its size")


def _check_derived_dims(value: Value, shape: tuple[int, ...], env: dict[str, int]) -> None:
    for axis, (dim, size) in enumerate(zip(value.type.shape, shape)):
        if is_static(dim) or dim.isidentifier():
            continue
        expected = evaluate_dim(dim, env)
        if isinstance(expected, int) and expected != size:
            raise LoweringError(
                f"input '{value.name}' has size {size} on dim {axis}, but its type "
                f"{shape_str(value.type.shape)} gives {expected} for the bound symbols {env}")


def check_input_sizes(inputs: Sequence[Value]) -> None:
    """Refuse graph inputs typed with a zero size (a ShapeError naming the input)."""
    for value in inputs:
        for axis, dim in enumerate(value.type.shape):
            if is_static(dim) and dim <= 0:
                raise ShapeError(f"input '{value.name}' has shape {shape_str(value.type.shape)}"
                                 f", size {dim} on dim {axis}: cnnir refuses empty inputs",
                                 hint=EMPTY_HINT)


def is_numpy_array(x: Any) -> bool:
    return isinstance(x, np.ndarray)


def check_call(graph: Graph, arrays: Sequence[Any], dtype: np.dtype, *, cast: bool = False,
               is_array: Callable[[Any], bool] = is_numpy_array,
               ) -> tuple[list[Any], dict[str, int]]:
    """The call-time contract of every backend (docs/api.md, "Calling a compiled model"):
    one array per graph input (``is_array``: a numpy array, or a device array on the GPU; a
    number or numpy scalar becomes a 0-d array), each of the rank and shape of its input's
    type, symbolic dims agreeing across inputs and none of size 0, floats in ``dtype`` (with
    ``cast``, the reference backend's, any real array, converted by the caller) and integer
    inputs as integer arrays. A violation is a ``LoweringError`` naming the input. Returns
    the arrays and the sizes bound to symbolic dims."""
    inputs = graph.inputs
    if len(arrays) != len(inputs):
        names = ", ".join(f"'{v.name}' {v.type}" for v in inputs)
        raise LoweringError(f"graph '{graph.name}' takes {len(inputs)} input(s) ({names}) but "
                            f"was called with {len(arrays)}",
                            hint="pass one array per graph input, in order")
    arrays = [np.asarray(a) if isinstance(a, (int, float, np.generic)) else a for a in arrays]
    for value, array in zip(inputs, arrays):
        if not is_array(array):
            want = dtype if np.dtype(value.type.dtype).kind == "f" else value.type.dtype
            raise LoweringError(
                f"input '{value.name}' is a {type(array).__name__}, not an array (it expects "
                f"{value.type})", hint=f"pass np.asarray(x, dtype=np.{np.dtype(want)})")
    shapes = [tuple(a.shape) for a in arrays]
    env = bind_input_shapes(inputs, shapes)
    for value, shape in zip(inputs, shapes):
        if 0 in shape:
            raise LoweringError(f"input '{value.name}' has shape {list(shape)}, size 0 on dim "
                                f"{shape.index(0)}: cnnir refuses empty inputs", hint=EMPTY_HINT)
    for value, array in zip(inputs, arrays):
        _check_dtype(value, np.dtype(array.dtype), np.dtype(dtype), cast)
    return arrays, env


def _check_dtype(value: Value, got: np.dtype, dtype: np.dtype, cast: bool) -> None:
    where = f"input '{value.name}'"
    if got.kind not in "biuf":
        raise LoweringError(f"{where} has dtype {got}, expected a numeric array for {value.type}")
    kind = np.dtype(value.type.dtype).kind
    if kind != "f":
        if got.kind != kind and not (kind in "iu" and got.kind in "iu"):
            what = "integer" if kind in "iu" else "bool"
            raise LoweringError(f"{where} is typed {value.type} ({what}) but got a {got} array",
                                hint=f"pass x.astype(np.{value.type.dtype}) (class indices are "
                                     f"integers)")
        return
    if got != dtype and not cast:
        also = f", or compile with dtype='{got}'" if got.kind == "f" else ""
        raise LoweringError(f"{where} must be {dtype} but got {got}",
                            hint=f"cast it: x.astype(np.{dtype}){also}; cnnir never casts inputs "
                                 f"(the reference backend converts them to its compute dtype)")


__all__ = ["BACKENDS", "EMPTY_HINT", "Backend", "CompiledGraph", "KernelTable",
           "bind_input_shapes", "check_call", "check_input_sizes", "get_backend"]
