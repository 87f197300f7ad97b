"""A stable, readable text form of a graph, used in tests, errors and ``cnnir graph``.

    graph Net(%x: float32[1, 3, 32, 32]) -> (%fc)
      parameter %conv.weight: float32[8, 3, 3, 3]
      %conv: float32[1, 8, 32, 32] = conv2d(%x, %conv.weight, _) {stride=(1, 1), ...}  # net.py:12
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


def _dot_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def format_dot(graph: Graph) -> str:
    """Graphviz: one box per node (name, op, output shape), edges along values."""
    lines = [f'digraph "{_dot_label(graph.name)}" {{', "  rankdir=TB;",
             '  node [shape=box, fontname="monospace", fontsize=10];']
    for v in graph.inputs:
        lines.append(f'  "{_dot_label(v.name)}" [shape=ellipse, label="{_dot_label(str(v))}"];')
    for node in graph.nodes:
        shape = ", ".join(str(v.type) for v in node.outputs)
        label = _dot_label(f"{node.name}\\n{node.op.name}\\n{shape}").replace("\\\\n", "\\n")
        lines.append(f'  "{_dot_label(node.name)}" [label="{label}"];')
        for v in node.inputs:
            if v is None or v.is_constant:
                continue
            src = v.producer.name if v.producer is not None else v.name
            lines.append(f'  "{_dot_label(src)}" -> "{_dot_label(node.name)}";')
    lines.append("}")
    return "\n".join(lines)
