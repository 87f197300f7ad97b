"""ResNet, ResNeXt and Wide ResNet, layer for layer as in torchvision.

A BasicBlock computes ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + identity)``; a Bottleneck
reduces to ``width = planes * base_width / 64 * groups`` channels with a 1x1 conv, runs a grouped
3x3 conv (the stride sits here, "ResNet v1.5") and expands to ``planes * 4`` with a 1x1 conv.
When the shape changes, ``identity`` is a 1x1 conv + BN (the ``downsample`` Sequential).

Usage: ``cnnir analyze examples/resnet.py:resnet50``.
"""

from __future__ import annotations

import cnnir
from cnnir import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A 3x3 convolution with padding 1 and no bias."""
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """A 1x1 convolution with no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, grouped 3x3 (strided), 1x1 expand by 4, plus the residual (ResNet-50+)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem (7x7/2 conv, 3x3/2 max pool), four stages of blocks, global pool and a classifier.

    Example::

        model = ResNet(Bottleneck, [3, 4, 6, 3])      # resnet50
        cnnir.analyze(model, (1, 3, 224, 224)).totals.params   # 25557032
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        groups: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        """One stage: the first block may change stride and width, the rest keep them."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        group_kwargs = {"groups": self.groups, "base_width": self.base_width}
        layers = [block(self.inplanes, planes, stride, downsample, **group_kwargs)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, **group_kwargs) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = cnnir.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18() -> ResNet:
    """ResNet-18: 11,689,512 parameters, 1.814 GMACs at 224x224."""
    return ResNet(BasicBlock, [2, 2, 2, 2])


def resnet34() -> ResNet:
    """ResNet-34: 21,797,672 parameters, 3.664 GMACs."""
    return ResNet(BasicBlock, [3, 4, 6, 3])


def resnet50() -> ResNet:
    """ResNet-50: 25,557,032 parameters, 4.089 GMACs."""
    return ResNet(Bottleneck, [3, 4, 6, 3])


def resnet101() -> ResNet:
    """ResNet-101: 44,549,160 parameters, 7.801 GMACs."""
    return ResNet(Bottleneck, [3, 4, 23, 3])


def resnet152() -> ResNet:
    """ResNet-152: 60,192,808 parameters, 11.514 GMACs."""
    return ResNet(Bottleneck, [3, 8, 36, 3])


def resnext50_32x4d() -> ResNet:
    """ResNeXt-50 32x4d (32 groups of width 4): 25,028,904 parameters, 4.230 GMACs."""
    return ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4)


def wide_resnet50_2() -> ResNet:
    """Wide ResNet-50-2 (bottlenecks twice as wide): 68,883,240 parameters, 11.398 GMACs."""
    return ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=64 * 2)


model = resnet18
input_shape = (1, 3, 224, 224)
