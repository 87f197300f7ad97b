"""The one op-case table (in the spirit of PyTorch's OpInfo) that every backend's tests run.

Each case is a tiny network calling one op with particular attributes, its input types (a
symbolic batch "N" allowed), the longest reduction length K (the tolerance widens by √K), how
its inputs are drawn, and per-backend flags saying where it runs and what is expected there.
A backend's tests filter on their flag: ``[c for c in CASES if c.numba]``.

The flags are booleans, one per backend, rather than a ``backends`` frozenset of names: a
misspelt keyword (``nmuba=False``) fails when the table is built, where a misspelt name in a
set would silently drop the case from a backend; the expectations that only make sense on one
backend (``reimports``, ``ort_optimize``) sit next to its flag; and every ``False`` is one
keyword with the reason beside it. A new backend adds one field defaulting to True (the
``cuda`` line in ``Case``) and turns it off, with a reason, for the cases it cannot run.

Shapes. The Numba table drew on an odd square input, (2, 4, 9, 9) (vector tails and edge
paths of the Numba kernels), the ONNX table on ("N", 4, 8, 9) (a symbolic batch, H ≠ W). Cases
whose op ignores the spatial extent (elementwise, per-channel, shape ops, losses) were merged
onto ``X`` = ("N", 4, 9, 9); a backend binds "N" to its batch (the Numba tests to 2, so their
shapes are the ones they had). Spatial ops (convolution, pooling, resizing) keep both inputs
as two cases, ``name`` on ``X`` and ``name-8x9`` on ``XW``, and both run everywhere they can.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np
from op_helpers import (
    Generator,
    T,
    binary_labels,
    bn_with_stats,
    class_targets,
    fn,
    module,
    unit_interval,
)

import cnnir
import cnnir.nn.functional as F
from cnnir import nn


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    inputs: list[cnnir.TensorType]
    reduction: int = 1  # longest reduction length: widens atol by sqrt(K)
    _: KW_ONLY
    data: dict[int, Generator] = field(default_factory=dict)  # else standard normal
    scale: dict[int, float] = field(default_factory=dict)  # multiplies the drawn input
    # -- where the case runs, and what is expected there --
    numba: bool = True
    onnx: bool = True  # exportable to ONNX (opset 19) and runs in onnxruntime
    reimports: bool = True  # False: the export decomposes into ops cnnir does not import
    # (or, for gelu-tanh and divisor_override, into ops that import as a different graph)
    # ORT's graph optimizer folds a training-mode BatchNormalization whose statistics are
    # initializers as if it were in eval mode; with optimizations off ORT follows the spec.
    ort_optimize: bool = True
    # cuda: bool = True  -- add with the CUDA backend; False (with a reason) where it cannot run


X = T("N", 4, 9, 9)  # odd and square: Numba's vector tails and edge paths
XW = T("N", 4, 8, 9)  # H != W: shows H/W mix-ups; the adaptive pools below divide it
SMALL = T("N", 2, 5, 7)  # up- and down-sampling

CONVOLUTION = [
    Case("conv3x3", module(nn.Conv2d(4, 6, 3, padding=1)), [X], 36),
    Case("conv3x3-8x9", module(nn.Conv2d(4, 6, 3, padding=1)), [XW], 36),
    Case("conv-stride2-dilation2",
         module(nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2)), [X], 36),
    Case("conv-stride2-dilation2-8x9",
         module(nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2)), [XW], 36),
    Case("conv-groups-nobias",
         module(nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)), [X], 18),
    Case("conv-groups-nobias-8x9",
         module(nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)), [XW], 18),
    Case("conv-depthwise-stride2", module(nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)),
         [X], 9),
    Case("conv-depthwise-multiplier",
         module(nn.Conv2d(4, 8, (3, 5), padding=(1, 2), groups=4)), [X], 15),
    Case("conv-depthwise-multiplier-8x9",
         module(nn.Conv2d(4, 8, (3, 5), padding=(1, 2), groups=4)), [XW], 15),
    Case("conv-1x1", module(nn.Conv2d(4, 7, 1)), [X], 4),
    Case("conv-1x1-strided", module(nn.Conv2d(4, 7, 1, stride=2, bias=False)), [X], 4),
    Case("conv-same-even", module(nn.Conv2d(4, 3, 4, padding="same")), [X], 64),
    Case("conv-same-even-8x9", module(nn.Conv2d(4, 3, 4, padding="same")), [XW], 64),
    Case("conv-nonsquare", module(nn.Conv2d(4, 5, (1, 7), stride=(2, 1), padding=(0, 3))),
         [X], 28),
    Case("conv-batch1", module(nn.Conv2d(3, 8, 7, stride=2, padding=3)), [T(1, 3, 16, 16)],
         147),
    Case("conv-transpose",
         module(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)), [X], 36),
    Case("conv-transpose-8x9",
         module(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)), [XW], 36),
    Case("conv-transpose-groups-dilation",
         module(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, dilation=2)), [X], 18),
    Case("conv-transpose-groups-dilation-8x9",
         module(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, dilation=2)), [XW], 18),
    # offsets of a few pixels, so that samples land between and outside pixels
    Case("deform-conv-mask", fn(lambda s, x, off, m: s.d(x, off, m),
                                d=nn.DeformConv2d(4, 6, 3, padding=1)),
         [T(2, 4, 9, 9), T(2, 18, 9, 9), T(2, 9, 9, 9)], 36, scale={1: 3.0}),
    Case("deform-conv-mask-6x6", fn(lambda s, x, off, m: s.d(x, off, m),
                                    d=nn.DeformConv2d(4, 6, 3, padding=1)),
         [T(2, 4, 6, 6), T(2, 18, 6, 6), T(2, 9, 6, 6)], 36, scale={1: 2.0}),
    Case("deform-conv-offset-groups", fn(lambda s, x, off: s.d(x, off),
                                         d=nn.DeformConv2d(4, 4, 3, stride=2, groups=2)),
         [T(2, 4, 9, 9), T(2, 36, 4, 4)], 18, scale={1: 5.0}),
    Case("deform-conv-offset-groups-7x7", fn(lambda s, x, off: s.d(x, off),
                                             d=nn.DeformConv2d(4, 4, 3, stride=2, groups=2)),
         [T(2, 4, 7, 7), T(2, 36, 3, 3)], 18, scale={1: 3.0}),
    # (top, left, bottom, right) pads with anisotropic stride and dilation: the input gradient's
    # output_padding differs per axis (H: 1, W: 0)
    Case("conv-asymmetric-pads-stride-dilation",
         module(nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2))),
         [X], 24),
    Case("conv-depthwise-dilated-anisotropic",
         module(nn.Conv2d(4, 8, 3, stride=(1, 2), padding=2, dilation=2, groups=4)), [XW], 9),
    # output_padding >= stride (allowed by the dilation): the gradient conv crops gy. ORT's
    # ConvTranspose refuses output_padding >= stride ("may be too large for stride").
    Case("conv-transpose-output-padding-by-dilation",
         module(nn.ConvTranspose2d(4, 6, 3, dilation=2, output_padding=1)), [X], 36,
         onnx=False),
    Case("conv-transpose-groups-output-padding-by-dilation-8x9",
         module(nn.ConvTranspose2d(4, 4, 2, stride=2, padding=1, output_padding=2, groups=2,
                                   dilation=3)), [XW], 8, onnx=False),
    # every deform_conv2d attribute at once: stride, dilation, weight and offset groups, mask
    Case("deform-conv-strided-dilated-groups-mask",
         fn(lambda s, x, off, m: s.d(x, off, m),
            d=nn.DeformConv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)),
         [T(2, 4, 9, 9), T(2, 36, 5, 5), T(2, 18, 5, 5)], 18, scale={1: 3.0}),
]

CONVOLUTION += [
    # conv1d runs as conv2d on (N, C, 1, L), its weight reshaped in the graph; ONNX import
    # folds that reshape into the initializer, so the weight's parameters move from the
    # reshape node to conv2d in the per-layer report (the totals agree)
    Case("conv1d", module(nn.Conv1d(4, 6, 3, padding=1, stride=2)), [T("N", 4, 9)], 12,
         reimports=False),
    Case("conv1d-groups-dilation-nobias", module(nn.Conv1d(4, 6, 3, padding=2, dilation=2,
                                                           groups=2, bias=False)),
         [T("N", 4, 9)], 6, reimports=False),
]

LINEAR = [
    Case("linear-2d", module(nn.Linear(9, 5)), [T("N", 9)], 9),
    Case("linear-3d", module(nn.Linear(9, 5)), [T("N", 3, 9)], 9),
    Case("linear-nobias-3d", module(nn.Linear(9, 5, bias=False)), [T("N", 3, 9)], 9),
    Case("matmul-broadcast", fn(lambda s, a, b: cnnir.matmul(a, b)),
         [T(2, 3, 4, 5), T(5, 6)], 5),
]

NORMALIZATION = [
    Case("batch-norm-eval", lambda: bn_with_stats(4, min_log_var=-6), [X]),
    Case("batch-norm-no-affine", lambda: bn_with_stats(4, affine=False), [XW]),
    Case("batch-norm-1d-eval", lambda: bn_with_stats(5, one_d=True, min_log_var=-6),
         [T("N", 5)]),
    Case("batch-norm-train", lambda: nn.BatchNorm2d(4).train(), [T(2, 4, 9, 9)], 162,
         ort_optimize=False),
    # one process: BatchNorm (tests/distributed checks it across ranks)
    Case("sync-batch-norm-train", lambda: nn.SyncBatchNorm(4).train(), [T(2, 4, 9, 9)], 162,
         ort_optimize=False),
]


def random_affine(m: nn.Module) -> nn.Module:
    """``m`` with its weight and bias (where present) drawn, so that affine bugs show."""
    rng = np.random.default_rng(2)
    for p in (m.weight, m.bias):
        if p is not None:
            p.data = rng.uniform(0.5, 1.5, p.shape).astype(np.float32)
    return m


# group_norm and layer_norm (InstanceNorm is group_norm with one channel per group)
NORMALIZATION += [
    Case("group-norm", lambda: random_affine(nn.GroupNorm(2, 4)), [X], 162,
         reimports=False),  # opset 19: Reshape, InstanceNormalization, Reshape, Mul, Add
    Case("group-norm-no-affine-8x9", module(nn.GroupNorm(1, 4, affine=False, eps=1e-3)),
         [XW], 288, reimports=False),
    Case("instance-norm-affine", lambda: random_affine(nn.InstanceNorm2d(4, affine=True)),
         [X], 81),
    Case("instance-norm-running-eval", lambda: nn.InstanceNorm2d(
        4, track_running_stats=True).eval(), [X]),
    Case("layer-norm", lambda: random_affine(nn.LayerNorm((9, 9))), [X], 81),
    Case("layer-norm-no-bias-3d", lambda: random_affine(nn.LayerNorm(9, bias=False)),
         [T("N", 3, 9)], 9),
    Case("layer-norm-no-affine", module(nn.LayerNorm(9, elementwise_affine=False)),
         [T("N", 5, 9)], 9),
]

ACTIVATION = [
    Case("relu", fn(lambda s, x: F.relu(x)), [X]),
    Case("relu6", fn(lambda s, x: F.relu6(x * 4)), [X]),
    Case("leaky-relu", fn(lambda s, x: F.leaky_relu(x, 0.2)), [X]),
    Case("elu", fn(lambda s, x: F.elu(x, 0.7)), [X]),
    Case("prelu-per-channel", module(nn.PReLU(4, init=0.1)), [X]),
    Case("prelu-shared", module(nn.PReLU()), [X]),
    Case("prelu-2d-input", module(nn.PReLU(5, init=0.3)), [T("N", 5)]),
    Case("rrelu-eval", fn(lambda s, x: F.rrelu(x)), [X]),
    # Random ops in training mode: the reference and Numba draw the same slopes and masks for
    # one seed, onnxruntime its own (ONNX's random ops), so their exports are not compared
    # here (tests/backends/onnx/test_export_ops.py checks their form and statistics).
    Case("rrelu-train", fn(lambda s, x: F.rrelu(x, training=True)), [X], onnx=False),
    Case("sigmoid", fn(lambda s, x: F.sigmoid(x)), [X]),
    Case("tanh", fn(lambda s, x: F.tanh(x)), [X]),
    Case("abs-and-square", fn(lambda s, x: abs(x) + x.abs() * 0.5 + x**2), [X]),
    Case("hardswish", fn(lambda s, x: F.hardswish(x * 4)), [X]),
    Case("hardsigmoid", fn(lambda s, x: F.hardsigmoid(x * 4)), [X]),
    Case("silu", fn(lambda s, x: F.silu(x)), [X]),
    Case("hardtanh", fn(lambda s, x: F.hardtanh(x * 2, -1.5, 0.5)), [X]),
    Case("hardtanh-layer", module(nn.Hardtanh()), [X]),
    # softplus: beta·x on both sides of the threshold; exported as ONNX's Where(...) rule
    Case("softplus", module(nn.Softplus()), [X], reimports=False),
    Case("softplus-beta-threshold", fn(lambda s, x: F.softplus(x * 3, beta=2.0, threshold=3.0)),
         [X], reimports=False),
    Case("mish", module(nn.Mish()), [X], scale={0: 3.0}),
    Case("gelu", fn(lambda s, x: F.gelu(x)), [X], reimports=False),  # Erf
    Case("gelu-tanh", fn(lambda s, x: F.gelu(x, approximate="tanh")), [X],
         reimports=False),  # comes back as its decomposition: other FLOPs
    Case("softmax", fn(lambda s, x: F.softmax(x, 1)), [X], 4),
    Case("log-softmax", fn(lambda s, x: F.log_softmax(x, -1)), [X], 9),
    Case("dropout-eval", lambda: nn.Dropout(0.3).eval(), [X]),
    Case("dropout2d-eval", lambda: nn.Dropout2d(0.3).eval(), [X]),
    Case("dropout-train", lambda: nn.Dropout(0.3).train(), [X], onnx=False),  # see rrelu-train
    Case("dropout2d-train", lambda: nn.Dropout2d(0.3).train(), [X], onnx=False),
]

POOLING = [
    Case("max-pool-ceil", module(nn.MaxPool2d(3, 2, 1, ceil_mode=True)), [X]),
    Case("max-pool-ceil-8x9", module(nn.MaxPool2d(3, 2, 1, ceil_mode=True)), [T(2, 4, 8, 9)]),
    Case("max-pool-dilated", module(nn.MaxPool2d(2, 1, dilation=2)), [X]),
    Case("max-pool-dilated-8x9", module(nn.MaxPool2d(2, 1, dilation=2)), [XW]),
    Case("avg-pool-ceil-exclude-pad",
         module(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)), [X], 9),
    Case("avg-pool-ceil-exclude-pad-8x9",
         module(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)),
         [T(2, 4, 8, 9)], 9),
    Case("avg-pool-ceil-include-pad", module(nn.AvgPool2d(3, 2, 1, ceil_mode=True)),
         [T(2, 4, 8, 9)], 9),
    Case("avg-pool-include-pad", module(nn.AvgPool2d(3, 2, 1)), [X], 9),
    Case("avg-pool-include-pad-8x9", module(nn.AvgPool2d(3, 2, 1)), [XW], 9),
    # divisor_override exports as AveragePool and Mul, which import as two nodes
    Case("avg-pool-divisor", module(nn.AvgPool2d(2, divisor_override=3)), [X], 4,
         reimports=False),
    Case("avg-pool-divisor-8x9", module(nn.AvgPool2d(2, divisor_override=3)), [XW], 4,
         reimports=False),
    Case("avg-pool-divisor-ceil",
         module(nn.AvgPool2d(3, 2, 1, ceil_mode=True, divisor_override=5)), [XW], 9,
         reimports=False),
    # ONNX has no adaptive pooling: the exporter writes a fixed-window pool, which exists only
    # when the output size divides the static input size (9 by 4 or by 5 does not).
    Case("adaptive-avg-non-divisible", module(nn.AdaptiveAvgPool2d((4, 3))), [X], 12,
         onnx=False),
    Case("adaptive-avg-divisible", module(nn.AdaptiveAvgPool2d((4, 3))), [XW], 6),
    Case("adaptive-avg-keep-dim", module(nn.AdaptiveAvgPool2d((2, None))), [XW], 4),
    Case("adaptive-max-non-divisible", module(nn.AdaptiveMaxPool2d(5)), [X], onnx=False),
    Case("adaptive-max-divisible", module(nn.AdaptiveMaxPool2d((2, 3))), [XW]),
    Case("global-avg", module(nn.AdaptiveAvgPool2d(1)), [X], 81),
    Case("global-max", module(nn.AdaptiveMaxPool2d(1)), [XW]),
    # Gradients: windows that overlap (each pixel collects from several), skip pixels, hang
    # past the padding in ceil mode, and every Numba forward path (phases and separable).
    Case("max-pool-2x2", module(nn.MaxPool2d(2)), [X]),
    Case("max-pool-overlap-pad", module(nn.MaxPool2d(3, 1, 1)), [XW]),
    Case("max-pool-rect-stride", module(nn.MaxPool2d((2, 3), stride=(1, 2))), [X]),
    Case("max-pool-dilated-ceil-pad",
         module(nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True)), [XW]),
    Case("avg-pool-overlap-exclude-pad",
         module(nn.AvgPool2d(3, 1, 1, count_include_pad=False)), [XW], 9),
    Case("avg-pool-rect-stride", module(nn.AvgPool2d((2, 3), stride=(1, 2), padding=1)), [X],
         6),
    # any non-zero divisor_override is used as given, a negative one too
    Case("avg-pool-negative-divisor", module(nn.AvgPool2d(3, 2, 1, divisor_override=-4)), [XW],
         9, reimports=False),
    Case("adaptive-avg-upsampling", module(nn.AdaptiveAvgPool2d((11, 4))), [X], 9,
         onnx=False),
    Case("adaptive-max-overlap", module(nn.AdaptiveMaxPool2d((4, 7))), [X], onnx=False),
]

RESIZE = [
    Case("nearest-scale-1.5", module(nn.Upsample(scale_factor=1.5)), [SMALL]),
    Case("nearest-scale-1.5-batch1", module(nn.Upsample(scale_factor=1.5)), [T(1, 2, 5, 7)]),
    Case("nearest-size", module(nn.Upsample(size=(7, 4))), [XW]),
    Case("nearest-exact-0.5", fn(lambda s, x: F.interpolate(x, scale_factor=0.5,
                                                             mode="nearest-exact")), [X]),
    Case("nearest-exact-0.5-8x9", fn(lambda s, x: F.interpolate(x, scale_factor=0.5,
                                                                 mode="nearest-exact")), [XW]),
    Case("nearest-exact-1.5", fn(lambda s, x: F.interpolate(x, scale_factor=1.5,
                                                             mode="nearest-exact")), [SMALL]),
    Case("bilinear-1.5", module(nn.Upsample(scale_factor=1.5, mode="bilinear")), [SMALL]),
    Case("bilinear-1.5-batch1", module(nn.Upsample(scale_factor=1.5, mode="bilinear")),
         [T(1, 2, 5, 7)]),
    Case("bilinear-down", fn(lambda s, x: F.interpolate(x, scale_factor=0.6, mode="bilinear")),
         [XW]),
    Case("bilinear-align-corners-size", module(nn.UpsamplingBilinear2d(size=(7, 4))), [X]),
    Case("bilinear-align-corners-size-8x9", module(nn.UpsamplingBilinear2d(size=(7, 4))),
         [XW]),
    Case("bilinear-align-corners-x2", module(nn.UpsamplingBilinear2d(scale_factor=2)), [XW]),
    Case("bilinear-align-corners-down", fn(lambda s, x: F.interpolate(
        x, scale_factor=0.6, mode="bilinear", align_corners=True)), [XW]),
    Case("bilinear-recompute", fn(lambda s, x: F.interpolate(
        x, scale_factor=1.7, mode="bilinear", recompute_scale_factor=True)), [X]),
    Case("bilinear-recompute-8x9", fn(lambda s, x: F.interpolate(
        x, scale_factor=1.7, mode="bilinear", recompute_scale_factor=True)), [XW]),
    # Gradients: pixels no output reads (downsampling), several outputs per pixel, clamped
    # edges where both bilinear weights land on one pixel, size vs scale.
    Case("nearest-down-0.5", module(nn.Upsample(scale_factor=0.5)), [X]),
    Case("nearest-exact-size", fn(lambda s, x: F.interpolate(x, size=(5, 13),
                                                              mode="nearest-exact")), [XW]),
    Case("bilinear-x2", module(nn.Upsample(scale_factor=2, mode="bilinear")), [XW]),
    Case("bilinear-size", fn(lambda s, x: F.interpolate(x, size=(5, 13), mode="bilinear")),
         [XW]),
    Case("bilinear-align-corners-to-1", fn(lambda s, x: F.interpolate(
        x, size=(1, 5), mode="bilinear", align_corners=True)), [XW]),
]

TENSOR = [
    Case("add-broadcast", fn(lambda s, a, b: a + b), [X, T(4, 1, 1)]),
    Case("sub-scalar", fn(lambda s, a: 1.5 - a), [X]),
    Case("mul-gate", fn(lambda s, a, b: a * b.sigmoid()), [X, T("N", 4, 1, 1)]),
    Case("div", fn(lambda s, a, b: a / (b * b + 1)), [X, X]),
    Case("cat", fn(lambda s, a, b: cnnir.cat([a, b, a], dim=1)), [X, T("N", 3, 9, 9)]),
    Case("reshape-view", fn(lambda s, a: a.view(a.size(0), -1)), [X]),
    Case("reshape-static", fn(lambda s, a: a.reshape(2, 12, 3, 6)), [T(2, 4, 9, 6)]),
    Case("flatten-1", fn(lambda s, a: a.flatten(1)), [XW]),
    Case("flatten-mid", fn(lambda s, a: a.flatten(1, 2)), [X]),
    Case("flatten-all", fn(lambda s, a: a.flatten()), [T(2, 4, 3, 3)]),
    Case("transpose-permute", fn(lambda s, a: a.permute(0, 2, 3, 1).transpose(1, 2)), [X]),
    Case("chunk-split", fn(lambda s, a: (*a.chunk(3, dim=1), *a.split([2, 7], dim=3))), [X]),
    Case("split-one-piece", fn(lambda s, a: a.chunk(1, dim=1)[0] + 1), [XW]),
    Case("mean-global-keepdim", fn(lambda s, a: a.mean((2, 3), keepdim=True)), [XW], 72),
    Case("mean-keepdim-sum-amax", fn(lambda s, a: (a.mean((2, 3), keepdim=True), a.sum(1),
                                                   a.amax(dim=1, keepdim=True))), [X], 81),
    Case("mean-sum-amax", fn(lambda s, a: (a.mean((2, 3)), a.sum(1),
                                           a.amax(dim=1, keepdim=True))), [XW], 72),
    Case("mean-all", fn(lambda s, a: a.mean()), [T(2, 4, 3, 3)], 72),
    Case("channel-shuffle", module(nn.ChannelShuffle(2)), [X]),
    Case("pixel-shuffle", module(nn.PixelShuffle(2)), [X]),
    Case("pixel-unshuffle", module(nn.PixelUnshuffle(2)), [T("N", 2, 8, 6)]),
    Case("channel-shuffle-symbolic-hw", module(nn.ChannelShuffle(2)), [T("N", 4, "H", "W")]),
    Case("pad-and-crop", fn(lambda s, a: F.pad(a, (1, 2, -1, 3), value=0.5)), [X]),
    Case("zero-pad", module(nn.ZeroPad2d((1, 0, 2, 1))), [XW]),
    Case("expand", fn(lambda s, a: a.expand(-1, 4, 9, 9) * 2), [T("N", 4, 1, 9)]),
    Case("expand-new-dims", fn(lambda s, a: a.expand(2, 3, -1)), [T(1, 5)]),
    Case("identity", fn(lambda s, a: F.identity(a)), [X]),
    # -- indexing and the torch-level elementwise math (frontend/torch_functions.py)
    Case("slice-index", fn(lambda s, a: (a[:, 0], a[:, 1:3, ::2], a[..., 1:-1],
                                         a[:, :, 2:8:3, None])), [X]),
    Case("gather-repeated-index", fn(lambda s, a: a[:, [3, 1, 1, -4]] * 1.5), [XW]),
    Case("sqrt-exp-log-pow", fn(lambda s, a: (cnnir.sqrt(a * a + 0.5), cnnir.exp(a * 0.5),
                                              cnnir.log(a * a + 0.5), a ** 3,
                                              (a * a + 0.5) ** 1.5)), [X], scale={0: 0.7}),
    Case("clamp", fn(lambda s, a: (cnnir.clamp(a, -0.5, 0.8), a.clamp(min=0.1))), [X]),
    Case("compare-where", fn(lambda s, a, b: (cnnir.where(a > b, a, b * 0.5), (a <= 0.2) * a,
                                              cnnir.where(b != 0.3, 2.0 * a, 0.0))),
         [X, T(4, 1, 1)]),
    Case("max-min-dim-stack", fn(lambda s, a: (a.max(1)[0], a.min(dim=2, keepdim=True).values,
                                               cnnir.stack([a, a * 2], 2))), [X], 9),
]

CLASS_WEIGHTS = np.linspace(0.5, 2, 4).astype(np.float32)
# Only SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss import back; the other losses and
# label smoothing export as decompositions into ops cnnir does not import (Neg, Abs, Softplus,
# Log, Where, ReduceL2, ...), hence reimports=False.
LOSS = [
    Case("cross-entropy", fn(lambda s, x, t: F.cross_entropy(x, t)),
         [T("N", 5), T("N", dtype="int64")], 5, data={1: class_targets(5)}),
    Case("cross-entropy-smoothing", fn(lambda s, x, t: F.cross_entropy(
        x, t, label_smoothing=0.1)), [T(6, 5), T(6, dtype="int64")], 30,
         data={1: class_targets(5)}, reimports=False),
    Case("cross-entropy-smoothing-ignore", fn(lambda s, x, t: F.cross_entropy(
        x, t, label_smoothing=0.1, ignore_index=1)), [T(6, 5), T(6, dtype="int64")], 30,
         data={1: class_targets(5)}, reimports=False),
    # sums scaled down: the gradient checks take tanh of the loss, flat beyond about 3
    Case("cross-entropy-spatial-ignore", fn(lambda s, x, t: F.cross_entropy(
        x, t, ignore_index=2, reduction="sum") * 0.05), [T(2, 4, 3, 3), T(2, 3, 3, dtype="int64")],
         72, data={1: class_targets(4)}),
    Case("cross-entropy-weight-ignore-sum", fn(lambda s, x, t: F.cross_entropy(
        x, t, weight=CLASS_WEIGHTS, ignore_index=2, reduction="sum") * 0.05),
         [T(2, 4, 3, 3), T(2, 3, 3, dtype="int64")], 36, data={1: class_targets(4)}),
    Case("cross-entropy-smoothing-weight-none", fn(lambda s, x, t: F.cross_entropy(
        x, t, weight=CLASS_WEIGHTS, label_smoothing=0.2, reduction="none")),
         [T(2, 4, 3), T(2, 3, dtype="int64")], 12, data={1: class_targets(4)},
         reimports=False),
    Case("cross-entropy-probs", fn(lambda s, x, q: F.cross_entropy(x, q.softmax(1))),
         [T(6, 5), T(6, 5)], 30, reimports=False),
    Case("cross-entropy-probs-smoothing", fn(lambda s, x, q: F.cross_entropy(
        x, q.softmax(1), label_smoothing=0.1)), [T(6, 5), T(6, 5)], 30, reimports=False),
    Case("nll", fn(lambda s, x, t: F.nll_loss(F.log_softmax(x, 1), t, reduction="none")),
         [T(6, 5), T(6, dtype="int64")], 5, data={1: class_targets(5)}),
    Case("bce", fn(lambda s, p, y: F.binary_cross_entropy(p, y)), [T(4, 3), T(4, 3)], 12,
         data={0: unit_interval, 1: binary_labels}, reimports=False),
    Case("bce-logits-pos-weight", fn(lambda s, x, y, w: F.binary_cross_entropy_with_logits(
        x, y, pos_weight=w)), [T(4, 3), T(4, 3), T(3)], 12, data={1: binary_labels},
         reimports=False),
    Case("bce-logits-weights", fn(lambda s, x, y, w, pw: F.binary_cross_entropy_with_logits(
        x, y, weight=w, pos_weight=pw, reduction="sum")), [T(4, 3), T(4, 3), T(4, 3), T(3)],
         12, data={1: binary_labels}, reimports=False),
    # K at batch 2; a larger batch only makes the tolerance tighter than docs/semantics.md §8 asks
    Case("l1-mse", fn(lambda s, x, y: (F.l1_loss(x, y),
                                       F.mse_loss(x, y, reduction="sum") * 0.001)),
         [X, X], 648, reimports=False),
    Case("smooth-l1-huber", fn(lambda s, x, y: (F.smooth_l1_loss(x, y, beta=0.5),
                                                F.huber_loss(x, y, delta=0.7),
                                                F.smooth_l1_loss(x, y, beta=0.0,
                                                                 reduction="none"))),
         [X, X], 648, reimports=False),
    Case("triplet-swap", fn(lambda s, a, p, n: F.triplet_margin_loss(a, p, n, swap=True)),
         [T(5, 8)] * 3, 8, reimports=False),
    Case("triplet-p1-p3", fn(lambda s, a, p, n: (F.triplet_margin_loss(a, p, n, p=1),
                                                 F.triplet_margin_loss(a, p, n, p=3,
                                                                       reduction="none"))),
         [T(5, 8)] * 3, 8, scale={0: 0.3, 1: 0.3, 2: 0.3}, reimports=False),
    Case("contrastive", module(nn.ContrastiveLoss(margin=2.0)), [T(5, 8), T(5, 8), T(5)], 8,
         data={2: binary_labels}, scale={0: 0.4, 1: 0.4}, reimports=False),
    # -- options for the gradients (tests/ops/test_vjp.py differentiates every float input:
    # weights passed as inputs get their gradient checked too, so they are drawn positive)
    Case("cross-entropy-weight-input-smoothing-ignore", fn(lambda s, x, t, w: F.cross_entropy(
        x, t, weight=w, ignore_index=0, label_smoothing=0.15)),
         [T(6, 4), T(6, dtype="int64"), T(4)], 24,
         data={1: class_targets(4), 2: unit_interval}, scale={2: 2.0}, reimports=False),
    Case("cross-entropy-spatial-weight-input-mean", fn(lambda s, x, t, w: F.cross_entropy(
        x, t, weight=w)), [T(2, 4, 3, 3), T(2, 3, 3, dtype="int64"), T(4)], 72,
         data={1: class_targets(4), 2: unit_interval}, scale={2: 2.0}),
    Case("cross-entropy-weight-input-sum", fn(lambda s, x, t, w: F.cross_entropy(
        x, t, weight=w, ignore_index=3, reduction="sum") * 0.2),
         [T(6, 4), T(6, dtype="int64"), T(4)], 24,
         data={1: class_targets(4), 2: unit_interval}, scale={2: 2.0}),
    # ONNX's loss ops need (N, C, ...) scores: unbatched inputs do not export
    Case("cross-entropy-unbatched", fn(lambda s, x, t: F.cross_entropy(x, t)),
         [T(5), T(dtype="int64")], 5, data={1: class_targets(5)}, onnx=False),
    Case("cross-entropy-unbatched-weight-smoothing-none", fn(lambda s, x, t, w: F.cross_entropy(
        x, t, weight=w, label_smoothing=0.3, reduction="none")),
         [T(5), T(dtype="int64"), T(5)], 5, data={1: class_targets(5), 2: unit_interval},
         onnx=False),
    Case("cross-entropy-unbatched-probs", fn(lambda s, x, q: F.cross_entropy(x, q.softmax(0))),
         [T(5), T(5)], 5, onnx=False),
    Case("cross-entropy-probs-weight-spatial-sum", fn(lambda s, x, q, w: F.cross_entropy(
        x, q.softmax(1), weight=w, label_smoothing=0.2, reduction="sum") * 0.1),
         [T(2, 4, 3, 3), T(2, 4, 3, 3), T(4)], 72, data={2: unit_interval}, reimports=False),
    Case("cross-entropy-probs-weight-none", fn(lambda s, x, q, w: F.cross_entropy(
        x, q.softmax(1), weight=w, reduction="none")), [T(6, 5), T(6, 5), T(5)], 5,
         data={2: unit_interval}, reimports=False),
    Case("nll-raw-weight-input-ignore-mean", fn(lambda s, x, t, w: F.nll_loss(
        x, t, weight=w, ignore_index=1)), [T(6, 5), T(6, dtype="int64"), T(5)], 6,
         data={1: class_targets(5), 2: unit_interval}, scale={2: 2.0}),
    Case("nll-spatial-weight-sum", fn(lambda s, x, t: F.nll_loss(
        F.log_softmax(x, 1), t, weight=CLASS_WEIGHTS, reduction="sum") * 0.03),
         [T(2, 4, 3, 3), T(2, 3, 3, dtype="int64")], 18, data={1: class_targets(4)}),
    Case("nll-unbatched-weight-input", fn(lambda s, x, t, w: F.nll_loss(x, t, weight=w)),
         [T(5), T(dtype="int64"), T(5)], 5, data={1: class_targets(5), 2: unit_interval},
         onnx=False),
    Case("bce-broadcast-weight-none", fn(lambda s, p, y, w: F.binary_cross_entropy(
        p, y, weight=w, reduction="none")), [T(4, 3), T(4, 3), T(1, 3)], 12,
         data={0: unit_interval, 1: binary_labels, 2: unit_interval}, reimports=False),
    Case("bce-soft-labels-weight-sum", fn(lambda s, p, y, w: F.binary_cross_entropy(
        p, y, weight=w, reduction="sum") * 0.1), [T(4, 3), T(4, 3), T(3)], 12,
         data={0: unit_interval, 1: unit_interval, 2: unit_interval}, reimports=False),
    Case("bce-logits-row-weight-none", fn(lambda s, x, y, w: F.binary_cross_entropy_with_logits(
        x, y, weight=w, reduction="none")), [T(4, 3), T(4, 3), T(4, 1)], 12,
         data={1: binary_labels}, scale={0: 3.0}, reimports=False),
    Case("bce-logits-soft-labels-weights-mean", fn(
        lambda s, x, y, w, pw: F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw)),
         [T(4, 3), T(4, 3), T(4, 1), T(3)], 12,
         data={1: unit_interval, 2: unit_interval, 3: unit_interval}, scale={3: 3.0},
         reimports=False),
    Case("l1-mse-reductions", fn(lambda s, x, y: (
        F.l1_loss(x, y, reduction="sum") * 0.05, F.l1_loss(x, y, reduction="none"),
        F.mse_loss(x, y), F.mse_loss(x, y, reduction="none"))), [T(2, 3, 4), T(2, 3, 4)], 24,
         reimports=False),
    # inputs scaled so that |d| falls on both sides of beta and delta
    Case("smooth-l1-huber-reductions", fn(lambda s, x, y: (
        F.smooth_l1_loss(x, y, reduction="sum") * 0.05, F.smooth_l1_loss(x, y, beta=0.0),
        F.smooth_l1_loss(x, y, beta=2.0, reduction="none"),
        F.huber_loss(x, y, reduction="sum") * 0.05,
        F.huber_loss(x, y, delta=2.5, reduction="none"))),
         [T(2, 3, 4), T(2, 3, 4)], 24, scale={0: 2.0}, reimports=False),
    Case("triplet-margin-sum", fn(lambda s, a, p, n: F.triplet_margin_loss(
        a, p, n, margin=0.15, reduction="sum")), [T(5, 8)] * 3, 8,
         scale={0: 0.1, 1: 0.1, 2: 0.2}, reimports=False),  # some hinges inactive
    Case("triplet-p1-p3-swap-none", fn(lambda s, a, p, n: (
        F.triplet_margin_loss(a, p, n, p=1, swap=True, reduction="none"),
        F.triplet_margin_loss(a, p, n, p=3, swap=True, margin=2.0))), [T(6, 4)] * 3, 4,
         scale={2: 2.0}, reimports=False),
    Case("triplet-unbatched", fn(lambda s, a, p, n: F.triplet_margin_loss(
        a, p, n, margin=1.0, swap=True)), [T(8)] * 3, 8, scale={0: 0.3, 1: 0.3, 2: 0.3},
         reimports=False),
    # margin 1 on distances scaled to about 0.8: dissimilar pairs on both sides of the margin
    Case("contrastive-default-margin-none", module(nn.ContrastiveLoss(reduction="none")),
         [T(6, 4), T(6, 4), T(6)], 4, data={2: binary_labels}, scale={0: 0.3, 1: 0.3},
         reimports=False),
    Case("contrastive-margin-sum", fn(lambda s, a, b, y: F.contrastive_loss(
        a, b, y, margin=1.5, reduction="sum")), [T(6, 4), T(6, 4), T(6)], 4,
         data={2: binary_labels}, scale={0: 0.25, 1: 0.25}, reimports=False),
    Case("contrastive-unbatched", fn(lambda s, a, b, y: F.contrastive_loss(a, b, y, margin=1.2)),
         [T(8), T(8), T()], 8, data={2: binary_labels}, scale={0: 0.2, 1: 0.2},
         reimports=False),
]

CASES = CONVOLUTION + LINEAR + NORMALIZATION + ACTIVATION + POOLING + RESIZE + TENSOR + LOSS


def _check_unique_names(cases: list[Case]) -> None:
    """pytest would silently suffix a repeated id; a repeated name is a copy-paste slip."""
    repeated = sorted(name for name, n in Counter(c.name for c in cases).items() if n > 1)
    assert not repeated, f"case names used twice: {repeated}"


_check_unique_names(CASES)


# -- running a case ---------------------------------------------------------------------------

def concrete(t: cnnir.TensorType, batch: int) -> tuple[int, ...]:
    """A shape with symbolic dims bound: N -> ``batch``, any other symbol -> 6."""
    return tuple(d if isinstance(d, int) else (batch if d == "N" else 6) for d in t.shape)


def input_types(case: Case, batch: int | None = None) -> list[cnnir.TensorType]:
    """The declared input types, or with every symbolic dim bound when ``batch`` is given
    (for tests that compile for one shape, as ``make_inputs(case, batch)`` draws it)."""
    if batch is None:
        return list(case.inputs)
    return [cnnir.TensorType(concrete(t, batch), t.dtype) for t in case.inputs]


def trace(case: Case, batch: int | None = None) -> cnnir.Graph:
    """The case's graph, symbolic as declared or bound to ``batch`` (see ``input_types``)."""
    return cnnir.trace(case.build(), input_types(case, batch))


def make_inputs(case: Case, batch: int = 3, seed: int = 0) -> list[np.ndarray]:
    """One array per input, symbolic dims bound by ``concrete``. The default batch, 3, differs
    from the static batch 2 of some inputs, so a dim bound to the wrong symbol shows."""
    rng = np.random.default_rng(seed)
    arrays = []
    for i, t in enumerate(case.inputs):
        shape = concrete(t, batch)
        make = case.data.get(i)
        a = np.asarray(make(rng, shape) if make else rng.standard_normal(shape))
        if i in case.scale:
            a = a * case.scale[i]
        arrays.append(a.astype(t.dtype))
    return arrays


def outputs(result: Any) -> list[np.ndarray]:
    """A compiled model's or session's result as a list, one or many outputs alike."""
    return list(result) if isinstance(result, (tuple, list)) else [result]


def reference(graph: cnnir.Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The float64 reference executor's outputs (float inputs widened, integer ones kept)."""
    run = cnnir.compile(graph, backend="reference")
    return outputs(run(*[a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs]))


def untested_ops(cases: Iterable[Case]) -> set[str]:
    """Names of the registry's forward ops that no case's graph contains (backward ops are
    exercised by the gradients of the cases: tests/ops/test_vjp.py)."""
    from cnnir.ops import REGISTRY

    seen = {node.op.name for case in cases for node in trace(case).nodes}
    return {op.name for op in REGISTRY.values() if not op.backward} - seen
