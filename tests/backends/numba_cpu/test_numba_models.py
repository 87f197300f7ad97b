"""Whole example models on the Numba backend against the float64 reference executor, and the
input checks a compiled model makes at call time."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import example_network

import cnnir
from cnnir import nn

MODELS = [
    ("resnet.py", "resnet18", [(1, 3, 64, 64)]),
    ("mobilenet.py", "mobilenet_v2", [(2, 3, 64, 64)]),
    ("inception.py", "googlenet", [(1, 3, 64, 64)]),
    ("densenet.py", "densenet121", [(1, 3, 64, 64)]),
    ("shufflenet.py", "shufflenet_v2_x1_0", [(1, 3, 64, 64)]),
    ("mobilenet.py", "mobilenet_v3_small", [(1, 3, 64, 64)]),
    ("unet.py", "unet", [(1, 3, 32, 32)]),
    ("deformable.py", "deformable_net", [(2, 3, 32, 32)]),
    ("siamese.py", "triplet", [(2, 1, 28, 28)] * 3),
    ("attention.py", "cbam_resnet18", [(1, 3, 64, 64)]),
]


@pytest.mark.parametrize(("file", "name", "shapes"), MODELS, ids=[m[1] for m in MODELS])
def test_example_model_matches_reference(file: str, name: str, shapes: list) -> None:
    graph = cnnir.trace(example_network(file, name), shapes if len(shapes) > 1 else shapes[0])
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    got = cnnir.compile(graph)(*xs)
    ref = cnnir.compile(graph, backend="reference")(*[x.astype(np.float64) for x in xs])
    got, ref = (got, ref) if isinstance(got, tuple) else ((got,), (ref,))
    for g, r in zip(got, ref):
        scale = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def small() -> tuple[cnnir.Graph, object]:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    graph = cnnir.trace(model, ("N", 3, 8, 8))
    return graph, cnnir.compile(graph)


def test_wrong_input_count(small) -> None:
    _, run = small
    with pytest.raises(cnnir.CnnirError, match=r"takes 1 input"):
        run(np.zeros((1, 3, 8, 8), np.float32), np.zeros(1, np.float32))


def test_wrong_shape(small) -> None:
    _, run = small
    with pytest.raises(cnnir.CnnirError,
                       match=r"expects shape \[N, 3, 8, 8\] but got \[1, 4, 8, 8\]"):
        run(np.zeros((1, 4, 8, 8), np.float32))


def test_wrong_dtype_is_rejected_not_cast(small) -> None:
    _, run = small
    with pytest.raises(cnnir.CnnirError, match=r"must be float32 but got float64"):
        run(np.zeros((1, 3, 8, 8)))


def test_symbolic_batch_and_non_contiguous_input(small) -> None:
    graph, run = small
    rng = np.random.default_rng(0)
    big = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
    x = big[:, :, :, ::2]  # a strided view
    ref = cnnir.compile(graph, backend="reference")(x.astype(np.float64))
    np.testing.assert_allclose(run(x), ref, rtol=1e-5, atol=1e-6)
    assert run(x[:1]).shape == (1, 4, 4, 4)


def test_nan_propagates_like_pytorch(small) -> None:
    _, run = small
    x = np.zeros((1, 3, 8, 8), np.float32)
    x[0, 0, 0, 0] = np.nan
    y = run(x)
    assert np.isnan(y[:, :, 0, 0]).all() and not np.isnan(y[:, :, 2:, 2:]).any()


def test_outputs_are_not_overwritten_by_the_next_call(small) -> None:
    _, run = small
    a = run(np.ones((1, 3, 8, 8), np.float32))
    kept = a.copy()
    run(np.full((1, 3, 8, 8), -3.0, np.float32))
    np.testing.assert_array_equal(a, kept)
