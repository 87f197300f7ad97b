"""Gradient checks (docs/semantics.md §8): generated backward graphs against central finite
differences in float64, and a backend's gradients against the reference backend's.

A checked graph is a float64 copy of the network with its trainable parameters lifted to
graph inputs, reduced to the scalar ``L = Σ_outputs Σ tanh(y)·r`` with fixed random ``r``
(every output element gets its own weight, so no error can cancel out), then differentiated
with respect to every float input. The analytic gradient comes from the generated graph on
the reference backend; the numeric one from ``(L(x + εe) − L(x − εe)) / 2ε`` per element
(small tensors) or along random directions (``⟨∇L, t⟩``, larger ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from op_cases import Case, trace

import cnnir
from cnnir import ops
from cnnir.ir import ConstantData, Graph, TensorType, Value
from cnnir.ops.tensor import ReduceAttrs
from cnnir.passes.autodiff import differentiate

EPS = 1e-6
ELEMENTWISE_MAX = 48  # tensors up to this size are checked element by element
BATCH = 2  # the batch the op cases are checked at

# Differentiable ops whose vjp rule has not landed yet (Training, part 1). A case that uses
# one of them is left out of the checks below, and this set must equal the ops that really
# lack a rule, so it can only shrink.
PENDING = {  # one op per line: the rule's author deletes its line
    ops.conv2d,
    ops.conv_transpose2d,
    ops.deform_conv2d,
    ops.batch_norm,
    ops.prelu,
    ops.rrelu,
    ops.dropout,
    ops.dropout2d,
    ops.amax,
    ops.max_pool2d,
    ops.avg_pool2d,
    ops.adaptive_avg_pool2d,
    ops.adaptive_max_pool2d,
    ops.interpolate,
    ops.cross_entropy,
    ops.nll_loss,
    ops.binary_cross_entropy,
    ops.binary_cross_entropy_with_logits,
    ops.l1_loss,
    ops.mse_loss,
    ops.smooth_l1_loss,
    ops.huber_loss,
    ops.triplet_margin_loss,
    ops.contrastive_loss,
}


def ready(case: Case) -> bool:
    """Whether every op of the case has a vjp rule (else it is left out of the checks)."""
    return not any(node.op in PENDING for node in trace(case, BATCH).nodes)


def _in(dtype: str, t: TensorType) -> TensorType:
    return TensorType(t.shape, dtype) if np.dtype(t.dtype).kind == "f" else t


def rebuild(graph: Graph, dtype: str = "float64", lift_parameters: bool = False) -> Graph:
    """The same network with every float tensor in ``dtype``; trainable parameters become
    graph inputs (after the original ones) when ``lift_parameters``."""
    new = Graph(graph.name)
    values = {id(v): new.add_input(v.name, _in(dtype, v.type)) for v in graph.inputs}
    for name, v in graph.constants.items():
        if lift_parameters and v.const.kind == "parameter" and v.const.requires_grad:
            values[id(v)] = new.add_input(name, _in(dtype, v.type))
            continue
        data = v.const
        if np.dtype(data.type.dtype).kind == "f":
            data = ConstantData(_in(dtype, data.type), data.kind,
                                requires_grad=data.requires_grad,
                                make=lambda data=data: np.asarray(data.array, dtype))
        values[id(v)] = new.add_constant(name, data)
    for node in graph.nodes:
        inputs = [None if v is None else values[id(v)] for v in node.inputs]
        twin = new.add_node(node.op, inputs, node.attrs, name=node.name, scope=node.scope,
                            loc=node.loc)
        values.update({id(a): b for a, b in zip(node.outputs, twin.outputs)})
    new.set_outputs(values[id(v)] for v in graph.outputs)
    return new


def parameter_arrays(graph: Graph) -> list[np.ndarray]:
    """float64 copies of the trainable parameters, in the order ``rebuild`` lifts them."""
    return [np.asarray(v.const.array, np.float64) for v in graph.constants.values()
            if v.const.kind == "parameter" and v.const.requires_grad]


def add_weighted_tanh_loss(graph: Graph, seed: int = 7) -> Value:
    """``L = Σ_i Σ tanh(y_i)·r_i`` over the float outputs; it becomes the only output."""
    rng = np.random.default_rng(seed)
    total = None
    for y in (v for v in graph.outputs if np.dtype(v.type.dtype).kind == "f"):
        r = graph.add_literal(rng.standard_normal(tuple(y.type.shape)), "r")
        t = graph.add_node(ops.tanh, [y], name="check.tanh").output
        term = graph.add_node(ops.mul, [t, r], name="check.mul").output
        term = graph.add_node(ops.sum_, [term], ReduceAttrs(None), name="check.sum").output
        total = term if total is None else graph.add_node(ops.add, [total, term],
                                                          name="check.add").output
    graph.set_outputs([total])
    return total


@dataclass
class Checked:
    """A loss graph and its gradient graph, with respect to ``wrt`` (input indices)."""

    loss: Graph
    grads: Graph
    wrt: list[int]


def gradient_graphs(graph: Graph, seed: int = 7) -> Checked:
    """Float64 loss and gradient graphs of ``graph`` (see the module docstring)."""
    loss_graph = rebuild(graph, lift_parameters=True)
    add_weighted_tanh_loss(loss_graph, seed)
    grad_graph = rebuild(loss_graph)
    wrt = [i for i, v in enumerate(grad_graph.inputs) if v.type.dtype == "float64"]
    grads = differentiate(grad_graph, grad_graph.outputs[0], [grad_graph.inputs[i] for i in wrt])
    missing = [grad_graph.inputs[i].name for i, g in zip(wrt, grads) if g is None]
    assert not missing, f"no gradient for {missing}"
    grad_graph.set_outputs([grad_graph.outputs[0], *grads])
    cnnir.verify(grad_graph)
    return Checked(loss_graph, grad_graph, wrt)


def numeric_check(checked: Checked, arrays: list[np.ndarray], rtol: float = 1e-6,
                  atol: float = 1e-8, directions: int = 3, seed: int = 3) -> None:
    """Analytic gradients against central differences (elementwise, or along directions)."""
    loss = cnnir.compile(checked.loss, backend="reference")
    analytic = cnnir.compile(checked.grads, backend="reference")(*arrays)[1:]
    rng = np.random.default_rng(seed)

    def f(i: int, delta: np.ndarray) -> float:
        moved = list(arrays)
        moved[i] = arrays[i] + delta
        return float(loss(*moved))

    for i, grad in zip(checked.wrt, analytic):
        name = checked.grads.inputs[i].name
        x = arrays[i]
        if x.size <= ELEMENTWISE_MAX:
            probes = [np.eye(x.size)[k].reshape(x.shape) for k in range(x.size)]
        else:
            probes = [rng.standard_normal(x.shape) for _ in range(directions)]
        for t in probes:
            numeric = (f(i, EPS * t) - f(i, -EPS * t)) / (2 * EPS)
            exact = float(np.sum(grad * t))
            assert abs(numeric - exact) <= atol + rtol * max(abs(exact), abs(numeric)), (
                f"d/d{name} along a probe: analytic {exact!r} vs finite differences "
                f"{numeric!r}")


def compare_backends(graph: Graph, arrays: list[np.ndarray], backend: str = "numba",
                     reduction: int = 1) -> None:
    """The backend's float32 gradients against the reference's float64 ones: rtol 1e-4,
    atol 1e-5·max(1, ‖ref‖∞)·√K (docs/semantics.md §8)."""
    checked = gradient_graphs(graph)
    want = cnnir.compile(checked.grads, backend="reference")(*arrays)
    single = [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]
    g32 = rebuild(checked.grads, "float32")
    got = cnnir.compile(g32, backend=backend, optimize=False)(*single)
    for w, g, v in zip(want, got, g32.outputs):
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale * math.sqrt(reduction),
                                   err_msg=f"gradient %{v.name}")
