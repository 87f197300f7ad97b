"""Parameter and MAC totals of the non-torchvision example models, against closed forms.

Every expected count is written out from the layer formulas of docs/semantics.md section 6.1:
conv params ``O*C*k*k (+O bias)``, conv MACs ``N*O*OH*OW*C*k*k``, transposed conv MACs counted
on the input grid ``N*C*H*W*O*k*k``, linear ``in*out (+out)``; BatchNorm adds ``2*C`` params.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

import cnnir
from cnnir.passes.cost import CostReport

EXAMPLES = Path(__file__).parents[2] / "examples"

# torchvision's ResNet-18 (docs/semantics.md 6.1 / 6.2); the attention nets add to it.
RESNET18_PARAMS = 11_689_512
RESNET18_MACS = 1_814_073_344
RESNET18_STAGES = ((64, 56), (128, 28), (256, 14), (512, 7))  # channels, feature-map side

# SE, reduction 16, per block: fc1 C -> C/16 and fc2 C/16 -> C, both 1x1 with bias, on 1x1 maps.
SE_PARAMS = sum(2 * (c * (c // 16) + c // 16 + (c // 16) * c + c) for c, _ in RESNET18_STAGES)
SE_MACS = sum(2 * (c * (c // 16) + (c // 16) * c) for c, _ in RESNET18_STAGES)


def cbam_params(c: int) -> int:
    """Shared bias-free MLP C -> C/16 -> C, plus the 7x7 spatial conv 2 -> 1 (no bias)."""
    return c * (c // 16) + (c // 16) * c + 1 * 2 * 7 * 7


def cbam_macs(c: int, side: int) -> int:
    """The MLP runs twice (average and max descriptor); the spatial conv at full resolution."""
    return 2 * (c * (c // 16) + (c // 16) * c) + side * side * 1 * 2 * 7 * 7


CBAM_PARAMS = sum(2 * cbam_params(c) for c, _ in RESNET18_STAGES)
CBAM_MACS = sum(2 * cbam_macs(c, side) for c, side in RESNET18_STAGES)

# Siamese tower on 1x28x28: conv5 1->32 (24x24), pool, conv5 32->64 (8x8), pool, 1024->128->64.
EMBED_PARAMS = (32 * 1 * 5 * 5 + 32) + (64 * 32 * 5 * 5 + 64) + (1024 * 128 + 128) + (128 * 64 + 64)
EMBED_MACS = 32 * 24 * 24 * 1 * 5 * 5 + 64 * 8 * 8 * 32 * 5 * 5 + 1024 * 128 + 128 * 64


def double_conv_params(c: int, o: int) -> int:
    """Two bias-free 3x3 convs, c -> o -> o, each followed by a BatchNorm."""
    return o * c * 3 * 3 + 2 * o + o * o * 3 * 3 + 2 * o


def double_conv_macs(c: int, o: int, side: int) -> int:
    """Both 3x3 convs with padding 1 keep the side x side resolution."""
    return side * side * (o * c * 3 * 3 + o * o * 3 * 3)


UNET_PARAMS = (
    double_conv_params(3, 16)
    + double_conv_params(16, 32)
    + double_conv_params(32, 64)
    + double_conv_params(64, 128)
    + (128 * 64 * 2 * 2 + 64)  # up3: convT 128 -> 64, k2 s2, bias
    + double_conv_params(64 + 64, 64)
    + (64 * 32 * 2 * 2 + 32)  # up2: convT 64 -> 32, k2 s2, bias
    + double_conv_params(32 + 32, 32)
    + (32 * 16 * 3 * 3 + 16)  # up1: bilinear x2, then conv3x3 32 -> 16 with bias
    + double_conv_params(16 + 16, 16)
    + (16 * 2 * 1 * 1 + 2)  # 1x1 classifier
)
UNET_MACS = (
    double_conv_macs(3, 16, 128)
    + double_conv_macs(16, 32, 64)
    + double_conv_macs(32, 64, 32)
    + double_conv_macs(64, 128, 16)
    + 128 * 16 * 16 * 64 * 2 * 2  # convT counted on its 16x16 input
    + double_conv_macs(64 + 64, 64, 32)
    + 64 * 32 * 32 * 32 * 2 * 2  # convT counted on its 32x32 input
    + double_conv_macs(32 + 32, 32, 64)
    + 16 * 128 * 128 * 32 * 3 * 3
    + double_conv_macs(16 + 16, 16, 128)
    + 2 * 128 * 128 * 16 * 1 * 1
)

# Deformable net on 3x64x64: conv3 3->32 @64, pool, conv3 32->64 @32, pool, then at 16x16:
# offset conv 64->18 and mask conv 64->9 (with bias), deform conv 64->64 (no bias), BN; fc 64->10.
DEFORM_PARAMS = (
    (32 * 3 * 3 * 3 + 2 * 32)
    + (64 * 32 * 3 * 3 + 2 * 64)
    + (18 * 64 * 3 * 3 + 18)
    + (9 * 64 * 3 * 3 + 9)
    + (64 * 64 * 3 * 3 + 2 * 64)
    + (64 * 10 + 10)
)
DEFORM_MACS = (
    32 * 64 * 64 * 3 * 3 * 3
    + 64 * 32 * 32 * 32 * 3 * 3
    + 16 * 16 * (18 * 64 * 3 * 3 + 9 * 64 * 3 * 3 + 64 * 64 * 3 * 3)
    + 64 * 10
)

# SmallCIFAR on 3x32x32: conv3 3->32 @32, 32->64 @16, 64->128 @8 (no bias, BN each), fc 128->10.
CIFAR_PARAMS = (
    (32 * 3 * 3 * 3 + 2 * 32)
    + (64 * 32 * 3 * 3 + 2 * 64)
    + (128 * 64 * 3 * 3 + 2 * 128)
    + (128 * 10 + 10)
)
CIFAR_MACS = (
    32 * 32 * 32 * 3 * 3 * 3 + 64 * 16 * 16 * 32 * 3 * 3 + 128 * 8 * 8 * 64 * 3 * 3 + 128 * 10
)

CASES = [
    ("attention.py", "se_resnet18", RESNET18_PARAMS + SE_PARAMS, RESNET18_MACS + SE_MACS),
    ("attention.py", "cbam_resnet18", RESNET18_PARAMS + CBAM_PARAMS, RESNET18_MACS + CBAM_MACS),
    ("attention.py", "cbam_block", cbam_params(64), cbam_macs(64, 56)),
    ("siamese.py", "embedding_net", EMBED_PARAMS, EMBED_MACS),
    ("siamese.py", "siamese", EMBED_PARAMS, 2 * EMBED_MACS),
    ("siamese.py", "triplet", EMBED_PARAMS, 3 * EMBED_MACS),
    ("unet.py", "unet", UNET_PARAMS, UNET_MACS),
    ("deformable.py", "deformable_net", DEFORM_PARAMS, DEFORM_MACS),
    ("cifar.py", "small_cifar", CIFAR_PARAMS, CIFAR_MACS),
]
OUTPUT_SHAPES = [
    ("attention.py", "se_resnet18", [(1, 1000)]),
    ("attention.py", "cbam_resnet18", [(1, 1000)]),
    ("attention.py", "cbam_block", [(1, 64, 56, 56)]),
    ("siamese.py", "siamese", [(1, 64)] * 2),
    ("siamese.py", "triplet", [(1, 64)] * 3),
    ("unet.py", "unet", [(1, 2, 128, 128)]),
    ("deformable.py", "deformable_net", [(1, 10)]),
    ("cifar.py", "small_cifar", [(1, 10)]),
]
DEFAULTS = [
    ("attention.py", "se_resnet18", (1, 3, 224, 224)),
    ("siamese.py", "siamese", [(1, 1, 28, 28), (1, 1, 28, 28)]),
    ("unet.py", "unet", (1, 3, 128, 128)),
    ("deformable.py", "deformable_net", (1, 3, 64, 64)),
    ("cifar.py", "small_cifar", (1, 3, 32, 32)),
]


def build(file: str, name: str) -> tuple[cnnir.nn.Module, object]:
    """The module ``name`` builds in an example file, and its declared input shape."""
    namespace = runpy.run_path(str(EXAMPLES / file))
    builder = namespace[name]
    return builder(), getattr(builder, "input_shape", namespace["input_shape"])


def analyze(file: str, name: str) -> CostReport:
    """Analyze ``name`` from an example file at its declared input shape."""
    return cnnir.analyze(*build(file, name))


@pytest.mark.parametrize(("file", "name", "params", "macs"), CASES)
def test_totals_match_closed_form(file: str, name: str, params: int, macs: int) -> None:
    totals = analyze(file, name).totals
    assert (totals.params, totals.macs) == (params, macs)


@pytest.mark.parametrize(("file", "name", "shapes"), OUTPUT_SHAPES)
def test_output_shapes(file: str, name: str, shapes: list[tuple[int, ...]]) -> None:
    graph = cnnir.trace(*build(file, name))
    assert [tuple(out.type.shape) for out in graph.outputs] == shapes


@pytest.mark.parametrize(("file", "name", "shape"), DEFAULTS)
def test_default_model_and_input_shape(file: str, name: str, shape: object) -> None:
    namespace = runpy.run_path(str(EXAMPLES / file))
    assert namespace["model"] is namespace[name]
    assert namespace["input_shape"] == shape


@pytest.mark.parametrize(("name", "calls"), [("siamese", 2), ("triplet", 3)])
def test_shared_tower_counts_params_once_and_macs_per_call(name: str, calls: int) -> None:
    tower = analyze("siamese.py", "embedding_net").totals
    shared = analyze("siamese.py", name).totals
    assert shared.params == tower.params
    assert shared.macs == calls * tower.macs


def test_small_cifar_is_the_benchmark_size() -> None:
    assert round(analyze("cifar.py", "small_cifar").totals.macs / 1e6, 1) == 10.3
