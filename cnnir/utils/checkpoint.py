"""``cnnir.utils.checkpoint``: activation checkpointing, as torch.utils.checkpoint.

    from cnnir.utils.checkpoint import checkpoint
    def forward(self, x):
        x = checkpoint(self.block, x, use_reentrant=False)

The forward computes exactly what ``self.block(x)`` computes. The ops the segment records are
marked (``Graph.checkpoint_segments``: node name -> segment id); when the backward is
generated (``cnnir.passes.autodiff``) the segment's forward nodes are emitted again from the
segment's inputs just before their gradients, and those gradients read the recomputed values.
The segment's interior values then die in the forward pass: the memory plan frees them, and
``cnnir analyze --training`` reports fewer saved activation bytes and the FLOPs recomputed.
Random ops (dropout) are not recomputed: their outputs (the mask) stay saved, so the
backward uses the forward's draw, as torch's ``preserve_rng_state``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["checkpoint", "checkpoint_sequential"]


def checkpoint(function: Callable[..., Any], *args: Any, use_reentrant: bool | None = None,
               preserve_rng_state: bool = True, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, its ops marked as one recomputed segment when traced
    (outside a trace, the call itself). ``use_reentrant`` and ``preserve_rng_state`` are
    accepted for torch compatibility: both of torch's variants give the same gradients."""
    from cnnir.frontend.tracer import Tracer

    tracer = Tracer.active
    if tracer is None:
        return function(*args, **kwargs)
    graph = tracer.graph
    start = len(graph.nodes)
    out = function(*args, **kwargs)
    segments = checkpoint_segments(graph)
    segment = 1 + max(segments.values(), default=0)
    for node in graph.nodes[start:]:
        segments[node.name] = segment
    return out


def checkpoint_segments(graph: Any) -> dict[str, int]:
    """The graph's ``node name -> segment id`` table, created empty on first use."""
    if getattr(graph, "checkpoint_segments", None) is None:
        graph.checkpoint_segments = {}
    return graph.checkpoint_segments


def checkpoint_sequential(functions: Any, segments: int, input: Any,
                          use_reentrant: bool | None = None, **kwargs: Any) -> Any:
    """torch.utils.checkpoint.checkpoint_sequential: ``functions`` (a Sequential or a list of
    modules) cut into ``segments`` runs of equal length; each but the last is checkpointed."""
    if hasattr(functions, "children"):
        functions = list(functions.children())
    functions = list(functions)
    size = len(functions) // segments
    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(_run(functions[start:end + 1]), input, use_reentrant=use_reentrant)
    return _run(functions[end + 1:])(input)


def _run(functions: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def forward(x: Any) -> Any:
        for f in functions:
            x = f(x)
        return x

    return forward
