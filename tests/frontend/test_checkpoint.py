"""Activation checkpointing (``cnnir.utils.checkpoint``): the same loss and gradients as
without it (float64, reference backend; float32 on Numba against that), fewer saved
activation bytes and the recomputed FLOPs in the training report, both written out by hand
for a small MLP."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import assert_close

import cnnir
from cnnir import nn
from cnnir.utils.checkpoint import checkpoint, checkpoint_sequential

F64 = 8  # bytes


class Mlp(nn.Module):
    """x (4, 16) → [Linear(16, 32), Tanh, Linear(32, 32), Tanh] → Linear(32, 2)."""

    def __init__(self, ckpt: bool, p: float | None = None) -> None:
        super().__init__()
        body = [nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh()]
        if p is not None:
            body.insert(2, nn.Dropout(p))
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(32, 2)
        self.ckpt = ckpt

    def forward(self, x):
        h = checkpoint(self.body, x, use_reentrant=False) if self.ckpt else self.body(x)
        return self.head(h)


def block(c: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                         nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                         nn.ReLU())


class ConvNet(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.blocks = nn.Sequential(block(6), block(6), block(6))
        self.head = nn.Linear(6, 4)
        self.mode = mode

    def forward(self, x):
        x = self.stem(x)
        if self.mode == "each":
            for b in self.blocks:
                x = checkpoint(b, x, use_reentrant=False)
        elif self.mode == "sequential":
            x = checkpoint_sequential(self.blocks, 2, x, use_reentrant=False)
        else:
            x = self.blocks(x)
        return self.head(x.mean((2, 3)))


def loss_and_grads(model: nn.Module, backend: str, x: np.ndarray, y: np.ndarray):
    run = cnnir.value_and_grad(model, nn.CrossEntropyLoss(), x.shape, y.shape, backend=backend)
    return run(x, y)


def make(cls, *args, dtype: str = "float64") -> nn.Module:
    nn.manual_seed(0)
    model = cls(*args)
    return model.double() if dtype == "float64" else model


@pytest.mark.parametrize("mode", ["each", "sequential"])
def test_gradients_are_those_without_checkpointing(mode: str) -> None:
    """BatchNorm in training mode and ReLU inside the segments, float64."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 6, 6)), np.array([1, 3])
    want_loss, want = loss_and_grads(make(ConvNet, "none"), "reference", x, y)
    loss, got = loss_and_grads(make(ConvNet, mode), "reference", x, y)
    assert loss == pytest.approx(want_loss, rel=1e-14)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-14)


def test_numba_runs_the_recomputation() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 3, 6, 6)), np.array([0, 2])
    _, want = loss_and_grads(make(ConvNet, "none"), "reference", x, y)
    _, got = loss_and_grads(make(ConvNet, "each", dtype="float32"), "numba",
                            x.astype(np.float32), y)
    for name in want:
        assert_close(got[name], want[name], reduction=2 * 36)


def test_running_statistics_are_updated_once_per_forward_call() -> None:
    graph = cnnir.grad_graph(make(ConvNet, "each"), nn.CrossEntropyLoss(), (2, 3, 6, 6), (2,))
    updates = [n for n in graph.nodes if n.op is cnnir.ops.norm.batch_norm_update]
    assert len(updates) == 6 and not any("recompute" in n.name for n in updates)


def test_saved_activations_and_recomputed_flops_by_hand() -> None:
    """Without checkpointing the backward reads x (4·16), both Linear outputs (tanh's
    gradient) and both Tanh outputs (the next Linear's weight gradient): 4·16 + 4·4·32
    values. With it, only the segment's input x and its output (the head reads it); the
    Linear, Tanh and Linear before the last Tanh are recomputed: 2·4·32·16 + 4·32,
    4·32 and 2·4·32·32 + 4·32 FLOPs (the last Tanh's output is not needed again)."""
    plain = cnnir.analyze(make(Mlp, False), (4, 16), training=True).training
    ckpt = cnnir.analyze(make(Mlp, True), (4, 16), training=True).training
    assert plain.saved_activation_bytes == F64 * (4 * 16 + 4 * 4 * 32)
    assert ckpt.saved_activation_bytes == F64 * (4 * 16 + 4 * 32)
    assert plain.recompute_flops == 0
    recompute = (2 * 4 * 32 * 16 + 4 * 32) + 4 * 32 + (2 * 4 * 32 * 32 + 4 * 32)
    assert ckpt.recompute_flops == recompute
    assert ckpt.backward_flops == plain.backward_flops + recompute
    assert ckpt.forward_flops == plain.forward_flops
    assert ckpt.peak_bytes <= plain.peak_bytes


def test_the_report_names_the_recomputed_flops() -> None:
    text = cnnir.analyze(make(Mlp, True), (4, 16), training=True).table()
    assert "Checkpointing: 12.67K FLOPs recomputed in the backward" in text
    plain = cnnir.analyze(make(Mlp, False), (4, 16), training=True).table()
    assert "Checkpointing" not in plain


def test_dropout_is_not_recomputed_so_its_mask_is_the_forwards() -> None:
    graph = cnnir.grad_graph(make(Mlp, True, 0.5), lambda out: out.sum(), (4, 16))
    twins = {n.name for n in graph.nodes if n.name.endswith(".recompute")}
    assert twins == {"body.0.recompute", "body.3.recompute"}  # the two Linears
    x = np.random.default_rng(2).standard_normal((4, 16))
    results = [cnnir.value_and_grad(make(Mlp, ck, 0.5), lambda out: out.sum(), (4, 16),
                                    backend="reference")(x) for ck in (False, True)]
    (want_loss, want), (loss, got) = results
    assert loss == want_loss
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12)


def test_outside_a_trace_checkpoint_calls_the_function() -> None:
    assert checkpoint(lambda a, b=1: a + b, 2, b=3, use_reentrant=True) == 5
    assert checkpoint_sequential([lambda v: v * 2, lambda v: v + 1, lambda v: v * 10], 2,
                                 1) == 30


def test_a_second_elimination_pass_keeps_the_recomputation() -> None:
    from cnnir.api import run_passes
    from cnnir.ir.clone import clone_graph

    graph = cnnir.grad_graph(make(Mlp, True), lambda out: out.sum(), (4, 16))
    again = run_passes(clone_graph(graph), ["eliminate-common-subexpressions"]).graph
    assert sum(n.name.endswith(".recompute") for n in again.nodes) == 3
