"""The pooling padding limits are ATen's, checked in ATen's order and worded as ATen words them
(docs/semantics.md §1.7): the output-shape function's ``p ≤ ⌊(d(k−1)+1)/2⌋`` ("at most half
of effective kernel size"), then the pooling shape check's ``p ≤ ⌊k/2⌋`` ("smaller than or
equal to half of kernel size"), which dilation does not relax. The largest paddings allowed
with dilation run against a float64 loop on the reference and numba backends and in
onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import cnnir
import cnnir.nn.functional as F
from cnnir import nn
from cnnir.errors import ShapeError
from cnnir.ops.pool import AvgPoolAttrs, PoolAttrs

EFFECTIVE = "pad should be at most half of effective kernel size"
KERNEL = "pad should be smaller than or equal to half of kernel size"

# (kernel, padding, dilation, ATen's verdict): what torch 2.x's max_pool2d says
MAX_CASES = [(3, 2, 2, KERNEL), (3, 3, 2, EFFECTIVE), (2, 2, 2, EFFECTIVE), (2, 2, 3, KERNEL),
             (3, 2, 1, EFFECTIVE), (5, 3, 1, EFFECTIVE), (2, 1, 1, None), (4, 2, 1, None),
             (3, 1, 2, None), (4, 2, 2, None), (5, 2, 3, None)]
AVG_CASES = [(2, 1, None), (3, 1, None), (3, 2, EFFECTIVE), (4, 2, None), (5, 3, EFFECTIVE)]


@pytest.mark.parametrize(("k", "p", "d", "verdict"), MAX_CASES)
def test_max_pool_padding_limits_are_aten_s(k, p, d, verdict):
    if verdict is None:
        PoolAttrs(kernel_size=k, padding=p, dilation=d)
        return
    with pytest.raises(ShapeError, match=verdict) as info:
        PoolAttrs(kernel_size=k, padding=p, dilation=d)
    assert f"padding=({p}, {p})" in str(info.value) and f"kernel_size=({k}, {k})" in str(
        info.value)
    if verdict == EFFECTIVE:
        assert f"effective kernel size {d * (k - 1) + 1}" in str(info.value)


@pytest.mark.parametrize(("k", "p", "verdict"), AVG_CASES)
def test_avg_pool_padding_limit_is_half_the_kernel(k, p, verdict):
    if verdict is None:
        AvgPoolAttrs(kernel_size=k, padding=p)
    else:
        with pytest.raises(ShapeError, match=verdict):
            AvgPoolAttrs(kernel_size=k, padding=p)


class Pool(nn.Module):
    def __init__(self, k: int, p: int, d: int) -> None:
        super().__init__()
        self.k, self.p, self.d = k, p, d

    def forward(self, x):
        return F.max_pool2d(x, self.k, 1, self.p, dilation=self.d)


def test_the_issue_s_call_is_refused_like_torch_naming_the_line():
    with pytest.raises(ShapeError) as info:
        cnnir.trace(Pool(3, 2, 2), (1, 1, 8, 8))
    text = str(info.value)
    assert KERNEL in text and "test_pool_padding_rule.py" in text
    assert "effective" not in text  # the effective kernel (5) allows padding 2


def max_pool_loops(x: np.ndarray, k: int, p: int, d: int) -> np.ndarray:
    """Stride 1: y[i, j] = max over taps inside the image of x[i − p + d·a, j − p + d·b]."""
    n, c, h, w = x.shape
    oh, ow = h + 2 * p - d * (k - 1), w + 2 * p - d * (k - 1)
    y = np.full((n, c, oh, ow), -np.inf)
    for i in range(oh):
        for j in range(ow):
            for a in range(k):
                for b in range(k):
                    r, s = i - p + d * a, j - p + d * b
                    if 0 <= r < h and 0 <= s < w:
                        y[:, :, i, j] = np.maximum(y[:, :, i, j], x[:, :, r, s])
    return y


@pytest.mark.parametrize(("k", "p", "d"), [(3, 1, 2), (4, 2, 2), (5, 2, 3)])
def test_dilated_pools_at_the_padding_limit(tmp_path, k, p, d):
    x = np.random.default_rng(k).standard_normal((1, 2, 12, 11))
    want = max_pool_loops(x, k, p, d)
    graph = cnnir.trace(Pool(k, p, d), (1, 2, 12, 11))
    for backend in ("reference", "numba"):
        got = cnnir.compile(graph, backend=backend, dtype="float64")(x)
        np.testing.assert_allclose(got, want, rtol=0, atol=0)
    path = str(tmp_path / "pool.onnx")
    cnnir.export_onnx(graph, path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=0, atol=0)
