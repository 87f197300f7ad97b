"""The channel-blocked layout (``layout="nchwc"``, ``backends.numba_cpu.layout``) against the
float64 reference executor: MobileNet-style inverted residual blocks whose 1x1 and 3×3
depthwise convolutions run on [N, C/L, H, W, L] tensors, with the layout changed at the
region's borders (a stem conv's NCHW output, a residual still in NCHW, a graph output, a
value a non-blocked op also reads), a global pooling head reading the blocked tensor, and the
kernels' tails: a plane's last tile of pixels moved back over the one before (7×7 and odd
planes), a lone block of output channels, stride 2 down to planes one pixel wide, 1x1
convolutions on planes smaller than a tile of pixels (which run NCHW), activations beyond a
clamp. Channel counts are multiples of the profile's lanes (L = ``simd.LANES``), so every
case runs blocked on either ISA path."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import assert_close, randomized

import cnnir
from cnnir import nn
from cnnir.backends.numba_cpu.kernels import simd
from cnnir.backends.numba_cpu.layout import DEPTHWISE, POINTWISE
from cnnir.errors import CnnirError

L = simd.LANES
BLOCKED = {POINTWISE, DEPTHWISE}


class InvertedResidual(nn.Module):
    """1x1 expansion (+BN, act) → 3×3 depthwise (+BN, act) → 1x1 projection (+BN), plus the
    input when the shapes allow (MobileNetV2's block)."""

    def __init__(self, c_in: int, hidden: int, c_out: int, stride: int, act: str) -> None:
        super().__init__()
        make = {"relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU}[act]
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), make(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), make(),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class Network(nn.Module):
    """A stem conv (NCHW, not blockable), two inverted residual blocks and a head: global
    pooling and a linear layer, or the last block's output itself."""

    def __init__(self, hidden: int, stride: int, act: str, pooled: bool,
                 pool: str = "avg") -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 2 * L, 3, 2, 1)
        self.first = InvertedResidual(2 * L, hidden, 2 * L, 1, act)
        self.second = InvertedResidual(2 * L, hidden, 3 * L, stride, act)
        self.pooled = pooled
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(3 * L, 10)

    def forward(self, x):
        y = self.second(self.first(self.stem(x)))
        return self.fc(nn.functional.flatten(self.pool(y), 1)) if self.pooled else y


CASES = [  # (batch, size, hidden, stride, activation, pooled, pool, blocked convolutions)
    (1, 14, 4 * L, 1, "relu6", True, "avg", 6),  # 7×7 planes: a short last tile of pixels
    (3, 10, 6 * L, 2, "hardswish", True, "max", 6),
    (2, 22, 3 * L, 2, "relu6", False, "avg", 6),  # an odd count of hidden blocks
    # 4×4, then 2×2 planes: the last projection's 4 pixels are less than a tile of pixels
    # (it runs NCHW, and the depthwise conv before it converts its output)
    (1, 7, 2 * L, 2, "relu6", True, "avg", 5),
    (2, 30, 2 * L, 1, "hardswish", False, "avg", 6),
    # SiLU is not fused into the convolutions: its own op reads them (NCHW), and only the
    # first projection (read by the second expansion), that expansion (converting its output)
    # and the last projection (read by the pooling) run blocked
    (2, 11, 3 * L, 2, "silu", True, "avg", 3),
]


@pytest.mark.parametrize("batch,size,hidden,stride,act,pooled,pool,count", CASES)
def test_blocked_inverted_residuals_match_the_reference(batch, size, hidden, stride, act,
                                                        pooled, pool, count) -> None:
    model = randomized(Network(hidden, stride, act, pooled, pool))
    shape = (batch, 3, size, size)
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    compiled = cnnir.compile(model, shape, layout="nchwc")
    got = compiled(x)
    runs = [name for name, algo in compiled.choices.items() if algo in BLOCKED]
    assert len(runs) == count, compiled.choices
    assert compiled.choices["stem"] not in BLOCKED
    ref = cnnir.compile(model, shape, backend="reference")(x.astype(np.float64))
    assert_close(got, ref, 9 * hidden)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_depthwise_convolutions_on_planes_a_few_pixels_wide(size) -> None:
    """Stride 2 down to 1×1 planes: every tap but the centre's may be padding."""
    c = 2 * L
    model = randomized(nn.Sequential(
        nn.Conv2d(c, c, 3, 2, 1, groups=c), nn.ReLU6(), nn.Conv2d(c, c, 3, 2, 1, groups=c),
        nn.Conv2d(c, c, 3, 1, 1, groups=c)))
    shape = (2, c, size, size + 1)
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    compiled = cnnir.compile(model, shape, layout="nchwc")
    assert set(compiled.choices.values()) == {DEPTHWISE}
    ref = cnnir.compile(model, shape, backend="reference")(x.astype(np.float64))
    assert_close(compiled(x), ref, 9)


def test_the_nchw_layout_and_float64_run_no_blocked_convolution() -> None:
    model = randomized(Network(2 * L, 1, "relu6", True))
    shape = (1, 3, 12, 12)
    x = np.random.default_rng(5).standard_normal(shape)
    ref = cnnir.compile(model, shape, backend="reference")(x)
    for options in ({"layout": "nchw"}, {"layout": "nchwc", "dtype": "float64"}):
        compiled = cnnir.compile(model, shape, **options)
        assert not BLOCKED & set(compiled.choices.values())
        assert_close(compiled(x.astype(compiled.dtype)), ref, 9 * 2 * L)


def test_auto_blocks_on_the_8_lane_path_unless_an_nchw_algorithm_is_named() -> None:
    model = randomized(Network(2 * L, 1, "relu6", True))
    compiled = cnnir.compile(model, (1, 3, 12, 12))
    assert bool(BLOCKED & set(compiled.choices.values())) == (L == 8)
    forced = cnnir.compile(model, (1, 3, 12, 12), tune="depthwise-phases")
    assert not BLOCKED & set(forced.choices.values())
    assert "depthwise-phases" in forced.choices.values()


class SharedTensor(nn.Module):
    """A 1x1 conv's output read by a depthwise conv and by a max pool (which cannot read
    it blocked), and whole blocks beside a conv whose channels are not."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(4, 2 * L, 1)
        self.dw = nn.Conv2d(2 * L, 2 * L, 3, 1, 1, groups=2 * L)
        self.project = nn.Conv2d(2 * L, 2 * L, 1)
        self.odd = nn.Conv2d(2 * L, 5, 1)  # 5 channels: never whole blocks

    def forward(self, x):
        h = nn.functional.relu6(self.expand(x))
        y = self.project(nn.functional.relu6(self.dw(h))) + nn.functional.max_pool2d(
            h, 3, 1, 1)
        return self.odd(y)


def test_a_value_another_op_reads_stays_nchw_and_its_readers_convert_it() -> None:
    model = randomized(SharedTensor())
    shape = (2, 4, 9, 9)
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    compiled = cnnir.compile(model, shape, layout="nchwc")
    got = compiled(x)
    # the depthwise conv's output alone is blocked: it reads h (NCHW) through a conversion,
    # the projection writes NCHW (an addition reads it) through another
    assert compiled.choices["dw"] == DEPTHWISE and compiled.choices["project"] == POINTWISE
    assert compiled.choices["expand"] not in BLOCKED and compiled.choices["odd"] not in BLOCKED
    ref = cnnir.compile(model, shape, backend="reference")(x.astype(np.float64))
    assert_close(got, ref, 9 * 2 * L)


def test_assigned_weights_reach_the_blocked_convolutions() -> None:
    """Unoptimized (no BatchNorm folded, parameters bound by reference): the packed forms of
    the weights are remade after an assignment."""
    model = randomized(nn.Sequential(nn.Conv2d(2 * L, 3 * L, 1),
                                     nn.Conv2d(3 * L, 3 * L, 3, 2, 1, groups=3 * L),
                                     nn.Conv2d(3 * L, 2 * L, 1), nn.Conv2d(2 * L, L, 1)))
    shape = (1, 2 * L, 9, 9)
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    compiled = cnnir.compile(model, shape, layout="nchwc", optimize=False)
    before = compiled(x)
    assert set(compiled.choices.values()) == BLOCKED
    for name in ("1.weight", "2.weight"):  # the depthwise conv's and a 1x1 conv's
        compiled.state.assign(name, 2 * np.asarray(compiled.state[name]))
        model.state_dict()[name][...] *= 2
    after = compiled(x)
    ref = cnnir.compile(model, shape, backend="reference")(x.astype(np.float64))
    assert not np.allclose(before, after)
    assert_close(after, ref, 9 * 3 * L)


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(CnnirError, match="layout"):
        cnnir.compile(randomized(Network(2 * L, 1, "relu6", True)), (1, 3, 8, 8),
                      layout="nhwc")
