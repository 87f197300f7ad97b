"""Receptive field and effective stride of every 4-D value, per spatial axis.

With ``r`` the receptive field (in input pixels) and ``j`` the jump (input pixels between
adjacent outputs) of an op's input, an op that sees a window of ``k`` of its input pixels
and steps ``s`` of them per output gives ``r' = r + (k − 1)·j`` and ``j' = j·s``
(``s`` < 1 for upsampling). A global op sees its whole input: ``k = L``. Ops with several
inputs take the largest field. Graph inputs start at ``r = 1, j = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from cnnir.ir import Graph
from cnnir.ops import GLOBAL, Window
from cnnir.passes.shape_inference import TypeMap


@dataclass(frozen=True)
class Field:
    size: tuple[Fraction, Fraction]
    jump: tuple[Fraction, Fraction]

    def grown(self, kernel: tuple[int, int], stride: tuple[Fraction, Fraction]) -> Field:
        size = tuple(self.size[i] + (kernel[i] - 1) * self.jump[i] for i in range(2))
        return Field(size, tuple(self.jump[i] * stride[i] for i in range(2)))


UNIT = Field((Fraction(1), Fraction(1)), (Fraction(1), Fraction(1)))


def _widest(fields: list[Field]) -> Field:
    return max(fields, key=lambda f: (f.size, f.jump)) if fields else UNIT


def receptive_fields(graph: Graph, types: TypeMap) -> dict[int, Field]:
    """``id(value) -> Field`` for every value that has spatial meaning."""
    fields: dict[int, Field] = {id(v): UNIT for v in graph.inputs}
    for node in graph.nodes:
        incoming = [fields[id(v)] for v in node.inputs if v is not None and id(v) in fields]
        if not incoming:
            continue
        field = _widest(incoming)
        in_types = [types[id(v)] if v is not None else None for v in node.inputs]
        window = node.op.window(node.attrs, in_types) if node.op.window else None
        if window == GLOBAL:
            x = in_types[0]
            field = field.grown((x.shape[2], x.shape[3]), (Fraction(1), Fraction(1)))
        elif isinstance(window, Window):
            field = field.grown(window.kernel, window.stride)
        for v in node.outputs:
            fields[id(v)] = field
    return fields
