"""The autodiff pass and the gradient entry points: cotangents of shared values summed,
work only where a gradient is wanted, clear errors, named gradient outputs, and the training
cost analysis counted exactly from the generated graph."""

from __future__ import annotations

import grad_testing as gt
import numpy as np
import pytest

import cnnir
import cnnir.nn.functional as F
from cnnir import nn, ops
from cnnir.cli import main
from cnnir.errors import PassError
from cnnir.ir import Graph, TensorType
from cnnir.passes.autodiff import differentiate


class Siamese(nn.Module):
    """One linear layer applied to two inputs: its weight's gradient has two contributions."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 3)

    def forward(self, a, b):
        return (self.embed(a) * self.embed(b)).sum(1)


def mse(out, target):
    return ((out - target) * (out - target)).mean()


def test_shared_weights_sum_their_gradients() -> None:
    graph = cnnir.trace(Siamese(), [(4, 5), (4, 5)])
    checked = gt.gradient_graphs(graph)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((4, 5)) for _ in range(2)] + gt.parameter_arrays(graph)
    gt.numeric_check(checked, arrays)
    names = [checked.grads.inputs[i].name for i in checked.wrt]
    weight_grad = checked.grads.outputs[1 + names.index("embed.weight")]
    assert weight_grad.producer.op is ops.add  # the two uses' contributions, summed


def test_no_gradient_work_for_the_input() -> None:
    """The first layer computes its weight gradient, not its input's: one matmul per linear
    layer for the weight, one for the second layer's input, none for x."""
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    gg = cnnir.grad_graph(model, mse, inputs=(4, 5), targets=(4, 3))
    assert sum(n.op is ops.matmul for n in gg.nodes) == 3


def test_outputs_are_the_loss_then_named_gradients() -> None:
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    model[2].bias.requires_grad = False  # frozen: no gradient
    gg = cnnir.grad_graph(model, mse, inputs=(4, 5), targets=(4, 3))
    assert [v.name for v in gg.outputs[1:]] == ["0.weight.grad", "0.bias.grad", "2.weight.grad"]
    assert gg.outputs[0].type == TensorType((), "float32") and gg.gradients == 3
    assert [v.type.shape for v in gg.outputs[1:]] == [(7, 5), (7,), (3, 7)]


def test_value_and_grad_on_numba_matches_the_reference() -> None:
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    ref_loss, ref = cnnir.value_and_grad(model, mse, (4, 5), (4, 3), backend="reference")(x, y)
    loss, grads = cnnir.value_and_grad(model, mse, (4, 5), (4, 3))(
        x.astype(np.float32), y.astype(np.float32))
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert grads.keys() == ref.keys() == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for name in grads:
        np.testing.assert_allclose(grads[name], ref[name], rtol=1e-4, atol=1e-6)


def test_a_parameter_the_loss_ignores_gets_no_gradient() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.used(x)

    gg = cnnir.grad_graph(Unused(), mse, inputs=(2, 3), targets=(2, 2))
    assert [v.name for v in gg.outputs[1:]] == ["used.weight.grad", "used.bias.grad"]


def test_the_loss_must_be_a_scalar() -> None:
    with pytest.raises(PassError, match=r"(?s)scalar float loss.*\[4, 3\].*reduction="):
        cnnir.grad_graph(nn.Linear(5, 3), lambda out, y: out - y, inputs=(4, 5),
                         targets=(4, 3))


def test_an_op_without_a_rule_is_named() -> None:
    g = Graph("fused")
    x = g.add_input("x", TensorType((2, 3), "float32"))
    w = g.add_literal(np.ones((4, 3), np.float32), "w")
    fused = g.add_node(ops.linear_fused, [g.add_node(ops.tanh, [x], name="t").output, w],
                       name="head")
    loss = g.add_node(ops.sum_, [fused.output], name="loss")
    with pytest.raises(PassError, match="linear_fused 'head' cannot be differentiated"):
        differentiate(g, loss.output, [x])


def test_training_costs_are_counted_from_the_generated_graph() -> None:
    """Linear 8->16 and 16->4 at batch 32: forward 32·(8·16 + 16·4) MACs; backward: the
    second layer's input and weight gradients (2·32·16·4) and the first layer's weight
    gradient only (32·8·16)."""
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    cost = cnnir.analyze(model, (32, 8), training=True).training
    assert cost.forward_macs == 32 * (8 * 16 + 16 * 4)
    assert cost.backward_macs == 2 * 32 * 16 * 4 + 32 * 8 * 16
    assert cost.gradient_bytes == 4 * (8 * 16 + 16 + 16 * 4 + 4)
    # saved for the backward: x (first weight gradient), the first linear's output (relu's
    # derivative) and the relu's output (second weight gradient)
    assert cost.saved_activation_bytes == 4 * 32 * (8 + 16 + 16)
    assert cost.peak_bytes >= cost.saved_activation_bytes + 4 * 32 * 4


def test_cli_training_analysis_and_graph(tmp_path, capsys) -> None:
    path = tmp_path / "mlp.py"
    path.write_text("from cnnir import nn\nmodel = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), "
                    "nn.Linear(16, 4))\ninput_shape = (32, 8)\n")
    assert main(["analyze", str(path), "--training"]) == 0
    out = capsys.readouterr().out
    assert "Training step: forward 6.14K MACs" in out and "backward 8.19K MACs" in out
    assert "Training memory: saved activations" in out
    assert main(["graph", str(path), "--training"]) == 0
    assert "%0.weight.grad" in capsys.readouterr().out


def test_relu_derivative_at_zero_is_zero() -> None:
    """docs/semantics.md §3: relu'(0) = 0 (clamp(min=0) would give 1)."""
    graph = cnnir.trace(nn.ReLU(), (1, 3))
    run = cnnir.compile(gt.gradient_graphs(graph).grads, backend="reference")
    grads = run(np.array([[-1.0, 0.0, 1.0]]))[1]
    assert grads[0, 1] == 0.0 and grads[0, 0] == 0.0 and grads[0, 2] != 0.0


def test_functional_losses_compose() -> None:
    """A user-written loss from functional pieces (log_softmax, gather by a one-hot mask)."""
    model = nn.Linear(6, 4)

    def nll(out, onehot):
        return -(F.log_softmax(out, 1) * onehot).sum() / 3

    graph = cnnir.grad.loss_graph(model, nll, (3, 6), cnnir.TensorType((3, 4)))
    checked = gt.gradient_graphs(graph)
    rng = np.random.default_rng(2)
    onehot = np.eye(4)[[0, 3, 1]]
    gt.numeric_check(checked, [rng.standard_normal((3, 6)), onehot, *gt.parameter_arrays(graph)])


def mlp_bn(momentum: float | None = 0.1) -> nn.Module:
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6, momentum=momentum), nn.ReLU(),
                         nn.Linear(6, 3))


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_buffers_after_training_steps_follow_the_formula(backend, momentum) -> None:
    """docs/semantics.md §1.4: rm ← (1 − m)·rm + m·μ, rv ← (1 − m)·rv + m·σ²·n/(n − 1),
    num_batches_tracked + 1; momentum None averages cumulatively (m = 1/count)."""
    model = mlp_bn(momentum)
    weight, bias = (np.array(model.state_dict()[k], np.float64) for k in ("0.weight", "0.bias"))
    dtype = np.float32 if backend == "numba" else np.float64
    vg = cnnir.value_and_grad(model, mse, (8, 5), (8, 3), backend=backend)
    rng = np.random.default_rng(3)
    mean, var = np.zeros(6), np.ones(6)
    for step in range(1, 4):
        x = rng.standard_normal((8, 5))
        vg(x.astype(dtype), rng.standard_normal((8, 3)).astype(dtype))
        h = x @ weight.T + bias
        m = momentum if momentum is not None else 1.0 / step
        mean = (1 - m) * mean + m * h.mean(0)
        var = (1 - m) * var + m * h.var(0, ddof=1)
        state = model.state_dict()
        assert int(state["1.num_batches_tracked"]) == step
        np.testing.assert_allclose(state["1.running_mean"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["1.running_var"], var, rtol=1e-5, atol=1e-6)


def test_a_batch_norm_called_twice_updates_twice() -> None:
    """A shared BatchNorm (Siamese branches) updates its statistics once per call, the second
    from the first's result, as PyTorch does."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(4)

        def forward(self, a, b):
            return self.bn(a) * self.bn(b)

    model = Twice()
    gg = cnnir.grad_graph(model, lambda out: out.sum(), [(6, 4), (6, 4)])
    updates = [n for n in gg.nodes if n.op is ops.norm.batch_norm_update]
    assert len(updates) == 2 and updates[1].inputs[1] is updates[0].outputs[0]
    assert [v.name for v in gg.outputs[-3:]] == [
        "bn.running_mean.new_1", "bn.running_var.new_1", "bn.num_batches_tracked.new_1"]


def test_l1_regularization_written_as_in_pytorch() -> None:
    """The loss may use the model's parameters: the L1 term adds λ·sign(w) to each weight's
    gradient (docs/semantics.md §4), sign(0) = 0 included."""
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    model.load_state_dict({"2.bias": np.array([0.0, 0.5, -0.5])}, strict=False)
    lam = 1e-2

    def data_loss(out, y):
        return F.cross_entropy(out, y)

    def regularized(out, y):
        return data_loss(out, y) + lam * sum(p.abs().sum() for p in model.parameters())

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 5)).astype(np.float32), rng.integers(0, 3, 6)
    _, plain = cnnir.value_and_grad(model, data_loss, (6, 5), (6,))(x, y)
    _, with_l1 = cnnir.value_and_grad(model, regularized, (6, 5), (6,))(x, y)
    for name, array in model.state_dict().items():
        np.testing.assert_allclose(with_l1[name] - plain[name], lam * np.sign(array),
                                   atol=1e-6)


def test_parameters_are_tensors_only_inside_a_trace() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(cnnir.CnnirError, match="as a tensor was called outside a trace"):
        model.weight.abs()
    with pytest.raises(AttributeError, match="no attribute 'not_a_method'"):
        model.weight.not_a_method  # noqa: B018


def test_other_powers_than_squares_differentiate() -> None:
    """``Σ (xWᵀ + b)³``: the weight gradient is ``(3y²)ᵀ x`` (float64, numpy here)."""
    model = nn.Linear(3, 2).double()
    x = np.random.default_rng(1).standard_normal((4, 3))
    _, grads = cnnir.value_and_grad(model, lambda out: (out**3).sum(), (4, 3),
                                    backend="reference")(x)
    y = x @ model.weight.data.T + model.bias.data
    np.testing.assert_allclose(grads["weight"], (3 * y**2).T @ x, rtol=1e-10)
    np.testing.assert_allclose(grads["bias"], (3 * y**2).sum(0), rtol=1e-10)
