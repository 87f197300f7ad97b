"""SqueezeNet 1.0 and 1.1, layer for layer as in torchvision.

A Fire module squeezes to a few channels with a 1x1 conv and expands again with a 1x1 and a
3x3 conv side by side, whose outputs are concatenated along channels. The classifier is a 1x1
conv to the classes followed by a global average pool (no linear layer). Version 1.1 uses a
3x3 stem and pools earlier, which cuts the MACs by about 2.4x.

Usage: ``cnnir analyze examples/squeezenet.py:squeezenet1_1``.
"""

from __future__ import annotations

import cnnir
from cnnir import nn


class Fire(nn.Module):
    """Squeeze (1x1) then expand (1x1 and 3x3 in parallel, concatenated)."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        left = self.expand1x1_activation(self.expand1x1(x))
        right = self.expand3x3_activation(self.expand3x3(x))
        return cnnir.cat([left, right], 1)


def _pool() -> nn.MaxPool2d:
    """The 3x3/2 max pool with ceil_mode that SqueezeNet places between Fire groups."""
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


def _features_1_0() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 96, kernel_size=7, stride=2),
        nn.ReLU(inplace=True),
        _pool(),
        Fire(96, 16, 64, 64),
        Fire(128, 16, 64, 64),
        Fire(128, 32, 128, 128),
        _pool(),
        Fire(256, 32, 128, 128),
        Fire(256, 48, 192, 192),
        Fire(384, 48, 192, 192),
        Fire(384, 64, 256, 256),
        _pool(),
        Fire(512, 64, 256, 256),
    )


def _features_1_1() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=3, stride=2),
        nn.ReLU(inplace=True),
        _pool(),
        Fire(64, 16, 64, 64),
        Fire(128, 16, 64, 64),
        _pool(),
        Fire(128, 32, 128, 128),
        Fire(256, 32, 128, 128),
        _pool(),
        Fire(256, 48, 192, 192),
        Fire(384, 48, 192, 192),
        Fire(384, 64, 256, 256),
        Fire(512, 64, 256, 256),
    )


class SqueezeNet(nn.Module):
    """Fire-module features and a fully convolutional classifier."""

    def __init__(self, version: str = "1_0", num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        builders = {"1_0": _features_1_0, "1_1": _features_1_1}
        if version not in builders:
            raise ValueError(f"unsupported SqueezeNet version {version!r}: '1_0' or '1_1' expected")
        self.features = builders[version]()
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Conv2d(512, num_classes, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)),
        )

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        return cnnir.flatten(self.classifier(self.features(x)), 1)


def squeezenet1_0() -> SqueezeNet:
    """SqueezeNet 1.0: 1,248,424 parameters, 0.819 GMACs at 224x224."""
    return SqueezeNet("1_0")


def squeezenet1_1() -> SqueezeNet:
    """SqueezeNet 1.1: 1,235,496 parameters, 0.349 GMACs."""
    return SqueezeNet("1_1")


model = squeezenet1_0
input_shape = (1, 3, 224, 224)
