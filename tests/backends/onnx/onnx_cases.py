"""The op table shared by the ONNX export and round-trip tests.

Each case is a tiny network calling one op with particular attributes, and its input types
(the OpInfo style of ``tests/backends/numba/test_ops.py``, plus the variants whose ONNX form
differs: Resize per interpolate variant, pads, divisor_override, flatten, linear rank, ...).
"""

from __future__ import annotations

import math
import runpy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from op_helpers import (  # noqa: F401 (re-exported to the ONNX test files)
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
    data: dict[int, Callable[[np.random.Generator, tuple], np.ndarray]] = field(
        default_factory=dict)
    reimports: bool = True  # False: the export decomposes into ops cnnir does not import
    # ORT's graph optimizer folds a training-mode BatchNormalization whose statistics are
    # initializers as if it were in eval mode; with optimizations off ORT follows the spec.
    ort_optimize: bool = True


def scaled(factor: float) -> Callable[[np.random.Generator, tuple], np.ndarray]:
    return lambda rng, shape: rng.standard_normal(shape) * factor


X = T("N", 4, 8, 9)
CASES = [
    Case("conv3x3", module(nn.Conv2d(4, 6, 3, padding=1)), [X], 36),
    Case("conv-strided-dilated", module(nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2)),
         [X], 36),
    Case("conv-groups-nobias", module(nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)),
         [X], 18),
    Case("conv-depthwise", module(nn.Conv2d(4, 8, (3, 5), padding=(1, 2), groups=4)), [X], 15),
    Case("conv-same-even-kernel", module(nn.Conv2d(4, 3, 4, padding="same")), [X], 64),
    Case("conv-transpose", module(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                     output_padding=1)), [X], 36),
    Case("conv-transpose-groups-dilation",
         module(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, dilation=2)), [X], 18),
    Case("deform-conv-mask", fn(lambda s, x, off, m: s.d(x, off, m),
                                d=nn.DeformConv2d(4, 6, 3, padding=1)),
         [T(2, 4, 6, 6), T(2, 18, 6, 6), T(2, 9, 6, 6)], 36, data={1: scaled(2.0)}),
    Case("deform-conv-offset-groups", fn(lambda s, x, off: s.d(x, off),
                                         d=nn.DeformConv2d(4, 4, 3, stride=2, groups=2)),
         [T(2, 4, 7, 7), T(2, 36, 3, 3)], 18, data={1: scaled(3.0)}),
    Case("linear-2d", module(nn.Linear(9, 5)), [T("N", 9)], 9),
    Case("linear-3d", module(nn.Linear(9, 5)), [T("N", 3, 9)], 9),
    Case("linear-nobias-3d", module(nn.Linear(9, 5, bias=False)), [T("N", 3, 9)], 9),
    Case("matmul-broadcast", fn(lambda s, a, b: cnnir.matmul(a, b)),
         [T(2, 3, 4, 5), T(5, 6)], 5),
    Case("batch-norm-eval", lambda: bn_with_stats(4), [X]),
    Case("batch-norm-no-affine", lambda: bn_with_stats(4, affine=False), [X]),
    Case("batch-norm-1d-eval", lambda: bn_with_stats(5, one_d=True), [T("N", 5)]),
    Case("batch-norm-train", lambda: nn.BatchNorm2d(4).train(), [T(2, 4, 8, 9)], 144,
         ort_optimize=False),
    Case("relu", fn(lambda s, x: F.relu(x)), [X]),
    Case("relu6", fn(lambda s, x: F.relu6(x * 4)), [X]),
    Case("leaky-relu", fn(lambda s, x: F.leaky_relu(x, 0.2)), [X]),
    Case("elu", fn(lambda s, x: F.elu(x, 0.7)), [X]),
    Case("prelu-per-channel", module(nn.PReLU(4, init=0.1)), [X]),
    Case("prelu-shared", module(nn.PReLU()), [X]),
    Case("prelu-2d-input", module(nn.PReLU(5, init=0.3)), [T("N", 5)]),
    Case("rrelu-eval", fn(lambda s, x: F.rrelu(x)), [X]),
    Case("sigmoid", fn(lambda s, x: F.sigmoid(x)), [X]),
    Case("tanh", fn(lambda s, x: F.tanh(x)), [X]),
    Case("hardswish", fn(lambda s, x: F.hardswish(x * 4)), [X]),
    Case("hardsigmoid", fn(lambda s, x: F.hardsigmoid(x * 4)), [X]),
    Case("silu", fn(lambda s, x: F.silu(x)), [X]),
    Case("gelu", fn(lambda s, x: F.gelu(x)), [X], reimports=False),
    Case("gelu-tanh", fn(lambda s, x: F.gelu(x, approximate="tanh")), [X], reimports=False),
    Case("softmax", fn(lambda s, x: F.softmax(x, 1)), [X], 4),
    Case("log-softmax", fn(lambda s, x: F.log_softmax(x, -1)), [X], 9),
    Case("dropout-eval", lambda: nn.Dropout(0.3).eval(), [X]),
    Case("dropout2d-eval", lambda: nn.Dropout2d(0.3).eval(), [X]),
    Case("max-pool-ceil", module(nn.MaxPool2d(3, 2, 1, ceil_mode=True)), [T(2, 4, 8, 9)]),
    Case("max-pool-dilated", module(nn.MaxPool2d(2, 1, dilation=2)), [X]),
    Case("avg-pool-ceil-exclude-pad", module(nn.AvgPool2d(3, 2, 1, ceil_mode=True,
                                                          count_include_pad=False)),
         [T(2, 4, 8, 9)], 9),
    Case("avg-pool-ceil-include-pad", module(nn.AvgPool2d(3, 2, 1, ceil_mode=True)),
         [T(2, 4, 8, 9)], 9),
    Case("avg-pool-include-pad", module(nn.AvgPool2d(3, 2, 1)), [X], 9),
    Case("avg-pool-divisor", module(nn.AvgPool2d(2, divisor_override=3)), [X], 4,
         reimports=False),
    Case("avg-pool-divisor-ceil", module(nn.AvgPool2d(3, 2, 1, ceil_mode=True,
                                                      divisor_override=5)),
         [T("N", 4, 8, 9)], 9, reimports=False),
    Case("adaptive-avg-divisible", module(nn.AdaptiveAvgPool2d((4, 3))), [X], 6),
    Case("adaptive-avg-keep-dim", module(nn.AdaptiveAvgPool2d((2, None))), [X], 4),
    Case("adaptive-max-divisible", module(nn.AdaptiveMaxPool2d((2, 3))), [X]),
    Case("global-avg", module(nn.AdaptiveAvgPool2d(1)), [X], 72),
    Case("global-max", module(nn.AdaptiveMaxPool2d(1)), [X]),
    Case("nearest-scale-1.5", module(nn.Upsample(scale_factor=1.5)), [T("N", 2, 5, 7)]),
    Case("nearest-size", module(nn.Upsample(size=(7, 4))), [X]),
    Case("nearest-exact-0.5", fn(lambda s, x: F.interpolate(x, scale_factor=0.5,
                                                             mode="nearest-exact")), [X]),
    Case("nearest-exact-1.5", fn(lambda s, x: F.interpolate(x, scale_factor=1.5,
                                                             mode="nearest-exact")),
         [T("N", 2, 5, 7)]),
    Case("bilinear-1.5", module(nn.Upsample(scale_factor=1.5, mode="bilinear")),
         [T("N", 2, 5, 7)]),
    Case("bilinear-down", fn(lambda s, x: F.interpolate(x, scale_factor=0.6, mode="bilinear")),
         [X]),
    Case("bilinear-align-corners-size", module(nn.UpsamplingBilinear2d(size=(7, 4))), [X]),
    Case("bilinear-align-corners-x2", module(nn.UpsamplingBilinear2d(scale_factor=2)), [X]),
    Case("bilinear-align-corners-down", fn(lambda s, x: F.interpolate(
        x, scale_factor=0.6, mode="bilinear", align_corners=True)), [X]),
    Case("bilinear-recompute", fn(lambda s, x: F.interpolate(
        x, scale_factor=1.7, mode="bilinear", recompute_scale_factor=True)), [X]),
    Case("add-broadcast", fn(lambda s, a, b: a + b), [X, T(4, 1, 1)]),
    Case("sub-scalar", fn(lambda s, a: 1.5 - a), [X]),
    Case("mul-gate", fn(lambda s, a, b: a * b.sigmoid()), [X, T("N", 4, 1, 1)]),
    Case("div", fn(lambda s, a, b: a / (b * b + 1)), [X, X]),
    Case("cat", fn(lambda s, a, b: cnnir.cat([a, b, a], dim=1)), [X, T("N", 3, 8, 9)]),
    Case("reshape-view", fn(lambda s, a: a.view(a.size(0), -1)), [X]),
    Case("reshape-static", fn(lambda s, a: a.reshape(2, 12, 3, 6)), [T(2, 4, 9, 6)]),
    Case("flatten-1", fn(lambda s, a: a.flatten(1)), [X]),
    Case("flatten-mid", fn(lambda s, a: a.flatten(1, 2)), [X]),
    Case("flatten-all", fn(lambda s, a: a.flatten()), [T(2, 4, 3, 3)]),
    Case("transpose-permute", fn(lambda s, a: a.permute(0, 2, 3, 1).transpose(1, 2)), [X]),
    Case("chunk-split", fn(lambda s, a: (*a.chunk(3, dim=1), *a.split([2, 7], dim=3))), [X]),
    Case("split-one-piece", fn(lambda s, a: a.chunk(1, dim=1)[0] + 1), [X]),
    Case("mean-global-keepdim", fn(lambda s, a: a.mean((2, 3), keepdim=True)), [X], 72),
    Case("mean-sum-amax", fn(lambda s, a: (a.mean((2, 3)), a.sum(1),
                                           a.amax(dim=1, keepdim=True))), [X], 72),
    Case("mean-all", fn(lambda s, a: a.mean()), [T(2, 4, 3, 3)], 72),
    Case("channel-shuffle", module(nn.ChannelShuffle(2)), [X]),
    Case("channel-shuffle-symbolic-hw", module(nn.ChannelShuffle(2)), [T("N", 4, "H", "W")]),
    Case("pad-and-crop", fn(lambda s, a: F.pad(a, (1, 2, -1, 3), value=0.5)), [X]),
    Case("zero-pad", module(nn.ZeroPad2d((1, 0, 2, 1))), [X]),
    Case("identity", fn(lambda s, a: F.identity(a)), [X]),
    Case("cross-entropy", fn(lambda s, x, t: F.cross_entropy(x, t)),
         [T("N", 5), T("N", dtype="int64")], 5, data={1: class_targets(5)}),
    Case("cross-entropy-weight-ignore-sum", fn(lambda s, x, t: F.cross_entropy(
        x, t, weight=np.linspace(0.5, 2, 4).astype(np.float32), ignore_index=2,
        reduction="sum")), [T(2, 4, 3, 3), T(2, 3, 3, dtype="int64")], 36,
         data={1: class_targets(4)}),
    Case("cross-entropy-smoothing", fn(lambda s, x, t: F.cross_entropy(
        x, t, label_smoothing=0.1, ignore_index=1)), [T(6, 5), T(6, dtype="int64")], 30,
         data={1: class_targets(5)}, reimports=False),
    Case("cross-entropy-smoothing-weight-none", fn(lambda s, x, t: F.cross_entropy(
        x, t, weight=np.linspace(0.5, 2, 4).astype(np.float32), label_smoothing=0.2,
        reduction="none")), [T(2, 4, 3), T(2, 3, dtype="int64")], 12,
         data={1: class_targets(4)}, reimports=False),
    Case("cross-entropy-probs", fn(lambda s, x, q: F.cross_entropy(x, q.softmax(1),
                                                                    label_smoothing=0.1)),
         [T(6, 5), T(6, 5)], 30, reimports=False),
    Case("nll", fn(lambda s, x, t: F.nll_loss(F.log_softmax(x, 1), t, reduction="none")),
         [T(6, 5), T(6, dtype="int64")], 5, data={1: class_targets(5)}),
    Case("bce", fn(lambda s, p, y: F.binary_cross_entropy(p, y)), [T(4, 3), T(4, 3)], 12,
         data={0: unit_interval, 1: binary_labels}, reimports=False),
    Case("bce-logits-weights", fn(lambda s, x, y, w, pw: F.binary_cross_entropy_with_logits(
        x, y, weight=w, pos_weight=pw, reduction="sum")), [T(4, 3), T(4, 3), T(4, 3), T(3)],
         12, data={1: binary_labels}, reimports=False),
    Case("l1-mse", fn(lambda s, x, y: (F.l1_loss(x, y), F.mse_loss(x, y, reduction="sum"))),
         [X, X], 288, reimports=False),
    Case("smooth-l1-huber", fn(lambda s, x, y: (F.smooth_l1_loss(x, y, beta=0.5),
                                                F.huber_loss(x, y, delta=0.7),
                                                F.smooth_l1_loss(x, y, beta=0.0,
                                                                 reduction="none"))),
         [X, X], 288, reimports=False),
    Case("triplet-swap", fn(lambda s, a, p, n: F.triplet_margin_loss(a, p, n, swap=True)),
         [T(5, 8)] * 3, 8, reimports=False),
    Case("triplet-p1-p3", fn(lambda s, a, p, n: (F.triplet_margin_loss(a, p, n, p=1),
                                                 F.triplet_margin_loss(a, p, n, p=3,
                                                                       reduction="none"))),
         [T(5, 8)] * 3, 8, reimports=False),
    Case("contrastive", module(nn.ContrastiveLoss(margin=2.0)), [T(5, 8), T(5, 8), T(5)], 8,
         data={2: binary_labels}, reimports=False),
]


def concrete(t: cnnir.TensorType, batch: int) -> tuple[int, ...]:
    """A shape with symbolic dims bound: N -> ``batch``, any other symbol -> 6."""
    return tuple(d if isinstance(d, int) else (batch if d == "N" else 6) for d in t.shape)


def make_inputs(case: Case, batch: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for i, t in enumerate(case.inputs):
        shape = concrete(t, batch)
        make = case.data.get(i)
        a = make(rng, shape) if make else rng.standard_normal(shape)
        arrays.append(np.asarray(a).astype(t.dtype))
    return arrays


def outputs(result: Any) -> list[np.ndarray]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def reference(graph: cnnir.Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The float64 reference executor's outputs."""
    run = cnnir.compile(graph, backend="reference")
    return outputs(run(*[a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs]))


def run_ort(path: str, inputs: list[np.ndarray], optimize: bool = True) -> list[np.ndarray]:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


def assert_close(actual: np.ndarray, expected: np.ndarray, reduction: int = 1) -> None:
    """SEMANTICS §8 float32 vs float64: rtol 1e-4, atol 1e-5·max(1, ‖y‖∞)·√K."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.nanmax(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=1e-4,
                               atol=1e-5 * scale * math.sqrt(reduction))


# -- the example models ----------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

# Smallest convenient input sizes: AlexNet and VGG end in adaptive pools to 6×6 and 7×7,
# which ONNX can express only when the feature map divides them (224 inputs).
EXAMPLE_SIZES = {"alexnet": 224, "vgg": 224, "inception": 96, "unet": 32, "siamese": None}
EXAMPLE_FILES = sorted(p.stem for p in EXAMPLES.glob("*.py"))


def example_specs(name: str) -> tuple[cnnir.nn.Module, list[tuple]]:
    ns = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__cnnir_model__")
    obj = ns["model"]
    model = obj if isinstance(obj, nn.Module) else obj()
    shapes = ns["input_shape"]
    shapes = shapes if isinstance(shapes, list) else [shapes]
    size = EXAMPLE_SIZES.get(name, 64)
    specs = [("N", s[1], *(s[2:] if size is None else (size, size))) for s in shapes]
    return model.eval(), specs
