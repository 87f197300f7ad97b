"""The CUDA kernels of group_norm, layer_norm, group_norm_grad, hardtanh, softplus, mish and
param_activation_grad, in the simulator, against the float64 reference executor: one-node
graphs with tiny shapes (the op table, tests/op_cases.py, runs their forwards through
tests_cuda/test_cuda_ops.py), and one whole gradient graph on the GPU."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import assert_close
from test_cuda_grads import T, check

import cnnir
from cnnir import nn, ops
from cnnir.grad import sum_of_outputs
from cnnir.ops import activation as activation_ops
from cnnir.ops import norm as norm_ops
from cnnir.ops.activation import ActivationGradAttrs

GN = norm_ops.GroupNormAttrs
GN_GRAD = norm_ops.GroupNormGradAttrs


@pytest.mark.parametrize(("types", "attrs"), [
    ([T(2, 4, 3, 3), T(4), T(4)], GN(2)),
    ([T(2, 6, 5), None, None], GN(6, eps=1e-3)),  # instance norm, no affine
    ([T(3, 4), T(4), None], GN(1)),
], ids=["groups-affine", "instance-no-affine", "2d-one-group"])
def test_group_norm(types, attrs) -> None:
    check(ops.group_norm, types, attrs, reduction=18)


@pytest.mark.parametrize(("types", "shape"), [
    ([T(2, 3, 5), T(5), T(5)], (5,)),
    ([T(2, 3, 4), T(3, 4), None], (3, 4)),
    ([T(3, 6), None, None], (6,)),
], ids=["last-dim", "two-dims-no-bias", "no-affine"])
def test_layer_norm(types, shape) -> None:
    check(ops.layer_norm, types, norm_ops.LayerNormAttrs(shape), reduction=12)


@pytest.mark.parametrize(("types", "outputs"), [
    ([T(2, 4, 3, 3), T(4), T(2, 4, 3, 3)], ("input", "weight", "bias")),
    ([T(2, 4, 3, 3), None, T(2, 4, 3, 3)], ("input",)),
    ([T(3, 4, 5), T(4), T(3, 4, 5)], ("weight", "bias")),
], ids=["all", "input-no-weight", "params-only"])
def test_group_norm_grad(types, outputs) -> None:
    check(norm_ops.group_norm_grad, types, GN_GRAD(2, outputs=outputs), reduction=30)


ACTIVATIONS = [(ops.hardtanh, ops.hardtanh.attrs(-0.5, 1.5)),
               (ops.softplus, ops.softplus.attrs(2.0, 1.0)), (ops.mish, None)]
IDS = [op.name for op, _ in ACTIVATIONS]


@pytest.mark.parametrize(("op", "attrs"), ACTIVATIONS, ids=IDS)
def test_activation(op, attrs) -> None:
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(2, 3, 4) + 0.01
    check(op, [T(2, 3, 4)], attrs, arrays=[x])


@pytest.mark.parametrize(("op", "attrs"), ACTIVATIONS, ids=IDS)
def test_param_activation_grad(op, attrs) -> None:
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(2, 3, 4) + 0.01
    g = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    check(activation_ops.param_activation_grad, [T(2, 3, 4), T(2, 3, 4)],
          ActivationGradAttrs(op, attrs), arrays=[x, g])


def test_whole_gradient_graph_on_the_gpu() -> None:
    """A layer-norm, group-norm and softplus network's loss and gradients, every op on the
    GPU, against the reference."""
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.GroupNorm(2, 4), nn.Mish(),
                          nn.LayerNorm((3, 3)), nn.Softplus(beta=2.0), nn.Hardtanh(-0.5, 2.0))
    graph = cnnir.grad_graph(model, sum_of_outputs, inputs=(2, 2, 3, 3))
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    want = cnnir.compile(graph, backend="reference")(x)
    got = cnnir.compile(graph, backend="cuda", optimize=False)(x.astype(np.float32))
    for a, e in zip(got, want):
        assert_close(a, e, 36)
