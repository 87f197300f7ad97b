"""Gradients of a model's loss: ``cnnir.grad_graph`` and ``cnnir.value_and_grad``.

Training in cnnir is not a tape at run time: the backward pass is generated as an IR graph
(``cnnir.passes.autodiff``), so it is verified, printed, costed, optimized and lowered by the
same machinery as a forward graph.

    gg = cnnir.grad_graph(model, nn.CrossEntropyLoss(), inputs=("N", 3, 32, 32),
                          targets=("N",))
    print(gg)                                   # outputs: loss, then conv1.weight.grad, ...
    vg = cnnir.value_and_grad(model, nn.CrossEntropyLoss(), inputs=(8, 3, 32, 32),
                              targets=(8,))
    loss, grads = vg(x, y)                      # grads["conv1.weight"], ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnir.api import InputSpec, _trace, gc_paused, input_types, model_dtype
from cnnir.errors import CnnirError
from cnnir.frontend.module import Module
from cnnir.ir import Graph, TensorType, Value, verify
from cnnir.passes.autodiff import differentiate

# What grad_graph runs on a gradient graph, so that what is printed and analyzed is what gets
# lowered: sharing, backward fusion and cleanup; nothing that folds a parameter into a
# constant (the optimizer changes parameters in place).
TRAINING_PIPELINE = ["eliminate-common-subexpressions", "fuse-activation-grad",
                     "eliminate-dead-code"]


@dataclass
class GradientGraph:
    """A gradient graph, the trainable parameter each gradient output belongs to, and the
    buffer each running-statistics output updates (they follow the gradients)."""

    graph: Graph
    parameters: list[str]  # outputs[1 + i] is the gradient of parameters[i]
    buffers: list[str]  # outputs[1 + len(parameters) + i] is the new value of buffers[i]


def trainable(graph: Graph) -> list[Value]:
    return [v for v in graph.constants.values()
            if v.const.kind == "parameter" and v.const.requires_grad]


def build_grad_graph(model_or_graph: Module | Graph, loss_fn: Callable[..., Any] | None,
                     inputs: InputSpec | None, targets: InputSpec | None,
                     keep_outputs: bool = False) -> GradientGraph:
    """The gradient graph; with ``keep_outputs`` the loss graph's outputs after the loss
    (e.g. the model's output, for accuracy) follow the running statistics."""
    graph = loss_graph(model_or_graph, loss_fn, inputs, targets)
    loss, kept = graph.outputs[0], graph.outputs[1:] if keep_outputs else []
    params = trainable(graph)
    with gc_paused():
        grads = differentiate(graph, loss, params)
    named = [(p.name, g) for p, g in zip(params, grads) if g is not None]
    for name, g in named:
        if g.producer is not None:
            graph.rename_value(g, f"{name}.grad")
    updates = running_stat_updates(graph)
    graph.set_outputs([loss, *(g for _, g in named), *updates.values(), *kept])
    from cnnir.api import run_passes

    graph = run_passes(graph, TRAINING_PIPELINE).graph
    graph.gradients = len(named)
    return GradientGraph(verify(graph), [name for name, _ in named], list(updates))


def running_stat_updates(graph: Graph) -> dict[str, Value]:
    """``buffer name -> its new value`` for every training-mode batch_norm with running
    statistics: one ``batch_norm_update`` node each, named ``<buffer>.new``. A BatchNorm
    module called twice updates its statistics twice, the second from the first's result,
    as in PyTorch."""
    from cnnir import ops
    from cnnir.ops.norm import BatchNormUpdateAttrs, batch_norm_update

    latest: dict[str, Value] = {}
    recomputed = getattr(graph, "recomputed", None) or set()  # checkpointing's second pass
    for node in [n for n in graph.nodes if n.op is ops.batch_norm and n.attrs.training
                 and n.name not in recomputed]:
        x, mean, var = node.inputs[:3]
        if mean is None or not mean.is_constant:
            continue
        count = graph.constants.get(mean.name.rsplit(".", 1)[0] + ".num_batches_tracked")
        stats = [v for v in (mean, var, count) if v is not None]
        current = [latest.get(v.name, v) for v in stats]
        update = graph.add_node(batch_norm_update, [x, *current] + [None] * (4 - len(stats) - 1),
                                BatchNormUpdateAttrs(node.attrs.momentum, node.attrs.sync),
                                name=f"{node.name}.update", scope=node.scope, loc=node.loc)
        for buffer, new in zip(stats, update.outputs):
            graph.rename_value(new, f"{buffer.name}.new")
            latest[buffer.name] = new
    return latest


def loss_graph(model_or_graph: Module | Graph, loss_fn: Callable[..., Any] | None,
                inputs: InputSpec | None, targets: InputSpec | None) -> Graph:
    """The forward graph whose first output is the loss: the model traced in training mode
    followed by ``loss_fn`` on its output and the targets (a copy when given a graph)."""
    if isinstance(model_or_graph, Graph):
        if loss_fn is not None or inputs is not None:
            raise CnnirError("grad_graph(graph) takes a graph whose first output is the loss",
                             hint="pass a model to combine it with loss_fn and input shapes")
        from cnnir.ir.clone import clone_graph

        return clone_graph(model_or_graph)
    if loss_fn is None or inputs is None:
        raise CnnirError("grad_graph(model, loss_fn, inputs, targets) needs the loss and the "
                         "input shapes", hint="e.g. grad_graph(model, nn.CrossEntropyLoss(), "
                                              "inputs=('N', 3, 32, 32), targets=('N',))")
    dtype = model_dtype(model_or_graph)
    return _trace(model_or_graph, input_types(inputs, dtype), loss_fn,
                  targets=lambda out: target_types(targets, out, dtype), training=True,
                  name=f"{type(model_or_graph).__name__}_grad")


def target_types(spec: InputSpec | None, out: Any, dtype: str = "float32") -> list[TensorType]:
    """The targets' types. A plain shape one dim short of the model's output holds class
    indices (int64, as PyTorch's cross_entropy/nll_loss take them); any other plain shape is
    of the model's float ``dtype`` (regression targets, probabilities, binary labels); a
    TensorType is taken as is."""
    if spec is None:
        return []
    from cnnir.frontend.tensor import Tensor

    rank = out.value.type.rank if isinstance(out, Tensor) else None
    items = spec if isinstance(spec, list) else [spec]
    types = []
    for item in items:
        (t,) = input_types(item, dtype)
        if not isinstance(item, TensorType) and rank is not None and t.rank == rank - 1:
            t = TensorType(t.shape, "int64")
        types.append(t)
    return types


def sum_of_outputs(out: Any, *targets: Any) -> Any:
    """The stand-in loss of a training cost analysis: every output element with weight 1, so
    the backward computed is the network's own (the real loss adds a few FLOPs)."""
    from cnnir.api import _flatten_outputs

    terms = [t.sum() for t in _flatten_outputs(out) if np.dtype(t.dtype).kind == "f"]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def grad_graph(model_or_graph: Module | Graph, loss_fn: Callable[..., Any] | None = None,
               inputs: InputSpec | None = None, targets: InputSpec | None = None) -> Graph:
    """The verified graph of the loss and its gradients: outputs are the loss, then one
    gradient per trainable parameter the loss depends on (``<state_dict name>.grad``, in
    ``named_parameters`` order). The model is traced in training mode; ``loss_fn`` is a loss
    module or any traceable callable ``(output, *targets) -> scalar``."""
    return build_grad_graph(model_or_graph, loss_fn, inputs, targets).graph


class Gradients(dict):
    """``{parameter name: gradient}``, knowing the ``Parameter`` each name is (``owners``),
    so that ``optimizer.step(grads)`` can apply them."""

    def __init__(self, items: Any, owners: dict[str, Any]) -> None:
        super().__init__(items)
        self.owners = owners


class ValueAndGrad:
    """``(*inputs, *targets) -> (loss, {parameter name: gradient})`` on a backend."""

    def __init__(self, gg: GradientGraph, backend: str, owners: dict[str, Any] | None = None,
                 **options: Any) -> None:
        """Compiles ``gg`` with the updated buffers as graph inputs after the caller's, so
        every call reads their current values, and writes the new ones back into them."""
        from cnnir.api import compile as compile_graph

        graph = gg.graph
        self.buffers = [graph.constants[name].const.array for name in gg.buffers]
        graph = constants_as_inputs(graph, gg.buffers)
        if backend == "numba":
            options.setdefault("optimize", False)
        self.graph = graph
        self.parameters = gg.parameters
        self.owners = owners or {}
        self.compiled = compile_graph(graph, backend=backend, **options)

    def __call__(self, *arrays: Any) -> tuple[float, Gradients]:
        """``(loss, {parameter: gradient})``; the model's BatchNorm buffers now hold the
        running statistics this batch leaves, and each parameter's ``.grad`` its gradient,
        as after a PyTorch training-mode forward and ``loss.backward()`` (gradients are
        set, not accumulated)."""
        loss, *rest = self.compiled(*arrays, *self.buffers)
        grads, stats = rest[:len(self.parameters)], rest[len(self.parameters):]
        for buffer, new in zip(self.buffers, stats):
            np.copyto(buffer, new, casting="unsafe")
        named = Gradients(zip(self.parameters, grads), self.owners)
        for name, grad in named.items():
            if name in self.owners:
                self.owners[name].grad = grad
        return float(loss), named


def constants_as_inputs(graph: Graph, names: list[str]) -> Graph:
    """A copy of ``graph`` in which the named constants are graph inputs (after the others)."""
    from cnnir.ir.clone import clone_graph

    graph = clone_graph(graph)
    for name in names:
        constant = graph.constants[name]
        graph.remove_constant(constant, safe=False)
        graph.replace_all_uses(constant, graph.add_input(name, constant.type))
    return graph


def value_and_grad(model: Module | Graph, loss_fn: Callable[..., Any] | None = None,
                   inputs: InputSpec | None = None, targets: InputSpec | None = None, *,
                   backend: str = "numba", dtype: str | None = None,
                   **options: Any) -> ValueAndGrad:
    """The loss and the gradient of every trainable parameter, compiled on ``backend``:

    >>> vg = cnnir.value_and_grad(model, nn.CrossEntropyLoss(), inputs=(8, 3, 32, 32),
    ...                           targets=(8,))
    >>> loss, grads = vg(x, y)
    """
    if dtype is not None:
        options["dtype"] = dtype
    owners = dict(model.named_parameters()) if isinstance(model, Module) else None
    return ValueAndGrad(build_grad_graph(model, loss_fn, inputs, targets), backend, owners,
                        **options)


__all__ = ["GradientGraph", "Gradients", "ValueAndGrad", "grad_graph", "loss_graph",
           "value_and_grad"]
