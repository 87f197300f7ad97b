"""AlexNet, layer for layer as in torchvision (the one-GPU variant of the original paper).

Five convs (11x11/4, 5x5, then three 3x3) with three 3x2 max pools, an adaptive average pool
to 6x6, and a classifier of three linear layers with dropout in front of the first two.

Usage: ``cnnir analyze examples/alexnet.py``.
"""

from __future__ import annotations

import cnnir
from cnnir import nn


class AlexNet(nn.Module):
    """AlexNet: 61,100,840 parameters, 0.714 GMACs at 224x224."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(cnnir.flatten(x, 1))


def alexnet() -> AlexNet:
    """AlexNet with 1000 ImageNet classes."""
    return AlexNet()


model = alexnet
input_shape = (1, 3, 224, 224)
