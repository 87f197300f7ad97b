"""fuse-activation-grad: an activation's gradient folded into the batch_norm_grad reading it,
exact in float64 (reference backend) with the same cost, and the Numba backend's fused
kernels against the reference, in training (batch statistics) and eval mode."""

from __future__ import annotations

import numpy as np
import pytest
from pass_testing import as_float64, assert_equivalent

import cnnir
from cnnir import nn, ops
from cnnir.ops.norm import batch_norm_grad
from cnnir.passes.manager import run_pipeline

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": lambda: nn.LeakyReLU(0.2),
               "silu": nn.SiLU, "hardswish": nn.Hardswish}
SHAPE = (4, 3, 6, 6)


def net(act: str, bn_first: bool) -> nn.Module:
    """conv → BN → act → conv, or BN → act → conv (BN on the input: no input gradient)."""
    layers = [] if bn_first else [nn.Conv2d(3, 3, 3, padding=1, bias=False)]
    layers += [nn.BatchNorm2d(3), ACTIVATIONS[act](), nn.Conv2d(3, 2, 3)]
    return nn.Sequential(*layers)


class SquaredSum(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        out = self.body(x)
        return (out * out).sum()


def gradients(act: str, bn_first: bool, training: bool) -> cnnir.Graph:
    """The gradient graph of Σ net(x)², BN on batch statistics or (eval) running ones."""
    graph = cnnir.trace(SquaredSum(net(act, bn_first)), [SHAPE], training=training)
    return cnnir.grad_graph(graph)


@pytest.mark.parametrize("training", [True, False], ids=["batch-stats", "eval"])
@pytest.mark.parametrize("bn_first", [False, True], ids=["conv-bn", "bn-first"])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_fuses_exactly_and_numba_agrees(act, bn_first, training) -> None:
    before = gradients(act, bn_first, training)
    after = run_pipeline(before, ["fuse-activation-grad"]).graph
    fused = [n for n in after.nodes if n.op is batch_norm_grad]
    assert len(fused) == 1 and fused[0].attrs.activation.name == act
    assert not any(n.op is ops.activation_grad for n in after.nodes)
    assert ("input" in fused[0].attrs.outputs) == (not bn_first)
    assert_equivalent(as_float64(before), as_float64(after))
    assert cnnir.analyze(after).totals.flops == cnnir.analyze(before).totals.flops

    x = np.random.default_rng(3).standard_normal(SHAPE)
    want = cnnir.compile(as_float64(before), backend="reference")(x)
    got = cnnir.compile(after, optimize=False)(x.astype(np.float32))
    for w, g in zip(want, got):
        assert np.linalg.norm(g - w) <= 1e-5 * max(np.linalg.norm(w), 1e-3), (w, g)


def test_leaves_an_activation_gradient_read_twice() -> None:
    """After a residual add, ``relu(bn(conv1(x)) + x)``, the ReLU's gradient goes to the BN
    and to x's own gradient: the fused node would have to compute it twice, so it stays."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv0, self.conv1 = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, inp):
            x = self.conv0(inp)
            y = nn.functional.relu(self.bn(self.conv1(x)) + x)
            return (y * y).sum()

    graph = cnnir.grad_graph(cnnir.trace(Block(), [SHAPE], training=True))
    out = run_pipeline(graph, ["fuse-activation-grad"])
    relu_grad = [n for n in graph.nodes if n.op is ops.activation_grad]
    assert relu_grad and len(relu_grad[0].output.users) == 2
    assert not out.modified
