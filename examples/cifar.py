"""SmallCIFAR: the small benchmark and training network of docs/semantics.md §10.

Three stages of conv3x3 (padding 1) - BN - ReLU - maxpool 2 with 32, 64 and 128 channels take a
32x32 image down to 4x4; a global average pool and a linear layer give 10 class logits.
About 10.3 M MACs and 95 k parameters.

    cnnir analyze examples/cifar.py
"""

from __future__ import annotations

import cnnir
from cnnir import nn


def stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3 (no bias: BN follows) - BN - ReLU - 2x2 max-pool."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCIFAR(nn.Module):
    """3 x (conv-BN-ReLU-pool) with 32/64/128 channels -> global average pool -> linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(stage(3, 32), stage(32, 64), stage(64, 128))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        return self.fc(cnnir.flatten(self.avgpool(self.features(x)), 1))


def small_cifar() -> nn.Module:
    """SmallCIFAR with 10 classes."""
    return SmallCIFAR()


model = small_cifar
input_shape = (1, 3, 32, 32)
