"""VGG-11/16 (with and without batch norm), layer for layer as in torchvision.

The feature extractor is a list of 3x3 convs (padding 1, each followed by an optional BN and a
ReLU) interleaved with 2x2 max pools, written as a config of channel counts and ``"M"``
markers. An adaptive average pool fixes the map at 7x7 so the classifier (three linear layers
with dropout) sees ``512 * 7 * 7`` features whatever the input size.

Usage: ``cnnir analyze examples/vgg.py:vgg16_bn``.
"""

from __future__ import annotations

import cnnir
from cnnir import nn

CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """Conv features, a 7x7 adaptive average pool and a 4096-4096-classes classifier."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(cnnir.flatten(x, 1))


def make_layers(cfg: list[int | str], batch_norm: bool = False) -> nn.Sequential:
    """Turn a config such as ``[64, "M", 128]`` into convs, optional BNs, ReLUs and pools."""
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers)


def vgg11() -> VGG:
    """VGG-11 (config "A"): 132,863,336 parameters, 7.609 GMACs at 224x224."""
    return VGG(make_layers(CFGS["A"]))


def vgg16() -> VGG:
    """VGG-16 (config "D"): 138,357,544 parameters, 15.470 GMACs."""
    return VGG(make_layers(CFGS["D"]))


def vgg16_bn() -> VGG:
    """VGG-16 with batch norm after every conv: 138,365,992 parameters, 15.470 GMACs."""
    return VGG(make_layers(CFGS["D"], batch_norm=True))


model = vgg16
input_shape = (1, 3, 224, 224)
