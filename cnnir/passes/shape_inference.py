"""Shape inference: the types of every value once symbolic input dims are bound.

The graph's own types may hold symbols (``"N"``); analyses that need numbers re-run each
op's ``infer`` rule with the symbols bound, which is linear in the number of nodes and never
allocates a tensor.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cnnir.errors import CnnirError, ShapeError
from cnnir.ir import Graph, TensorType
from cnnir.ir.types import evaluate_dim

TypeMap = dict[int, TensorType]


def bind_attrs(attrs: Any, env: dict[str, int]) -> Any:
    """``attrs`` with symbolic dims in tuple fields (a reshape target) bound by ``env``."""
    if not env or not dataclasses.is_dataclass(attrs):
        return attrs
    changes = {}
    for f in dataclasses.fields(attrs):
        value = getattr(attrs, f.name)
        if isinstance(value, tuple) and any(isinstance(d, str) for d in value):
            changes[f.name] = tuple(evaluate_dim(d, env) if isinstance(d, str) else d
                                    for d in value)
    return dataclasses.replace(attrs, **changes) if changes else attrs


def bind_types(graph: Graph, env: dict[str, int]) -> TypeMap:
    """``id(value) -> type`` with ``env`` substituted, inferred through every node."""
    types: TypeMap = {id(v): v.type.bind(env) for v in graph.inputs}
    types.update({id(v): v.type for v in graph.constants.values()})
    for node in graph.nodes:
        in_types = [types[id(v)] if v is not None else None for v in node.inputs]
        try:
            outs = node.op.infer_types(bind_attrs(node.attrs, env), in_types)
        except CnnirError as e:
            raise e.with_context(node.describe()) from e
        types.update({id(v): t for v, t in zip(node.outputs, outs)})
    return types


def batch_bindings(graph: Graph) -> dict[str, int]:
    """Bind symbols that appear only as the leading (batch) dim of inputs to 1.

    A symbol anywhere else cannot be guessed and is an error naming it."""
    env: dict[str, int] = {}
    for value in graph.inputs:
        for axis, dim in enumerate(value.type.shape):
            if isinstance(dim, str):
                if axis != 0 or not dim.isidentifier():
                    raise ShapeError(
                        f"input %{value.name} {value.type} has the symbolic dim {dim!r} "
                        f"outside the batch position",
                        hint="give concrete sizes (--input-shape 1x3x224x224) to analyze it",
                    )
                env[dim] = 1
    return env

