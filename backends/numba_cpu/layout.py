"""Which values the CPU backend keeps channel-blocked (NCHWc), and the convolutions on them.

A run of 1x1 and 3×3 depthwise convolutions (MobileNet's inverted residual blocks) keeps
its tensors in the blocked layout ``[N, C / L, H, W, L]`` (``kernels.blocked``, L =
``simd.LANES``), converting only at the region's borders. A value is blocked when the node
that makes it and every node that reads it (as its input or residual) can run blocked, or
is a global pooling that reads it blocked; a convolution runs blocked when one of its
tensors is, and converts the others (an input from NCHW into a
scratch buffer before it runs, its output back into NCHW after).

The layout is the ``layout`` option of ``compile``: ``"nchwc"``, ``"nchw"`` or ``"auto"``,
which blocks on the 8-lane (AVX2) path, where it was measured (MobileNetV2 at batch 1 and 8
on a Zen 3; see docs/semantics.md), and not on AVX-512's 16 lanes, where several of
MobileNetV2's channel counts (24, 144) are not whole blocks; nor where ``tune`` names an
algorithm of the NCHW layout, which then runs wherever it applies.
"""

from __future__ import annotations

import numpy as np

from cnnir import ops
from cnnir.backends.lowering import Builder, Step
from cnnir.backends.numba_cpu.epilogue import Epilogue
from cnnir.backends.numba_cpu.kernels import blocked as bk
from cnnir.backends.numba_cpu.kernels import gemm as gk
from cnnir.backends.numba_cpu.kernels import simd
from cnnir.backends.numba_cpu.kernels.host import HOST
from cnnir.backends.numba_cpu.kernels.jit import bound
from cnnir.errors import CnnirError
from cnnir.ir import Node

LAYOUTS = ("auto", "nchw", "nchwc")
POINTWISE = "pointwise-nchwc"
DEPTHWISE = "depthwise-3x3-nchwc"


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise CnnirError(f"unknown layout {layout!r}", hint=f"one of {', '.join(LAYOUTS)}")
    return layout


def blocking(layout: str, dtype: np.dtype, tune: bool | str) -> bool:
    """Whether a float32 program in ``layout`` blocks what it can: ``auto`` does on the
    8-lane path, unless ``tune`` names an algorithm of the NCHW layout."""
    if dtype != np.float32:
        return False
    forced = isinstance(tune, str) and tune not in (POINTWISE, DEPTHWISE)
    return layout == "nchwc" or (layout == "auto" and simd.LANES == 8 and not forced)


def algorithm(b: Builder, node: Node) -> str | None:
    """The blocked algorithm that can run this node (a float32 conv2d or conv2d_fused: 1x1,
    stride 1, unpadded, ungrouped, on planes of at least a tile of pixels; or 3×3
    depthwise, padding 1, stride 1 or 2, undilated; its channels whole blocks), else
    None."""
    if node.op not in (ops.conv2d, ops.conv2d_fused) or b.dtype != np.float32:
        return None
    x, y = b.types[id(node.inputs[0])].shape, b.types[id(node.output)].shape
    w, a = b.types[id(node.inputs[1])].shape, node.attrs
    if len(x) != 4 or x[1] % simd.LANES or y[1] % simd.LANES:
        return None
    if ((tuple(w[2:]), a.stride, a.groups, any(a.padding)) == ((1, 1), (1, 1), 1, False)
            and x[2] * x[3] >= bk.PIXEL_TILE):
        return POINTWISE
    if ((tuple(w), a.groups, a.padding, a.dilation) == ((y[1], 1, 3, 3), x[1], (1, 1, 1, 1),
                                                         (1, 1))
            and x[1] == y[1] and a.stride in ((1, 1), (2, 2))):
        return DEPTHWISE
    return None


GLOBAL_POOLS = (ops.adaptive_avg_pool2d, ops.adaptive_max_pool2d)


def reads_blocked(b: Builder, node: Node) -> bool:
    """Whether this node can read its input blocked: one that can run blocked, or adaptive
    pooling to 1×1 of whole blocks of channels (``kernels.blocked.global_pool_blocked``)."""
    if algorithm(b, node) is not None:
        return True
    if node.op not in GLOBAL_POOLS or b.dtype != np.float32:
        return False
    x, y = b.types[id(node.inputs[0])].shape, b.types[id(node.output)].shape
    return len(x) == 4 and x[1] % simd.LANES == 0 and tuple(y[2:]) == (1, 1)


def blocked_values(b: Builder, layout: str) -> dict[int, tuple[int, ...]]:
    """``id(value) -> blocked shape`` of the values kept blocked (see the module docstring):
    never a graph input or output, a value another one aliases or views, or one read as a
    weight or bias."""
    if not blocking(layout, b.dtype, b.tune):
        return {}
    ends = {id(v) for v in (*b.graph.inputs, *b.graph.outputs, *b.views.values())}
    readers = {id(n) for n in b.graph.nodes if reads_blocked(b, n)}
    out = {}
    for node in b.graph.nodes:
        if algorithm(b, node) is None:
            continue
        value = node.output
        if (id(value) not in ends and id(value) not in b.aliases and value.users
                and all(id(u) in readers and all(v is not value for v in u.inputs[1:3])
                        for u in value.users)):
            out[id(value)] = blocked_shape(b.types[id(value)].shape)
    return out


def blocked_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    n, c, h, w = shape
    return n, c // simd.LANES, h, w, simd.LANES


def runs_blocked(b: Builder, node: Node) -> bool:
    """Whether this node runs blocked: one of its tensors is."""
    tensors = [node.inputs[0], node.output]
    if node.op is ops.conv2d_fused:
        tensors.append(node.inputs[3])
    return any(v is not None and id(v) in b.blocked for v in tensors)


def blocked_conv_step(b: Builder, node: Node, x: np.ndarray, w: np.ndarray, out: np.ndarray,
                      ep: Epilogue) -> Step:
    """The node's blocked step, converting the tensors that are not blocked (input and
    residual before, output after)."""
    before: list[Step] = []
    x = into_blocked(b, x, ("nchwc-input", node.name), before)
    if ep.residual is not None:
        residual = into_blocked(b, ep.residual, ("nchwc-residual", node.name), before)
        ep = Epilogue(ep.scale, ep.shift, residual, ep.code, ep.alpha)
    target = out if out.ndim == 5 else b.scratch(blocked_shape(out.shape),
                                                 owner=("nchwc-output", node.name))
    if algorithm(b, node) == POINTWISE:
        packed = b.derived([node.inputs[1]], "nchwc",
                           lambda: bk.pack_pointwise(w.reshape(w.shape[0], -1)))
        n_img, k_blocks, height, width = x.shape[:4]
        flops = 2 * w.size * n_img * height * width
        tiles = bk.pointwise_tiles(n_img, height * width, target.shape[1], k_blocks * simd.LANES,
                                   HOST.l2_bytes, gk.parts_wanted(flops), gk.THREADS)
        main = bound(bk.pointwise_blocked.over(len(tiles)), x, packed, target, tiles, ep.args())
    else:
        packed = b.derived([node.inputs[1]], "nchwc", lambda: bk.pack_depthwise(w))
        main = bound(bk.depthwise_blocked.over(jobs_of(target)), x, packed, target,
                     node.attrs.stride[0], ep.args())
    after = [] if target is out else [bound(bk.reorder.over(jobs_of(target)), out, target,
                                            False)]
    steps = [*before, main, *after]
    if len(steps) == 1:
        return main

    def step() -> None:
        for s in steps:
            s()

    return step


def jobs_of(blocked: np.ndarray) -> int:
    return blocked.shape[0] * blocked.shape[1]


def into_blocked(b: Builder, array: np.ndarray, owner: tuple, before: list[Step]) -> np.ndarray:
    """``array`` itself when blocked, else a scratch buffer it is converted into by a step
    appended to ``before``."""
    if array.ndim == 5:
        return array
    target = b.scratch(blocked_shape(array.shape), owner=owner)
    before.append(bound(bk.reorder.over(jobs_of(target)), array, target, True))
    return target
