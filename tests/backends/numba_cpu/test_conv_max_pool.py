"""A convolution and the 2×2 max pool that alone reads it in one step (``direct-max-pool-fused``,
``kernels.direct``; ``winograd-f2x2-max-pool-fused``, ``kernels.winograd``, whose 2×2 output
tiles are the pool's windows), against the float64 reference executor: SmallCIFAR's three
stages, batches, rows that end in whole vectors, a tail or fewer windows than a vector (widths
computed from the host profile), strides, dilation, bands split by rows and by channels, a NaN
that must win its window, and the cases that must stay two steps (a conv read twice, a pool
that does not tile its input, a conv output the graph returns, Winograd before an activation
that is not a clamp). The conv's input dies at the conv in the graph yet the fused step reads
it at the pool's place: the memory plan must keep it alive until then."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import assert_close, randomized

import cnnir
from cnnir import nn
from cnnir.backends.numba_cpu.kernels import simd
from cnnir.backends.numba_cpu.lower_conv import CONV_MAX_POOL, WINOGRAD_MAX_POOL

L = simd.LANES


class Stage(nn.Module):
    """conv (no bias) - BN - ReLU - 2×2 max pool, as SmallCIFAR's stages; optionally followed by
    a second conv that reads the pooled map (its input then dies at the first pair)."""

    def __init__(self, c_in: int, c_out: int, stride: int, padding: int, dilation: int,
                 then_conv: bool = False, act=nn.functional.relu) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, padding, dilation, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.pool = nn.MaxPool2d(2)
        self.after = nn.Conv2d(c_out, 4, 1) if then_conv else None
        self.act = act

    def forward(self, x):
        y = self.pool(self.act(self.bn(self.conv(x))))
        return self.after(y) if self.after is not None else y


CASES = [  # (batch, c_in, c_out, height, width, stride, padding, dilation)
    (1, 3, 32, 32, 32, 1, 1, 1),  # SmallCIFAR's stages at batch 1
    (1, 32, 64, 16, 16, 1, 1, 1),
    (1, 64, 128, 8, 8, 1, 1, 1),
    (2, 5, 12, 10, 4 * L + 6, 1, 1, 1),  # rows of whole vectors and a tail, two images
    (1, 4, 8, 6, L // 2, 1, 1, 1),  # rows of fewer windows than a vector
    (3, 3, 16, 12, 20, 2, 1, 1),  # strided
    (1, 4, 8, 10, 12, 1, 2, 2),  # dilated
    (1, 6, 24, 40, 64, 1, 1, 1),  # several chunks of rows per band
    (1, 32, 128, 4, 4, 1, 1, 1),  # too few rows: bands split by channels
]


# Winograd F(2×2) pools where it applies: 3×3, stride 1, undilated
FUSED = [(CONV_MAX_POOL, *case) for case in CASES] + [
    (WINOGRAD_MAX_POOL, *case) for case in CASES if case[5] == case[7] == 1]


@pytest.mark.parametrize("fused,batch,c_in,c_out,height,width,stride,padding,dilation", FUSED)
def test_fused_conv_and_max_pool_match_the_reference(fused, batch, c_in, c_out, height, width,
                                                     stride, padding, dilation) -> None:
    model = randomized(Stage(c_in, c_out, stride, padding, dilation))
    shape = (batch, c_in, height, width)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    x[0, 0, 0, 0] = np.nan  # poisons the outputs whose windows read it: NaN must win the pool
    compiled = cnnir.compile(model, shape, tune=fused)
    got = compiled(x)
    assert list(compiled.choices.values()).count(fused) == 2
    ref = cnnir.compile(model, shape, backend="reference")(x.astype(np.float64))
    assert np.isnan(ref).any()
    assert_close(got, ref, 9 * c_in)


def test_the_conv_input_lives_until_the_fused_step() -> None:
    """A second conv after the pair: its buffers are planned after the pair's, so a conv
    input freed at the conv's own place would be overwritten while the fused step reads it."""
    model = randomized(Stage(8, 16, 1, 1, 1, then_conv=True))
    x = np.random.default_rng(3).standard_normal((2, 8, 12, 12)).astype(np.float32)
    compiled = cnnir.compile(model, x.shape, tune=CONV_MAX_POOL)
    got = compiled(x)
    assert CONV_MAX_POOL in compiled.choices.values()
    ref = cnnir.compile(model, x.shape, backend="reference")(x.astype(np.float64))
    assert_close(got, ref, 9 * 8 * 16)


class ReadTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = nn.functional.relu(self.conv(x))
        return nn.functional.max_pool2d(y, 2) + nn.functional.avg_pool2d(y, 2)


class OddPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return nn.functional.max_pool2d(self.conv(x), 2)


class ReturnsTheConv(OddPool):
    def forward(self, x):
        y = self.conv(x)
        return y, nn.functional.max_pool2d(y, 2)


@pytest.mark.parametrize("model,size", [(ReadTwice(), 8), (OddPool(), 9),
                                        (ReturnsTheConv(), 8)],
                         ids=["read-twice", "odd-plane", "returned"])
def test_a_pool_that_cannot_take_the_conv_is_not_fused(model, size) -> None:
    model = randomized(model)
    x = np.random.default_rng(4).standard_normal((1, 3, size, size)).astype(np.float32)
    compiled = cnnir.compile(model, x.shape, tune=CONV_MAX_POOL)
    got = compiled(x)
    assert CONV_MAX_POOL not in compiled.choices.values()
    ref = cnnir.compile(model, x.shape, backend="reference")(x.astype(np.float64))
    for a, b in zip(got if isinstance(got, tuple) else (got,),
                    ref if isinstance(ref, tuple) else (ref,)):
        assert_close(a, b, 27)


def test_winograd_pools_only_after_a_clamp() -> None:
    """The Winograd kernel pools its tiles after a clamp epilogue only (ReLU, ReLU6, none):
    after hardswish (not monotonic, applied after the clamp) it does not pool, the direct
    kernel, which pools the finished rows, does."""
    model = randomized(Stage(4, 8, 1, 1, 1, act=nn.functional.hardswish))
    x = np.random.default_rng(5).standard_normal((1, 4, 8, 8)).astype(np.float32)
    ref = cnnir.compile(model, x.shape, backend="reference")(x.astype(np.float64))
    for fused, offered in ((CONV_MAX_POOL, True), (WINOGRAD_MAX_POOL, False)):
        compiled = cnnir.compile(model, x.shape, tune=fused)
        got = compiled(x)
        assert (fused in compiled.choices.values()) == offered
        assert_close(got, ref, 9 * 4)
