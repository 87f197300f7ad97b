"""``cnnir.compile_train``: the compiled step (forward, generated backward, optimizer update in
one graph) against ``value_and_grad`` followed by the optimizer's update applied separately
on the reference backend, in float64; the in-place contract (model and optimizer state
current after every call); run-time scalars; recompilation on structural changes."""

from __future__ import annotations

import numpy as np
import pytest

import cnnir
from cnnir import nn, optim
from cnnir.errors import CnnirError


class Small(nn.Module):
    """conv-BN-ReLU-pool-linear. The conv has no bias: before a BatchNorm its gradient is
    rounding noise, which adaptive optimizers scale up to full steps."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(4),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def model(dtype=np.float64) -> Small:
    nn.manual_seed(0)
    m = Small()
    return m.to(dtype)


def batches(count: int = 5, dtype=np.float64) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    sizes = [8] * (count - 1) + [3]  # the last, smaller batch of an epoch
    return [(rng.standard_normal((n, 1, 8, 8)).astype(dtype), rng.integers(0, 5, n))
            for n in sizes]


OPTIMIZERS = {
    "sgd-nesterov": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                         weight_decay=1e-2),
    "sgd-plain": lambda ps: optim.SGD(ps, lr=0.05),
    "adam-amsgrad": lambda ps: optim.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=1e-3),
    "adamw": lambda ps: optim.AdamW(ps, lr=1e-2),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True),
    "adagrad": lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.01),
    "adadelta": lambda ps: optim.Adadelta(ps, weight_decay=1e-2),
}


def separate_steps(make_opt, data) -> tuple[Small, list[float]]:
    """The same training, as value_and_grad then opt.step on the reference backend."""
    m = model()
    opt = make_opt(m.parameters())
    losses = []
    for x, y in data:
        vg = cnnir.value_and_grad(m, nn.CrossEntropyLoss(), inputs=x.shape, targets=y.shape,
                                  backend="reference", dtype="float64")
        loss, grads = vg(x, y)
        opt.step(grads, backend="reference")
        losses.append(loss)
    return m, losses


def assert_same_state(a: Small, b: Small, rtol: float) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * 1e-3, err_msg=name)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_compiled_step_equals_value_and_grad_then_update(name: str, backend: str) -> None:
    data = batches()
    m = model()
    opt = OPTIMIZERS[name](m.parameters())
    step = cnnir.compile_train(m, nn.CrossEntropyLoss(), opt, inputs=("N", 1, 8, 8),
                               targets=("N",), backend=backend)
    losses = [step(x, y) for x, y in data]
    expected_model, expected_losses = separate_steps(OPTIMIZERS[name], data)
    rtol = 1e-12 if backend == "reference" else 1e-9
    np.testing.assert_allclose(losses, expected_losses, rtol=rtol)
    assert_same_state(m, expected_model, rtol)
    assert int(m.features[1].num_batches_tracked.data) == len(data)


def test_float32_step_follows_the_float64_training() -> None:
    data = batches()
    m = model(np.float32)
    step = cnnir.compile_train(m, nn.CrossEntropyLoss(), OPTIMIZERS["sgd-nesterov"](
        m.parameters()), inputs=("N", 1, 8, 8), targets=("N",))
    for x, y in data:
        step(x.astype(np.float32), y)
    expected, _ = separate_steps(OPTIMIZERS["sgd-nesterov"], data)
    for (name, x), y in zip(m.state_dict().items(), expected.state_dict().values()):
        assert x.dtype == (np.int64 if "num_batches" in name else np.float32)
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=name)


def test_state_is_updated_in_place_and_current_after_each_call() -> None:
    m = model(np.float32)
    opt = optim.Adam(m.parameters(), lr=1e-2)
    step = cnnir.compile_train(m, nn.CrossEntropyLoss(), opt, inputs=(8, 1, 8, 8),
                               targets=(8,))
    arrays = {k: v for k, v in m.state_dict().items()}
    before = {k: v.copy() for k, v in arrays.items()}
    (x, y), = batches(1 + 1, np.float32)[:1]
    for calls in (1, 2):
        step(x, y)
        now = m.state_dict()
        assert all(now[k] is arrays[k] for k in arrays)  # the very same arrays, written
        assert not np.array_equal(now["fc.weight"], before["fc.weight"])
        assert not np.array_equal(now["features.1.running_mean"],
                                  before["features.1.running_mean"])
        assert int(now["features.1.num_batches_tracked"]) == calls
        state = opt.state_dict()["state"]
        assert sorted(state) == list(range(5))
        assert all(int(s["step"]) == calls for s in state.values())
    assert step.output.shape == (8, 5)


def test_a_changed_learning_rate_reaches_the_next_step_without_recompiling() -> None:
    data = batches()
    m = model()
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    step = cnnir.compile_train(m, nn.CrossEntropyLoss(), opt, inputs=("N", 1, 8, 8),
                               targets=("N",), backend="reference")
    program = step.program
    for x, y in data:
        step(x, y)
        sched.step()
    assert step.program is program
    expected = model()
    ref = optim.SGD(expected.parameters(), lr=0.1, momentum=0.9)
    ref_sched = optim.lr_scheduler.ExponentialLR(ref, gamma=0.5)
    for x, y in data:
        vg = cnnir.value_and_grad(expected, nn.CrossEntropyLoss(), inputs=x.shape,
                                  targets=y.shape, backend="reference", dtype="float64")
        ref.step(vg(x, y)[1], backend="reference")
        ref_sched.step()
    assert_same_state(m, expected, 1e-12)


def test_cyclic_momentum_on_plain_sgd_recompiles_with_a_momentum_buffer() -> None:
    """PyTorch's trap: SGD(momentum=0) + CyclicLR cycles momentum, which turns it on."""
    m = model()
    opt = optim.SGD(m.parameters(), lr=0.1)
    step = cnnir.compile_train(m, nn.CrossEntropyLoss(), opt, inputs=("N", 1, 8, 8),
                               targets=("N",), backend="reference")
    assert "momentum_buffer" not in str(step.graph)
    optim.lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2)
    x, y = batches(2)[0]
    step(x, y)
    assert "momentum_buffer" in str(step.graph)
    assert set(opt.state_dict()["state"][0]) == {"momentum_buffer"}


def test_parameters_without_gradient_or_outside_the_optimizer_stay_put() -> None:
    m = model()
    m.fc.bias.requires_grad = False
    opt = optim.SGD([m.features[0].weight, m.fc.weight], lr=0.1, weight_decay=0.5)
    step = cnnir.compile_train(m, nn.CrossEntropyLoss(), opt, inputs=("N", 1, 8, 8),
                               targets=("N",), backend="reference")
    before = {k: v.copy() for k, v in m.state_dict().items()}
    step(*batches(2)[0])
    after = m.state_dict()
    for name in ("fc.bias", "features.1.weight", "features.1.bias"):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    for name in ("fc.weight", "features.0.weight"):
        assert not np.array_equal(after[name], before[name])


def test_bad_arguments_are_explained() -> None:
    m = model(np.float32)
    opt = optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(CnnirError, match="model.to"):
        cnnir.compile_train(m, nn.CrossEntropyLoss(), opt, inputs=(8, 1, 8, 8), targets=(8,),
                            dtype="float64")
    with pytest.raises(CnnirError, match="cnnir.optim"):
        cnnir.compile_train(m, nn.CrossEntropyLoss(), object(), inputs=(8, 1, 8, 8),
                            targets=(8,))


def test_an_evaluator_sharing_the_step_state_follows_the_training() -> None:
    m = model(np.float32)
    opt = optim.SGD(m.parameters(), lr=0.1)
    step = cnnir.compile_train(m, nn.CrossEntropyLoss(), opt, inputs=("N", 1, 8, 8),
                               targets=("N",))
    evaluate = cnnir.compile(m.eval(), ("N", 1, 8, 8), optimize=False, state=step.state)
    m.train()
    x = batches(2, np.float32)[0][0]
    first = evaluate(x)
    for xb, yb in batches(3, np.float32):
        step(xb, yb)
    optim.lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1)  # momentum on: a new graph
    step(*batches(2, np.float32)[0])
    fresh = cnnir.compile(m.eval(), ("N", 1, 8, 8))(x)
    assert not np.allclose(first, fresh)
    np.testing.assert_allclose(evaluate(x), fresh, rtol=1e-5, atol=1e-6)
