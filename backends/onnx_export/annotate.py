"""What ``cnnir view`` shows: a graph as ONNX with cnnir's analysis on every node.

Netron shows a node's ``doc_string`` as its description and its ``metadata_props`` among
its properties, and the model's ``metadata_props`` in the model's properties. Each ONNX node
made from a cnnir node carries that node's cost: one line of text (MACs, FLOPs, params,
output shape, receptive field, and for a node a rewrite made of several the original layers)
and the same figures as properties; the helper nodes of a decomposition say which node they
belong to. An op that ONNX has no standard name for becomes a node of the "cnnir" domain with
its attributes as text (a lenient builder), so every graph can be shown, training graphs and
fused backend ops included. The file is for viewing: it is not validated as ONNX.
"""

from __future__ import annotations

import onnx
from onnx import helper

from cnnir.backends.onnx_export.builder import OnnxBuilder
from cnnir.backends.onnx_export.export import DEFAULT_OPSET, _assemble, _with_initializers
from cnnir.ir import Graph
from cnnir.passes.cost import CostReport, LayerCost
from cnnir.report import human, pair_text


def _outputs(layer: LayerCost) -> str:
    return ", ".join("x".join(map(str, s)) for s in layer.output_shapes)


def layer_properties(layer: LayerCost, fused_from: list[str] | None) -> dict[str, str]:
    """The figures a node shows, as Netron's metadata rows (exact integers; short keys,
    since Netron cuts long ones)."""
    props = {"MACs": f"{layer.macs:,}", "FLOPs": f"{layer.flops:,}",
             "params": f"{layer.params:,}",
             "output": _outputs(layer), "activations": f"{layer.activation_bytes:,} bytes"}
    if layer.receptive_field is not None:
        props["RF"] = pair_text(layer.receptive_field)
        props["stride"] = pair_text(layer.effective_stride)
    if fused_from:
        props["fused from"] = ", ".join(fused_from)
    return props


def layer_text(layer: LayerCost, fused_from: list[str] | None) -> str:
    """One line: ``MACs 115.61M · FLOPs 231.21M · params 9.41K · out 1x64x56x56 · RF 35``."""
    parts = [f"MACs {human(layer.macs)}", f"FLOPs {human(layer.flops)}",
             f"params {human(layer.params)}", f"out {_outputs(layer)}"]
    if layer.receptive_field is not None:
        parts.append(f"RF {pair_text(layer.receptive_field)}")
    if fused_from:
        parts.append("fused from " + ", ".join(fused_from))
    return " · ".join(parts)


def annotated_model(graph: Graph, report: CostReport,
                    opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """``graph`` as an ONNX model, weights included, every node annotated from ``report``
    (``cnnir.passes.cost.analyze_graph(graph)``) and the totals in the model's
    properties."""
    builder = OnnxBuilder(graph, opset, lenient=True)
    model = _with_initializers(*_assemble(graph, opset, builder))
    layers = {layer.name: layer for layer in report.layers}
    for proto, spec in zip(model.graph.node, builder.nodes):
        layer = layers.get(spec.origin)
        if layer is None:
            continue
        fused = graph.fused_from.get(spec.origin)
        text = layer_text(layer, fused)
        helper_node = proto.name != spec.origin
        proto.doc_string = f"part of {spec.origin}: {text}" if helper_node else text
        if not helper_node:
            helper.set_metadata_props(proto, layer_properties(layer, fused))
    totals = report.totals.to_dict()
    props = {f"cnnir.total.{key}": f"{value:,}" if isinstance(value, int) else str(value)
             for key, value in totals.items()}
    props["cnnir.graph"] = graph.name
    props["cnnir.per_sample"] = str(report.per_sample)
    helper.set_model_props(model, props)
    model.ir_version = max(model.ir_version, 10)  # nodes' metadata_props need IR 10
    model.doc_string = (f"'{graph.name}' by cnnir view: MACs {human(report.totals.macs)}, "
                        f"FLOPs {human(report.totals.flops)}, params "
                        f"{human(report.totals.params)}")
    return model
