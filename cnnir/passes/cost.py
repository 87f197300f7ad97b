"""Cost analysis: per-node and per-module params, MACs, FLOPs, memory and receptive field.

``macs`` follows torchvision's published convention (conv, transposed conv, deformable conv,
linear and matmul multiply-accumulates, bias excluded), so ``round(macs / 1e9, 3)`` is its
"GFLOPS" column; ``flops`` counts every op by the rule its OpDef documents. Every count is a
Python int. Shared weights count once (at their first user); a module called several times
is costed per call. A symbolic batch is bound to 1 and the report says it is per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from cnnir.ir import Graph, Node
from cnnir.passes.autodiff import depends_on
from cnnir.passes.memory import live_bytes, nbytes, peak_activation_bytes
from cnnir.passes.receptive_field import Field, receptive_fields
from cnnir.passes.shape_inference import TypeMap, batch_bindings, bind_types


@dataclass
class LayerCost:
    name: str
    op: str
    output_shapes: list[list[int]]
    params: int = 0
    macs: int = 0
    flops: int = 0
    sampling_flops: int = 0
    activation_bytes: int = 0
    receptive_field: tuple[Fraction, Fraction] | None = None
    effective_stride: tuple[Fraction, Fraction] | None = None
    count: int = 1
    phase: str = "forward"  # or "backward", in a gradient graph

    def add(self, other: LayerCost) -> None:
        self.params += other.params
        self.macs += other.macs
        self.flops += other.flops
        self.sampling_flops += other.sampling_flops
        self.activation_bytes += other.activation_bytes
        self.output_shapes = other.output_shapes
        self.receptive_field = other.receptive_field
        self.effective_stride = other.effective_stride
        self.count += other.count

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "op": self.op, "output_shapes": self.output_shapes,
               "params": self.params, "macs": self.macs, "flops": self.flops}
        if self.phase != "forward":
            out["phase"] = self.phase
        if self.sampling_flops:
            out["sampling_flops"] = self.sampling_flops
        out["activation_bytes"] = self.activation_bytes
        if self.receptive_field is not None:
            out["receptive_field"] = [_number(f) for f in self.receptive_field]
            out["effective_stride"] = [_number(f) for f in self.effective_stride]
        return out


def _number(f: Fraction) -> int | float:
    return int(f) if f.denominator == 1 else float(f)


@dataclass
class Totals:
    params: int = 0
    trainable_params: int = 0
    buffers: int = 0
    macs: int = 0
    flops: int = 0
    param_bytes: int = 0
    activation_bytes: int = 0
    peak_activation_bytes: int = 0

    @property
    def frozen_params(self) -> int:
        return self.params - self.trainable_params

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items()}


@dataclass
class TrainingCost:
    """The split of a gradient graph (``Graph.gradients``): the forward pass (the nodes the loss
    depends on) and the backward (the rest), and the memory training holds: forward values
    the backward reads (saved activations), the gradients, and the peak of everything live
    at once over forward and backward (liveness, as the backends plan it). The backward
    includes the forward ops activation checkpointing recomputes (``Graph.recomputed``),
    whose FLOPs are also counted apart."""

    forward_macs: int = 0
    forward_flops: int = 0
    backward_macs: int = 0
    backward_flops: int = 0
    saved_activation_bytes: int = 0
    gradient_bytes: int = 0
    peak_bytes: int = 0
    recompute_flops: int = 0

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.__dict__.items()}


@dataclass
class CostReport:
    """What a network costs. ``layers`` has one entry per node, in execution order;
    ``training`` splits a gradient graph's costs into forward and backward."""

    model: str
    inputs: list[dict[str, Any]]
    totals: Totals
    layers: list[LayerCost]
    per_sample: bool = False
    notes: list[str] = field(default_factory=list)
    module_types: dict[str, str] = field(default_factory=dict)
    training: TrainingCost | None = None
    live_bytes: list[int] = field(default_factory=list)  # per layer, while it runs

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "inputs": self.inputs, "totals": self.totals.to_dict(),
               "layers": [layer.to_dict() for layer in self.layers]}
        if self.training is not None:
            out["training"] = self.training.to_dict()
        if self.per_sample:
            out["per_sample"] = True
        return out

    def grouped(self, depth: int | None) -> list[tuple[int, LayerCost]]:
        """Rows of a module tree down to ``depth`` levels: ``(indent, aggregated cost)``; the
        forward layers only (a gradient graph's backward is summed in ``training``)."""
        from cnnir.report import group_layers

        forward = [layer for layer in self.layers if layer.phase == "forward"]
        return group_layers(forward, depth, self.module_types)

    def table(self, depth: int | None = 2, width: int = 100) -> str:
        from cnnir.report import format_table

        return format_table(self, depth, width)


def _node_params(node: Node, seen: set[int]) -> int:
    total = 0
    for v in node.inputs:
        if v is not None and v.is_constant and v.const.kind == "parameter" and id(v) not in seen:
            seen.add(id(v))
            total += v.type.numel
    return total


def _layer(node: Node, types: TypeMap, fields: dict[int, Field], seen: set[int]) -> LayerCost:
    in_types = [types[id(v)] if v is not None else None for v in node.inputs]
    out_types = [types[id(v)] for v in node.outputs]
    cost = node.op.cost(node.attrs, in_types, out_types)
    out = node.outputs[0]
    spatial = fields.get(id(out)) if out_types[0].rank == 4 else None
    return LayerCost(
        name=node.name,
        op=node.op.name,
        output_shapes=[list(t.shape) for t in out_types],
        params=_node_params(node, seen),
        macs=int(cost.macs),
        flops=int(cost.flops),
        sampling_flops=int(cost.sampling_flops),
        activation_bytes=sum(t.numel * t.itemsize for t in out_types),
        receptive_field=spatial.size if spatial else None,
        effective_stride=spatial.jump if spatial else None,
    )


def _totals(graph: Graph, layers: list[LayerCost], types: TypeMap) -> Totals:
    totals = Totals()
    for value in graph.constants.values():
        n = value.type.numel
        if value.const.kind == "parameter":
            totals.params += n
            totals.trainable_params += n if value.const.requires_grad else 0
            totals.param_bytes += n * value.type.itemsize
        elif value.const.kind == "buffer":
            totals.buffers += n
    for layer in layers:
        totals.macs += layer.macs
        totals.flops += layer.flops
        totals.activation_bytes += layer.activation_bytes
    totals.peak_activation_bytes = peak_activation_bytes(graph, types)
    return totals


def _training_cost(graph: Graph, layers: list[LayerCost], types: TypeMap) -> TrainingCost:
    """Marks each layer's phase and sums the costs of each (see ``TrainingCost``)."""
    forward_values = depends_on(graph, graph.outputs[0])
    cost = TrainingCost(peak_bytes=peak_activation_bytes(graph, types))
    saved: dict[int, int] = {}
    recomputed = getattr(graph, "recomputed", None) or set()
    for node, layer in zip(graph.nodes, layers):
        if id(node.outputs[0]) in forward_values:
            cost.forward_macs += layer.macs
            cost.forward_flops += layer.flops
            continue
        layer.phase = "backward"
        cost.backward_macs += layer.macs
        cost.backward_flops += layer.flops
        if node.name in recomputed:
            cost.recompute_flops += layer.flops
        for v in node.inputs:
            if v is not None and not v.is_constant and id(v) in forward_values:
                saved[id(v)] = nbytes(types, v)
    cost.saved_activation_bytes = sum(saved.values())
    cost.gradient_bytes = sum(nbytes(types, v) for v in graph.outputs[1:1 + graph.gradients])
    return cost


def analyze_graph(graph: Graph) -> CostReport:
    """The cost report of ``graph``; symbolic batch dims are bound to 1 (per sample)."""
    env = batch_bindings(graph)
    types = bind_types(graph, env)
    fields = receptive_fields(graph, types)
    seen: set[int] = set()
    layers = [_layer(node, types, fields, seen) for node in graph.nodes]
    inputs = [{"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype}
              for v in graph.inputs]
    report = CostReport(graph.name, inputs, _totals(graph, layers, types), layers,
                        per_sample=bool(env), module_types=dict(graph.module_types),
                        live_bytes=live_bytes(graph, types))
    if graph.gradients is not None:
        report.training = _training_cost(graph, layers, types)
    if env:
        report.notes.append(f"per-sample figures: symbolic {', '.join(sorted(env))} bound to 1")
    return report
