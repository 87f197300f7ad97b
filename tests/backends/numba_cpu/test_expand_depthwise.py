"""An inverted residual's 1x1 expansion and 3×3 depthwise conv fused into one step
(``expand-depthwise-fused``, ``kernels.expand``) against the float64 reference executor: one
band and many bands per image (the expanded rows on a band's edge computed by both bands),
stride 1 and 2, odd plane sizes and rows that end in a partial vector, batches, and the
epilogues of both convolutions (folded BatchNorm, ReLU6, hardswish, a residual after the
depthwise conv). The block's input dies at the expansion in the graph yet the fused step
reads it at the depthwise conv's place: the memory plan must keep it alive until then."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import assert_close, randomized

import cnnir
from cnnir import nn
from cnnir.backends.numba_cpu.lower_conv import EXPAND_DEPTHWISE


class Block(nn.Module):
    """1x1 expansion (+BN, activation) → 3×3 depthwise (+BN, ReLU6) (+ the depthwise
    output added to a 1x1 shortcut of the input, after the activation: a residual the
    depthwise conv's epilogue adds)."""

    def __init__(self, c_in: int, hidden: int, stride: int, act: str, shortcut: bool) -> None:
        super().__init__()
        self.expand = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act = nn.ReLU6() if act == "relu6" else nn.Hardswish()
        self.dw = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.shortcut = nn.Conv2d(c_in, hidden, 1, stride) if shortcut else None

    def forward(self, x):
        y = self.bn2(self.dw(self.act(self.bn1(self.expand(x)))))
        return y + self.shortcut(x) if self.shortcut is not None else nn.functional.relu6(y)


CASES = [  # (batch, c_in, hidden, height, width, stride, activation, shortcut)
    (1, 5, 24, 9, 11, 1, "relu6", False),  # one band per image, rows of a partial vector
    (2, 4, 20, 10, 7, 2, "hardswish", False),
    (3, 3, 16, 5, 5, 1, "relu6", True),
    (1, 6, 96, 40, 112, 2, "relu6", False),  # many bands: the expanded rows exceed L2
    (2, 4, 144, 30, 56, 1, "hardswish", True),
    (1, 8, 40, 1, 17, 2, "relu6", False),  # a single input row
]


@pytest.mark.parametrize("batch,c_in,hidden,height,width,stride,act,shortcut", CASES)
def test_fused_expansion_and_depthwise_match_the_reference(batch, c_in, hidden, height, width,
                                                           stride, act, shortcut) -> None:
    model = randomized(Block(c_in, hidden, stride, act, shortcut))
    shape = (batch, c_in, height, width)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    compiled = cnnir.compile(model, shape, tune=EXPAND_DEPTHWISE)
    got = compiled(x)
    assert list(compiled.choices.values()).count(EXPAND_DEPTHWISE) == 2
    ref = cnnir.compile(model, shape, backend="reference")(x.astype(np.float64))
    assert_close(got, ref, 9 * c_in)


class SharedExpansion(nn.Module):
    """The expansion's output read by the depthwise conv and by an addition."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(4, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16)

    def forward(self, x):
        h = nn.functional.relu6(self.expand(x))
        return nn.functional.relu6(self.dw(h)) + h


def test_an_expansion_read_twice_is_not_fused() -> None:
    model = randomized(SharedExpansion())
    x = np.random.default_rng(3).standard_normal((1, 4, 6, 6)).astype(np.float32)
    compiled = cnnir.compile(model, x.shape, tune=EXPAND_DEPTHWISE)
    got = compiled(x)
    assert EXPAND_DEPTHWISE not in compiled.choices.values()
    ref = cnnir.compile(model, x.shape, backend="reference")(x.astype(np.float64))
    assert_close(got, ref, 9 * 4)


def test_a_pair_run_apart_keeps_each_layer_its_own_step() -> None:
    """``tune=False`` takes the first candidate, the two steps apart: the depthwise conv runs
    the step the expansion's lowering made and tuned for it, with its own algorithm."""
    model = randomized(Block(4, 32, 2, "relu6", False))
    x = np.random.default_rng(4).standard_normal((2, 4, 9, 13)).astype(np.float32)
    compiled = cnnir.compile(model, x.shape, tune=False)
    got = compiled(x)
    assert EXPAND_DEPTHWISE not in compiled.choices.values()
    assert len(compiled.program((x.shape,)).steps) == 2
    ref = cnnir.compile(model, x.shape, backend="reference")(x.astype(np.float64))
    assert_close(got, ref, 9 * 4)
