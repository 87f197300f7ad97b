"""Gradient checks (docs/semantics.md §8): generated backward graphs against central finite
differences in float64, and a backend's gradients against the reference backend's.

A checked graph is a float64 copy of the network with its trainable parameters lifted to
graph inputs, reduced to the scalar ``L = Σ_outputs Σ r·(y + tanh(y))`` with fixed random
``r`` (every output element gets its own weight, so no error can cancel out), differentiated
with respect to every float input. The analytic gradient comes from the generated graph on
the reference backend; the numeric one from ``(L(x + εe) − L(x − εe)) / 2ε`` per element
(small tensors) or along random directions (``⟨∇L, t⟩``, larger ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from op_cases import Case, trace

import cnnir
from cnnir import ops
from cnnir.ir import ConstantData, Graph, Node, TensorType, Value
from cnnir.ops import activation as activation_ops
from cnnir.ops import pool as pool_ops
from cnnir.ops.tensor import ReduceAttrs
from cnnir.passes.autodiff import differentiate

EPS = 1e-6
ELEMENTWISE_MAX = 48  # tensors up to this size are checked element by element
BATCH = 2  # the batch the op cases are checked at

# Differentiable ops whose vjp rule has not landed yet (Training, part 1). A case that uses
# one of them is left out of the checks below, and this set must equal the ops that really
# lack a rule, so it can only shrink.
PENDING: set = set()  # every differentiable op has its rule now


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
    """``L = Σ_i Σ r_i·(y_i + tanh(y_i))`` over the float outputs; it becomes the only
    output. Each element's cotangent ``r·(1 + 1/cosh²(y))`` is nonlinear in y yet never
    vanishes (a plain tanh saturates on large outputs, such as summed losses, and would let
    their gradients go unchecked); the weights r are ±[0.5, 1.5], away from zero."""
    rng = np.random.default_rng(seed)
    total = None
    for y in (v for v in graph.outputs if np.dtype(v.type.dtype).kind == "f"):
        shape = tuple(y.type.shape)
        weights = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
        r = graph.add_literal(np.asarray(weights), "r")
        t = graph.add_node(ops.tanh, [y], name="check.tanh").output
        t = graph.add_node(ops.add, [y, t], name="check.add").output
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


def draws_randomly(graph: Graph) -> bool:
    """Whether a run of ``graph`` draws random numbers (a random op in training mode)."""
    return any(n.op.random and getattr(n.attrs, "training", False) for n in graph.nodes)


def loss_and_gradients(checked: Checked, arrays: list[np.ndarray], draws: int | None = None
                       ) -> tuple[Callable[[list[np.ndarray]], float], list[np.ndarray]]:
    """``(loss(arrays) -> float, the analytic gradients at arrays)`` on the reference
    backend. With a seed ``draws`` (0 by default on a graph that draws random numbers) every
    evaluation runs a program compiled afresh with it, so each sees the backward's dropout
    masks and rrelu slopes; otherwise one program serves all."""
    if draws is None and draws_randomly(checked.loss):
        draws = 0
    seeded = {} if draws is None else {"seed": draws}
    loss = cnnir.compile(checked.loss, backend="reference")
    analytic = cnnir.compile(checked.grads, backend="reference", **seeded)(*arrays)[1:]

    def evaluate(moved: list[np.ndarray]) -> float:
        run = cnnir.compile(checked.loss, backend="reference", **seeded) if seeded else loss
        return float(run(*moved))

    return evaluate, analytic


def numeric_check(checked: Checked, arrays: list[np.ndarray], rtol: float = 1e-6,
                  atol: float = 1e-8, directions: int = 3, seed: int = 3,
                  draws: int | None = None) -> None:
    """Analytic gradients against central differences (elementwise, or along directions).

    ``draws``: the random ops' seed (``loss_and_gradients``)."""
    loss, analytic = loss_and_gradients(checked, arrays, draws)
    rng = np.random.default_rng(seed)

    def f(i: int, delta: np.ndarray) -> float:
        moved = list(arrays)
        moved[i] = arrays[i] + delta
        return loss(moved)

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


def backend_gradients(graph: Graph, arrays: list[np.ndarray], backend: str = "numba",
                      dtype: str = "float32", **options: object) -> tuple[list, list, Graph]:
    """(reference float64 results, the backend's results in ``dtype``, the graph it ran) of
    the loss and gradients of ``graph`` (see ``gradient_graphs``)."""
    checked = gradient_graphs(graph)
    want = cnnir.compile(checked.grads, backend="reference")(*arrays)
    graph_in = rebuild(checked.grads, dtype)
    cast = [a.astype(dtype) if a.dtype == np.float64 else a for a in arrays]
    got = cnnir.compile(graph_in, backend=backend, optimize=False, dtype=dtype,
                        **options)(*cast)
    return list(want), list(got), graph_in


# The backward ops that branch on a forward value (input 0): which side of a kink of an
# activation (those whose derivative jumps), which element of a pooling window is the first
# maximum.
KINKED = (ops.relu, ops.relu6, ops.leaky_relu, ops.hardsigmoid, ops.hardswish, ops.abs_,
          ops.elu)
POOLING = (pool_ops.max_pool2d_grad, pool_ops.adaptive_max_pool2d_grad)


def branch_inputs(graph: Graph) -> list[Node]:
    """The nodes of ``graph`` that branch on their input 0 (see KINKED)."""
    return [node for node in graph.nodes if node.op in POOLING or node.op is
            activation_ops.prelu_grad or (node.op is ops.activation_grad
                                          and node.attrs.activation in KINKED)
            or (node.op is activation_ops.param_activation_grad
                and node.attrs.activation is ops.hardtanh)]


def pin_branches(graph: Graph, values: dict[str, np.ndarray]) -> None:
    """Feed each branching backward op named in ``values`` that array (a constant) as the
    forward value it branches on, in place of the value the graph computes."""
    for node in (n for n in graph.nodes if n.name in values):
        old = node.inputs[0]
        pinned = graph.add_literal(np.asarray(values[node.name], old.type.dtype), "pinned")
        old.users.remove(node)
        node.inputs = [pinned, *node.inputs[1:]]
        pinned.users.append(node)


def backend_gradients_pinned(graph: Graph, arrays: list[np.ndarray], dtype: str = "float32",
                             **options: object) -> tuple[list, list, Graph]:
    """``backend_gradients``, the reference taking every branch the backend took.

    A forward value within rounding of a kink (a ReLU input near 0, two near-equal maxima of
    a pooling window) can fall on the other side of it in ``dtype``, and the gradient
    changes entirely there (docs/semantics.md §8). So the backend's run also returns the
    value each branching backward op (``branch_inputs``) decides on, and the float64 reference
    decides on those same values: its gradients are then the exact ones of the backend's
    branches, with every other value still computed in float64 (moving a near-kink forward
    value by its rounding changes nothing else measurably)."""
    checked = gradient_graphs(graph)
    graph_in = rebuild(checked.grads, dtype)
    branching = branch_inputs(graph_in)
    graph_in.set_outputs([*graph_in.outputs, *(node.inputs[0] for node in branching)])
    cast = [a.astype(dtype) if a.dtype == np.float64 else a for a in arrays]
    got = cnnir.compile(graph_in, backend="numba", optimize=False, dtype=dtype,
                        **options)(*cast)
    results = len(checked.grads.outputs)
    pinned = rebuild(checked.grads)
    pin_branches(pinned, {node.name: got[results + i] for i, node in enumerate(branching)})
    graph_in.set_outputs(graph_in.outputs[:results])
    want = cnnir.compile(pinned, backend="reference")(*arrays)
    return list(want), list(got[:results]), graph_in


def compare_normwise(graph: Graph, arrays: list[np.ndarray], rtol: float,
                     dtype: str = "float32", pinned: bool = False, **options: object) -> float:
    """Whole networks: ``‖g − g_ref‖ ≤ rtol·max(‖g_ref‖, 1e-3·max_k ‖g_ref,k‖)`` for each
    gradient g. Norm-wise, since elementwise bounds are meaningless for entries that are sums
    of cancelling terms; with a floor, since some gradients are zero in exact arithmetic (a
    bias before a BatchNorm in training mode) and hold only rounding noise. ``pinned``: the
    reference takes the backend's branches (``backend_gradients_pinned``). Returns the worst
    ratio ‖g − g_ref‖ / max(...)."""
    gradients = backend_gradients_pinned if pinned else backend_gradients
    want, got, graph_in = gradients(graph, arrays, dtype=dtype, **options)
    floor = 1e-3 * max(float(np.linalg.norm(w)) for w in want[1:])
    worst = 0.0
    for w, g, v in zip(want, got, graph_in.outputs):
        ratio = float(np.linalg.norm(g - w) / max(np.linalg.norm(w), floor, 1e-300))
        assert ratio <= rtol, f"gradient %{v.name}: relative error {ratio:.2e} in norm"
        worst = max(worst, ratio)
    return worst


def compare_backends(graph: Graph, arrays: list[np.ndarray], backend: str = "numba",
                     reduction: int = 1, **options: object) -> None:
    """The backend's float32 gradients against the reference's float64 ones: rtol 1e-4,
    atol 1e-5·max(1, ‖ref‖∞)·√K (docs/semantics.md §8). Both compile with the default seed
    and run once, so random ops in training mode draw the same masks and slopes on both."""
    want, got, graph_in = backend_gradients(graph, arrays, backend, **options)
    for w, g, v in zip(want, got, graph_in.outputs):
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale * math.sqrt(reduction),
                                   err_msg=f"gradient %{v.name}")


def directional_check(checked: Checked, arrays: list[np.ndarray], directions: int = 2,
                      rtol: float = 1e-5, seed: int = 5) -> None:
    """The JVP along random unit directions moving every float input at once against central
    differences: ``⟨∇L, t⟩ ≈ (L(x + εt) − L(x − εt)) / 2ε`` (docs/semantics.md §8's one-random-
    direction check; two evaluations per direction, for whole networks)."""
    loss, analytic = loss_and_gradients(checked, arrays)
    rng = np.random.default_rng(seed)

    def moved(t: dict[int, np.ndarray], sign: float) -> float:
        return loss([a + sign * EPS * t[i] if i in t else a for i, a in enumerate(arrays)])

    for _ in range(directions):
        t = {i: rng.standard_normal(arrays[i].shape) for i in checked.wrt}
        norm = np.sqrt(sum(float(np.sum(v * v)) for v in t.values()))
        t = {i: v / norm for i, v in t.items()}  # a step of EPS in all, not EPS per entry
        numeric = (moved(t, 1.0) - moved(t, -1.0)) / (2 * EPS)
        exact = sum(float(np.sum(g * t[i])) for i, g in zip(checked.wrt, analytic))
        assert abs(numeric - exact) <= rtol * max(abs(exact), abs(numeric), 1e-3), (
            f"directional derivative: analytic {exact!r} vs finite differences {numeric!r}")
