"""The buffer plan every backend allocates from (``cnnir.passes.memory.plan_buffers``): values
live at the same time never share a buffer, freed buffers are reused, and each placement
carries its size and layout."""

from __future__ import annotations

from pass_testing import build

from cnnir.ir import Graph, Value
from cnnir.passes.memory import CONTIGUOUS, last_uses, peak_activation_bytes, plan_buffers
from cnnir.passes.shape_inference import bind_types


def live_ranges(graph: Graph) -> dict[int, tuple[int, int]]:
    """id(value) -> (first, last) node index during which it holds data; inputs from -1,
    graph inputs and outputs to the end."""
    last = last_uses(graph)
    end = len(graph.nodes)
    ranges = {id(v): (-1, end) for v in graph.inputs}
    for i, node in enumerate(graph.nodes):
        for v in node.outputs:
            ranges[id(v)] = (i, last.get(id(v), i))
    for v in graph.outputs:
        ranges[id(v)] = (ranges[id(v)][0], end)
    return ranges


def test_live_values_never_share_a_buffer_and_dead_ones_are_reused() -> None:
    graph = build("resnet.py", "resnet18", (2, 3, 32, 32))
    types = bind_types(graph, {})

    def nbytes(value: Value) -> int:
        return types[id(value)].numel * types[id(value)].itemsize

    plan = plan_buffers(graph, nbytes)
    values = [*graph.inputs, *(v for n in graph.nodes for v in n.outputs)]
    assert {id(v) for v in values} == set(plan.placements)
    ranges = live_ranges(graph)
    by_buffer: dict[int, list[tuple[int, int]]] = {}
    for v in values:
        placement = plan.placements[id(v)]
        assert placement.nbytes == nbytes(v) <= plan.buffer_bytes[placement.buffer]
        assert placement.layout == CONTIGUOUS
        by_buffer.setdefault(placement.buffer, []).append(ranges[id(v)])
    for spans in by_buffer.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:])), spans  # freed, then reused
    assert len(plan.buffer_bytes) < len(values) / 4  # reuse, not one buffer per value
    assert peak_activation_bytes(graph, types) <= plan.total_bytes < sum(map(nbytes, values))


def test_the_backend_chooses_each_layout() -> None:
    graph = build("resnet.py", "resnet18", (1, 3, 32, 32))
    types = bind_types(graph, {})
    plan = plan_buffers(graph, lambda v: types[id(v)].numel * 4,
                        layout_of=lambda v: "nchw8c" if types[id(v)].rank == 4 else CONTIGUOUS)
    layouts = {plan.placements[id(n.output)].layout for n in graph.nodes}
    assert layouts == {"nchw8c", CONTIGUOUS}  # feature maps blocked, the logits not
