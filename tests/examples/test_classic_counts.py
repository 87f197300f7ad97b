"""Classic torchvision CNNs written in the cnnir DSL reproduce torchvision's published counts.

Golden numbers: docs/semantics.md §6.2 (parameters exact, GMACs rounded to 3 decimals, one
1x3x224x224 image) and the exact MAC totals of §6.1.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

import cnnir

EXAMPLES = Path(__file__).parents[2] / "examples"
INPUT = (1, 3, 224, 224)

# (file, builder, torchvision num_params, torchvision GMACs)
PUBLISHED = [
    ("resnet", "resnet18", 11_689_512, 1.814),
    ("resnet", "resnet34", 21_797_672, 3.664),
    ("resnet", "resnet50", 25_557_032, 4.089),
    ("resnet", "resnet101", 44_549_160, 7.801),
    ("resnet", "resnet152", 60_192_808, 11.514),
    ("resnet", "resnext50_32x4d", 25_028_904, 4.230),
    ("resnet", "wide_resnet50_2", 68_883_240, 11.398),
    ("vgg", "vgg11", 132_863_336, 7.609),
    ("vgg", "vgg16", 138_357_544, 15.470),
    ("vgg", "vgg16_bn", 138_365_992, 15.470),
    ("alexnet", "alexnet", 61_100_840, 0.714),
    ("densenet", "densenet121", 7_978_856, 2.834),
    ("squeezenet", "squeezenet1_0", 1_248_424, 0.819),
    ("squeezenet", "squeezenet1_1", 1_235_496, 0.349),
]

EXACT_MACS = [
    ("resnet", "resnet18", 1_814_073_344),
    ("resnet", "resnet50", 4_089_184_256),
    ("vgg", "vgg11", 7_609_090_048),
    ("vgg", "vgg16", 15_470_264_320),
    ("vgg", "vgg16_bn", 15_470_264_320),
]


def load(file: str) -> dict:
    """Run an example model file and return its top-level names."""
    return runpy.run_path(str(EXAMPLES / f"{file}.py"))


def totals(file: str, builder: str):
    """cnnir's report totals for one builder of one example file at 1x3x224x224."""
    return cnnir.analyze(load(file)[builder](), INPUT).totals


@pytest.mark.parametrize(("file", "builder", "params", "gmacs"), PUBLISHED)
def test_matches_torchvision_table(file: str, builder: str, params: int, gmacs: float) -> None:
    t = totals(file, builder)
    assert t.params == params
    assert isinstance(t.macs, int)
    assert round(t.macs / 1e9, 3) == gmacs


@pytest.mark.parametrize(("file", "builder", "macs"), EXACT_MACS)
def test_exact_macs(file: str, builder: str, macs: int) -> None:
    assert totals(file, builder).macs == macs


@pytest.mark.parametrize("file", ["resnet", "vgg", "alexnet", "densenet", "squeezenet"])
def test_file_declares_default_model(file: str) -> None:
    names = load(file)
    assert callable(names["model"])
    assert names["input_shape"] == INPUT


def test_resnet18_buffers() -> None:
    # 20 BatchNorm2d layers: running_mean + running_var (9,600 elements) + 20 num_batches_tracked
    t = totals("resnet", "resnet18")
    assert t.buffers == 2 * (64 * 5 + 128 * 5 + 256 * 5 + 512 * 5) + 20 == 9_620
