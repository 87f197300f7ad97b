"""A small U-Net (Ronneberger et al., 2015) for 128x128 segmentation with two classes.

Four resolution levels (16, 32, 64, 128 channels at 128, 64, 32, 16 pixels). Each encoder level
is two conv3x3-BN-ReLU layers; max-pooling halves the resolution between levels. The decoder
doubles the resolution back, concatenates the encoder's feature map of the same size (the skip
connection) and applies two conv3x3-BN-ReLU layers. The two deepest decoder levels upsample with
a learned 2x2 stride-2 transposed conv; the last one uses bilinear resizing followed by a 3x3
conv, which avoids the checkerboard artefacts of transposed convs.

    cnnir analyze examples/unet.py
"""

from __future__ import annotations

import cnnir
from cnnir import nn


class DoubleConv(nn.Module):
    """Two conv3x3-BN-ReLU layers at a constant resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        return self.block(x)


class Down(nn.Module):
    """Encoder level: 2x2 max-pool, then DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        return self.conv(self.pool(x))


class Up(nn.Module):
    """Decoder level: upsample 2x to half the channels, concatenate the skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool = False) -> None:
        super().__init__()
        half = in_channels // 2
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, half, 3, padding=1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, half, 2, stride=2)
        self.conv = DoubleConv(half + out_channels, out_channels)

    def forward(self, x: cnnir.Tensor, skip: cnnir.Tensor) -> cnnir.Tensor:
        return self.conv(cnnir.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net with three poolings; ``base`` channels at full resolution."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base: int = 16) -> None:
        super().__init__()
        self.inc = DoubleConv(in_channels, base)
        self.down1 = Down(base, 2 * base)
        self.down2 = Down(2 * base, 4 * base)
        self.down3 = Down(4 * base, 8 * base)
        self.up3 = Up(8 * base, 4 * base)
        self.up2 = Up(4 * base, 2 * base)
        self.up1 = Up(2 * base, base, bilinear=True)
        self.outc = nn.Conv2d(base, num_classes, 1)

    def forward(self, x: cnnir.Tensor) -> cnnir.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x = self.down3(x3)
        x = self.up1(self.up2(self.up3(x, x3), x2), x1)
        return self.outc(x)


def unet() -> nn.Module:
    """Small U-Net: 3 -> 2 classes, 16 base channels, per-pixel logits at 128x128."""
    return UNet()


model = unet
input_shape = (1, 3, 128, 128)
