"""On a real GPU (``pytest -m gpu tests_cuda``): every op of the shared table at its declared
shapes and batch 8, and the example networks at realistic sizes, against the float64 reference
executor within the float32 tolerances of docs/semantics.md §8."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES, Case, make_inputs, outputs, reference, trace
from op_helpers import assert_close, example_network

import cnnir

pytestmark = pytest.mark.gpu

MODELS = [
    ("resnet.py", "resnet18", [(8, 3, 224, 224)]),
    ("mobilenet.py", "mobilenet_v2", [(8, 3, 224, 224)]),
    ("densenet.py", "densenet121", [(2, 3, 224, 224)]),
    ("inception.py", "googlenet", [(2, 3, 224, 224)]),
    ("shufflenet.py", "shufflenet_v2_x1_0", [(8, 3, 224, 224)]),
    ("unet.py", "unet", [(2, 3, 128, 128)]),
    ("deformable.py", "deformable_net", [(4, 3, 64, 64)]),
    ("siamese.py", "triplet", [(8, 1, 28, 28)] * 3),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op_on_the_gpu(case: Case) -> None:
    graph = trace(case, 8)
    inputs = make_inputs(case, 8)
    got = outputs(cnnir.compile(graph, backend="cuda")(*inputs))
    for g, r in zip(got, reference(graph, inputs)):
        assert g.shape == r.shape
        assert_close(g, r, case.reduction)


@pytest.mark.parametrize(("file", "name", "shapes"), MODELS, ids=[m[1] for m in MODELS])
def test_example_network_on_the_gpu(file: str, name: str, shapes: list) -> None:
    graph = cnnir.trace(example_network(file, name), shapes if len(shapes) > 1 else shapes[0])
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    got = outputs(cnnir.compile(graph, backend="cuda")(*xs))
    ref = outputs(cnnir.compile(graph, backend="reference")(*[x.astype(np.float64) for x in xs]))
    for g, r in zip(got, ref):
        scale = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4 * scale)
