"""fold-constants: evaluate, once, every node whose inputs are all constants.

Walking in topological order, a node whose present inputs are all graph constants is run by
an evaluator and its outputs become literal constants, so chains of constant nodes fold in
one walk. Literal inputs left without users are removed; parameters and buffers stay (see
eliminate-dead-code).

The evaluator is passed in (``evaluate=``): a function ``(node, input arrays) -> output
arrays`` in the outputs' dtypes. The core has no kernels of its own; ``cnnir.optimize`` and
the backends pass the reference backend's (float inputs in float64, results cast back).

Not folded: ops in training mode (random or with an effect), results that are graph outputs
(a graph output stays a computed value), symbolic shapes, and results larger than
``max_elements`` (folding must not turn a cheap op into a huge constant).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cnnir.errors import CnnirError, PassError
from cnnir.ir import Graph, Node
from cnnir.passes.manager import Pass, PassResult
from cnnir.passes.rewrite import constant_inputs, drop_constant, is_output

Evaluator = Callable[[Node, Sequence[np.ndarray | None]], list[np.ndarray]]


def _foldable(graph: Graph, node: Node, max_elements: int) -> bool:
    present = [v for v in node.inputs if v is not None]
    if not present or not all(v.is_constant for v in present):
        return False
    if bool(getattr(node.attrs, "training", False)) and (node.op.random or
                                                        node.op.has_training_mode):
        return False
    for v in node.outputs:
        if is_output(graph, v) or not v.type.is_static or v.type.numel > max_elements:
            return False
    return True


def fold_constants(graph: Graph, *, max_elements: int = 1 << 20,
                   evaluate: Evaluator | None = None) -> PassResult:
    """Replace constant subgraphs by literals computed by ``evaluate``."""
    if evaluate is None:
        raise PassError("fold-constants needs an evaluator to compute the folded values",
                        hint="pass evaluate=cnnir.backends.reference.evaluate (cnnir.optimize "
                             "and the backends do)")
    folded, failed = [], []
    for node in list(graph.nodes):
        if not _foldable(graph, node, max_elements):
            continue
        try:
            arrays = [np.asarray(a) for a in evaluate(
                node, [None if v is None else v.const.array for v in node.inputs])]
        except (CnnirError, ArithmeticError, IndexError, TypeError, ValueError) as e:
            failed.append(f"{node.describe()} was left unfolded: {e}")
            continue
        if any(a.shape != v.type.shape for a, v in zip(arrays, node.outputs)):
            failed.append(f"{node.describe()} was left unfolded: its kernel's result shape "
                          f"disagrees with its type")
            continue
        inputs = constant_inputs([node])
        graph.remove_node(node, safe=False)
        for value, array in zip(node.outputs, arrays):
            graph.replace_all_uses(value, graph.add_literal(array, node.name))
        for v in inputs:
            if v.const.kind == "literal":
                drop_constant(graph, v)
        folded.append(f"{node.name} ({node.op.name})")
    summary = f"folded {len(folded)} constant node(s)"
    return PassResult(graph, bool(folded), {"summary": summary, "folded": folded,
                                            "failed": failed, "lines": folded + failed})


PASS = Pass("fold-constants", fold_constants, preserves_semantics=True,
            summary="evaluate nodes whose inputs are all constants")
