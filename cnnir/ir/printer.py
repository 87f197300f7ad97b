"""A stable, readable text form of a graph, used in tests, errors and ``cnnir graph``.

    graph Net(%x: float32[1, 3, 32, 32]) -> (%fc)
      param %conv.weight: float32[8, 3, 3, 3]
      %conv = conv2d(%x, %conv.weight, _) {stride=(1, 1), padding=(1, 1), ...}  # net.py:12
      return %fc
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cnnir.ir.graph import Graph, Node, Value


def _ref(value: Value | None) -> str:
    return "_" if value is None else f"%{value.name}"


def format_attrs(attrs: Any) -> str:
    if attrs is None or not dataclasses.is_dataclass(attrs):
        return ""
    items = [f"{f.name}={getattr(attrs, f.name)!r}" for f in dataclasses.fields(attrs)]
    return "{" + ", ".join(items) + "}" if items else ""


def format_node(node: Node, *, with_loc: bool = True) -> str:
    outs = ", ".join(f"%{v.name}: {v.type}" for v in node.outputs)
    args = ", ".join(_ref(v) for v in node.inputs)
    attrs = format_attrs(node.attrs)
    text = f"{outs} = {node.op.name}({args})" + (f" {attrs}" if attrs else "")
    if with_loc and node.loc is not None:
        text += f"  # {node.loc}"
    return text


def format_graph(graph: Graph, *, with_loc: bool = False) -> str:
    ins = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    outs = ", ".join(_ref(v) for v in graph.outputs)
    lines = [f"graph {graph.name}({ins}) -> ({outs})"]
    for name, value in graph.constants.items():
        lines.append(f"  {value.const.kind} %{name}: {value.type}")
    lines.extend("  " + format_node(n, with_loc=with_loc) for n in graph.nodes)
    lines.append(f"  return {outs}")
    return "\n".join(lines)
