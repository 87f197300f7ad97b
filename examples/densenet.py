"""DenseNet-121 (DenseNet-BC), layer for layer and name for name as in torchvision.

Inside a dense block every layer sees the concatenation of the block input and all earlier
layers' outputs, and adds ``growth_rate`` new channels: BN-ReLU-1x1 conv to
``bn_size * growth_rate`` channels, then BN-ReLU-3x3 conv to ``growth_rate``. Between blocks a
transition (BN-ReLU-1x1 conv, 2x2 average pool) halves both the channels and the resolution.

Usage: ``cnnir analyze examples/densenet.py``.
"""

from __future__ import annotations

from collections import OrderedDict

import cnnir
import cnnir.nn.functional as F
from cnnir import nn


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 bottleneck then BN-ReLU-conv3x3 producing ``growth_rate`` channels."""

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(
            num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False
        )
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False
        )

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        bottleneck = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(bottleneck)))


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; each one's output is appended to the running features."""

    def __init__(
        self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int
    ) -> None:
        widths = (growth_rate, bn_size)
        super().__init__(
            OrderedDict(
                (f"denselayer{i + 1}", DenseLayer(num_input_features + i * growth_rate, *widths))
                for i in range(num_layers)
            )
        )

    def forward(self, features: cnnir.Tensor) -> cnnir.Tensor:
        for layer in self.values():
            features = cnnir.cat([features, layer(features)], 1)
        return features


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 to fewer channels, then a 2x2 average pool."""

    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__(
            OrderedDict(
                norm=nn.BatchNorm2d(num_input_features),
                relu=nn.ReLU(inplace=True),
                conv=nn.Conv2d(
                    num_input_features, num_output_features, kernel_size=1, stride=1, bias=False
                ),
                pool=nn.AvgPool2d(kernel_size=2, stride=2),
            )
        )


class DenseNet(nn.Module):
    """Stem, dense blocks joined by transitions, final BN, global pool and a linear classifier.

    Example::

        model = DenseNet(32, (6, 12, 24, 16), 64)      # densenet121
        cnnir.analyze(model, (1, 3, 224, 224)).totals.params   # 7978856
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        stages = OrderedDict(
            conv0=nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False),
            norm0=nn.BatchNorm2d(num_init_features),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, num_features, bn_size, growth_rate)
            stages[f"denseblock{i + 1}"] = block
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                stages[f"transition{i + 1}"] = Transition(num_features, num_features // 2)
                num_features //= 2
        stages["norm5"] = nn.BatchNorm2d(num_features)
        self.features = nn.Sequential(stages)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        out = F.relu(self.features(x), inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(cnnir.flatten(out, 1))


def densenet121() -> DenseNet:
    """DenseNet-121: 7,978,856 parameters, 2.834 GMACs at 224x224."""
    return DenseNet(32, (6, 12, 24, 16), 64)


model = densenet121
input_shape = (1, 3, 224, 224)
