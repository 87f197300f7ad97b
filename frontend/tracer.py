"""Tracing: running a Module's forward on ``Tensor`` proxies records a Graph.

The active tracer keeps a stack of module paths (``layer1.0.conv1``); each op a forward
calls becomes a node named after the module it ran in and tagged with the user's file:line.
Parameters and buffers become graph constants under their ``state_dict`` names; a module
called several times (Siamese and triplet nets) reuses the same constants.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnir.errors import CnnirError, ShapeError
from cnnir.ir import Graph, SourceLoc, Value, user_location
from cnnir.ops import OpDef

if TYPE_CHECKING:
    from types import FrameType

    from cnnir.frontend.module import LazyArray, Module
    from cnnir.frontend.tensor import Tensor


class Tracer:
    """Records ops into ``graph`` while a forward runs (see ``tracing``)."""

    active: Tracer | None = None

    def __init__(self, graph: Graph, root: Module | None = None) -> None:
        self.graph = graph
        self.scope_stack: list[tuple[str, bool]] = [("", False)]
        self.created_at: list[SourceLoc | None] = []  # of the modules being run, innermost last
        self.entry: FrameType | None = None  # the frame that runs the traced forward
        self.module_paths: dict[int, str] = {}
        self.constants: dict[int, Value] = {}
        if root is not None:
            self._register_root(root)

    def _register_root(self, root: Module) -> None:
        for path, module in root.named_modules():
            self.module_paths[id(module)] = path
            self.graph.module_types[path] = type(module).__name__
        for name, param in root.named_parameters():
            self.constant_for(param, name)
        for name, buf in root.named_buffers():
            self.constant_for(buf, name)

    def constant_for(self, array: LazyArray, name: str | None = None) -> Value:
        value = self.constants.get(id(array))
        if value is None:
            name = self.graph.unique_name(name or "param")
            value = self.graph.add_constant(name, array.constant_data())
            self.constants[id(array)] = value
        return value

    @contextlib.contextmanager
    def module_scope(self, module: Module) -> Iterator[None]:
        path = self.module_paths.get(id(module))
        if path is None:
            parent = self.scope_stack[-1][0]
            local = type(module).__name__.lower()
            path = f"{parent}.{local}" if parent else local
        self.scope_stack.append((path, not module.has_children()))
        self.created_at.append(getattr(module, "_created_at", None))
        try:
            yield
        finally:
            self.scope_stack.pop()
            self.created_at.pop()

    def location(self) -> SourceLoc | None:
        """Where the op being recorded comes from: the innermost user frame of the traced
        forward, else where the innermost module running (a ``Sequential``'s layer, whose
        forward is cnnir's) was created."""
        return user_location(self.entry) or next(
            (loc for loc in reversed(self.created_at) if loc is not None), None)

    def node_name(self, op: OpDef) -> tuple[str, str]:
        scope, is_leaf = self.scope_stack[-1]
        if is_leaf:
            return scope, scope
        return (f"{scope}.{op.name}" if scope else op.name), scope

    def as_value(self, x: Any, like: Value | None) -> Value | None:
        from cnnir.frontend.module import LazyArray
        from cnnir.frontend.tensor import Tensor

        if x is None:
            return None
        if isinstance(x, Tensor):
            if x.tracer is not self:
                raise CnnirError("a tensor from another trace was used in this one")
            return x.value
        if isinstance(x, LazyArray):
            return self.constant_for(x)
        if isinstance(x, (bool, int, float, np.number)):
            dtype = like.type.dtype if like is not None else "float32"
            return self.graph.add_literal(np.asarray(x, dtype=dtype), "scalar")
        if isinstance(x, np.ndarray):
            return self.graph.add_literal(x)
        raise CnnirError(
            f"cannot use a {type(x).__name__} as a tensor in a traced forward",
            hint="pass cnnir tensors, parameters, numpy arrays or Python numbers",
        )

    def emit(self, op: OpDef, inputs: Sequence[Any], attrs: Any = None) -> list[Tensor]:
        from cnnir.frontend.tensor import Tensor

        like = next((x.value for x in inputs if isinstance(x, Tensor)), None)
        values = [self.as_value(x, like) for x in inputs]
        name, scope = self.node_name(op)
        node = self.graph.add_node(op, values, attrs, name=name, scope=scope, loc=self.location())
        return [Tensor(v, self) for v in node.outputs]


@contextlib.contextmanager
def tracing(tracer: Tracer) -> Iterator[Tracer]:
    if Tracer.active is not None:
        raise CnnirError("cnnir.trace cannot be nested inside another trace")
    Tracer.active = tracer
    tracer.entry = sys._getframe(2)  # the caller of ``with tracing(...)`` (past contextlib)
    try:
        yield tracer
    finally:
        Tracer.active = None
        tracer.entry = None


def current_tracer(what: str) -> Tracer:
    if Tracer.active is None:
        raise CnnirError(
            f"{what} was called outside a trace",
            hint="cnnir modules run through cnnir.trace(model, shape), cnnir.analyze or "
                 "cnnir.compile, not eagerly on arrays",
        )
    return Tracer.active


def build_attrs(attrs_cls: type, where: str, **kwargs: Any) -> Any:
    """Construct an op's attrs, naming ``where`` (layer and user line) on a bad value."""
    try:
        return attrs_cls(**kwargs)
    except ShapeError as e:
        loc = Tracer.active.location() if Tracer.active is not None else user_location()
        prefix = f"{where} ({loc})" if loc else where
        raise e.with_context(prefix) from None
