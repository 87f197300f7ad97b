"""Every convolution algorithm of the Numba backend, forced with ``tune="<name>"``, against the
float64 reference executor, on geometries that reach its edge cases: output channels not a
multiple of the micro-kernel's rows, pixel counts that end in each of its tile widths and a
ragged tail (computed from this run's host profile, ``simd``: CI runs this file on the AVX-512
path and again with ``CNNIR_ISA=avx2``), groups, strides, dilation, odd sizes, paddings, and
the fused epilogue (bias, residual, activation)."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import T, assert_close, fused_graph

import cnnir
from cnnir import ops
from cnnir.backends.numba_cpu.kernels import simd, stencil
from cnnir.ops.activation import LeakyReluAttrs
from cnnir.ops.fused import Conv2dFusedAttrs


def conv_attrs(stride=1, padding=0, dilation=1, groups=1, **fused) -> Conv2dFusedAttrs:
    return Conv2dFusedAttrs(stride=(stride, stride), padding=(padding,) * 4,
                            dilation=(dilation, dilation), groups=groups, **fused)


L = simd.LANES
MASKED_DEPTHWISE = simd.MASKED_LOADS_NATIVE  # depthwise-3x3-masked is offered there only
# (algorithm, input shape, weight shape, attrs), the weight [out, in/groups, kh, kw]
GEOMETRIES = [
    ("pointwise-microkernel", (2, 13, 5, 7), (21, 13, 1, 1), {}),  # 35 px: 24 + 8 + 3
    ("pointwise-microkernel", (1, 40, 7, 7), (16, 40, 1, 1), {}),  # 49 px: 48 + 1
    ("pointwise-microkernel", (3, 3, 4, 4), (5, 3, 1, 1), {}),  # 16 px, 5 rows
    ("im2col-microkernel", (2, 6, 9, 11), (12, 2, 3, 3), dict(stride=2, padding=1, groups=3)),
    ("im2col-microkernel", (1, 5, 10, 8), (9, 5, 3, 3), dict(padding=2, dilation=2)),
    ("im2col-microkernel", (2, 3, 15, 15), (10, 3, 7, 7), dict(stride=2, padding=3)),
    ("im2col-microkernel", (1, 4, 6, 6), (8, 4, 1, 1), dict(stride=2)),
    ("im2col-microkernel", (1, 2, 5, 1), (3, 2, 3, 3), dict(stride=2, padding=1)),  # 1 wide
    ("im2col-microkernel", (1, 3, 9, 10), (4, 3, 5, 5), dict(stride=2, padding=2)),
    ("im2col-microkernel", (2, 2, 8, 9), (3, 2, 4, 4), dict(stride=2)),
    # direct: bands of rows cut per image, a padded copy split by column phase
    ("direct-microkernel", (2, 3, 9, 2 * L + 3), (12, 3, 3, 3), dict(stride=2, padding=1)),
    ("direct-microkernel", (1, 5, 10, L + 5), (9, 5, 3, 3), dict(padding=2, dilation=2)),
    ("direct-microkernel", (2, 3, 15, 2 * L + 7), (10, 3, 7, 7), dict(stride=2, padding=3)),
    ("direct-microkernel", (1, 4, 6, 2 * L), (8, 4, 1, 1), dict(stride=2)),
    ("direct-microkernel", (1, 3, 9, 3 * L + 1), (4, 3, 5, 5), dict(stride=3, padding=2)),
    ("direct-microkernel", (3, 2, 8, 2 * L + 5), (3, 2, 4, 4), dict(stride=2)),  # unread columns
    ("direct-microkernel", (1, 3, 40, L + 1), (17, 3, 3, 3), dict(padding=1)),  # many bands
    # rows narrower than a vector, several to a panel (masked copies); two bands of 15 rows,
    # their panels ending mid-row; one band per thread of 32 and 35 output channels
    ("direct-microkernel", (2, 5, 9, 5), (19, 5, 3, 3), dict(padding=1)),
    ("direct-microkernel", (1, 16, 30, 6), (24, 16, 3, 3), dict(padding=1)),
    ("direct-microkernel", (1, 64, 4, 4), (67, 64, 3, 3), dict(padding=1)),
    ("winograd-f2x2-3x3", (2, 6, 9, 11), (10, 6, 3, 3), dict(padding=1)),
    ("winograd-f2x2-3x3", (1, 5, 8, 8), (9, 5, 3, 3), {}),
    ("winograd-f2x2-3x3", (1, 4, 7, 6), (4, 4, 3, 3), dict(padding=2)),
    ("winograd-f2x2-3x3", (2, 3, 9, 35), (5, 3, 3, 3), dict(padding=1)),  # 18 tiles a row
    ("winograd-f2x2-3x3", (1, 3, 6, 20), (5, 3, 3, 3), dict(padding=1)),  # 10
    ("winograd-f2x2-3x3", (1, 2, 6, 133), (3, 2, 3, 3), dict(padding=2)),  # 68
    ("winograd-f4x4-3x3", (2, 6, 9, 11), (10, 6, 3, 3), dict(padding=1)),  # ragged tiles
    ("winograd-f4x4-3x3", (1, 5, 8, 8), (9, 5, 3, 3), {}),  # whole tiles, no padding
    ("winograd-f4x4-3x3", (1, 4, 7, 6), (4, 4, 3, 3), dict(padding=2)),
    ("winograd-f4x4-3x3", (1, 3, 3, 3), (2, 3, 3, 3), dict(padding=1)),  # one tile, all border
    ("winograd-f4x4-3x3", (2, 3, 30, 22), (5, 3, 3, 3), dict(padding=1)),  # chunks span planes
    ("winograd-f4x4-3x3", (1, 2, 6, 270), (3, 2, 3, 3), dict(padding=2)),  # 68 tiles a row
    # pixel-gemm needs C·kh·kw >= 256: odd batch (jobs cut by pixel blocks), even batch
    # (whole images), rows narrower and wider than a block, strides, dilation, a 1x1
    ("pixel-gemm-microkernel", (1, 29, 7, 7), (37, 29, 3, 3), dict(padding=1)),
    ("pixel-gemm-microkernel", (2, 30, 9, 11), (21, 30, 3, 3), dict(stride=2, padding=1)),
    ("pixel-gemm-microkernel", (3, 16, 10, 10), (5, 16, 5, 5), dict(padding=3, dilation=2)),
    ("pixel-gemm-microkernel", (1, 260, 6, 7), (9, 260, 1, 1), dict(stride=2)),
    ("pixel-gemm-microkernel", (1, 3, 21, 19), (7, 3, 11, 11), dict(stride=3, padding=2)),
    ("depthwise-phases", (2, 8, 9, 11), (8, 1, 3, 3), dict(padding=1, groups=8)),
    ("depthwise-phases", (1, 6, 12, 13), (6, 1, 3, 3), dict(stride=2, padding=1, groups=6)),
    ("depthwise-phases", (1, 6, 11, 11), (6, 1, 3, 3), dict(stride=2, groups=6)),
    ("depthwise-phases", (2, 4, 10, 9), (8, 1, 5, 5), dict(stride=2, padding=2, groups=4)),
    ("depthwise-phases", (1, 3, 16, 14), (3, 1, 7, 7), dict(stride=3, padding=3, groups=3)),
    ("depthwise-direct", (1, 4, 11, 9), (4, 1, 3, 3), dict(padding=2, dilation=2, groups=4)),
    ("depthwise-3x3-flat", (2, 8, 7, 7), (8, 1, 3, 3), dict(padding=1, groups=8)),
    ("depthwise-3x3-flat", (1, 3, 5, 13), (6, 1, 3, 3), dict(padding=1, groups=3)),
    ("depthwise-3x3-flat", (1, 4, 1, 2), (4, 1, 3, 3), dict(padding=1, groups=4)),
    ("depthwise-3x3-flat", (1, 4, 5, 1), (4, 1, 3, 3), dict(padding=1, groups=4)),
    ("depthwise-3x3-flat", (2, 6, 14, 14), (6, 1, 3, 3), dict(stride=2, padding=1, groups=6)),
    ("depthwise-3x3-flat", (1, 3, 9, 11), (6, 1, 3, 3), dict(stride=2, padding=1, groups=3)),
    ("depthwise-3x3-flat", (1, 2, 1, 1), (2, 1, 3, 3), dict(stride=2, padding=1, groups=2)),
    ("depthwise-3x3-rows", (2, 8, 7, 7), (8, 1, 3, 3), dict(padding=1, groups=8)),
    ("depthwise-3x3-rows", (1, 3, 5, 13), (6, 1, 3, 3), dict(padding=1, groups=3)),
    ("depthwise-3x3-rows", (1, 4, 1, 2), (4, 1, 3, 3), dict(padding=1, groups=4)),
    ("depthwise-3x3-rows", (1, 4, 5, 1), (4, 1, 3, 3), dict(padding=1, groups=4)),
    ("depthwise-3x3-rows", (2, 6, 14, 14), (6, 1, 3, 3), dict(stride=2, padding=1, groups=6)),
    ("depthwise-3x3-rows", (1, 3, 9, 11), (6, 1, 3, 3), dict(stride=2, padding=1, groups=3)),
    ("depthwise-3x3-rows", (1, 2, 1, 1), (2, 1, 3, 3), dict(stride=2, padding=1, groups=2)),
]

def tail_geometries() -> list[tuple]:
    """Geometries whose pixel counts cross every tile width of this host's micro-kernel (a
    full NR tile, the mid and one-vector tiles, a tail of LANES − 1 and of 1 columns, the
    column tiles' widths) and whose output channels are past a multiple of MR."""
    lanes, nr, rows = simd.LANES, simd.NR, simd.MR
    mid = (simd.TILE_VECTORS - 1) * lanes
    out = []
    for pixels in (nr + mid + lanes - 1, nr + 1, 2 * nr + lanes + 3):
        out.append(("pointwise-microkernel", (1, 5, 1, pixels), (rows + 1, 5, 1, 1), {}))
        out.append(("im2col-microkernel", (1, 3, 3, pixels), (rows + 1, 3, 3, 3),
                    dict(padding=1)))
        out.append(("direct-microkernel", (1, 3, 3, pixels), (rows + 1, 3, 3, 3),
                    dict(padding=1)))
    # last columns in column tiles of 4 + 4 (or 4), of 4 + 1 + 1 + 1 (or 1 + 1 + 1), and one
    # past their reach (lane masks)
    most = simd.COLUMN_TILE_MAX
    for pixels in (nr + most, nr + most - 1, nr + most + 1):
        out.append(("pointwise-microkernel", (2, 5, 1, pixels), (2 * rows + 3, 5, 1, 1), {}))
        out.append(("direct-microkernel", (1, 3, 2, pixels), (rows + 3, 3, 3, 3),
                    dict(padding=1)))
    # B's columns copied into a contiguous panel first (gk.PACK_MIN_STEPS or more steps,
    # several row blocks): a full tile, the mid and one-vector tiles and a tail; strided
    # rows (im2col) and tap offsets (direct)
    from cnnir.backends.numba_cpu.kernels import gemm as gk

    channels = gk.PACK_MIN_STEPS + 3
    out.append(("pointwise-microkernel", (2, channels, 1, nr + mid + lanes + 3),
                (2 * rows + 1, channels, 1, 1), {}))
    # ... and its last columns: one (on AVX-512 the last widest tile takes it), four, one
    # past the column tiles' reach, a 14x14 plane's (196: four past a multiple of 16); read
    # in place where B's rows lie within one chunk (the AVX2 path's NR + …), else copied too
    # (two chunks + …)
    chunk = int(gk.chunk_columns(np.int64(channels), gk.L1_CHUNK_BYTES))
    for tail in (1, 4, most + 1):
        for pixels in (nr + tail, 2 * chunk + tail):
            out.append(("pointwise-microkernel", (1, channels, 1, pixels),
                        (2 * rows + 1, channels, 1, 1), {}))
    out.append(("pointwise-microkernel", (1, channels, 1, 196), (2 * rows + 1, channels, 1, 1),
                {}))
    out.append(("im2col-microkernel", (1, channels // 9 + 1, 5, nr + 2), (rows + 2,
                channels // 9 + 1, 3, 3), dict(padding=1)))
    out.append(("direct-microkernel", (1, channels // 9 + 1, 4, nr + lanes + 1),
                (2 * rows + 3, channels // 9 + 1, 3, 3), dict(padding=1)))
    out.append(("winograd-f2x2-3x3", (1, 4, 4, 2 * (nr + 1)), (2 * rows + 1, 4, 3, 3),
                dict(padding=1)))
    out.append(("winograd-f4x4-3x3", (1, 4, 4, 4 * (nr + 1)), (2 * rows + 1, 4, 3, 3),
                dict(padding=1)))
    # ... and read in place when B's rows already lie within one L1 chunk (ld ≤ chunk): a
    # small plane, few Winograd tiles
    out.append(("pointwise-microkernel", (1, channels, 5, 5), (2 * rows + 1, channels, 1, 1),
                {}))
    out.append(("winograd-f2x2-3x3", (1, channels, 6, 6), (2 * rows + 1, channels, 3, 3),
                dict(padding=1)))
    # ... and in chunks of STREAM_CHUNK_BYTES when B and the output together span more than
    # STREAM_MIN_BYTES: packed, and read in place, each with a ragged end
    for steps in (channels, 5):
        pixels = gk.STREAM_MIN_BYTES // (4 * 2 * (steps + 2 * rows + 1)) + nr + 3
        assert gk.chunk_budget(2, 2 * rows + 1, steps, pixels) == gk.STREAM_CHUNK_BYTES
        assert gk.chunk_budget(2, 2 * rows + 1, steps, pixels - nr - 3) == gk.L1_CHUNK_BYTES
        out.append(("pointwise-microkernel", (2, steps, 1, pixels),
                    (2 * rows + 1, steps, 1, 1), {}))
    # pixel-gemm's panels of output channels: a full one and each shorter width, whole
    # vectors and a ragged one; rows one past a block; jobs cut by channel panels
    for channels in (nr + mid + lanes - 1, nr + 1, 2 * nr + lanes + 3):
        out.append(("pixel-gemm-microkernel", (1, 29, 3, rows + 1), (channels, 29, 3, 3),
                    dict(padding=1)))
    out.append(("pixel-gemm-microkernel", (1, 29, 2, 3), (4 * nr + 5, 29, 3, 3),
                dict(padding=1)))
    # flat depthwise planes of whole vectors only, and of whole vectors and a tail
    out.append(("depthwise-3x3-flat", (2, 3, 2, lanes), (3, 1, 3, 3), dict(padding=1, groups=3)))
    out.append(("depthwise-3x3-flat", (1, 2, 3, lanes + 1), (4, 1, 3, 3),
                dict(padding=1, groups=2)))
    out.append(("depthwise-3x3-flat", (1, 2, 5, 2 * lanes + 1), (2, 1, 3, 3),
                dict(stride=2, padding=1, groups=2)))
    # the masked flat stencil (AVX-512 only): planes of whole vectors, of whole vectors and a
    # tail, narrower than a vector, one row, one column; a channel multiplier of 2
    if MASKED_DEPTHWISE:
        for n, c, h, w_, mult in ((2, 3, 2, lanes, 1), (1, 2, 3, lanes + 1, 2), (1, 3, 7, 7, 1),
                                  (1, 2, 1, 5, 1), (1, 2, 6, 1, 1), (2, 2, 5, 2 * lanes + 3, 1)):
            out.append(("depthwise-3x3-masked", (n, c, h, w_), (c * mult, 1, 3, 3),
                        dict(padding=1, groups=c)))
    # depthwise rows of whole vectors, and of whole vectors and a tail; stride-2 rows whose
    # last output reads one column past the input and rows of two vectors plus one column
    for stride, width in ((1, lanes), (1, 2 * lanes + 1), (2, 2 * lanes), (2, 4 * lanes + 1),
                          (2, 2 * lanes + 3)):
        out.append(("depthwise-3x3-rows", (1, 2, 4, width), (2, 1, 3, 3),
                    dict(stride=stride, padding=1, groups=2)))
    # stride 2 on a plane too large to walk by columns: row by row
    width = 2 * lanes + 3
    height = stencil.COLUMN_WALK_BYTES // (4 * width) + 1
    out.append(("depthwise-3x3-rows", (1, 2, height, width), (2, 1, 3, 3),
                dict(stride=2, padding=1, groups=2)))
    return out


GEOMETRIES += tail_geometries()

EPILOGUES = [(None, False), ("relu6", True), ("leaky_relu", False), ("hardswish", True)]


def run_forced(graph: cnnir.Graph, algorithm: str, inputs: list[np.ndarray]) -> np.ndarray:
    compiled = cnnir.compile(graph, tune=algorithm)
    got = compiled(*inputs)
    assert set(compiled.choices.values()) == {algorithm}
    return got


@pytest.mark.parametrize("activation,residual", EPILOGUES,
                         ids=[f"{a}-{'res' if r else 'nores'}" for a, r in EPILOGUES])
@pytest.mark.parametrize("algorithm,x_shape,w_shape,attrs", GEOMETRIES,
                         ids=[f"{g[0]}-{i}" for i, g in enumerate(GEOMETRIES)])
def test_algorithm_matches_reference(algorithm, x_shape, w_shape, attrs, activation,
                                     residual) -> None:
    act = getattr(ops, activation) if activation else None
    act_attrs = LeakyReluAttrs(0.2) if activation == "leaky_relu" else None
    graph = fused_graph(ops.conv2d_fused, conv_attrs(**attrs, activation=act,
                                                     activation_attrs=act_attrs,
                                                     residual=residual),
                        T(*x_shape), w_shape, residual)
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal(v.type.shape).astype(np.float32) * 2 for v in graph.inputs]
    got = run_forced(graph, algorithm, inputs)
    ref = cnnir.compile(graph, backend="reference")(*[a.astype(np.float64) for a in inputs])
    assert got.shape == ref.shape
    assert_close(got, ref, int(np.prod(w_shape[1:])))


def test_nan_and_inf_pass_through_the_microkernel_epilogue() -> None:
    """The clamp of ReLU/ReLU6 is written as selects so NaN propagates as in PyTorch."""
    graph = fused_graph(ops.conv2d_fused, conv_attrs(activation=ops.relu6),
                        T(1, 2, 5, 5), (9, 2, 1, 1), False)
    x = np.zeros((1, 2, 5, 5), np.float32)
    x[0, :, 2, 3] = np.nan
    x[0, 0, 4, 4] = np.inf
    got = run_forced(graph, "pointwise-microkernel", [x])
    w = graph.nodes[0].inputs[1].const.array[:, :, 0, 0]
    assert np.isnan(got[0, :, 2, 3]).all()
    finite = np.delete(got.reshape(9, -1), [13, 24], axis=1)
    assert np.isfinite(finite).all() and (finite >= 0).all() and (finite <= 6).all()
    positive = w[:, 0] > 0
    assert (got[0, positive, 4, 4] == 6).all() and (got[0, ~positive, 4, 4] == 0).all()


@pytest.mark.parametrize("algorithm,stride", [
    (name, stride) for name in ("depthwise-3x3-rows", "depthwise-3x3-flat", "depthwise-phases")
    for stride in (1, 2)] + ([("depthwise-3x3-masked", 1)] if MASKED_DEPTHWISE else []))
def test_depthwise_padding_never_multiplies_an_edge_inf(algorithm: str, stride: int) -> None:
    """Infinities on the plane's border columns and rows reach exactly the outputs whose
    window holds them: the padding is zeros that are added, never a neighbour read and
    multiplied by zero (0·inf would be NaN), in rows of whole vectors and with a tail."""
    lanes = simd.LANES
    for width in (lanes, lanes + 3):
        graph = fused_graph(ops.conv2d_fused, conv_attrs(stride=stride, padding=1, groups=2),
                            T(1, 2, 5, width), (2, 1, 3, 3), False)
        weights = graph.nodes[0].inputs[1].const.array
        weights[:] = np.abs(weights) + 0.1  # inf + inf in one window, not inf − inf
        x = np.random.default_rng(3).standard_normal((1, 2, 5, width)).astype(np.float32)
        x[0, 0, :, 0] = x[0, 0, :, width - 1] = np.inf
        x[0, 1, 0, :] = x[0, 1, 4, :] = np.inf
        got = run_forced(graph, algorithm, [x])
        ref = cnnir.compile(graph, backend="reference")(x.astype(np.float64))
        assert not np.isnan(ref).any()
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        assert_close(np.where(np.isinf(ref), 0, got), np.where(np.isinf(ref), 0, ref), 9)


@pytest.mark.parametrize("batch", [1, 5, 17])
def test_linear_small_and_large_batches(batch: int) -> None:
    """Up to 16 rows stream the weights (one dot product per output), more rows use BLAS."""
    from cnnir.ops.fused import LinearFusedAttrs

    graph = fused_graph(ops.linear_fused, LinearFusedAttrs(activation=ops.relu, residual=True),
                        T(batch, 37), (11, 37), True)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs]
    got = cnnir.compile(graph)(*inputs)
    ref = cnnir.compile(graph, backend="reference")(*[a.astype(np.float64) for a in inputs])
    assert_close(got, ref, 37)


MAX_POOLS = [
    ("max-pool-phases", 3, 2, 1, False, (2, 3, 11, 12)),
    ("max-pool-phases", 3, 2, 1, True, (1, 2, 10, 9)),
    ("max-pool-phases", 3, 1, 1, False, (1, 2, 7, 5)),
    ("max-pool-phases", 5, 3, 2, True, (2, 2, 13, 11)),
    ("max-pool-2x2", 2, 2, 0, False, (1, 2, 8, 8)),
    ("max-pool-2x2", 2, 2, 0, False, (2, 16, 64, 64)),
    ("max-pool-2x2", 2, 2, 0, False, (2, 3, 6, 4 * L + 6)),  # whole vectors and a tail
    ("max-pool-2x2", 2, 2, 0, False, (1, 5, 6, 6)),  # three windows a row
    ("max-pool-separable", 3, (2, 1), 0, False, (1, 2, 9, 9)),
    ("max-pool-rows", 3, 2, 1, False, (2, 3, 11, 12)),
    ("max-pool-rows", 3, 2, 1, True, (1, 2, 10, 9)),
    ("max-pool-rows", 3, 1, 1, False, (1, 2, 7, 5)),
    ("max-pool-rows", 5, 3, 2, True, (2, 2, 13, 11)),
    ("max-pool-rows", 3, 2, 1, False, (2, 3, 2 * L + 5, 4 * L + 3)),  # whole and tail vectors
    ("max-pool-rows", 3, 2, 0, True, (1, 2, 9, 2 * L + 2)),  # ceil mode: a window past the row
    ("max-pool-rows", 3, 1, 1, False, (1, 2, 9, 2 * L + 1)),
    ("max-pool-rows", 2, 2, 0, False, (1, 2, 6, 4 * L)),
]


@pytest.mark.parametrize("path,kernel,stride,padding,ceil_mode,size", MAX_POOLS)
def test_max_pool_paths_match_reference(path, kernel, stride, padding, ceil_mode,
                                        size) -> None:
    """Each max-pool path, forced: the phase planes (−∞ borders), 2×2 windows tiling the
    image, unequal strides (separable), rows on vectors (whole and partial vectors, strides
    1, 2 and 3); a NaN in the input wins its windows as in PyTorch."""
    from cnnir import nn

    model = nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    x = np.random.default_rng(2).standard_normal(size).astype(np.float32)
    x[0, 0, 3, 4] = x[-1, -1, -1, -1] = np.nan  # in a row's first vector, and in its tail
    compiled = cnnir.compile(model, size, tune=path)
    got = compiled(x)
    ref = cnnir.compile(model, size, backend="reference")(x.astype(np.float64))
    assert set(compiled.choices.values()) == {path}
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=0, atol=0)


def test_max_pool_times_only_the_algorithms_that_may_win() -> None:
    """Each candidate is kernels to compile: 2×2 tiles alone where they tile the image, rows
    alone on the AVX2 path and for stride 2 over rows of two vectors or more, phase planes
    where rows are not (yet) known to win; float64 has phase planes only, and a name ``tune``
    forces is always among them."""
    from types import SimpleNamespace

    from cnnir.backends.numba_cpu.kernels.host import HOST
    from cnnir.backends.numba_cpu.lower_pool import max_pool_candidates

    def candidates(kernel, stride, in_hw, out_hw, dtype=np.float32, tune=True):
        attrs = SimpleNamespace(kernel_size=(kernel, kernel), stride=(stride, stride),
                                padding=(kernel // 2 if stride == 1 else 0,) * 2,
                                dilation=(1, 1))
        builder = SimpleNamespace(dtype=np.dtype(dtype), tune=tune)
        return max_pool_candidates(builder, attrs, in_hw, out_hw)

    avx2 = HOST.isa == "avx2"
    assert candidates(2, 2, (64, 64), (32, 32)) == ["max-pool-2x2"]
    assert candidates(2, 2, (64, 64), (32, 32), tune="max-pool-rows") == [
        "max-pool-2x2", "max-pool-rows"]
    wide = 4 * simd.LANES
    assert candidates(3, 2, (2 * wide, 2 * wide), (wide, wide)) == ["max-pool-rows"]
    assert candidates(3, 1, (28, 28), (28, 28)) == (
        ["max-pool-rows"] if avx2 else ["max-pool-phases", "max-pool-rows"])
    assert candidates(3, 2, (2 * wide, 2 * wide), (wide, wide),
                      tune="max-pool-phases") == ["max-pool-phases", "max-pool-rows"]
    assert candidates(2, 2, (8, 8), (4, 4), dtype=np.float64) == ["max-pool-phases"]


def test_im2col_writes_true_zeros_over_stale_scratch() -> None:
    """im2col buffers are scratch shared between layers: whatever an earlier layer left there
    (NaN included) must not leak into the padding of the next one."""
    from cnnir.backends.numba_cpu.kernels.conv import im2col_rows

    x = np.arange(2 * 4 * 5, dtype=np.float32).reshape(1, 2, 4, 5)
    cols = np.full((2 * 9, 4 * 5), np.nan, np.float32)
    im2col_rows(x, cols, 0, 0, 2, (3, 3, 1, 1, 1, 1, 1, 1), 0, 4, 5)
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    want = np.stack([padded[c, i:i + 4, j:j + 5].reshape(-1)
                     for c in range(2) for i in range(3) for j in range(3)])
    np.testing.assert_array_equal(cols, want)


BLAS_GEOMETRIES = [
    ("pointwise-blas", (2, 13, 5, 7), (21, 13, 1, 1), {}),
    ("im2col-blas", (2, 6, 9, 11), (12, 2, 3, 3), dict(stride=2, padding=1, groups=3)),
    ("im2col-blas", (1, 5, 10, 8), (9, 5, 3, 3), dict(padding=2, dilation=2)),
    ("winograd-f2x2-3x3", (2, 3, 9, 35), (5, 3, 3, 3), dict(padding=1)),
]


@pytest.mark.parametrize("algorithm,x_shape,w_shape,attrs", BLAS_GEOMETRIES,
                         ids=[f"{g[0]}-{i}" for i, g in enumerate(BLAS_GEOMETRIES)])
def test_float64_algorithms_match_reference(algorithm, x_shape, w_shape, attrs) -> None:
    """float64 runs the same structure on BLAS; it must agree to float64 rounding."""
    graph = fused_graph(ops.conv2d_fused, conv_attrs(**attrs, activation=ops.relu6,
                                                     residual=True),
                        T(*x_shape), w_shape, True)
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal(v.type.shape) * 2 for v in graph.inputs]
    compiled = cnnir.compile(graph, dtype="float64", tune=algorithm)
    got = compiled(*inputs)
    assert set(compiled.choices.values()) == {algorithm}
    ref = cnnir.compile(graph, backend="reference")(*inputs)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 300, 520), (3, 13, 21), (2, 8, 8), (1, 5, 3), (2, 40, 17)])
def test_batched_transpose_in_register_blocks_and_ragged_edges(shape) -> None:
    """The weight gradient's transposes: 8×8 register blocks, then the leftover rows and
    columns element by element, on both builds."""
    from cnnir.backends.numba_cpu.kernels.conv_grad import batched_transpose

    src = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for build in (batched_transpose.parallel, batched_transpose.serial):
        dst = np.full((shape[0], shape[2], shape[1]), np.nan, np.float32)
        build(src, dst)
        np.testing.assert_array_equal(dst, src.transpose(0, 2, 1))


@pytest.mark.parametrize("shape", [(5, 3), (67, 9), (64, 72)])  # outputs: < MR, ragged, whole
def test_winograd_weight_transform_and_packing_follow_the_formula(shape) -> None:
    """U[αi + j, o, c] = (G w[o, c] Gᵀ)[i, j] in float64, then laid out as the micro-kernel's
    A operand, directly and rewritten in place (the training step's refresh), for F(2x2, 3x3)
    and F(4x4, 3x3) with G written here from Lavin & Gray."""
    from cnnir.backends.numba_cpu.kernels import simd
    from cnnir.backends.numba_cpu.kernels import winograd as wk

    rng = np.random.default_rng(0)
    w = rng.standard_normal((*shape, 3, 3)).astype(np.float32)
    g2 = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    g4 = np.array([[6, 0, 0], [-4, -4, -4], [-4, 4, -4], [1, 2, 4], [1, -2, 4], [0, 0, 24]]) / 24
    for variant, g in ((wk.F2, g2), (wk.F4, g4)):
        u = np.einsum("ia,ocab,jb->ijoc", g, w.astype(np.float64), g).reshape(-1, *shape)
        np.testing.assert_allclose(wk.transform_weights(w, np.float32, variant),
                                   u.astype(np.float32), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(wk.transform_weights(w.astype(np.float64), np.float64,
                                                        variant), u, rtol=1e-14, atol=1e-15)
        packed = wk.packed_weights(w, variant)
        points = len(g) ** 2
        np.testing.assert_allclose(packed, simd.pack_rows(
            u.astype(np.float32).reshape(points * shape[0], shape[1]), points),
            rtol=1e-6, atol=1e-7)
        w2 = rng.standard_normal(w.shape).astype(np.float32)
        wk.pack_weights_into(w2, packed, variant)
        np.testing.assert_array_equal(packed, wk.packed_weights(w2, variant))


@pytest.mark.parametrize("size", [4, 6])
def test_winograd_transforms_compute_a_3x3_correlation(size) -> None:
    """The kernels' Bᵀ (``bt4``, ``bt6``) and Aᵀ (``at4``, ``at6``) with G:
    Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A is the valid 3×3 correlation of a tile, in float64 to rounding."""
    from cnnir.backends.numba_cpu.kernels import winograd as wk

    variant, bt_row, at_row = {4: (wk.F2, wk.bt4, wk.at4), 6: (wk.F4, wk.bt6, wk.at6)}[size]
    rng = np.random.default_rng(1)
    d, g = rng.standard_normal((size, size)), rng.standard_normal((3, 3))
    bt = np.array([bt_row.py_func(tuple(col)) for col in np.eye(size)]).T
    at = np.array([at_row.py_func(tuple(col)) for col in np.eye(size)]).T
    y = at @ ((variant.g @ g @ variant.g.T) * (bt @ d @ bt.T)) @ at.T
    out = size - 2
    want = [[np.sum(d[a:a + 3, b:b + 3] * g) for b in range(out)] for a in range(out)]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("images,out_shape,flops", [
    (1, (67, 4, 4), 1_234_000), (1, (64, 16, 16), 9_400_000), (3, (32, 112, 112), 10 ** 8),
    (1, (32, 112, 112), 21_700_000), (8, (16, 7, 7), 500_000), (1, (8, 30, 6), 1_300_000)])
def test_direct_bands_cover_every_output_once_in_even_shares(images, out_shape, flops) -> None:
    """The direct convolution's bands (n, y0, y1, r0, r1) tile the outputs exactly, cut output
    channels on micro-kernel row blocks, and are one or a multiple of the thread count."""
    from cnnir.backends.numba_cpu.kernels.gemm import THREADS
    from cnnir.backends.numba_cpu.lower_conv import direct_bands

    out_ch, oh, ow = out_shape
    bands = direct_bands(images, out_shape, 3 * (ow + 2), 2, flops)
    seen = np.zeros((images, out_ch, oh), np.int64)
    for n, y0, y1, r0, r1 in bands:
        assert y0 < y1 and r0 < r1 and (r0 % simd.MR == 0)
        seen[n, r0:r1, y0:y1] += 1
    assert (seen == 1).all()
    assert len(bands) <= THREADS or len(bands) % THREADS == 0
