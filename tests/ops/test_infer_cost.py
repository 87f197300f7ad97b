"""Every op's shape rule and cost rule against hand arithmetic (an OpInfo-style table).

Each case gives an op, its input types and attributes, the output shapes, and the MACs and
FLOPs written out from the formulas of docs/semantics.md §1 (shapes) and §6 (costs), never computed
by cnnir. Notation in the arithmetic: ``N·O·OH·OW·(C/G)·kh·kw`` for conv MACs, ``E`` for an
element count, ``2·MACs (+ E_out with a bias)`` for conv/linear FLOPs.

Cases whose inputs have symbolic dims (``"N"``) check that the symbol survives inference, then
bind it (``env``) and cost the bound types, as ``cnnir.analyze`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, is_dataclass
from typing import Any

import pytest

import cnnir
from cnnir import Graph, ShapeError, TensorType, ops
from cnnir.ir.types import Dim, evaluate_dim
from cnnir.ops import REGISTRY, OpDef
from cnnir.ops import optim as optim_ops
from cnnir.ops.activation import (
    ActivationGradAttrs,
    DropoutAttrs,
    EluAttrs,
    GeluAttrs,
    LeakyReluAttrs,
    PReluGradAttrs,
    RReluAttrs,
    SoftmaxAttrs,
    prelu_grad,
)
from cnnir.ops.conv import (
    Conv2dAttrs,
    Conv2dWeightGradAttrs,
    ConvTranspose2dAttrs,
    conv2d_weight_grad,
    deform_conv2d_data_grad,
    deform_conv2d_weight_grad,
    normalize_padding,
)
from cnnir.ops.fused import Conv2dFusedAttrs, LinearFusedAttrs
from cnnir.ops.loss import (
    ContrastiveAttrs,
    CrossEntropyAttrs,
    HuberAttrs,
    LossAttrs,
    LossGradAttrs,
    NllAttrs,
    SmoothL1Attrs,
    TripletAttrs,
    loss_grad,
)
from cnnir.ops.norm import (
    BatchNormAttrs,
    BatchNormGradAttrs,
    BatchNormUpdateAttrs,
    batch_norm_grad,
    batch_norm_update,
)
from cnnir.ops.pool import (
    AdaptivePoolAttrs,
    AdaptivePoolGradAttrs,
    AvgPoolAttrs,
    AvgPoolGradAttrs,
    InterpolateAttrs,
    InterpolateGradAttrs,
    PoolAttrs,
    avg_pool2d_grad,
    interpolate_grad,
    max_pool2d_grad,
)
from cnnir.ops.pool import adaptive_avg_pool2d_grad as adaptive_avg_grad
from cnnir.ops.pool import adaptive_max_pool2d_grad as adaptive_max_grad
from cnnir.ops.tensor import (
    ChannelShuffleAttrs,
    ClampAttrs,
    CompareAttrs,
    DimAttrs,
    ExpandAttrs,
    FlattenAttrs,
    GatherAttrs,
    PadAttrs,
    PowAttrs,
    ReduceAttrs,
    ReshapeAttrs,
    SliceAttrs,
    SplitAttrs,
    TransposeAttrs,
    amax_grad,
)


def T(*shape: Dim, dtype: str = "float32") -> TensorType:
    return TensorType(shape, dtype)


def same(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> Conv2dAttrs:
    """Conv attrs for ``padding='same'``, normalized with the real kernel as the DSL does."""
    pads = normalize_padding("same", kernel, dilation, (1, 1))
    return Conv2dAttrs(padding=pads, dilation=dilation)


@dataclass(frozen=True)
class OpCase:
    name: str
    op: OpDef
    inputs: tuple[TensorType | None, ...]
    out: tuple[tuple[Dim, ...], ...]
    macs: int
    flops: int
    attrs: Any = None
    sampling: int = 0
    env: dict[str, int] = field(default_factory=dict)

    def make_attrs(self) -> Any:
        return self.op.attrs() if self.attrs is None else self.attrs


E = 2 * 3 * 4 * 5  # elements of the activation test input X4
X4 = T(2, 3, 4, 5)
LOSS_X, LOSS_T = T(4, 5), T(4, 5)

CONV_CASES = [
    OpCase("conv2d-pad1-bias", ops.conv2d, (T(1, 3, 16, 16), T(8, 3, 3, 3), T(8)),
           out=((1, 8, 16, 16),), attrs=Conv2dAttrs(padding=1),
           macs=1 * 8 * 16 * 16 * 3 * 3 * 3, flops=2 * (1 * 8 * 16 * 16 * 3 * 3 * 3) + 8 * 16 * 16),
    # OH = floor((15 + 2 - 2 - 1) / 2) + 1 = 8
    OpCase("conv2d-stride2-nobias", ops.conv2d, (T(2, 3, 15, 15), T(4, 3, 3, 3), None),
           out=((2, 4, 8, 8),), attrs=Conv2dAttrs(stride=2, padding=1),
           macs=2 * 4 * 8 * 8 * 3 * 3 * 3, flops=2 * (2 * 4 * 8 * 8 * 3 * 3 * 3)),
    # OH = floor((9 - 3) / 2) + 1 = 4; OW = floor((7 + 4 - 5) / 1) + 1 = 7
    OpCase("conv2d-anisotropic", ops.conv2d, (T(1, 2, 9, 7), T(3, 2, 3, 5), None),
           out=((1, 3, 4, 7),), attrs=Conv2dAttrs(stride=(2, 1), padding=(0, 2)),
           macs=1 * 3 * 4 * 7 * 2 * 3 * 5, flops=2 * (1 * 3 * 4 * 7 * 2 * 3 * 5)),
    # 'same' with k=4: total pad 3, the odd pixel bottom/right -> (1, 1, 2, 2)
    OpCase("conv2d-same-even-kernel", ops.conv2d, (T(1, 2, 10, 10), T(5, 2, 4, 4), None),
           out=((1, 5, 10, 10),), attrs=same((4, 4)),
           macs=1 * 5 * 10 * 10 * 2 * 4 * 4, flops=2 * (1 * 5 * 10 * 10 * 2 * 4 * 4)),
    # 'same' with k=(2, 5): totals (1, 4) -> (0, 2, 1, 2)
    OpCase("conv2d-same-nonsquare", ops.conv2d, (T(1, 2, 7, 9), T(3, 2, 2, 5), None),
           out=((1, 3, 7, 9),), attrs=same((2, 5)),
           macs=1 * 3 * 7 * 9 * 2 * 2 * 5, flops=2 * (1 * 3 * 7 * 9 * 2 * 2 * 5)),
    # 'same' with k=3, d=2: total pad d(k-1) = 4 -> 2 each side
    OpCase("conv2d-same-dilated", ops.conv2d, (T(1, 3, 8, 8), T(4, 3, 3, 3), None),
           out=((1, 4, 8, 8),), attrs=same((3, 3), (2, 2)),
           macs=1 * 4 * 8 * 8 * 3 * 3 * 3, flops=2 * (1 * 4 * 8 * 8 * 3 * 3 * 3)),
    # effective kernel d(k-1)+1 = 5: OH = 12 - 5 + 1 = 8
    OpCase("conv2d-dilation2", ops.conv2d, (T(1, 3, 12, 12), T(6, 3, 3, 3), None),
           out=((1, 6, 8, 8),), attrs=Conv2dAttrs(dilation=2),
           macs=1 * 6 * 8 * 8 * 3 * 3 * 3, flops=2 * (1 * 6 * 8 * 8 * 3 * 3 * 3)),
    OpCase("conv2d-groups2", ops.conv2d, (T(1, 4, 8, 8), T(6, 2, 3, 3), T(6)),
           out=((1, 6, 6, 6),), attrs=Conv2dAttrs(groups=2),
           macs=1 * 6 * 6 * 6 * (4 // 2) * 3 * 3,
           flops=2 * (1 * 6 * 6 * 6 * 2 * 3 * 3) + 1 * 6 * 6 * 6),
    OpCase("conv2d-depthwise", ops.conv2d, (T(1, 8, 10, 10), T(8, 1, 3, 3), None),
           out=((1, 8, 10, 10),), attrs=Conv2dAttrs(padding=1, groups=8),
           macs=1 * 8 * 10 * 10 * 1 * 3 * 3, flops=2 * (1 * 8 * 10 * 10 * 1 * 3 * 3)),
    OpCase("conv2d-depthwise-multiplier2", ops.conv2d, (T(1, 4, 6, 6), T(8, 1, 3, 3), None),
           out=((1, 8, 4, 4),), attrs=Conv2dAttrs(groups=4),
           macs=1 * 8 * 4 * 4 * 1 * 3 * 3, flops=2 * (1 * 8 * 4 * 4 * 1 * 3 * 3)),
    OpCase("conv2d-1x1", ops.conv2d, (T(2, 16, 7, 7), T(32, 16, 1, 1), T(32)),
           out=((2, 32, 7, 7),), attrs=Conv2dAttrs(),
           macs=2 * 32 * 7 * 7 * 16, flops=2 * (2 * 32 * 7 * 7 * 16) + 2 * 32 * 7 * 7),
    OpCase("conv2d-kernel-1x7", ops.conv2d, (T(1, 4, 9, 9), T(4, 4, 1, 7), None),
           out=((1, 4, 9, 9),), attrs=Conv2dAttrs(padding=(0, 3)),
           macs=1 * 4 * 9 * 9 * 4 * 1 * 7, flops=2 * (1 * 4 * 9 * 9 * 4 * 1 * 7)),
    # the 4-tuple form is (top, left, bottom, right): OH = 6 + 1 + 2 - 3 + 1 = 7, OW = 6 + 0
    OpCase("conv2d-asymmetric-pads", ops.conv2d, (T(1, 1, 6, 6), T(2, 1, 3, 3), None),
           out=((1, 2, 7, 6),), attrs=Conv2dAttrs(padding=(1, 0, 2, 2)),
           macs=1 * 2 * 7 * 6 * 1 * 3 * 3, flops=2 * (1 * 2 * 7 * 6 * 1 * 3 * 3)),
    OpCase("conv2d-symbolic-batch", ops.conv2d, (T("N", 3, 32, 32), T(8, 3, 3, 3), T(8)),
           out=(("N", 8, 32, 32),), attrs=Conv2dAttrs(padding=1), env={"N": 2},
           macs=2 * 8 * 32 * 32 * 3 * 3 * 3,
           flops=2 * (2 * 8 * 32 * 32 * 3 * 3 * 3) + 2 * 8 * 32 * 32),
    # OH = (H-1)·s − 2p + d(k−1) + output_padding + 1 = 4·2 − 2 + 3 + 0 + 1 = 10
    OpCase("conv_transpose2d-k4s2p1-bias", ops.conv_transpose2d,
           (T(1, 8, 5, 5), T(8, 4, 4, 4), T(4)),
           out=((1, 4, 10, 10),), attrs=ConvTranspose2dAttrs(stride=2, padding=1),
           macs=1 * 8 * 5 * 5 * 4 * 4 * 4,  # on the input grid: N·C_in·H·W·(O/G)·kh·kw
           flops=2 * (1 * 8 * 5 * 5 * 4 * 4 * 4) + 1 * 4 * 10 * 10),
    # 3·2 − 2 + 2 + 1 + 1 = 8
    OpCase("conv_transpose2d-output-padding", ops.conv_transpose2d,
           (T(2, 4, 4, 4), T(4, 3, 3, 3), None),
           out=((2, 3, 8, 8),),
           attrs=ConvTranspose2dAttrs(stride=2, padding=1, output_padding=1),
           macs=2 * 4 * 4 * 4 * 3 * 3 * 3, flops=2 * (2 * 4 * 4 * 4 * 3 * 3 * 3)),
    # 4·1 − 0 + 2·2 + 0 + 1 = 9
    OpCase("conv_transpose2d-dilation2", ops.conv_transpose2d,
           (T(1, 2, 5, 5), T(2, 2, 3, 3), None),
           out=((1, 2, 9, 9),), attrs=ConvTranspose2dAttrs(dilation=2),
           macs=1 * 2 * 5 * 5 * 2 * 3 * 3, flops=2 * (1 * 2 * 5 * 5 * 2 * 3 * 3)),
    # output_padding 1 < max(s=1, d=2): 2·1 + 2·1 + 1 + 1 = 6
    OpCase("conv_transpose2d-output-padding-by-dilation", ops.conv_transpose2d,
           (T(1, 1, 3, 3), T(1, 1, 2, 2), None),
           out=((1, 1, 6, 6),), attrs=ConvTranspose2dAttrs(dilation=2, output_padding=1),
           macs=1 * 1 * 3 * 3 * 1 * 2 * 2, flops=2 * (1 * 1 * 3 * 3 * 1 * 2 * 2)),
    # G=2: O = G·W.shape[1] = 6; 5·2 + 2 + 1 + 1 = 14
    OpCase("conv_transpose2d-groups2", ops.conv_transpose2d,
           (T(1, 4, 6, 6), T(4, 3, 3, 3), T(6)),
           out=((1, 6, 14, 14),),
           attrs=ConvTranspose2dAttrs(stride=2, groups=2, output_padding=1),
           macs=1 * 4 * 6 * 6 * 3 * 3 * 3,
           flops=2 * (1 * 4 * 6 * 6 * 3 * 3 * 3) + 1 * 6 * 14 * 14),
    OpCase("conv_transpose2d-symbolic-batch", ops.conv_transpose2d,
           (T("N", 2, 3, 3), T(2, 1, 2, 2), None),
           out=(("N", 1, 6, 6),), attrs=ConvTranspose2dAttrs(stride=2), env={"N": 3},
           macs=3 * 2 * 3 * 3 * 1 * 2 * 2, flops=2 * (3 * 2 * 3 * 3 * 1 * 2 * 2)),
    # deform_conv2d inputs: (input, offset, weight, bias, mask)
    OpCase("deform_conv2d-no-mask-bias", ops.deform_conv2d,
           (T(1, 4, 8, 8), T(1, 2 * 1 * 9, 8, 8), T(6, 4, 3, 3), T(6), None),
           out=((1, 6, 8, 8),), attrs=Conv2dAttrs(padding=1),
           macs=1 * 6 * 8 * 8 * 4 * 3 * 3,
           sampling=7 * (1 * 4 * 3 * 3 * 8 * 8),
           flops=2 * (1 * 6 * 8 * 8 * 4 * 3 * 3) + 7 * (1 * 4 * 3 * 3 * 8 * 8) + 1 * 6 * 8 * 8),
    # OH = floor((9 + 2 − 3) / 2) + 1 = 5; og = 36 / (2·9) = 2; one extra FLOP per masked sample
    OpCase("deform_conv2d-mask-offset-groups2", ops.deform_conv2d,
           (T(2, 4, 9, 9), T(2, 2 * 2 * 9, 5, 5), T(4, 4, 3, 3), None, T(2, 2 * 9, 5, 5)),
           out=((2, 4, 5, 5),), attrs=Conv2dAttrs(stride=2, padding=1),
           macs=2 * 4 * 5 * 5 * 4 * 3 * 3,
           sampling=7 * (2 * 4 * 3 * 3 * 5 * 5),
           flops=2 * (2 * 4 * 5 * 5 * 4 * 3 * 3) + 7 * (2 * 4 * 3 * 3 * 5 * 5)
           + 2 * 4 * 3 * 3 * 5 * 5),
    # weight groups G = C / weight.shape[1] = 2; MACs use C/G = 2
    OpCase("deform_conv2d-weight-groups2", ops.deform_conv2d,
           (T(1, 4, 6, 6), T(1, 18, 4, 4), T(4, 2, 3, 3), None, None),
           out=((1, 4, 4, 4),), attrs=Conv2dAttrs(),
           macs=1 * 4 * 4 * 4 * 2 * 3 * 3, sampling=7 * (1 * 4 * 3 * 3 * 4 * 4),
           flops=2 * (1 * 4 * 4 * 4 * 2 * 3 * 3) + 7 * (1 * 4 * 3 * 3 * 4 * 4)),
    OpCase("deform_conv2d-symbolic-batch", ops.deform_conv2d,
           (T("N", 2, 5, 5), T("N", 8, 4, 4), T(3, 2, 2, 2), None, None),
           out=(("N", 3, 4, 4),), attrs=Conv2dAttrs(), env={"N": 2},
           macs=2 * 3 * 4 * 4 * 2 * 2 * 2, sampling=7 * (2 * 2 * 2 * 2 * 4 * 4),
           flops=2 * (2 * 3 * 4 * 4 * 2 * 2 * 2) + 7 * (2 * 2 * 2 * 2 * 4 * 4)),
    # -- backward ops: grad-weight costs the forward's MACs (docs/semantics.md §6.3) ----------
    # conv2d_weight_grad inputs: (input, grad_output); out [O, C/G, kh, kw]
    OpCase("conv2d_weight_grad-pad1", conv2d_weight_grad, (T(2, 3, 8, 8), T(2, 8, 8, 8)),
           out=((8, 3, 3, 3),), attrs=Conv2dWeightGradAttrs(padding=1, kernel_size=3),
           macs=2 * 8 * 8 * 8 * 3 * 3 * 3, flops=2 * (2 * 8 * 8 * 8 * 3 * 3 * 3)),
    # OH = floor((9 + 1 + 2 − 2 − 1) / 2) + 1 = 5, OW = 9 + 0 + 1 − 2 − 1 + 1 = 8; C/G = 2
    OpCase("conv2d_weight_grad-groups-asymmetric", conv2d_weight_grad,
           (T(1, 4, 9, 9), T(1, 6, 5, 8)), out=((6, 2, 3, 2),),
           attrs=Conv2dWeightGradAttrs(stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2),
                                       groups=2, kernel_size=(3, 2)),
           macs=1 * 6 * 5 * 8 * 2 * 3 * 2, flops=2 * (1 * 6 * 5 * 8 * 2 * 3 * 2)),
    # conv_transpose2d's weight gradient (k4 s2 p1, x [1, 8, 5, 5] -> gy [1, 4, 10, 10]): input
    # gy, grad_output x; its MACs are the transposed conv's, N·C_in·H·W·(O/G)·kh·kw
    OpCase("conv2d_weight_grad-of-conv-transpose", conv2d_weight_grad,
           (T(1, 4, 10, 10), T(1, 8, 5, 5)), out=((8, 4, 4, 4),),
           attrs=Conv2dWeightGradAttrs(stride=2, padding=1, kernel_size=4),
           macs=1 * 8 * 5 * 5 * 4 * 4 * 4, flops=2 * (1 * 8 * 5 * 5 * 4 * 4 * 4)),
    OpCase("conv2d_weight_grad-symbolic-batch", conv2d_weight_grad,
           (T("N", 2, 6, 6), T("N", 4, 4, 4)), out=((4, 2, 3, 3),),
           attrs=Conv2dWeightGradAttrs(kernel_size=3), env={"N": 3},
           macs=3 * 4 * 4 * 4 * 2 * 3 * 3, flops=2 * (3 * 4 * 4 * 4 * 2 * 3 * 3)),
    # deform_conv2d_data_grad inputs: (input, offset, weight, grad_output, mask); S samples =
    # N·C·kh·kw·OH·OW = 2·4·3·3·5·5; 22 FLOPs per sample, 10 more with a mask
    OpCase("deform_conv2d_data_grad-mask", deform_conv2d_data_grad,
           (T(2, 4, 9, 9), T(2, 36, 5, 5), T(4, 4, 3, 3), T(2, 4, 5, 5), T(2, 18, 5, 5)),
           out=((2, 4, 9, 9), (2, 36, 5, 5), (2, 18, 5, 5)),
           attrs=Conv2dAttrs(stride=2, padding=1),
           macs=2 * 4 * 5 * 5 * 4 * 3 * 3,
           sampling=(22 + 7) * (2 * 4 * 3 * 3 * 5 * 5),
           flops=2 * (2 * 4 * 5 * 5 * 4 * 3 * 3) + (22 + 10) * (2 * 4 * 3 * 3 * 5 * 5)),
    # weight groups 2 (C/G = 2), no mask: two outputs
    OpCase("deform_conv2d_data_grad-groups-no-mask", deform_conv2d_data_grad,
           (T(1, 4, 6, 6), T(1, 18, 4, 4), T(4, 2, 3, 3), T(1, 4, 4, 4), None),
           out=((1, 4, 6, 6), (1, 18, 4, 4)), attrs=Conv2dAttrs(),
           macs=1 * 4 * 4 * 4 * 2 * 3 * 3, sampling=22 * (1 * 4 * 3 * 3 * 4 * 4),
           flops=2 * (1 * 4 * 4 * 4 * 2 * 3 * 3) + 22 * (1 * 4 * 3 * 3 * 4 * 4)),
    # deform_conv2d_weight_grad inputs: (input, offset, grad_output, mask): the forward's cost
    # without the bias (the columns are sampled again)
    OpCase("deform_conv2d_weight_grad-mask", deform_conv2d_weight_grad,
           (T(2, 4, 9, 9), T(2, 36, 5, 5), T(2, 4, 5, 5), T(2, 18, 5, 5)),
           out=((4, 4, 3, 3),),
           attrs=Conv2dWeightGradAttrs(stride=2, padding=1, kernel_size=3),
           macs=2 * 4 * 5 * 5 * 4 * 3 * 3, sampling=7 * (2 * 4 * 3 * 3 * 5 * 5),
           flops=2 * (2 * 4 * 5 * 5 * 4 * 3 * 3) + 8 * (2 * 4 * 3 * 3 * 5 * 5)),
    OpCase("deform_conv2d_weight_grad-symbolic-batch", deform_conv2d_weight_grad,
           (T("N", 2, 5, 5), T("N", 8, 4, 4), T("N", 3, 4, 4), None),
           out=((3, 2, 2, 2),), attrs=Conv2dWeightGradAttrs(kernel_size=2), env={"N": 2},
           macs=2 * 3 * 4 * 4 * 2 * 2 * 2, sampling=7 * (2 * 2 * 2 * 2 * 4 * 4),
           flops=2 * (2 * 3 * 4 * 4 * 2 * 2 * 2) + 7 * (2 * 2 * 2 * 2 * 4 * 4)),
]

LINEAR_CASES = [
    # fused ops: conv/linear cost plus the activation's FLOP rule and one add for a residual
    OpCase("conv2d_fused-relu-residual", ops.conv2d_fused,
           (T(1, 3, 8, 8), T(4, 3, 3, 3), T(4), T(1, 4, 8, 8)), out=((1, 4, 8, 8),),
           attrs=Conv2dFusedAttrs(padding=1, activation=ops.relu, residual=True),
           macs=1 * 4 * 8 * 8 * 27, flops=2 * (1 * 4 * 8 * 8 * 27) + 3 * (1 * 4 * 8 * 8)),
    OpCase("conv2d_fused-hardswish", ops.conv2d_fused, (T(1, 3, 8, 8), T(4, 3, 3, 3), None),
           out=((1, 4, 6, 6),), attrs=Conv2dFusedAttrs(activation=ops.hardswish),
           macs=1 * 4 * 6 * 6 * 27, flops=2 * (1 * 4 * 6 * 6 * 27) + 5 * (1 * 4 * 6 * 6)),
    OpCase("linear_fused-leaky-residual", ops.linear_fused,
           (T(4, 16), T(10, 16), T(10), T(4, 10)), out=((4, 10),),
           attrs=LinearFusedAttrs(activation=ops.leaky_relu,
                                  activation_attrs=LeakyReluAttrs(0.2), residual=True),
           macs=4 * 16 * 10, flops=2 * (4 * 16 * 10) + 4 * 10 + 4 * 10 + 2 * 4 * 10),
    OpCase("linear-2d-bias", ops.linear, (T(4, 16), T(10, 16), T(10)), out=((4, 10),),
           macs=4 * 16 * 10, flops=2 * (4 * 16 * 10) + 4 * 10),
    # every leading dim counts: 2·5·in·out
    OpCase("linear-3d", ops.linear, (T(2, 5, 16), T(8, 16), None), out=((2, 5, 8),),
           macs=2 * 5 * 16 * 8, flops=2 * (2 * 5 * 16 * 8)),
    OpCase("linear-1d", ops.linear, (T(16), T(8, 16), T(8)), out=((8,),),
           macs=16 * 8, flops=2 * 16 * 8 + 8),
    OpCase("linear-symbolic-4d", ops.linear, (T("N", 3, 4, 16), T(8, 16), None),
           out=(("N", 3, 4, 8),), env={"N": 2},
           macs=2 * 3 * 4 * 16 * 8, flops=2 * (2 * 3 * 4 * 16 * 8)),
    OpCase("matmul-2d", ops.matmul, (T(3, 4), T(4, 5)), out=((3, 5),),
           macs=3 * 4 * 5, flops=2 * 3 * 4 * 5),
    # batch dims broadcast: (2, 1) with (5,) -> (2, 5)
    OpCase("matmul-broadcast-batch", ops.matmul, (T(2, 1, 3, 4), T(5, 4, 6)), out=((2, 5, 3, 6),),
           macs=2 * 5 * 3 * 4 * 6, flops=2 * (2 * 5 * 3 * 4 * 6)),
    OpCase("matmul-vector-matrix", ops.matmul, (T(4), T(4, 5)), out=((5,),),
           macs=4 * 5, flops=2 * 4 * 5),
    OpCase("matmul-matrix-vector", ops.matmul, (T(3, 4), T(4)), out=((3,),),
           macs=3 * 4, flops=2 * 3 * 4),
    OpCase("matmul-dot", ops.matmul, (T(4), T(4)), out=((),), macs=4, flops=2 * 4),
    OpCase("matmul-vector-batched", ops.matmul, (T(4), T(2, 4, 5)), out=((2, 5),),
           macs=2 * 4 * 5, flops=2 * (2 * 4 * 5)),
    OpCase("matmul-symbolic-batch", ops.matmul, (T("N", 3, 4), T(4, 2)), out=(("N", 3, 2),),
           env={"N": 5}, macs=5 * 3 * 4 * 2, flops=2 * (5 * 3 * 4 * 2)),
]

BN_X, BN_C = T(2, 8, 4, 4), T(8)
BN_E = 2 * 8 * 4 * 4
NORM_CASES = [
    # running-statistics update: 3E for the batch statistics, 7 per channel for the averages
    OpCase("batch_norm_update", batch_norm_update, (BN_X, BN_C, BN_C, None),
           out=((8,), (8,)), attrs=BatchNormUpdateAttrs(0.1), macs=0, flops=3 * BN_E + 7 * 8),
    OpCase("batch_norm-eval", ops.batch_norm, (BN_X, BN_C, BN_C, BN_C, BN_C),
           out=((2, 8, 4, 4),), attrs=BatchNormAttrs(training=False), macs=0, flops=2 * BN_E),
    OpCase("batch_norm-train-affine", ops.batch_norm, (BN_X, BN_C, BN_C, BN_C, BN_C),
           out=((2, 8, 4, 4),), attrs=BatchNormAttrs(training=True), macs=0, flops=5 * BN_E),
    OpCase("batch_norm-train-no-affine", ops.batch_norm, (BN_X, BN_C, BN_C, None, None),
           out=((2, 8, 4, 4),), attrs=BatchNormAttrs(training=True), macs=0, flops=4 * BN_E),
    OpCase("batch_norm-eval-no-affine", ops.batch_norm, (BN_X, BN_C, BN_C, None, None),
           out=((2, 8, 4, 4),), attrs=BatchNormAttrs(), macs=0, flops=2 * BN_E),
    # track_running_stats=False: batch statistics in eval too
    OpCase("batch_norm-eval-no-running-stats", ops.batch_norm, (BN_X, None, None, BN_C, BN_C),
           out=((2, 8, 4, 4),), attrs=BatchNormAttrs(training=False), macs=0, flops=5 * BN_E),
    OpCase("batch_norm-1d", ops.batch_norm, (T(4, 8), BN_C, BN_C, BN_C, BN_C), out=((4, 8),),
           attrs=BatchNormAttrs(), macs=0, flops=2 * 4 * 8),
    OpCase("batch_norm-symbolic-batch", ops.batch_norm, (T("N", 8, 4, 4), BN_C, BN_C, BN_C, BN_C),
           out=(("N", 8, 4, 4),), attrs=BatchNormAttrs(training=True), env={"N": 3},
           macs=0, flops=5 * 3 * 8 * 4 * 4),
    # group_norm and layer_norm count as batch_norm with batch statistics: 5E affine, 4E not
    OpCase("group_norm-affine", ops.group_norm, (BN_X, BN_C, BN_C), out=((2, 8, 4, 4),),
           attrs=ops.group_norm.attrs(4), macs=0, flops=5 * BN_E),
    OpCase("group_norm-symbolic", ops.group_norm, (T("N", 8, "H", 4), None, None),
           out=(("N", 8, "H", 4),), attrs=ops.group_norm.attrs(8), env={"N": 3, "H": 2},
           macs=0, flops=4 * 3 * 8 * 2 * 4),
    OpCase("layer_norm-affine", ops.layer_norm, (T("N", 6, 8), BN_C, BN_C), out=(("N", 6, 8),),
           attrs=ops.layer_norm.attrs((8,)), env={"N": 2}, macs=0, flops=5 * 2 * 6 * 8),
    OpCase("layer_norm-2d-shape", ops.layer_norm, (BN_X, None, None), out=((2, 8, 4, 4),),
           attrs=ops.layer_norm.attrs((4, 4)), macs=0, flops=4 * BN_E),
    OpCase("group_norm_grad", REGISTRY["group_norm_grad"], (BN_X, BN_C, BN_X),
           out=((2, 8, 4, 4), (8,), (8,)), attrs=REGISTRY["group_norm_grad"].attrs(2),
           macs=0, flops=11 * BN_E),
    OpCase("group_norm_grad-params-only", REGISTRY["group_norm_grad"], (BN_X, None, BN_X),
           out=((8,),), attrs=REGISTRY["group_norm_grad"].attrs(2, outputs=("weight",)),
           macs=0, flops=6 * BN_E),
    # batch_norm_grad, batch statistics: 6E of sums (Σx, x², Σx², Σgy, gy·x, Σgy·x), which give
    # gγ and gβ, plus 5E for gx = a·(gy − ḡ) + b·(x − μ)
    OpCase("batch_norm_grad-train", batch_norm_grad, (BN_X, None, None, BN_C, BN_X),
           out=((2, 8, 4, 4), (8,), (8,)), attrs=BatchNormGradAttrs(), macs=0,
           flops=11 * BN_E),
    OpCase("batch_norm_grad-train-params-only", batch_norm_grad,
           (BN_X, None, None, BN_C, BN_X), out=((8,), (8,)),
           attrs=BatchNormGradAttrs(outputs=("weight", "bias")), macs=0, flops=6 * BN_E),
    OpCase("batch_norm_grad-train-no-affine", batch_norm_grad,
           (T(6, 8), None, None, None, T(6, 8)), out=((6, 8),),
           attrs=BatchNormGradAttrs(outputs=("input",)), macs=0, flops=11 * 6 * 8),
    # eval: gx = gy·γ/√(rv + eps) E; gγ = Σ gy·(x − rm)/√(rv + eps) 3E; gβ = Σ gy E
    OpCase("batch_norm_grad-eval", batch_norm_grad, (BN_X, BN_C, BN_C, BN_C, BN_X),
           out=((2, 8, 4, 4), (8,), (8,)), attrs=BatchNormGradAttrs(batch_stats=False),
           macs=0, flops=5 * BN_E),
    OpCase("batch_norm_grad-eval-input-only", batch_norm_grad,
           (BN_X, None, BN_C, BN_C, BN_X), out=((2, 8, 4, 4),),
           attrs=BatchNormGradAttrs(batch_stats=False, outputs=("input",)), macs=0,
           flops=BN_E),
    OpCase("batch_norm_grad-symbolic-batch", batch_norm_grad,
           (T("N", 8, 4, 4), None, None, BN_C, T("N", 8, 4, 4)),
           out=(("N", 8, 4, 4), (8,), (8,)), attrs=BatchNormGradAttrs(), env={"N": 3},
           macs=0, flops=11 * 3 * 8 * 4 * 4),
]

ACTIVATION_CASES = [
    OpCase("relu", ops.relu, (X4,), out=((2, 3, 4, 5),), macs=0, flops=1 * E),
    OpCase("relu6", ops.relu6, (X4,), out=((2, 3, 4, 5),), macs=0, flops=2 * E),
    OpCase("leaky_relu", ops.leaky_relu, (X4,), out=((2, 3, 4, 5),),
           attrs=LeakyReluAttrs(0.2), macs=0, flops=2 * E),
    OpCase("prelu-per-channel", ops.prelu, (X4, T(3)), out=((2, 3, 4, 5),), macs=0, flops=2 * E),
    OpCase("prelu-shared", ops.prelu, (X4, T(1)), out=((2, 3, 4, 5),), macs=0, flops=2 * E),
    OpCase("rrelu-eval", ops.rrelu, (X4,), out=((2, 3, 4, 5),), attrs=RReluAttrs(),
           macs=0, flops=2 * E),
    # training: the output and the multiplier applied (1, or the element's sampled slope)
    OpCase("rrelu-train", ops.rrelu, (X4,), out=((2, 3, 4, 5), (2, 3, 4, 5)),
           attrs=RReluAttrs(training=True), macs=0, flops=2 * E),
    OpCase("elu", ops.elu, (X4,), out=((2, 3, 4, 5),), attrs=EluAttrs(), macs=0, flops=3 * E),
    OpCase("sigmoid", ops.sigmoid, (X4,), out=((2, 3, 4, 5),), macs=0, flops=3 * E),
    OpCase("tanh", ops.tanh, (X4,), out=((2, 3, 4, 5),), macs=0, flops=1 * E),
    OpCase("abs", ops.abs_, (X4,), out=((2, 3, 4, 5),), macs=0, flops=1 * E),
    OpCase("silu", ops.silu, (X4,), out=((2, 3, 4, 5),), macs=0, flops=4 * E),
    OpCase("hardsigmoid", ops.hardsigmoid, (X4,), out=((2, 3, 4, 5),), macs=0, flops=4 * E),
    OpCase("hardswish", ops.hardswish, (X4,), out=((2, 3, 4, 5),), macs=0, flops=5 * E),
    # gelu is not in docs/semantics.md §6.3; activation.py documents 6E
    OpCase("gelu", ops.gelu, (X4,), out=((2, 3, 4, 5),), attrs=GeluAttrs(), macs=0, flops=6 * E),
    OpCase("hardtanh", ops.hardtanh, (X4,), out=((2, 3, 4, 5),),
           attrs=ops.hardtanh.attrs(-2.0, 2.0), macs=0, flops=2 * E),
    OpCase("softplus", ops.softplus, (X4,), out=((2, 3, 4, 5),),
           attrs=ops.softplus.attrs(2.0, 10.0), macs=0, flops=5 * E),
    OpCase("mish", ops.mish, (X4,), out=((2, 3, 4, 5),), macs=0, flops=4 * E),
    OpCase("param-activation-grad-softplus", REGISTRY["param_activation_grad"], (X4, X4),
           out=((2, 3, 4, 5),), attrs=ActivationGradAttrs(ops.softplus, ops.softplus.attrs()),
           macs=0, flops=6 * E),
    # activation_grad: the activation's own FLOPs plus one multiply per element
    OpCase("activation-grad-gelu", ops.activation_grad, (X4, X4), out=((2, 3, 4, 5),),
           attrs=ActivationGradAttrs(ops.gelu, GeluAttrs()), macs=0, flops=7 * E),
    OpCase("activation-grad-relu", ops.activation_grad, (X4, X4), out=((2, 3, 4, 5),),
           attrs=ActivationGradAttrs(ops.relu, None), macs=0, flops=2 * E),
    OpCase("softmax", ops.softmax, (X4,), out=((2, 3, 4, 5),), attrs=SoftmaxAttrs(1),
           macs=0, flops=5 * E),
    OpCase("log_softmax", ops.log_softmax, (X4,), out=((2, 3, 4, 5),), attrs=SoftmaxAttrs(-1),
           macs=0, flops=5 * E),
    # training: the output and the scaled mask, per element or per (sample, channel)
    OpCase("dropout-train", ops.dropout, (X4,), out=((2, 3, 4, 5), (2, 3, 4, 5)),
           attrs=DropoutAttrs(0.3, training=True), macs=0, flops=E),
    OpCase("dropout-eval", ops.dropout, (X4,), out=((2, 3, 4, 5),),
           attrs=DropoutAttrs(0.3, training=False), macs=0, flops=0),
    OpCase("dropout2d-train", ops.dropout2d, (X4,), out=((2, 3, 4, 5), (2, 3, 1, 1)),
           attrs=DropoutAttrs(training=True), macs=0, flops=E),
    OpCase("dropout2d-train-3d", ops.dropout2d, (T(2, 3, 7),), out=((2, 3, 7), (2, 3, 1)),
           attrs=DropoutAttrs(training=True), macs=0, flops=2 * 3 * 7),
    # prelu_grad: E comparisons, + E multiplies (input), + E multiplies and E adds (weight)
    OpCase("prelu_grad-per-channel", prelu_grad, (X4, T(3), X4),
           out=((2, 3, 4, 5), (3,)), macs=0, flops=4 * E),
    OpCase("prelu_grad-shared-weight-only", prelu_grad, (X4, T(1), X4), out=((1,),),
           attrs=PReluGradAttrs(("weight",)), macs=0, flops=3 * E),
    OpCase("prelu_grad-2d-input-only", prelu_grad, (T(6, 5), T(5), T(6, 5)),
           out=((6, 5),), attrs=PReluGradAttrs(("input",)), macs=0, flops=2 * 6 * 5),
    OpCase("dropout2d-eval", ops.dropout2d, (X4,), out=((2, 3, 4, 5),),
           attrs=DropoutAttrs(), macs=0, flops=0),
    OpCase("relu-symbolic-batch", ops.relu, (T("N", 3, 4, 5),), out=(("N", 3, 4, 5),),
           env={"N": 2}, macs=0, flops=E),
]

POOL_CASES = [
    OpCase("max_pool2d-k2", ops.max_pool2d, (T(1, 3, 8, 8),), out=((1, 3, 4, 4),),
           attrs=PoolAttrs(kernel_size=2), macs=0, flops=1 * 3 * 4 * 4 * 2 * 2),
    # floor((7 + 2 − 2 − 1) / 2) + 1 = 4
    OpCase("max_pool2d-k3s2p1", ops.max_pool2d, (T(1, 2, 7, 7),), out=((1, 2, 4, 4),),
           attrs=PoolAttrs(kernel_size=3, stride=2, padding=1), macs=0,
           flops=1 * 2 * 4 * 4 * 3 * 3),
    # ceil: floor((6 − 3 + 1) / 2) + 1 = 3 (floor mode gives 2); last start 4 < 6
    OpCase("max_pool2d-ceil", ops.max_pool2d, (T(1, 1, 6, 6),), out=((1, 1, 3, 3),),
           attrs=PoolAttrs(kernel_size=3, stride=2, ceil_mode=True), macs=0,
           flops=1 * 1 * 3 * 3 * 3 * 3),
    # ceil: floor((5 + 2 − 1 − 1 + 1) / 2) + 1 = 4, but (4 − 1)·2 = 6 ≥ L + p = 6 starts in the
    # right padding, so out = 3
    OpCase("max_pool2d-ceil-last-window-in-padding", ops.max_pool2d, (T(1, 1, 5, 5),),
           out=((1, 1, 3, 3),), attrs=PoolAttrs(kernel_size=2, stride=2, padding=1,
                                                ceil_mode=True),
           macs=0, flops=1 * 1 * 3 * 3 * 2 * 2),
    # d=2: floor((9 − 2·2 − 1) / 1) + 1 = 5; FLOPs count kernel taps, not the dilated span
    OpCase("max_pool2d-dilation2", ops.max_pool2d, (T(1, 1, 9, 9),), out=((1, 1, 5, 5),),
           attrs=PoolAttrs(kernel_size=3, stride=1, dilation=2), macs=0,
           flops=1 * 1 * 5 * 5 * 3 * 3),
    OpCase("max_pool2d-nonsquare", ops.max_pool2d, (T(1, 1, 6, 6),), out=((1, 1, 3, 4),),
           attrs=PoolAttrs(kernel_size=(2, 3), stride=(2, 1)), macs=0,
           flops=1 * 1 * 3 * 4 * 2 * 3),
    OpCase("max_pool2d-symbolic-batch", ops.max_pool2d, (T("N", 2, 8, 8),),
           out=(("N", 2, 4, 4),), attrs=PoolAttrs(kernel_size=2), env={"N": 3},
           macs=0, flops=3 * 2 * 4 * 4 * 2 * 2),
    OpCase("avg_pool2d-k2", ops.avg_pool2d, (T(1, 3, 8, 8),), out=((1, 3, 4, 4),),
           attrs=AvgPoolAttrs(kernel_size=2), macs=0, flops=1 * 3 * 4 * 4 * 2 * 2),
    # floor((5 + 2 − 3 + 1) / 2) + 1 = 3; last start 4 < 6 stays
    OpCase("avg_pool2d-ceil-exclude-pad", ops.avg_pool2d, (T(1, 1, 5, 5),), out=((1, 1, 3, 3),),
           attrs=AvgPoolAttrs(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                              count_include_pad=False),
           macs=0, flops=1 * 1 * 3 * 3 * 3 * 3),
    OpCase("avg_pool2d-ceil-last-window-in-padding", ops.avg_pool2d, (T(1, 1, 5, 5),),
           out=((1, 1, 3, 3),), attrs=AvgPoolAttrs(kernel_size=2, stride=2, padding=1,
                                                   ceil_mode=True),
           macs=0, flops=1 * 1 * 3 * 3 * 2 * 2),
    # adaptive windows [floor(i·L/out), ceil((i+1)·L/out)): global = the whole plane
    OpCase("adaptive_avg_pool2d-global", ops.adaptive_avg_pool2d, (T(2, 8, 7, 7),),
           out=((2, 8, 1, 1),), attrs=AdaptivePoolAttrs(1), macs=0,
           flops=2 * 8 * 7 * 7 + 2 * 8),
    # L=5, out=3: windows 2, 3, 2 (sum 7); L=7, out=4: windows 2, 3, 3, 2 (sum 10)
    OpCase("adaptive_avg_pool2d-nondivisible", ops.adaptive_avg_pool2d, (T(1, 2, 5, 7),),
           out=((1, 2, 3, 4),), attrs=AdaptivePoolAttrs((3, 4)), macs=0,
           flops=1 * 2 * (2 + 3 + 2) * (2 + 3 + 3 + 2) + 1 * 2 * 3 * 4),
    # divisible: E_in + E_out
    OpCase("adaptive_avg_pool2d-divisible", ops.adaptive_avg_pool2d, (T(1, 1, 8, 8),),
           out=((1, 1, 4, 4),), attrs=AdaptivePoolAttrs(4), macs=0, flops=1 * 8 * 8 + 1 * 4 * 4),
    # L=3, out=5 (windows overlap): 1, 2, 1, 2, 1 (sum 7)
    OpCase("adaptive_avg_pool2d-upsampling", ops.adaptive_avg_pool2d, (T(1, 1, 3, 3),),
           out=((1, 1, 5, 5),), attrs=AdaptivePoolAttrs(5), macs=0, flops=7 * 7 + 5 * 5),
    # None keeps the input size: H windows all 1 (sum 5); L=6, out=2: 3, 3
    OpCase("adaptive_avg_pool2d-none-keeps-dim", ops.adaptive_avg_pool2d, (T(1, 1, 5, 6),),
           out=((1, 1, 5, 2),), attrs=AdaptivePoolAttrs((None, 2)), macs=0,
           flops=5 * (3 + 3) + 5 * 2),
    OpCase("adaptive_avg_pool2d-symbolic-batch", ops.adaptive_avg_pool2d, (T("N", 4, 6, 6),),
           out=(("N", 4, 1, 1),), attrs=AdaptivePoolAttrs(1), env={"N": 2}, macs=0,
           flops=2 * 4 * 6 * 6 + 2 * 4),
    OpCase("adaptive_max_pool2d-nondivisible", ops.adaptive_max_pool2d, (T(1, 2, 5, 7),),
           out=((1, 2, 3, 4),), attrs=AdaptivePoolAttrs((3, 4)), macs=0,
           flops=1 * 2 * (2 + 3 + 2) * (2 + 3 + 3 + 2)),
    OpCase("interpolate-size-nearest", ops.interpolate, (T(1, 3, 5, 7),), out=((1, 3, 12, 10),),
           attrs=InterpolateAttrs(size=(12, 10)), macs=0, flops=0),
    OpCase("interpolate-scale2-nearest", ops.interpolate, (T(1, 2, 4, 4),), out=((1, 2, 8, 8),),
           attrs=InterpolateAttrs(scale_factor=2), macs=0, flops=0),
    # floor(5·1.5) = 7, floor(7·1.5) = 10; bilinear 7·E_out
    OpCase("interpolate-scale1.5-bilinear", ops.interpolate, (T(1, 1, 5, 7),),
           out=((1, 1, 7, 10),), attrs=InterpolateAttrs(scale_factor=1.5, mode="bilinear"),
           macs=0, flops=7 * 1 * 1 * 7 * 10),
    # floor(9·0.5) = 4, floor(10·0.3) = 3 (10·0.3 is 3.0000000000000004 in binary)
    OpCase("interpolate-scale-down", ops.interpolate, (T(1, 1, 9, 10),), out=((1, 1, 4, 3),),
           attrs=InterpolateAttrs(scale_factor=(0.5, 0.3)), macs=0, flops=0),
    OpCase("interpolate-nearest-exact", ops.interpolate, (T(1, 1, 3, 3),), out=((1, 1, 5, 5),),
           attrs=InterpolateAttrs(scale_factor=1.7, mode="nearest-exact"), macs=0, flops=0),
    OpCase("interpolate-bilinear-align-corners", ops.interpolate, (T(2, 3, 4, 4),),
           out=((2, 3, 7, 9),),
           attrs=InterpolateAttrs(size=(7, 9), mode="bilinear", align_corners=True),
           macs=0, flops=7 * 2 * 3 * 7 * 9),
    OpCase("interpolate-symbolic-batch", ops.interpolate, (T("N", 1, 4, 4),),
           out=(("N", 1, 8, 8),), attrs=InterpolateAttrs(scale_factor=2, mode="bilinear"),
           env={"N": 2}, macs=0, flops=7 * 2 * 1 * 8 * 8),
    # -- backward ops (the input's gradient), costed by the same rules -----------------------
    # max: E_out·kh·kw comparisons (the argmax again) + E_out adds; E_out = 1·2·4·4
    OpCase("max_pool2d_grad-k3s2p1", max_pool2d_grad, (T(1, 2, 7, 7), T(1, 2, 4, 4)),
           out=((1, 2, 7, 7),), attrs=PoolAttrs(kernel_size=3, stride=2, padding=1), macs=0,
           flops=1 * 2 * 4 * 4 * 3 * 3 + 1 * 2 * 4 * 4),
    OpCase("max_pool2d_grad-symbolic-batch", max_pool2d_grad, (T("N", 2, 8, 8), T("N", 2, 4, 4)),
           out=(("N", 2, 8, 8),), attrs=PoolAttrs(kernel_size=2), env={"N": 3}, macs=0,
           flops=3 * 2 * 4 * 4 * 2 * 2 + 3 * 2 * 4 * 4),
    # avg: E_out divisions + E_out·kh·kw adds; 5x5, k3 s2 p1 ceil: out 3 (see above)
    OpCase("avg_pool2d_grad-ceil-exclude-pad", avg_pool2d_grad, (T(1, 1, 3, 3),),
           out=((1, 1, 5, 5),), attrs=AvgPoolGradAttrs(
               kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
               input_size=(5, 5)),
           macs=0, flops=1 * 1 * 3 * 3 * 3 * 3 + 1 * 1 * 3 * 3),
    OpCase("avg_pool2d_grad-symbolic-batch", avg_pool2d_grad, (T("N", 3, 4, 4),),
           out=(("N", 3, 8, 8),), attrs=AvgPoolGradAttrs(kernel_size=2, input_size=(8, 8)),
           env={"N": 2}, macs=0, flops=2 * 3 * 4 * 4 * 2 * 2 + 2 * 3 * 4 * 4),
    # adaptive: Σ window sizes + E_out, as the forward; L=5, out=3: 2+3+2; L=7, out=4: 2+3+3+2
    OpCase("adaptive_avg_pool2d_grad-nondivisible", adaptive_avg_grad, (T(1, 2, 3, 4),),
           out=((1, 2, 5, 7),), attrs=AdaptivePoolGradAttrs((3, 4), input_size=(5, 7)),
           macs=0, flops=1 * 2 * (2 + 3 + 2) * (2 + 3 + 3 + 2) + 1 * 2 * 3 * 4),
    OpCase("adaptive_avg_pool2d_grad-global", adaptive_avg_grad, (T(2, 8, 1, 1),),
           out=((2, 8, 7, 7),), attrs=AdaptivePoolGradAttrs(1, input_size=(7, 7)), macs=0,
           flops=2 * 8 * 7 * 7 + 2 * 8),
    # None keeps the input's H: H windows all 1 (sum 5); L=6, out=2: 3, 3
    OpCase("adaptive_avg_pool2d_grad-none-keeps-dim", adaptive_avg_grad, (T(1, 1, 5, 2),),
           out=((1, 1, 5, 6),), attrs=AdaptivePoolGradAttrs((None, 2), input_size=(5, 6)),
           macs=0, flops=5 * (3 + 3) + 5 * 2),
    OpCase("adaptive_max_pool2d_grad-nondivisible", adaptive_max_grad,
           (T(1, 2, 5, 7), T(1, 2, 3, 4)), out=((1, 2, 5, 7),),
           attrs=AdaptivePoolAttrs((3, 4)), macs=0,
           flops=1 * 2 * (2 + 3 + 2) * (2 + 3 + 3 + 2) + 1 * 2 * 3 * 4),
    # interpolate: bilinear 8·E_out (4 multiplies, 4 adds), nearest E_out adds
    OpCase("interpolate_grad-bilinear-scale1.5", interpolate_grad, (T(1, 1, 7, 10),),
           out=((1, 1, 5, 7),), attrs=InterpolateGradAttrs(
               scale_factor=1.5, mode="bilinear", input_size=(5, 7)),
           macs=0, flops=8 * 1 * 1 * 7 * 10),
    OpCase("interpolate_grad-nearest-size", interpolate_grad, (T(1, 3, 12, 10),),
           out=((1, 3, 5, 7),), attrs=InterpolateGradAttrs(size=(12, 10), input_size=(5, 7)),
           macs=0, flops=1 * 3 * 12 * 10),
    # floor(9·0.5) = 4, floor(10·0.3) = 3
    OpCase("interpolate_grad-nearest-exact-down", interpolate_grad, (T("N", 1, 4, 3),),
           out=(("N", 1, 9, 10),), attrs=InterpolateGradAttrs(
               scale_factor=(0.5, 0.3), mode="nearest-exact", input_size=(9, 10)),
           env={"N": 2}, macs=0, flops=2 * 1 * 4 * 3),
]

TENSOR_CASES = [
    OpCase("add-broadcast", ops.add, (T(2, 3, 4, 4), T(3, 1, 1)), out=((2, 3, 4, 4),),
           macs=0, flops=2 * 3 * 4 * 4),
    OpCase("sub-scalar", ops.sub, (T(2, 3), T()), out=((2, 3),), macs=0, flops=2 * 3),
    OpCase("mul-broadcast-both", ops.mul, (T(1, 3, 1, 1), T(2, 1, 4, 4)), out=((2, 3, 4, 4),),
           macs=0, flops=2 * 3 * 4 * 4),
    OpCase("div-outer", ops.div, (T(4, 1), T(1, 5)), out=((4, 5),), macs=0, flops=4 * 5),
    OpCase("add-symbolic-batch", ops.add, (T("N", 3), T(3)), out=(("N", 3),), env={"N": 4},
           macs=0, flops=4 * 3),
    OpCase("cat-channels", ops.cat, (T(1, 3, 4, 4), T(1, 5, 4, 4)), out=((1, 8, 4, 4),),
           attrs=DimAttrs(1), macs=0, flops=0),
    OpCase("cat-last-dim-three", ops.cat, (T(2, 1), T(2, 2), T(2, 3)), out=((2, 6),),
           attrs=DimAttrs(-1), macs=0, flops=0),
    OpCase("cat-symbolic-batch", ops.cat, (T("N", 3, 2, 2), T("N", 5, 2, 2)),
           out=(("N", 8, 2, 2),), attrs=DimAttrs(1), env={"N": 2}, macs=0, flops=0),
    OpCase("reshape-minus-one", ops.reshape, (T(2, 3, 4, 4),), out=((2, 48),),
           attrs=ReshapeAttrs((2, -1)), macs=0, flops=0),
    OpCase("reshape-leading-minus-one", ops.reshape, (T(2, 3, 4, 4),), out=((24, 4),),
           attrs=ReshapeAttrs((-1, 4)), macs=0, flops=0),
    # the -1 absorbs the symbolic batch: 48·N / 48 = N
    OpCase("reshape-symbolic-batch-minus-one", ops.reshape, (T("N", 3, 4, 4),),
           out=(("N", 48),), attrs=ReshapeAttrs((-1, 48)), env={"N": 2}, macs=0, flops=0),
    OpCase("flatten-from-1", ops.flatten, (T(2, 3, 4, 5),), out=((2, 60),),
           attrs=FlattenAttrs(1), macs=0, flops=0),
    OpCase("flatten-all", ops.flatten, (T(2, 3, 4, 5),), out=((120,),),
           attrs=FlattenAttrs(0), macs=0, flops=0),
    OpCase("flatten-middle", ops.flatten, (T(2, 3, 4, 5),), out=((2, 12, 5),),
           attrs=FlattenAttrs(1, 2), macs=0, flops=0),
    OpCase("flatten-symbolic-batch", ops.flatten, (T("N", 3, 4, 4),), out=(("N", 48),),
           attrs=FlattenAttrs(1), env={"N": 2}, macs=0, flops=0),
    OpCase("transpose-swap", ops.transpose, (T(2, 3, 4),), out=((2, 4, 3),),
           attrs=TransposeAttrs((0, 2, 1)), macs=0, flops=0),
    OpCase("transpose-nchw-to-nhwc", ops.transpose, (T(1, 2, 3, 4),), out=((1, 3, 4, 2),),
           attrs=TransposeAttrs((0, -2, -1, 1)), macs=0, flops=0),
    OpCase("split-channels", ops.split, (T(2, 6, 4),), out=((2, 2, 4), (2, 4, 4)),
           attrs=SplitAttrs((2, 4), 1), macs=0, flops=0),
    OpCase("split-last-dim-three", ops.split, (T(3, 7),), out=((3, 3), (3, 3), (3, 1)),
           attrs=SplitAttrs((3, 3, 1), -1), macs=0, flops=0),
    OpCase("channel_shuffle", ops.channel_shuffle, (T(1, 12, 4, 4),), out=((1, 12, 4, 4),),
           attrs=ChannelShuffleAttrs(3), macs=0, flops=0),
    # torch order: (left, right) of the last dim first
    OpCase("pad-last-dim", ops.pad, (T(1, 3, 4, 4),), out=((1, 3, 4, 7),),
           attrs=PadAttrs((1, 2)), macs=0, flops=0),
    OpCase("pad-two-dims", ops.pad, (T(1, 3, 4, 4),), out=((1, 3, 6, 6),),
           attrs=PadAttrs((1, 1, 2, 0)), macs=0, flops=0),
    OpCase("pad-negative-crops", ops.pad, (T(1, 3, 4, 4),), out=((1, 3, 4, 2),),
           attrs=PadAttrs((-1, -1)), macs=0, flops=0),
    OpCase("identity", ops.identity, (T(2, 3),), out=((2, 3),), macs=0, flops=0),
    OpCase("expand-broadcast", ops.expand, (T(3, 1, 4),), out=((2, 3, 5, 4),),
           attrs=ExpandAttrs((2, 3, 5, 4)), macs=0, flops=0),
    # mean: E_in adds + E_out divisions; sum and amax: E_in
    OpCase("mean-spatial", ops.mean, (T(2, 3, 4, 4),), out=((2, 3),),
           attrs=ReduceAttrs((2, 3)), macs=0, flops=2 * 3 * 4 * 4 + 2 * 3),
    OpCase("mean-keepdim", ops.mean, (T(2, 3, 4, 4),), out=((2, 3, 1, 1),),
           attrs=ReduceAttrs((-2, -1), keepdim=True), macs=0, flops=2 * 3 * 4 * 4 + 2 * 3),
    OpCase("mean-all", ops.mean, (T(2, 3, 4, 4),), out=((),), attrs=ReduceAttrs(),
           macs=0, flops=2 * 3 * 4 * 4 + 1),
    OpCase("sum-channels", ops.sum_, (T(2, 3, 4, 4),), out=((2, 4, 4),),
           attrs=ReduceAttrs((1,)), macs=0, flops=2 * 3 * 4 * 4),
    OpCase("amax-keepdim", ops.amax, (T(2, 3, 4, 4),), out=((2, 3, 4, 1),),
           attrs=ReduceAttrs((-1,), keepdim=True), macs=0, flops=2 * 3 * 4 * 4),
    # amax_grad: per input element a comparison, a tie-count add and a multiply; per output
    # element one division
    OpCase("amax_grad-spatial", amax_grad, (T(2, 3, 4, 4), T(2, 3), T(2, 3)),
           out=((2, 3, 4, 4),), attrs=ReduceAttrs((2, 3)), macs=0,
           flops=3 * 2 * 3 * 4 * 4 + 2 * 3),
    OpCase("amax_grad-all", amax_grad, (T(2, 3), T(), T()), out=((2, 3),),
           attrs=ReduceAttrs(), macs=0, flops=3 * 2 * 3 + 1),
    OpCase("amax_grad-symbolic-batch", amax_grad, (T("N", 3, 4), T("N", 1, 4),
                                                      T("N", 1, 4)),
           out=(("N", 3, 4),), attrs=ReduceAttrs((1,), keepdim=True), env={"N": 2},
           macs=0, flops=3 * 2 * 3 * 4 + 2 * 4),
    # slice: Python's clamping; len(range(1, 6, 2)) = 3, len(range(5, 2)) = 0, -3: -> 3
    OpCase("slice-steps-and-clamps", ops.slice_, (T("N", 6, 5, 7),), out=(("N", 3, 0, 3),),
           attrs=SliceAttrs((1, 2, -1), (1, 5, -3), (100, 2, 7), (2, 1, 1)), env={"N": 2},
           macs=0, flops=0),
    OpCase("gather-repeated-negative", ops.gather, (T(2, 5, 3),), out=((2, 4, 3),),
           attrs=GatherAttrs(1, (4, 0, 0, -1)), macs=0, flops=0),
    OpCase("sqrt", ops.sqrt, (X4,), out=((2, 3, 4, 5),), macs=0, flops=E),
    OpCase("exp", ops.exp, (X4,), out=((2, 3, 4, 5),), macs=0, flops=E),
    OpCase("log", ops.log, (X4,), out=((2, 3, 4, 5),), macs=0, flops=E),
    OpCase("pow", ops.pow_, (X4,), out=((2, 3, 4, 5),), attrs=PowAttrs(1.5), macs=0, flops=E),
    # clamp: a comparison against each bound per element
    OpCase("clamp", ops.clamp, (X4,), out=((2, 3, 4, 5),), attrs=ClampAttrs(-1.0, 1.0),
           macs=0, flops=2 * E),
    OpCase("compare-broadcast", ops.compare, (T(2, 3, 1), T(4,)), out=((2, 3, 4),),
           attrs=CompareAttrs("ge"), macs=0, flops=2 * 3 * 4),
    OpCase("where-broadcast-three", ops.where, (T(3, 1), T(2, 1, 4), T()), out=((2, 3, 4),),
           macs=0, flops=2 * 3 * 4),
]


def loss_cases(name: str, op: OpDef, inputs: tuple, per_item: tuple, elementwise: int,
               items: int, attrs: Callable[[str], Any] = LossAttrs) -> list[OpCase]:
    """One case per reduction: 'none' keeps ``per_item``; 'sum' adds ``items`` adds; 'mean'
    adds ``items`` adds and one division."""
    extra = {"none": 0, "sum": items, "mean": items + 1}
    return [
        OpCase(f"{name}-{red}", op, inputs, out=(per_item if red == "none" else (),),
               attrs=attrs(red), macs=0, flops=elementwise + extra[red])
        for red in ("none", "sum", "mean")
    ]


LOGITS, LABELS = T(4, 10), T(4, dtype="int64")
SCALAR = T()


def grad_case(name: str, loss: OpDef, attrs: Any, wrt: int, g: TensorType, inputs: tuple,
              flops: int) -> OpCase:
    """``loss_grad``: the gradient of ``loss`` (with ``attrs``) for its input ``wrt``, given
    the output's gradient ``g``: shaped like that input, costing its decomposition
    (cnnir/ops/loss.py; 'mean' adds 1 for g/count, R + 1 for the class-index weighted mean)."""
    return OpCase(f"loss_grad-{name}", loss_grad, (g, *inputs), out=(inputs[wrt].shape,),
                  attrs=LossGradAttrs(loss, attrs, wrt), macs=0, flops=flops)


EMB = T(4, 8)  # triplet and contrastive embeddings: E = 32, R = 4
LOSS_GRAD_CASES = [
    # d, sign, scale: 3E (+1 for g/count)
    grad_case("l1-target-none", ops.l1_loss, LossAttrs("none"), 1, LOSS_X, (LOSS_X, LOSS_T),
              3 * 20),
    grad_case("mse-mean", ops.mse_loss, LossAttrs(), 0, SCALAR, (LOSS_X, LOSS_T), 3 * 20 + 1),
    # clamp(d/β, −1, 1)·s: d, /β, min, max, scale; β = 0 is l1's 3E
    grad_case("smooth_l1-mean", ops.smooth_l1_loss, SmoothL1Attrs("mean", 0.5), 0, SCALAR,
              (LOSS_X, LOSS_T), 5 * 20 + 1),
    grad_case("smooth_l1-beta0-sum", ops.smooth_l1_loss, SmoothL1Attrs("sum", 0.0), 0, SCALAR,
              (LOSS_X, LOSS_T), 3 * 20),
    grad_case("huber-none", ops.huber_loss, HuberAttrs("none", 2.0), 1, LOSS_X,
              (LOSS_X, LOSS_T), 4 * 20),
    # (p − y)/max(p(1 − p), ε)·w·s: 6 + 1
    grad_case("bce-input-weight-mean", ops.binary_cross_entropy, LossAttrs(), 0, SCALAR,
              (LOSS_X, LOSS_T, T(5)), (6 + 1) * 20 + 1),
    grad_case("bce-target-sum", ops.binary_cross_entropy, LossAttrs("sum"), 1, SCALAR,
              (LOSS_X, LOSS_T), 7 * 20),
    # the unweighted loss (9) times s, summed over the broadcast rows (E)
    grad_case("bce-weight-none", ops.binary_cross_entropy, LossAttrs("none"), 2, LOSS_X,
              (LOSS_X, LOSS_T, T(5)), 10 * 20 + 20),
    # σ 3, c = 1 + (pw − 1)y 3, c·σ, pw·y, subtract, ·w, ·s
    grad_case("bce_logits-input-mean", ops.binary_cross_entropy_with_logits, LossAttrs(), 0,
              SCALAR, (LOSS_X, LOSS_T, T(4, 1), T(5)), (5 + 5 + 1) * 20 + 1),
    grad_case("bce_logits-input-plain-sum", ops.binary_cross_entropy_with_logits,
              LossAttrs("sum"), 0, SCALAR, (LOSS_X, LOSS_T), 5 * 20),
    # sp 5, pw − 1, ·sp, − x, ·s
    grad_case("bce_logits-target-sum", ops.binary_cross_entropy_with_logits, LossAttrs("sum"),
              1, SCALAR, (LOSS_X, LOSS_T, None, T(5)), (2 + 7) * 20),
    grad_case("bce_logits-weight-none", ops.binary_cross_entropy_with_logits,
              LossAttrs("none"), 2, LOSS_X, (LOSS_X, LOSS_T, T(4, 1), T(5)), (9 + 2) * 20 + 20),
    grad_case("bce_logits-weight-full-none", ops.binary_cross_entropy_with_logits,
              LossAttrs("none"), 2, LOSS_X, (LOSS_X, LOSS_T, T(4, 5)), 9 * 20),
    # y·sp·w·s: 5 + 1 + 1 + 1, summed over the rows pos_weight broadcasts along
    grad_case("bce_logits-pos_weight-mean", ops.binary_cross_entropy_with_logits, LossAttrs(),
              3, SCALAR, (LOSS_X, LOSS_T, T(4, 1), T(5)), (7 + 1) * 20 + 20 + 1),
    # softmax 5E, p − e_y R, scale E; 'mean': D (R adds) and g/D
    grad_case("cross_entropy-mean", ops.cross_entropy, CrossEntropyAttrs(), 0, SCALAR,
              (LOGITS, LABELS), 5 * 40 + 4 + 40 + (4 + 1)),
    # + R with weights (w[y]); smoothing 4E + 2R, + C for W = Σw
    grad_case("cross_entropy-weight-smoothing-sum", ops.cross_entropy,
              CrossEntropyAttrs("sum", label_smoothing=0.1), 0, SCALAR,
              (LOGITS, LABELS, T(10)), 5 * 40 + 4 + 40 + 4 + (4 * 40 + 2 * 4) + 10),
    grad_case("cross_entropy-spatial-none", ops.cross_entropy, CrossEntropyAttrs("none"), 0,
              T(2, 3, 3), (T(2, 5, 3, 3), T(2, 3, 3, dtype="int64")), 6 * 90 + 18),
    grad_case("cross_entropy-unbatched-mean", ops.cross_entropy, CrossEntropyAttrs(), 0,
              SCALAR, (T(10), T(dtype="int64")), 6 * 10 + 1 + (1 + 1)),
    # class weights: lp 5E, scale and scatter-add the picked terms 2R
    grad_case("cross_entropy-class-weight-sum", ops.cross_entropy, CrossEntropyAttrs("sum"), 2,
              SCALAR, (LOGITS, LABELS, T(10)), 5 * 40 + 2 * 4),
    # smoothing: 3E + R; 'mean': D and g/D (R + 1), the forward loss L (5·40 + 2·4 + 40 + 2·4
    # + 4 + 1), K_c (R), (g/D)·L (1), C multiplies and C subtractions
    grad_case("cross_entropy-class-weight-smoothing-mean", ops.cross_entropy,
              CrossEntropyAttrs(label_smoothing=0.1), 2, SCALAR, (LOGITS, LABELS, T(10)),
              5 * 40 + 3 * 40 + 4 + (4 + 1) + (5 * 40 + 2 * 4 + 40 + 2 * 4 + 4 + 1) + 4 + 1
              + 2 * 10),
    # probabilities: softmax 5E, Σ_c u, p·Σ, − u, scale: 9E; smoothing q' +2E, weights u +E
    grad_case("cross_entropy-probabilities-none", ops.cross_entropy,
              CrossEntropyAttrs("none", label_smoothing=0.2), 0, T(4),
              (LOGITS, T(4, 10), T(10)), (9 + 2 + 1) * 40),
    # target: lp 5E, times the row's −(1 − ε)·s (R), scale E
    grad_case("cross_entropy-probabilities-target-mean", ops.cross_entropy, CrossEntropyAttrs(),
              1, SCALAR, (LOGITS, T(4, 10)), 6 * 40 + 4 + 1),
    # weight: lp 5E, q' 2E, q'·lp, ·s, sum over the rows
    grad_case("cross_entropy-probabilities-weight-sum", ops.cross_entropy,
              CrossEntropyAttrs("sum", label_smoothing=0.1), 2, SCALAR,
              (LOGITS, T(4, 10), T(10)), (8 + 2) * 40),
    # nll: −s·w[y] at the target: 2 per row with weights; 'mean' R + 1
    grad_case("nll_loss-weight-mean", ops.nll_loss, NllAttrs(), 0, SCALAR,
              (LOGITS, LABELS, T(10)), 2 * 4 + 4 + 1),
    grad_case("nll_loss-none", ops.nll_loss, NllAttrs("none"), 0, T(4), (LOGITS, LABELS), 4),
    grad_case("nll_loss-class-weight-sum", ops.nll_loss, NllAttrs("sum"), 2, SCALAR,
              (LOGITS, LABELS, T(10)), 2 * 4),
    # 'mean': + R + 1, the forward (2·4 + 4 + 1), R, 1, 2C
    grad_case("nll_loss-class-weight-mean", ops.nll_loss, NllAttrs(), 2, SCALAR,
              (LOGITS, LABELS, T(10)), 2 * 4 + (4 + 1) + (2 * 4 + 4 + 1) + 4 + 1 + 2 * 10),
    # the forward's distances and hinge (2·(4E + R) + 3R), h (2R), per distance term the
    # norm's gradient (E for p = 2) and its coefficient (E), the add (E)
    grad_case("triplet-anchor-mean", ops.triplet_margin_loss, TripletAttrs(), 0, SCALAR,
              (EMB, EMB, EMB), 2 * (4 * 32 + 4) + 3 * 4 + 2 * 4 + 2 * (32 + 32) + 32 + 1),
    grad_case("triplet-negative-p1-sum", ops.triplet_margin_loss, TripletAttrs("sum", p=1.0),
              2, SCALAR, (EMB, EMB, EMB), 2 * (4 * 32 + 4) + 3 * 4 + 2 * 4 + (32 + 32)),
    # swap: a third distance, +3R (the choice, two coefficients), two terms for every input;
    # p = 3: the norm's gradient sign(v)·|v|^(p−1)/d^(p−1) is 5E + R
    grad_case("triplet-positive-p3-swap-none", ops.triplet_margin_loss,
              TripletAttrs("none", p=3.0, swap=True), 1, T(4), (EMB, EMB, EMB),
              3 * (4 * 32 + 4) + 3 * 4 + 2 * 4 + 3 * 4 + 2 * ((5 * 32 + 4) + 32) + 32),
    # distance 4E + R, the row factor (1−Y) − Y·max(0, m − D)/D 6R, ·s R, ·v E
    grad_case("contrastive-x2-mean", ops.contrastive_loss, ContrastiveAttrs(), 1, SCALAR,
              (EMB, EMB, T(4)), 5 * 32 + 8 * 4 + 1),
    # ½·(max(0, m − D)² − D²): 6R after the distance, ·s R
    grad_case("contrastive-label-none", ops.contrastive_loss, ContrastiveAttrs("none"), 2, T(4),
              (EMB, EMB, T(4)), 4 * 32 + 8 * 4),
]
LOSS_CASES = [
    *loss_cases("mse_loss", ops.mse_loss, (LOSS_X, LOSS_T), (4, 5), 2 * 20, 20),
    *loss_cases("l1_loss", ops.l1_loss, (LOSS_X, LOSS_T), (4, 5), 2 * 20, 20),
    *loss_cases("smooth_l1_loss", ops.smooth_l1_loss, (LOSS_X, LOSS_T), (4, 5), 5 * 20, 20,
                lambda r: SmoothL1Attrs(r, beta=0.5)),
    *loss_cases("huber_loss", ops.huber_loss, (LOSS_X, LOSS_T), (4, 5), 5 * 20, 20,
                lambda r: HuberAttrs(r, delta=2.0)),
    *loss_cases("binary_cross_entropy", ops.binary_cross_entropy, (LOSS_X, LOSS_T), (4, 5),
                9 * 20, 20),
    *loss_cases("binary_cross_entropy-weight", ops.binary_cross_entropy,
                (LOSS_X, LOSS_T, T(5)), (4, 5), (9 + 1) * 20, 20),
    *loss_cases("binary_cross_entropy_with_logits", ops.binary_cross_entropy_with_logits,
                (LOSS_X, LOSS_T), (4, 5), 8 * 20, 20),
    # weight +1, pos_weight (broadcast along the class dim) +2 per element
    *loss_cases("binary_cross_entropy_with_logits-weights", ops.binary_cross_entropy_with_logits,
                (LOSS_X, LOSS_T, T(4, 1), T(5)), (4, 5), (8 + 1 + 2) * 20, 20),
    # log_softmax 5E, pick and negate 1 per row (2 with class weights)
    *loss_cases("cross_entropy", ops.cross_entropy, (LOGITS, LABELS), (4,), 5 * 40 + 4, 4,
                CrossEntropyAttrs),
    *loss_cases("cross_entropy-weight", ops.cross_entropy, (LOGITS, LABELS, T(10)), (4,),
                5 * 40 + 2 * 4, 4, CrossEntropyAttrs),
    # label smoothing adds the class sum (E) and 2 per row
    *loss_cases("cross_entropy-smoothing", ops.cross_entropy, (LOGITS, LABELS), (4,),
                5 * 40 + 4 + 40 + 2 * 4, 4, lambda r: CrossEntropyAttrs(r, label_smoothing=0.1)),
    # probability targets add 2E
    *loss_cases("cross_entropy-probabilities", ops.cross_entropy, (LOGITS, T(4, 10)), (4,),
                5 * 40 + 4 + 2 * 40, 4, CrossEntropyAttrs),
    # K-dimensional: rows are N·H·W = 18
    *loss_cases("cross_entropy-spatial", ops.cross_entropy,
                (T(2, 5, 3, 3), T(2, 3, 3, dtype="int64")), (2, 3, 3), 5 * 90 + 18, 18,
                CrossEntropyAttrs),
    *loss_cases("nll_loss", ops.nll_loss, (LOGITS, LABELS), (4,), 4, 4, NllAttrs),
    *loss_cases("nll_loss-weight", ops.nll_loss, (LOGITS, LABELS, T(10)), (4,), 2 * 4, 4,
                NllAttrs),
    # two distances of 4 per element + a root per row, then a 3-FLOP hinge per row
    *loss_cases("triplet_margin_loss", ops.triplet_margin_loss, (T(4, 8), T(4, 8), T(4, 8)),
                (4,), 2 * (4 * 32 + 4) + 3 * 4, 4, TripletAttrs),
    *loss_cases("triplet_margin_loss-swap", ops.triplet_margin_loss,
                (T(4, 8), T(4, 8), T(4, 8)), (4,), 3 * (4 * 32 + 4) + 3 * 4, 4,
                lambda r: TripletAttrs(r, swap=True)),
    # one distance (4E + a root per row) + 9 per row for the two branches
    *loss_cases("contrastive_loss", ops.contrastive_loss, (T(4, 8), T(4, 8), T(4)), (4,),
                4 * 32 + 4 + 9 * 4, 4, ContrastiveAttrs),
    *LOSS_GRAD_CASES,
]

P, HYPER = T(3, 4), lambda width: T(2, width)  # a parameter, and a 2-row hyper matrix
UPDATE_CASES = [
    # per parameter element: 4 (decay, step) + 5 per momentum buffer
    OpCase("sgd_update", optim_ops.sgd_update, (P, P, HYPER(5), None), out=((3, 4),),
           macs=0, flops=4 * 12),
    OpCase("sgd_update-momentum", optim_ops.sgd_update, (P, P, HYPER(5), P),
           out=((3, 4), (3, 4)), attrs=optim_ops.SGDAttrs(1, nesterov=True), macs=0,
           flops=(4 + 5) * 12),
    OpCase("adagrad_update", optim_ops.adagrad_update, (P, P, HYPER(3), P),
           out=((3, 4), (3, 4)), macs=0, flops=8 * 12),
    OpCase("adadelta_update", optim_ops.adadelta_update, (P, P, HYPER(4), P, P),
           out=((3, 4),) * 3, macs=0, flops=16 * 12),
    OpCase("rmsprop_update-centered-momentum", optim_ops.rmsprop_update,
           (P, P, HYPER(5), P, P, P), out=((3, 4),) * 4,
           attrs=optim_ops.RMSpropAttrs(centered=True), macs=0, flops=(9 + 3 * 3) * 12),
    OpCase("adam_update-amsgrad", optim_ops.adam_update, (P, P, HYPER(7), P, P, P),
           out=((3, 4),) * 4, attrs=optim_ops.AdamAttrs(amsgrad=True), macs=0,
           flops=(13 + 3) * 12),
]

CASES = CONV_CASES + LINEAR_CASES + NORM_CASES + ACTIVATION_CASES + POOL_CASES + TENSOR_CASES
CASES += LOSS_CASES + UPDATE_CASES


def bound_types(case: OpCase) -> tuple[list[TensorType | None], list[TensorType]]:
    """The case's input types with ``env`` substituted, and their inferred outputs."""
    ins = [t.bind(case.env) if t is not None else None for t in case.inputs]
    return ins, case.op.infer_types(case.make_attrs(), ins)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_infer(case: OpCase) -> None:
    outs = case.op.infer_types(case.make_attrs(), list(case.inputs))
    assert [t.shape for t in outs] == list(case.out)
    assert all(t.dtype == case.inputs[0].dtype for t in outs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cost(case: OpCase) -> None:
    ins, outs = bound_types(case)
    assert all(t.is_static for t in outs)
    cost = case.op.cost(case.make_attrs(), ins, outs)
    assert (cost.macs, cost.flops, cost.sampling_flops) == (case.macs, case.flops, case.sampling)
    assert all(type(n) is int for n in (cost.macs, cost.flops, cost.sampling_flops))


SYMBOLIC = [c for c in CASES if c.env]


@pytest.mark.parametrize("case", SYMBOLIC, ids=lambda c: c.name)
def test_symbolic_output_binds_to_concrete_output(case: OpCase) -> None:
    symbolic = case.op.infer_types(case.make_attrs(), list(case.inputs))
    _, concrete = bound_types(case)
    assert [t.bind(case.env) for t in symbolic] == concrete


@pytest.mark.parametrize("case", [c for c in SYMBOLIC if c.flops], ids=lambda c: c.name)
def test_cost_refuses_unbound_symbols(case: OpCase) -> None:
    outs = case.op.infer_types(case.make_attrs(), list(case.inputs))
    with pytest.raises(ShapeError, match="concrete shapes"):
        case.op.cost(case.make_attrs(), list(case.inputs), outs)


@pytest.mark.parametrize("bad", ["grad", "state", "hyper", "row"])
def test_update_ops_check_their_operands(bad: str) -> None:
    hyper = T(1, 3) if bad == "row" else T(2, 2) if bad == "hyper" else T(2, 3)
    grad = T(4, 3) if bad == "grad" else P
    state = T(3, 4, dtype="float64") if bad == "state" else P
    attrs = optim_ops.AdagradAttrs(row=1)
    with pytest.raises(ShapeError):
        optim_ops.adagrad_update.infer_types(attrs, [P, grad, hyper, state])


def test_batch_norm_update_counts_batches_in_the_counter_dtype() -> None:
    outs = batch_norm_update.infer_types(BatchNormUpdateAttrs(None),
                                         [BN_X, BN_C, BN_C, T(dtype="int64")])
    assert [(t.shape, t.dtype) for t in outs] == [((8,), "float32"), ((8,), "float32"),
                                                  ((), "int64")]


def test_expand_keeps_a_symbolic_batch() -> None:
    (out,) = ops.expand.infer_types(ExpandAttrs(("N", 3, 6)), [T("N", 3, 1)])
    assert out.shape == ("N", 3, 6)
    with pytest.raises(ShapeError, match=r"cannot expand \[N, 2\] to \[N, 3\]"):
        ops.expand.infer_types(ExpandAttrs(("N", 3)), [T("N", 2)])


def test_reshape_minus_one_over_symbolic_batch_scales_the_symbol() -> None:
    (out,) = ops.reshape.infer_types(ReshapeAttrs((-1, 12)), [T("N", 3, 4, 4)])
    assert out.shape[1] == 12
    assert out.symbols == {"N"}
    assert evaluate_dim(out.shape[0], {"N": 5}) == 5 * 3 * 4 * 4 // 12


def test_interpolate_scale_on_symbolic_spatial_dim_floors() -> None:
    (out,) = ops.interpolate.infer_types(InterpolateAttrs(scale_factor=1.5), [T(1, 1, "H", 4)])
    assert out.shape[3] == 6
    assert evaluate_dim(out.shape[2], {"H": 5}) == 7  # floor(7.5)


@pytest.mark.parametrize(("kernel", "dilation", "pads"), [
    ((3, 3), (1, 1), (1, 1, 1, 1)),
    ((4, 4), (1, 1), (1, 1, 2, 2)),  # odd extra pixel on the bottom/right
    ((2, 5), (1, 1), (0, 2, 1, 2)),
    ((4, 3), (2, 1), (3, 1, 3, 1)),  # total d(k−1) = 6 and 2
])
def test_same_padding_puts_the_odd_pixel_bottom_right(kernel, dilation, pads) -> None:
    assert normalize_padding("same", kernel, dilation, (1, 1)) == pads


def test_conv2d_attrs_refuse_unnormalized_same_padding() -> None:
    """'same' depends on the kernel, which attrs do not know: normalize it first."""
    with pytest.raises(ShapeError, match=r"normalize"):
        Conv2dAttrs(padding="same")


# Optional trailing inputs may be left out of a node's input list (OpDef.check_arity accepts
# it), so the rules must read them as absent rather than index past the end.
OMITTED_OPTIONALS = [
    (ops.conv2d, Conv2dAttrs(), [T(1, 3, 8, 8), T(4, 3, 3, 3)]),
    (ops.conv_transpose2d, ConvTranspose2dAttrs(), [T(1, 3, 8, 8), T(3, 4, 3, 3)]),
    (ops.deform_conv2d, Conv2dAttrs(), [T(1, 4, 6, 6), T(1, 18, 4, 4), T(4, 4, 3, 3)]),
    (ops.linear, None, [T(2, 3), T(4, 3)]),
    (ops.batch_norm, BatchNormAttrs(training=True), [T(2, 3, 4, 4)]),
]


@pytest.mark.parametrize(("op", "attrs", "ins"), OMITTED_OPTIONALS,
                         ids=[c[0].name for c in OMITTED_OPTIONALS])
def test_omitted_optional_inputs_mean_absent(op: OpDef, attrs: Any, ins: list) -> None:
    attrs = op.attrs() if attrs is None else attrs
    padded = ins + [None] * (len(op.inputs) - len(ins))
    outs = op.infer_types(attrs, ins)
    assert outs == op.infer_types(attrs, padded)
    assert op.cost(attrs, ins, outs) == op.cost(attrs, padded, outs)


def test_reshape_to_symbolic_target_analyzes() -> None:
    g = Graph("view_batch")
    x = g.add_input("x", T("N", 3, 4, 4))
    node = g.add_node(ops.reshape, [x], ReshapeAttrs(("N", -1)))
    g.set_outputs([node.output])
    assert node.output.type.shape == ("N", 48)
    assert cnnir.analyze(g).layers[0].output_shapes == [[1, 48]]


# -- error cases: each names the broken constraint --------------------------------------------

BAD_CASES = [
    ("conv2d-channels", lambda: ops.conv2d.infer_types(
        Conv2dAttrs(), [T(1, 4, 8, 8), T(8, 3, 3, 3), None]),
     r"expects 3 input channels .* but its input is \[1, 4, 8, 8\]"),
    ("conv2d-groups-out", lambda: ops.conv2d.infer_types(
        Conv2dAttrs(groups=3), [T(1, 3, 8, 8), T(8, 1, 3, 3), None]),
     r"groups=3, which must divide out_channels=8"),
    ("conv2d-kernel-too-large", lambda: ops.conv2d.infer_types(
        Conv2dAttrs(padding=1), [T(1, 3, 2, 2), T(4, 3, 5, 5), None]),
     r"effective kernel H of 5 .* larger than the padded input H of 4"),
    ("conv2d-bias-shape", lambda: ops.conv2d.infer_types(
        Conv2dAttrs(), [T(1, 3, 8, 8), T(4, 3, 3, 3), T(5)]),
     r"bias of shape \[4\]"),
    ("conv2d-stride0", lambda: Conv2dAttrs(stride=0), r"stride must be >= 1"),
    ("conv2d-dilation0", lambda: Conv2dAttrs(dilation=(1, 0)), r"dilation must be >= 1"),
    ("conv2d-negative-padding", lambda: Conv2dAttrs(padding=-1), r"padding must be >= 0"),
    ("conv2d-same-strided", lambda: normalize_padding("same", (3, 3), (1, 1), (2, 2)),
     r"padding='same' needs stride 1"),
    ("conv2d-dtype-mix", lambda: ops.conv2d.infer_types(
        Conv2dAttrs(), [T(1, 3, 8, 8, dtype="float64"), T(4, 3, 3, 3), None]),
     r"one dtype"),
    ("conv_transpose2d-output-padding", lambda: ConvTranspose2dAttrs(stride=2, output_padding=2),
     r"output padding must be smaller than either stride or dilation"),
    ("deform_conv2d-offset-channels", lambda: ops.deform_conv2d.infer_types(
        Conv2dAttrs(), [T(1, 4, 6, 6), T(1, 10, 4, 4), T(4, 4, 3, 3)]),
     r"multiple of 2·kh·kw = 18"),
    ("deform_conv2d-mask-shape", lambda: ops.deform_conv2d.infer_types(
        Conv2dAttrs(), [T(1, 4, 6, 6), T(1, 18, 4, 4), T(4, 4, 3, 3), None, T(1, 18, 4, 4)]),
     r"mask of shape \[1, 9, 4, 4\]"),
    ("max_pool2d-padding", lambda: PoolAttrs(kernel_size=2, padding=2),
     r"pad should be at most half of effective kernel size"),
    ("max_pool2d-empty", lambda: ops.max_pool2d.infer_types(
        PoolAttrs(kernel_size=3), [T(1, 1, 2, 2)]), r"empty output on axis H"),
    ("interpolate-size-and-scale", lambda: InterpolateAttrs(size=4, scale_factor=2),
     r"only one of size or scale_factor"),
    ("linear-unflattened", lambda: ops.linear.infer_types(
        None, [T(1, 3, 4, 4), T(10, 48), None]), r"expects 48 input features"),
    ("matmul-inner", lambda: ops.matmul.infer_types(None, [T(3, 4), T(5, 6)]),
     r"inner dimensions 4 and 5 differ"),
    ("add-channels", lambda: ops.add.infer_types(None, [T(1, 3, 8, 8), T(1, 4, 8, 8)]),
     r"cannot broadcast \[1, 3, 8, 8\] with \[1, 4, 8, 8\]"),
    ("cat-spatial", lambda: ops.cat.infer_types(DimAttrs(1), [T(1, 3, 8, 8), T(1, 3, 8, 7)]),
     r"match except in dim 1"),
    ("reshape-count", lambda: ops.reshape.infer_types(ReshapeAttrs((5, 10)), [T(2, 3, 4)]),
     r"cannot reshape \[2, 3, 4\] \(24 elements\)"),
    ("reshape-two-holes", lambda: ops.reshape.infer_types(ReshapeAttrs((-1, -1)), [T(2, 3)]),
     r"only one dimension can be -1"),
    ("split-sizes", lambda: ops.split.infer_types(SplitAttrs((2, 2), 1), [T(1, 5)]),
     r"must add up to 5"),
    ("transpose-perm", lambda: ops.transpose.infer_types(TransposeAttrs((0, 0, 1)), [T(1, 2, 3)]),
     r"not a permutation"),
    ("channel_shuffle-groups", lambda: ops.channel_shuffle.infer_types(
        ChannelShuffleAttrs(5), [T(1, 12, 2, 2)]), r"groups=5, which must divide the 12"),
    ("batch_norm-one-value-per-channel", lambda: ops.batch_norm.infer_types(
        BatchNormAttrs(training=True), [T(1, 4), T(4), T(4), None, None]),
     r"more than 1 value per channel when training"),
    ("prelu-slopes", lambda: ops.prelu.infer_types(None, [T(1, 3, 4, 4), T(4)]),
     r"expects 1 or 3 slopes"),
    ("softmax-dim", lambda: ops.softmax.infer_types(SoftmaxAttrs(4), [T(1, 3, 4, 4)]),
     r"dim=4 is out of range"),
    ("dropout-p", lambda: DropoutAttrs(p=1.5), r"between 0 and 1"),
    ("group_norm-divisible", lambda: ops.group_norm.infer_types(
        ops.group_norm.attrs(3), [T(2, 8, 4, 4)]), r"divisible by num_groups=3"),
    ("group_norm-weight", lambda: ops.group_norm.infer_types(
        ops.group_norm.attrs(2), [T(2, 8, 4, 4), T(4)]), r"weight of shape \[8\]"),
    ("layer_norm-trailing", lambda: ops.layer_norm.infer_types(
        ops.layer_norm.attrs((4, 5)), [T(2, 8, 4, 4)]), r"ending in normalized_shape \[4, 5\]"),
    ("layer_norm-shape", lambda: ops.layer_norm.attrs(()), r"one or more positive ints"),
    ("loss-reduction", lambda: LossAttrs("avg"), r"reduction must be one of"),
    ("cross_entropy-ignore-index-probabilities", lambda: ops.cross_entropy.infer_types(
        CrossEntropyAttrs(ignore_index=0), [LOGITS, T(4, 10)]),
     r"ignore_index is not supported for floating point target"),
    ("mse_loss-target-shape", lambda: ops.mse_loss.infer_types(LossAttrs(), [T(4, 5), T(4, 1)]),
     r"does not broadcast loss targets"),
    ("arity", lambda: ops.conv2d.infer_types(Conv2dAttrs(), [T(1, 3, 8, 8)]),
     r"takes inputs \(input, weight, bias\?\) but got 1"),
]


@pytest.mark.parametrize(("name", "build", "match"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_attrs_and_inputs(name: str, build: Callable[[], Any], match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        build()


# -- the registry itself -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_op_has_every_rule(name: str) -> None:
    op = REGISTRY[name]
    assert op.name == name
    assert callable(op.infer), f"{name} has no infer rule"
    assert callable(op.cost), f"{name} has no cost rule"
    assert op.flop_rule.strip(), f"{name} does not document its FLOP rule"
    assert is_dataclass(op.attrs), f"{name}'s attrs is not a dataclass"
    assert op.inputs, f"{name} declares no inputs"


def test_exported_opdefs_are_registered() -> None:
    exported = [getattr(ops, n) for n in ops.__all__ if isinstance(getattr(ops, n), OpDef)]
    assert exported
    assert all(REGISTRY.get(op.name) is op for op in exported)


def test_table_covers_every_registered_op() -> None:
    covered = {case.op.name for case in CASES}
    assert sorted(set(REGISTRY) - covered) == []
