"""A small CNN with a modulated deformable convolution (DCNv2, Zhu et al., 2019) in the middle.

For a kh x kw kernel, a regular conv predicts 2*kh*kw offset channels (a (dy, dx) shift for every
kernel tap at every output pixel) and another predicts kh*kw mask channels, squashed to (0, 1) by
a sigmoid; ``nn.DeformConv2d`` samples the input bilinearly at the shifted taps and scales each
sample by its mask. Both predictors start at zero, as in DCN practice, so the block begins as a
plain 3x3 conv with every tap weighted by sigmoid(0) = 0.5.

    cnnir analyze examples/deformable.py
"""

from __future__ import annotations

import cnnir
from cnnir import nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3 (padding 1, no bias) - BN - ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DeformableBlock(nn.Module):
    """Modulated deformable conv - BN - ReLU with learned offsets and mask."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        taps = kernel_size * kernel_size
        padding = kernel_size // 2
        self.offset = nn.Conv2d(in_channels, 2 * taps, kernel_size, padding=padding)
        self.mask = nn.Conv2d(in_channels, taps, kernel_size, padding=padding)
        for predictor in (self.offset, self.mask):
            nn.init.zeros_(predictor.weight)
            nn.init.zeros_(predictor.bias)
        self.deform = nn.DeformConv2d(
            in_channels, out_channels, kernel_size, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        offset = self.offset(x)
        mask = cnnir.sigmoid(self.mask(x))
        return self.relu(self.bn(self.deform(x, offset, mask)))


class DeformableNet(nn.Module):
    """Two conv-BN-ReLU-maxpool stages, a deformable block, global pool, linear classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(3, 32),
            nn.MaxPool2d(2),
            conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
            DeformableBlock(64, 64),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        return self.fc(cnnir.flatten(self.avgpool(self.features(x)), 1))


def deformable_net() -> nn.Module:
    """Small DCNv2 classifier for 64x64 RGB images, 10 classes."""
    return DeformableNet()


model = deformable_net
input_shape = (1, 3, 64, 64)
