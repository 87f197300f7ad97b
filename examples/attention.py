"""Channel and spatial attention blocks: squeeze-and-excitation (SE) and CBAM.

SE (Hu et al., 2018) rescales each channel by a gate computed from its global average:
``x * sigmoid(W2 relu(W1 mean_hw(x)))`` with a bottleneck of ``C / 16`` channels.
CBAM (Woo et al., 2018) applies a channel gate built from a shared MLP over the average- and
max-pooled descriptors, ``sigmoid(mlp(avg) + mlp(max))``, then a spatial gate: a 7x7 conv over
the channel-wise mean and max maps, followed by a sigmoid.

Both are dropped into a ResNet-18 whose BasicBlocks apply the attention to the residual branch
just before the skip connection is added.

    cnnir analyze examples/attention.py                 # se_resnet18
    cnnir analyze examples/attention.py:cbam_resnet18
    cnnir analyze examples/attention.py:cbam_block      # CBAM alone, on 1x64x56x56
"""

from __future__ import annotations

from collections.abc import Callable

import cnnir
from cnnir import nn

Attention = Callable[[int], nn.Module]


class SqueezeExcitation(nn.Module):
    """SE gate: global average pool, 1x1 conv bottleneck, ReLU, 1x1 conv, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        squeezed = channels // reduction
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.gate(self.fc2(self.relu(self.fc1(scale))))
        return x * scale


class ChannelAttention(nn.Module):
    """CBAM channel gate: one MLP shared by the average- and max-pooled descriptors."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, bias=False),
        )

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        avg = self.mlp(x.mean((2, 3), keepdim=True))
        peak = self.mlp(x.amax((2, 3), keepdim=True))
        return x * cnnir.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM spatial gate: a 7x7 conv over the per-pixel channel mean and channel max."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        pooled = cnnir.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * cnnir.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel gate, then spatial gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention()

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        return self.spatial(self.channel(x))


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def shortcut(inplanes: int, planes: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN projection when the block changes shape; None means the identity."""
    if stride == 1 and inplanes == planes:
        return None
    return nn.Sequential(
        nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
    )


class BasicBlock(nn.Module):
    """ResNet BasicBlock whose residual branch ends in an attention module."""

    def __init__(self, inplanes: int, planes: int, stride: int, attention: Attention) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attention = attention(planes)
        self.downsample = shortcut(inplanes, planes, stride)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class AttentionResNet18(nn.Module):
    """ResNet-18 (torchvision layout and names) with an attention module in every block."""

    def __init__(self, attention: Attention, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(64, 64, 1, attention)
        self.layer2 = self._stage(64, 128, 2, attention)
        self.layer3 = self._stage(128, 256, 2, attention)
        self.layer4 = self._stage(256, 512, 2, attention)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    @staticmethod
    def _stage(inplanes: int, planes: int, stride: int, attention: Attention) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(inplanes, planes, stride, attention),
            BasicBlock(planes, planes, 1, attention),
        )

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(cnnir.flatten(self.avgpool(x), 1))


def se_resnet18() -> nn.Module:
    """SE-ResNet-18: ResNet-18 with squeeze-and-excitation (reduction 16) in every block."""
    return AttentionResNet18(SqueezeExcitation)


def cbam_resnet18() -> nn.Module:
    """CBAM-ResNet-18: ResNet-18 with CBAM (reduction 16, 7x7 spatial conv) in every block."""
    return AttentionResNet18(CBAM)


def cbam_block() -> nn.Module:
    """A lone CBAM module on a 64-channel feature map (ResNet's 56x56 stage)."""
    return CBAM(64)


cbam_block.input_shape = (1, 64, 56, 56)

model = se_resnet18
input_shape = (1, 3, 224, 224)
