"""Whole example networks in training mode: the Numba backend's gradients against the
reference backend's, and the reference's against finite differences along random directions
(docs/semantics.md §8).

In float64 the Numba backward must agree with the reference to rounding (1e-9). In float32 a
pre-activation within ~1e-6 of a ReLU's kink (or two near-equal maxima of a pooling window)
can take the other side of it, which changes that element's gradient entirely and, through
the backward, every earlier layer's gradient by ~1e-2 in norm: ResNet-18 4.2e-3, GoogLeNet
3.1e-2 against the plain reference. So the float32 comparison runs the reference on the
Numba run's branches (``grad_testing.backend_gradients_pinned``): what is left is rounding.
Inputs are small, to keep the float64 reference quick, yet large enough that every BatchNorm
normalizes at least 16 values per channel (over 2 it is ill-conditioned; in float32 GoogLeNet
gets 32, see FLOAT32_SHAPES)."""

from __future__ import annotations

import runpy
from pathlib import Path

import grad_testing as gt
import numpy as np
import pytest

import cnnir
from cnnir import ops
from cnnir.frontend.module import manual_seed

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MODELS = [
    ("resnet.py", "resnet18", [(4, 3, 64, 64)]),
    ("mobilenet.py", "mobilenet_v2", [(4, 3, 64, 64)]),
    ("densenet.py", "densenet121", [(4, 3, 64, 64)]),
    ("inception.py", "googlenet", [(4, 3, 64, 64)]),
    ("shufflenet.py", "shufflenet_v2_x1_0", [(4, 3, 64, 64)]),
    ("unet.py", "unet", [(4, 3, 32, 32)]),
    ("deformable.py", "deformable_net", [(4, 3, 32, 32)]),
    ("siamese.py", "siamese", [(4, 1, 28, 28)] * 2),
    ("siamese.py", "triplet", [(4, 1, 28, 28)] * 3),
]


def training_graph(file: str, builder: str, shapes: list[tuple]) -> cnnir.Graph:
    manual_seed(0)  # the same weights whatever ran before in the process
    model = runpy.run_path(str(EXAMPLES / file))[builder]()
    return cnnir.trace(model, shapes, training=True, name=builder)


def arrays_for(graph: cnnir.Graph, seed: int = 0, jitter: float = 0.0) -> list[np.ndarray]:
    """Random inputs, then the model's parameters, each moved by ``jitter`` times its own
    scale of noise (off special points: a zero-initialized offset conv samples exactly on
    the pixel grid, where deform_conv2d's gradient is one-sided and finite differences,
    central, see the average of both sides)."""
    rng = np.random.default_rng(seed)
    params = [p + jitter * (np.abs(p).max() + 1e-2) * rng.standard_normal(p.shape)
              for p in gt.parameter_arrays(graph)]
    return [rng.standard_normal(v.type.shape) for v in graph.inputs] + params


@pytest.mark.parametrize(("file", "builder", "shapes"), MODELS, ids=[m[1] for m in MODELS])
def test_numba_gradients_match_the_reference_in_float64(file, builder, shapes) -> None:
    graph = training_graph(file, builder, shapes)
    gt.compare_normwise(graph, arrays_for(graph), 1e-9, dtype="float64", tune=False)


# FLOAT32_SHAPES: measured worst gradients in norm, float32 on the reference's pinned branches:
# ResNet-18 8.5e-6, MobileNetV2 5.3e-5, DenseNet-121 2.1e-5, GoogLeNet 4.1e-5, ShuffleNetV2
# 3.9e-5, U-Net 3.0e-6, the deformable net 2.6e-6, Siamese 5.5e-7, triplet 2.0e-6. GoogLeNet
# runs at batch 8 here: at 4×3×64×64 its inception5 BatchNorms normalize 16 values a channel (2×2
# planes), and dividing by a deviation from so few values amplifies rounding to 1.2e-4,
# spread over every layer (4.4e-5 at 96×96, 4.1e-5 at batch 8). Its finite-difference check
# stays at batch 4: at batch 8 it measured 2e-3 against the 1e-3 bound.
FLOAT32_SHAPES = {"googlenet": [(8, 3, 64, 64)]}


@pytest.mark.parametrize(("file", "builder", "shapes"), MODELS, ids=[m[1] for m in MODELS])
def test_numba_float32_gradients_match_the_reference_on_the_same_branches(file, builder,
                                                                           shapes) -> None:
    graph = training_graph(file, builder, FLOAT32_SHAPES.get(builder, shapes))
    gt.compare_normwise(graph, arrays_for(graph), 1e-4, pinned=True, tune=False)


@pytest.mark.parametrize(("file", "builder", "shapes"), MODELS, ids=[m[1] for m in MODELS])
def test_reference_gradients_match_finite_differences(file, builder, shapes) -> None:
    """docs/semantics.md §8's tolerance for gradients against finite differences (1e-3): over
    a whole network ε = 1e-6 meets both rounding and kinks."""
    graph = training_graph(file, builder, shapes)
    gt.directional_check(gt.gradient_graphs(graph), arrays_for(graph, jitter=1e-2), rtol=1e-3)


def test_pinned_branches_decide_the_reference_gradient() -> None:
    """The pinning itself, against the formula: a ReLU's gradient pinned at values v is
    ``dL/dy·[v > 0]`` with L = Σ r·(y + tanh y), y = relu(x), whatever the sign of x."""
    graph = cnnir.Graph("relu")
    x = graph.add_input("x", cnnir.TensorType((2, 3), "float64"))
    graph.set_outputs([graph.add_node(ops.relu, [x]).output])
    checked = gt.gradient_graphs(graph)
    x_val = np.array([[1.0, -2.0, 3e-7], [-3e-7, 0.5, -0.25]])
    v = np.array([[2.0, 1.0, -1.0], [1.0, -1.0, -3.0]])  # decisions unlike x's own
    pinned = gt.rebuild(checked.grads)
    gt.pin_branches(pinned, {n.name: v for n in gt.branch_inputs(pinned)})
    got = cnnir.compile(pinned, backend="reference")(x_val)[1]
    y = np.maximum(x_val, 0)
    rng = np.random.default_rng(7)  # add_weighted_tanh_loss's weights r, seed 7
    r = rng.uniform(0.5, 1.5, y.shape) * rng.choice([-1.0, 1.0], y.shape)
    assert np.allclose(got, r * (1 + 1 / np.cosh(y) ** 2) * (v > 0), rtol=1e-12, atol=0)
