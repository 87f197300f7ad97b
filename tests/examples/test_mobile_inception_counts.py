"""Parameter and MAC totals of the mobile and Inception example models.

torchvision-equivalent builders must reproduce torchvision's published metadata
(docs/semantics.md §6.2): ``params`` exactly and ``round(macs / 1e9, 3)`` equal to the GMAC
column. MobileNet v1 has no torchvision entry, so it is checked against a closed form.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

import cnnir

EXAMPLES = Path(__file__).parents[2] / "examples"

# (file, builder, torchvision num_params, torchvision GMACs)
TORCHVISION = [
    ("inception.py", "googlenet", 6_624_904, 1.498),
    ("inception.py", "inception_v3", 27_161_264, 5.713),
    ("mobilenet.py", "mobilenet_v2", 3_504_872, 0.301),
    ("mobilenet.py", "mobilenet_v3_large", 5_483_032, 0.217),
    ("mobilenet.py", "mobilenet_v3_small", 2_542_856, 0.057),
    ("shufflenet.py", "shufflenet_v2_x1_0", 2_278_604, 0.145),
    ("mnasnet.py", "mnasnet1_0", 4_383_312, 0.314),
]


def analyze_example(file: str, name: str):
    """Build ``name`` from ``examples/file`` and analyze it at its declared input shape."""
    namespace = runpy.run_path(str(EXAMPLES / file))
    builder = namespace[name]
    shape = getattr(builder, "input_shape", namespace["input_shape"])
    return cnnir.analyze(builder(), shape)


@pytest.mark.parametrize(("file", "name", "params", "gmacs"), TORCHVISION)
def test_matches_torchvision_metadata(file: str, name: str, params: int, gmacs: float) -> None:
    totals = analyze_example(file, name).totals
    assert totals.params == params
    assert round(totals.macs / 1e9, 3) == gmacs


def test_mobilenet_v2_exact_macs() -> None:
    assert analyze_example("mobilenet.py", "mobilenet_v2").totals.macs == 300_774_272


def mobilenet_v1_closed_form() -> tuple[int, int]:
    """Params and MACs of MobileNet v1 (width 1.0, 224x224) summed layer by layer.

    Stem: 3x3 conv 3->32, stride 2, to 112x112. Each depthwise-separable block
    (c_in -> c_out at output size s) has a 3x3 depthwise conv (9*c_in weights) and a
    1x1 conv (c_in*c_out weights), each followed by BatchNorm (2 params per channel).
    Classifier: 1024->1000 linear with bias. Convs have no bias.
    """
    blocks = [  # (c_in, c_out, output size)
        (32, 64, 112), (64, 128, 56), (128, 128, 56), (128, 256, 28), (256, 256, 28),
        (256, 512, 14), (512, 512, 14), (512, 512, 14), (512, 512, 14), (512, 512, 14),
        (512, 512, 14), (512, 1024, 7), (1024, 1024, 7),
    ]
    params = 3 * 32 * 3 * 3 + 2 * 32 + 1024 * 1000 + 1000
    macs = 32 * 112 * 112 * 3 * 3 * 3 + 1024 * 1000
    for c_in, c_out, s in blocks:
        params += 9 * c_in + 2 * c_in + c_in * c_out + 2 * c_out
        macs += s * s * (9 * c_in + c_in * c_out)
    return params, macs


def test_mobilenet_v1_closed_form() -> None:
    params, macs = mobilenet_v1_closed_form()
    # The paper's 4.2M parameters and 569M mult-adds.
    assert (params, macs) == (4_231_976, 568_740_352)
    totals = analyze_example("mobilenet.py", "mobilenet_v1").totals
    assert (totals.params, totals.macs) == (params, macs)


@pytest.mark.parametrize(
    ("file", "default"),
    [("inception.py", "googlenet"), ("mobilenet.py", "mobilenet_v2"),
     ("shufflenet.py", "shufflenet_v2_x1_0"), ("mnasnet.py", "mnasnet1_0")],
)
def test_default_model(file: str, default: str) -> None:
    namespace = runpy.run_path(str(EXAMPLES / file))
    assert namespace["model"] is namespace[default]
    assert namespace["input_shape"] == (1, 3, 224, 224)
