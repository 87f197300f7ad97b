"""Lowerings of linear, linear_fused and matmul.

A linear layer with a few rows streams its weights once: one row as dot products
(``gk.linear_small_batch``, memory-bound on the weights), 2 to 16 rows in float32 four rows
to a weight vector (``gk.linear_rows``: MobileNetV2's classifier at batch 8 ran 281 us as dot
products, 96 so); more rows are a BLAS GEMM on the pre-transposed weights, split over cnnir's
worker threads (``blas``). linear_fused adds its residual and activation as an epilogue pass.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.blas import matmul as gemm
from cnnir.backends.numba_cpu.blas import single_threaded_blas
from cnnir.backends.numba_cpu.epilogue import epilogue_step, fused_epilogue
from cnnir.backends.numba_cpu.kernels import gemm as gk
from cnnir.backends.numba_cpu.kernels.jit import bound
from cnnir.backends.numba_cpu.program import lower
from cnnir.ir import Node, Value


def linear_step(b: Builder, x: np.ndarray, weight: Value, shift: np.ndarray | None,
                out2: np.ndarray) -> Step:
    """``out2 = x·wᵀ (+ shift)`` over the rows of ``x`` flattened to [rows, in_features]."""
    w = b.array(weight)
    x2 = x.reshape(-1, w.shape[1])
    if x2.shape[0] <= gk.SMALL_BATCH:
        shift = shift if shift is not None else np.zeros(w.shape[0], b.dtype)
        if x2.shape[0] > 1 and b.dtype == np.float32:
            blocks = b.derived([weight], "feature-blocks", lambda: feature_blocks(w))
            return bound(gk.linear_rows.sized(w.size), x2, blocks, shift, out2)
        kernel = gk.linear_small_batch.sized(w.size)
        zero = b.dtype.type(0)
        return bound(kernel, x2, w, shift, out2, zero)
    wt = b.derived([weight], "transposed", lambda: np.ascontiguousarray(w.T))

    def step() -> None:
        gemm(x2, wt, out2)
        if shift is not None:
            np.add(out2, shift, out=out2)

    return step


def feature_blocks(w: np.ndarray) -> np.ndarray:
    """``gk.linear_rows``'s weights: w's rows zero-padded to whole blocks of LINEAR_BLOCK
    features, each block transposed [in, LINEAR_BLOCK] and contiguous."""
    out_features, in_features = w.shape
    padded = np.zeros((-(-out_features // gk.LINEAR_BLOCK) * gk.LINEAR_BLOCK, in_features),
                      np.float32)
    padded[:out_features] = w
    return np.ascontiguousarray(
        padded.reshape(-1, gk.LINEAR_BLOCK, in_features).transpose(0, 2, 1))


@lower(ops.linear)
def linear(b: Builder, node: Node) -> Step:
    x, weight, bias = node.inputs
    out = b.array(node.output)
    return linear_step(b, b.array(x), weight, b.array(bias), out.reshape(-1, out.shape[-1]))


@lower(ops.linear_fused)
def linear_fused(b: Builder, node: Node) -> Step:
    """The product with its bias, then residual and activation over the output viewed as
    [rows, out_features, 1]."""
    out = b.array(node.output)
    out2 = out.reshape(-1, out.shape[-1])
    ep = fused_epilogue(b, node, out.shape[-1])
    product = linear_step(b, b.array(node.inputs[0]), node.inputs[1], ep.shift, out2)
    ep.shift = np.zeros_like(ep.shift)  # the product added the bias
    if ep.trivial:
        return product
    finish = epilogue_step(out2[:, :, None], out2[:, :, None], ep)

    def step() -> None:
        product()
        finish()

    return step


@lower(ops.matmul)
def matmul(b: Builder, node: Node) -> Step:
    x, y = (b.array(v) for v in node.inputs)
    out = b.array(node.output)

    def step() -> None:
        with single_threaded_blas():
            np.matmul(x, y, out=out)

    return step
