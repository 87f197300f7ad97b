"""The pooling, resizing and batch-norm kernels of the CUDA backend on what the shared op table
does not reach: NaN and −∞ in max pooling, windows longer than a block, batch statistics on
(N, C) and (N, C, L) inputs and far from zero, statistics fed as graph inputs, float64."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import outputs, reference
from op_helpers import T, assert_close

import cnnir
from cnnir import nn, ops
from cnnir.ops.norm import BatchNormAttrs


def run_both(graph: cnnir.Graph, inputs: list[np.ndarray], dtype: str = "float32") -> tuple:
    got = outputs(cnnir.compile(graph, backend="cuda", dtype=dtype)(*inputs))
    return got, reference(graph, inputs)


def traced(module: nn.Module, shape: tuple[int, ...]) -> cnnir.Graph:
    return cnnir.trace(module, [T(*shape)])


@pytest.mark.parametrize("module", [nn.MaxPool2d(3, 2, 1, ceil_mode=True),
                                    nn.AdaptiveMaxPool2d((2, 3)), nn.AdaptiveMaxPool2d(1)],
                         ids=["max-pool", "adaptive-max", "global-max"])
def test_max_pooling_propagates_nan_and_pads_with_minus_infinity(module: nn.Module) -> None:
    x = -np.abs(np.random.default_rng(0).standard_normal((1, 2, 7, 9))).astype(np.float32) - 1
    x[0, 0, 3, 4] = np.nan
    x[0, 1, 0, 0] = np.nan  # in a padded corner window
    x[0, 1, 4:, 5:] = -np.inf  # whole windows of −∞
    got, ref = run_both(traced(module, x.shape), [x])
    assert np.isnan(got[0]).any()
    np.testing.assert_array_equal(got[0], ref[0])  # a max is exact; NaN and −∞ where expected
    assert (got[0][~np.isnan(got[0])] < 0).all()  # padding never gives 0


@pytest.mark.parametrize("module, reduction", [
    (nn.AdaptiveAvgPool2d(1), 600), (nn.AdaptiveMaxPool2d(1), 1),
    (nn.AdaptiveAvgPool2d((1, 2)), 300)])
def test_adaptive_windows_longer_than_a_block(module: nn.Module, reduction: int) -> None:
    x = np.random.default_rng(1).standard_normal((1, 2, 20, 30)).astype(np.float32) + 3
    got, ref = run_both(traced(module, x.shape), [x])
    assert_close(got[0], ref[0], reduction)


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 5), (2, 3, 4, 5)])
def test_batch_statistics_any_rank_far_from_zero(shape: tuple[int, ...]) -> None:
    module = (nn.BatchNorm1d if len(shape) < 4 else nn.BatchNorm2d)(shape[1]).train()
    rng = np.random.default_rng(2)
    x = (1000 + 0.01 * rng.standard_normal(shape)).astype(np.float32)
    got, ref = run_both(traced(module, shape), [x])
    count = x.size // shape[1]
    assert_close(got[0], ref[0], count)
    assert np.abs(got[0].mean(axis=tuple(i for i in range(len(shape)) if i != 1))).max() < 1e-3


def test_batch_statistics_over_more_values_than_threads() -> None:
    x = np.random.default_rng(3).standard_normal((3, 2, 13, 11)).astype(np.float32) * 5 - 2
    got, ref = run_both(traced(nn.BatchNorm2d(2).train(), x.shape), [x])
    assert_close(got[0], ref[0], 429)


@pytest.mark.parametrize("affine", [True, False])
def test_running_statistics_fed_as_graph_inputs(affine: bool) -> None:
    g = cnnir.Graph("bn-inputs")
    x = g.add_input("x", T(2, 3, 4, 4))
    stats = [g.add_input(name, T(3)) for name in ("mean", "var", *(("w", "b") if affine else ()))]
    rest = [None, None] if not affine else []
    node = g.add_node(ops.batch_norm, [x, *stats, *rest], BatchNormAttrs(eps=1e-3))
    g.set_outputs([node.output])
    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal((2, 3, 4, 4)), rng.standard_normal(3),
              np.exp(rng.uniform(-6, 1, 3)), *(rng.standard_normal((2, 3)) if affine else ())]
    inputs = [a.astype(np.float32) for a in inputs]
    got, ref = run_both(g, inputs)
    assert_close(got[0], ref[0])


@pytest.mark.parametrize("module, shape", [
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (1, 2, 8, 9)),
    (nn.MaxPool2d(3, 2, 1), (1, 2, 8, 9)),
    (nn.Upsample(scale_factor=1.5, mode="bilinear"), (1, 2, 5, 7)),
    (nn.AdaptiveAvgPool2d(1), (1, 2, 9, 9)),
    (nn.BatchNorm2d(2).train(), (2, 2, 3, 3))], ids=["avg", "max", "bilinear", "global", "bn"])
def test_float64_programs(module: nn.Module, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(5).standard_normal(shape)
    got, ref = run_both(traced(module, shape), [x], dtype="float64")
    assert got[0].dtype == np.float64
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-10, atol=1e-10)
