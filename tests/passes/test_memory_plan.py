"""The memory plan every backend allocates from (``cnnir.passes.memory.plan_buffers``): one
arena in which values live at the same time never overlap, as small as the analysis peak on
the networks below, each placement carrying its offset, size and layout."""

from __future__ import annotations

import pytest
from pass_testing import build

from cnnir.ir import Value
from cnnir.passes.memory import (
    ALIGNMENT,
    CONTIGUOUS,
    live_ranges,
    peak_activation_bytes,
    plan_buffers,
)
from cnnir.passes.shape_inference import bind_types


def overlapping(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


@pytest.mark.parametrize(("path", "builder", "exact"), [
    ("resnet.py", "resnet18", True), ("mobilenet.py", "mobilenet_v2", True),
    ("densenet.py", "densenet121", False)])
def test_live_values_never_overlap_and_the_arena_is_the_peak(path, builder, exact) -> None:
    graph = build(path, builder, (2, 3, 64, 64))
    types = bind_types(graph, {})

    def nbytes(value: Value) -> int:
        return types[id(value)].numel * types[id(value)].itemsize

    plan = plan_buffers(graph, nbytes)
    ranges = live_ranges(graph)
    assert set(plan.placements) == set(ranges)
    spans = []
    for key, (first, last, value) in ranges.items():
        p = plan.placements[key]
        assert p.nbytes == nbytes(value) and p.offset % ALIGNMENT == 0
        assert p.offset + p.nbytes <= plan.arena_bytes and p.layout == CONTIGUOUS
        spans.append(((first, last), (p.offset, p.offset + p.nbytes - 1)))
    for i, (time_a, bytes_a) in enumerate(spans):
        for time_b, bytes_b in spans[i + 1:]:
            assert not (overlapping(time_a, time_b) and overlapping(bytes_a, bytes_b))
    peak = peak_activation_bytes(graph, types)
    assert peak <= plan.arena_bytes <= (peak if exact else 1.1 * peak)


def test_the_backend_chooses_each_layout() -> None:
    graph = build("resnet.py", "resnet18", (1, 3, 32, 32))
    types = bind_types(graph, {})
    plan = plan_buffers(graph, lambda v: types[id(v)].numel * 4,
                        layout_of=lambda v: "nchw8c" if types[id(v)].rank == 4 else CONTIGUOUS)
    layouts = {plan.placements[id(n.output)].layout for n in graph.nodes}
    assert layouts == {"nchw8c", CONTIGUOUS}  # feature maps blocked, the logits not
