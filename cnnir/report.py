"""Rendering a CostReport: a module-tree table (≤ 100 columns), CSV, Markdown and JSON."""

from __future__ import annotations

import copy
import csv
import io
import json
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cnnir.passes.cost import CostReport, LayerCost


def group_layers(layers: list[LayerCost], depth: int | None,
                 module_types: dict[str, str] | None = None) -> list[tuple[int, LayerCost]]:
    """A tree of rows: every module path prefix up to ``depth`` components aggregates the
    nodes under it; rows appear in first-execution order, indented by their level. A
    module's row is labelled with its class (``BasicBlock (14 ops)``) when known."""
    module_types = module_types or {}
    if depth is None:
        return [(0, layer) for layer in layers]
    rows: dict[str, tuple[int, LayerCost]] = {}
    for layer in layers:
        parts = layer.name.split(".")
        levels = min(max(depth, 1), len(parts))
        for k in range(1, levels + 1):
            key = ".".join(parts[:k])
            is_node = k == len(parts)
            if key not in rows:
                rows[key] = (k - 1, copy.copy(layer))
                rows[key][1].name = key
            else:
                rows[key][1].add(layer)
            if not is_node:
                row = rows[key][1]
                ops = f"{row.count} op{'s' if row.count > 1 else ''}"
                row.op = f"{module_types[key]} ({ops})" if key in module_types else ops
    return list(rows.values())


def human(n: int) -> str:
    """1234567 -> '1.23M' (tables only; JSON and CSV carry exact ints)."""
    for unit, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _shape(shapes: list[list[int]]) -> str:
    text = "x".join(str(d) for d in shapes[0]) if shapes else ""
    return text + (f" +{len(shapes) - 1}" if len(shapes) > 1 else "")


def _rf(layer: LayerCost) -> str:
    return "-" if layer.receptive_field is None else pair_text(layer.receptive_field)


def pair_text(pair: tuple[Fraction, Fraction]) -> str:
    """A (height, width) receptive field or stride: ``7``, or ``7x3`` when they differ."""
    h, w = (str(f.numerator) if f.denominator == 1 else f"{float(f):.1f}" for f in pair)
    return h if h == w else f"{h}x{w}"


COLUMNS = ("Layer", "Op", "Output", "Params", "MACs", "FLOPs", "RF")


def format_table(report: CostReport, depth: int | None = 2, width: int = 100) -> str:
    rows = [
        ("  " * indent + layer.name, layer.op, _shape(layer.output_shapes),
         human(layer.params) if layer.params else "-", human(layer.macs) if layer.macs else "-",
         human(layer.flops), _rf(layer))
        for indent, layer in report.grouped(depth)
    ]
    fixed = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
             for i, c in enumerate(COLUMNS)]
    name_width = max(12, width - sum(fixed[1:]) - 2 * (len(COLUMNS) - 1))
    fixed[0] = min(fixed[0], name_width)
    fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(fixed))

    def clip(row: tuple[str, ...]) -> tuple[str, ...]:
        name = row[0] if len(row[0]) <= fixed[0] else row[0][: fixed[0] - 1] + "…"
        return (name, *row[1:])

    lines = [fmt.format(*COLUMNS), "-" * len(fmt.format(*COLUMNS))]
    lines += [fmt.format(*clip(r)) for r in rows]
    lines.append("-" * len(lines[0]))
    lines += summary_lines(report)
    return "\n".join(lines)


def summary_lines(report: CostReport) -> list[str]:
    t = report.totals
    label = " (per sample)" if report.per_sample else ""
    inputs = ", ".join(f"{i['name']} {'x'.join(map(str, i['shape']))}" for i in report.inputs)
    return [
        f"Model: {report.model}    inputs: {inputs}",
        f"Params: {t.params:,} (trainable {t.trainable_params:,}, frozen {t.frozen_params:,})"
        f"    buffers: {t.buffers:,}    {t.param_bytes / 2**20:.2f} MiB",
        f"MACs{label}: {t.macs:,} ({t.macs / 1e9:.3f} G, conv/linear/matmul multiplies, "
        f"bias excluded)",
        f"FLOPs{label}: {t.flops:,} ({t.flops / 1e9:.3f} G, every op)",
        f"Activations{label}: {t.activation_bytes / 2**20:.2f} MiB total, "
        f"{t.peak_activation_bytes / 2**20:.2f} MiB peak (freed after last use)",
        *training_lines(report, label),
        *report.notes,
    ]


def training_lines(report: CostReport, label: str) -> list[str]:
    """A gradient graph's forward and backward costs and the memory training holds."""
    c = report.training
    if c is None:
        return []
    mib = 2**20
    return [
        f"Training step{label}: forward {human(c.forward_macs)} MACs, "
        f"{human(c.forward_flops)} FLOPs; backward {human(c.backward_macs)} MACs, "
        f"{human(c.backward_flops)} FLOPs",
        f"Training memory{label}: saved activations {c.saved_activation_bytes / mib:.2f} MiB, "
        f"gradients {c.gradient_bytes / mib:.2f} MiB, peak {c.peak_bytes / mib:.2f} MiB",
        *([f"Checkpointing{label}: {human(c.recompute_flops)} FLOPs recomputed in the "
           f"backward (included above)"] if c.recompute_flops else []),
    ]


CSV_FIELDS = ("name", "op", "output_shapes", "params", "macs", "flops", "activation_bytes",
              "receptive_field", "effective_stride")


def _flat_rows(report: CostReport, depth: int | None) -> list[dict]:
    rows = []
    for _, layer in report.grouped(depth):
        d = layer.to_dict()
        d["output_shapes"] = ";".join("x".join(map(str, s)) for s in layer.output_shapes)
        for key in ("receptive_field", "effective_stride"):
            d[key] = "x".join(map(str, d[key])) if key in d else ""
        rows.append({k: d.get(k, "") for k in CSV_FIELDS})
    return rows


def format_csv(report: CostReport, depth: int | None = None) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_flat_rows(report, depth))
    return buf.getvalue()


def format_markdown(report: CostReport, depth: int | None = 2) -> str:
    head = ["Layer", "Op", "Output", "Params", "MACs", "FLOPs", "RF"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for indent, layer in report.grouped(depth):
        name = "&nbsp;&nbsp;" * indent + layer.name
        cells = [name, layer.op, _shape(layer.output_shapes), f"{layer.params:,}",
                 f"{layer.macs:,}", f"{layer.flops:,}", _rf(layer)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {line}" for line in summary_lines(report)]
    return "\n".join(lines)


def format_json(report: CostReport) -> str:
    return json.dumps(report.to_dict(), indent=2)
