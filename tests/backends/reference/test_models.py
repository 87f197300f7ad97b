"""Whole models traced with the DSL and run on the reference backend: shapes, finiteness,
batch independence in eval mode, BN training statistics, and one net computed by hand."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

import cnnir
from cnnir import nn
from cnnir.ir import TensorType

EXAMPLES = Path(__file__).parents[3] / "examples"


def example(file: str, builder: str) -> nn.Module:
    model = runpy.run_path(str(EXAMPLES / file))[builder]()
    return model.eval()


def compile_ref(model: nn.Module, spec, training: bool = False):
    graph = cnnir.trace(model, spec, training=training)
    return cnnir.compile(graph, backend="reference", dtype="float64")


@pytest.mark.parametrize("file, builder, shape, out", [
    ("cifar.py", "small_cifar", (2, 3, 32, 32), (2, 10)),
    ("unet.py", "unet", (1, 3, 32, 32), (1, 2, 32, 32)),
    ("deformable.py", "deformable_net", (1, 3, 32, 32), (1, 10)),
    ("resnet.py", "resnet18", (1, 3, 64, 64), (1, 1000)),
    ("shufflenet.py", "shufflenet_v2_x1_0", (1, 3, 64, 64), (1, 1000)),
    ("mobilenet.py", "mobilenet_v2", (1, 3, 64, 64), (1, 1000)),
])
def test_example_models_run(rng, file, builder, shape, out):
    run = compile_ref(example(file, builder), shape)
    y = run(rng.standard_normal(shape))
    assert y.shape == out and y.dtype == np.float64 and np.isfinite(y).all()
    assert np.abs(y).max() > 0


def test_eval_outputs_do_not_depend_on_the_rest_of_the_batch(rng):
    run = compile_ref(example("cifar.py", "small_cifar"), TensorType(("N", 3, 32, 32)))
    x = rng.standard_normal((3, 3, 32, 32))
    batched = run(x)
    for i in range(3):
        np.testing.assert_allclose(run(x[i:i + 1])[0], batched[i], rtol=1e-12, atol=1e-12)


def test_deformable_block_with_learned_offsets(rng):
    model = example("deformable.py", "deformable_net")
    state = model.state_dict()
    for key in ("features.4.offset.weight", "features.4.mask.weight"):
        state[key] = 0.3 * rng.standard_normal(state[key].shape)
    model.load_state_dict(state)
    y = compile_ref(model, (1, 3, 32, 32))(rng.standard_normal((1, 3, 32, 32)))
    assert y.shape == (1, 10) and np.isfinite(y).all()


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(cnnir.flatten(self.pool(cnnir.relu(self.conv(x))), 1))


def test_tiny_net_matches_a_hand_computation(rng):
    model = TinyNet()
    # parameters are stored as float32: draw values that float32 holds exactly
    cw, cb, fw, fb = (rng.standard_normal(s).astype(np.float32).astype(np.float64)
                      for s in ((3, 2, 1, 1), (3,), (2, 3), (2,)))
    model.load_state_dict({"conv.weight": cw, "conv.bias": cb, "fc.weight": fw, "fc.bias": fb})
    x = rng.standard_normal((2, 2, 3, 4))
    want = np.zeros((2, 2))
    for n in range(2):
        pooled = []
        for o in range(3):
            acts = [max(cb[o] + cw[o, 0, 0, 0] * x[n, 0, h, w] + cw[o, 1, 0, 0] * x[n, 1, h, w],
                        0.0) for h in range(3) for w in range(4)]
            pooled.append(sum(acts) / 12)
        for k in range(2):
            want[n, k] = fb[k] + sum(fw[k, o] * pooled[o] for o in range(3))
    np.testing.assert_allclose(compile_ref(model, (2, 2, 3, 4))(x), want, rtol=1e-12)


def test_training_mode_uses_batch_statistics_and_dropout(rng):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    y = compile_ref(model, (4, 3, 6, 6), training=True)(rng.standard_normal((4, 3, 6, 6)) + 5)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-3)
    drop = nn.Sequential(nn.Dropout(0.5))
    out = compile_ref(drop, (1000,), training=True)(np.ones(1000))
    assert set(np.unique(out)) == {0.0, 2.0}
    np.testing.assert_array_equal(compile_ref(drop, (1000,))(np.ones(1000)), 1.0)
