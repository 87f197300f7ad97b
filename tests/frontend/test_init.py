"""``nn.init``'s fills against their formulas, in float32 (drawn as float32) and float64: the
range of uniform and truncated normal draws, the mean and variance of uniform and normal
draws within five standard errors, kaiming_uniform_'s bound, and seeds that repeat."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnir import nn

N = 200_000


def param(dtype: str, shape=(N,)) -> nn.Parameter:
    return nn.Parameter(shape, dtype=dtype)


def assert_moments(x: np.ndarray, mean: float, var: float) -> None:
    x = x.astype(np.float64)
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / x.size)
    # the variance of a sample variance: (m4 - var²)/n, m4 ≤ 3 var² for these laws
    assert abs(x.var() - var) < 5 * math.sqrt(2 * var * var / x.size)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uniform_stays_in_range_with_its_moments(dtype: str) -> None:
    p = nn.init.uniform_(param(dtype), -0.5, 1.5)
    x = p.data
    assert x.dtype == np.dtype(dtype)
    assert x.min() >= -0.5 and x.max() <= 1.5
    assert_moments(x, 0.5, 4 / 12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal_has_its_moments(dtype: str) -> None:
    x = nn.init.normal_(param(dtype), 2.0, 3.0).data
    assert x.dtype == np.dtype(dtype)
    assert_moments(x, 2.0, 9.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trunc_normal_redraws_outside_its_bounds(dtype: str) -> None:
    x = nn.init.trunc_normal_(param(dtype), 0.0, 1.0, -0.5, 1.0).data
    assert x.dtype == np.dtype(dtype)
    assert x.min() >= -0.5 and x.max() <= 1.0
    assert x.min() < -0.49 and x.max() > 0.99


def test_kaiming_uniform_bound_follows_fan_in() -> None:
    p = nn.init.kaiming_uniform_(param("float32", (64, 32, 3, 3)), a=math.sqrt(5))
    bound = math.sqrt(2 / (1 + 5)) * math.sqrt(3 / (32 * 9))
    x = p.data
    assert np.abs(x).max() <= bound and np.abs(x).max() > 0.99 * bound


def test_the_same_seed_gives_the_same_values() -> None:
    nn.manual_seed(7)
    first = nn.Conv2d(4, 8, 3).weight.data
    nn.manual_seed(7)
    np.testing.assert_array_equal(nn.Conv2d(4, 8, 3).weight.data, first)
