"""The CUDA convolution and linear kernels beyond the shared op table: fused epilogues
(bias, residual, activation) and shapes that cross the GEMM's tile edges (more than 64
output channels or pixels, K not a multiple of the 16-deep slice), against the float64
reference. Shapes stay small: the simulator runs one Python thread per CUDA thread."""

from __future__ import annotations

import numpy as np
import pytest
from op_helpers import T, assert_close, bn_with_stats, fn, fused_graph

import cnnir
import cnnir.nn.functional as F
from cnnir import nn, ops
from cnnir.ops.activation import LeakyReluAttrs
from cnnir.ops.fused import Conv2dFusedAttrs, LinearFusedAttrs


def check(graph: cnnir.Graph, reduction: int, seed: int = 5) -> None:
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs]
    got = cnnir.compile(graph, backend="cuda")(*inputs)
    ref = cnnir.compile(graph, backend="reference")(*[a.astype(np.float64) for a in inputs])
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert_close(got, ref, reduction)


def conv_attrs(stride=1, padding=0, groups=1, **fused) -> Conv2dFusedAttrs:
    return Conv2dFusedAttrs(stride=(stride, stride), padding=(padding,) * 4, groups=groups,
                            **fused)


# (input shape, weight shape, attrs): the weight [out, in/groups, kh, kw]
FUSED_CONVS = {
    # 70 channels and 81 pixels: two tiles each way; K = 27, two slices (the second partial)
    "tile-edges-relu-residual": ((1, 3, 9, 9), (70, 3, 3, 3),
                                 conv_attrs(padding=1, activation=ops.relu, residual=True)),
    # K = 144 over a single output tile: split-K, two partial sums added with the epilogue
    "split-k-relu-residual": ((1, 16, 5, 5), (8, 16, 3, 3),
                              conv_attrs(padding=1, activation=ops.relu, residual=True)),
    "grouped-strided-hardswish": ((2, 6, 7, 8), (6, 2, 3, 3),
                                  conv_attrs(stride=2, padding=1, groups=3,
                                             activation=ops.hardswish)),
    "pointwise-relu6-residual": ((2, 5, 4, 5), (7, 5, 1, 1),
                                 conv_attrs(activation=ops.relu6, residual=True)),
    "depthwise-leaky-residual": ((1, 4, 6, 7), (8, 1, 3, 3),
                                 conv_attrs(padding=1, groups=4, activation=ops.leaky_relu,
                                            activation_attrs=LeakyReluAttrs(0.2),
                                            residual=True)),
    "depthwise-sigmoid": ((2, 3, 5, 5), (3, 1, 3, 3),
                          conv_attrs(stride=2, groups=3, activation=ops.sigmoid)),
    # a tile's windows span 15 + 6·6 + 1 = 52 > 48 columns: one thread per output instead
    "depthwise-wider-than-the-patch": ((1, 2, 3, 40), (2, 1, 1, 7),
                                       Conv2dFusedAttrs(dilation=(1, 6), groups=2,
                                                        activation=ops.relu)),
}


@pytest.mark.parametrize("name", FUSED_CONVS)
def test_fused_conv(name: str) -> None:
    x_shape, w_shape, attrs = FUSED_CONVS[name]
    check(fused_graph(ops.conv2d_fused, attrs, T(*x_shape), w_shape, attrs.residual),
          int(np.prod(w_shape[1:])))


@pytest.mark.parametrize("residual", [False, True])
def test_fused_linear_crosses_slices(residual: bool) -> None:
    """K = 140: eight full 16-deep slices and a partial one, split in two (one output tile)
    whose sum takes the epilogue, the bias indexed by column."""
    attrs = LinearFusedAttrs(activation=ops.sigmoid, residual=residual)
    check(fused_graph(ops.linear_fused, attrs, T(3, 140), (20, 140), residual), 140)


@pytest.mark.parametrize("shapes", [((5,), (2, 5, 3)), ((2, 1, 3, 4), (3, 4, 2)),
                                    ((3, 4), (4,)), ((4,), (4,))],
                         ids=["vector-matrix", "broadcast-batch", "matrix-vector", "dot"])
def test_matmul_promotes_and_broadcasts(shapes: tuple) -> None:
    g = cnnir.Graph("matmul")
    a, b = g.add_input("a", T(*shapes[0])), g.add_input("b", T(*shapes[1]))
    node = g.add_node(ops.matmul, [a, b], None)
    g.set_outputs([node.output])
    check(g, shapes[0][-1])


def test_conv_transpose_anisotropic_stride_and_padding() -> None:
    graph = cnnir.trace(nn.ConvTranspose2d(3, 4, (2, 3), stride=(1, 2), padding=(1, 0)),
                        [T(1, 3, 5, 4)])
    check(graph, 3 * 6)


def test_deform_conv_without_bias_or_mask() -> None:
    model = fn(lambda s, x, off: s.d(x, off), d=nn.DeformConv2d(2, 3, 3, padding=1,
                                                                   bias=False))()
    graph = cnnir.trace(model, [T(1, 2, 5, 6), T(1, 18, 5, 6)])
    check(graph, 18)


def test_convs_of_different_grids_in_one_network() -> None:
    """Two implicit GEMMs on one kernel object with different grids (70 channels over two
    tiles, then 5), a ReLU between them: each step launches with its own grid."""
    model = nn.Sequential(nn.Conv2d(3, 70, 3, padding=1), nn.ReLU(), nn.Conv2d(70, 5, 1))
    check(cnnir.trace(model, [T(1, 3, 6, 6)]), 70 * 27)


def test_resnet_block_folds_into_fused_convs() -> None:
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + x): after BatchNorm folding and fusion, two
    conv2d_fused launches, the second with the residual."""
    model = fn(lambda s, x: F.relu(s.bn2(s.conv2(F.relu(s.bn1(s.conv1(x))))) + x),
               conv1=nn.Conv2d(4, 4, 3, padding=1, bias=False), bn1=bn_with_stats(4),
               conv2=nn.Conv2d(4, 4, 3, padding=1, bias=False), bn2=bn_with_stats(4))()
    graph = cnnir.trace(model, [T(1, 4, 6, 6)])
    run = cnnir.compile(graph, backend="cuda")
    assert [n.op for n in run.graph.nodes] == [ops.conv2d_fused, ops.conv2d_fused]
    check(graph, 2 * 36)
