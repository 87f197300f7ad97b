"""ShuffleNet V2 (Ma et al., 2018) at width 1.0, as built by torchvision.

Counts at 1x3x224x224: 2,278,604 params, 0.145 GMACs. A stride-1 unit splits its input
channels in two (``chunk``), transforms one half and concatenates; a stride-2 unit
transforms both copies of its input. Every unit ends with a channel shuffle of 2 groups.

    cnnir analyze examples/shufflenet.py
"""

from __future__ import annotations

import cnnir
import cnnir.nn.functional as F
from cnnir import nn


def depthwise_conv(channels: int, stride: int) -> nn.Conv2d:
    """Bias-free 3x3 depthwise convolution with padding 1."""
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False, groups=channels)


class InvertedResidual(nn.Module):
    """ShuffleNet V2 unit producing ``oup`` channels."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch_features = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                depthwise_conv(inp, stride),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, 1, 0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, 1, 0,
                      bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            depthwise_conv(branch_features, stride),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = cnnir.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = cnnir.cat((self.branch1(x), self.branch2(x)), dim=1)
        return F.channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """Stem conv and max pool, three stages of units, a 1x1 conv, global pool, classifier."""

    def __init__(self, stages_repeats: list[int], stages_out_channels: list[int],
                 num_classes: int = 1000) -> None:
        super().__init__()
        input_channels = stages_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, input_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(input_channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stage_names = ["stage2", "stage3", "stage4"]
        for name, repeats, output_channels in zip(
            stage_names, stages_repeats, stages_out_channels[1:-1], strict=True
        ):
            units = [InvertedResidual(input_channels, output_channels, 2)]
            units += [InvertedResidual(output_channels, output_channels, 1)
                      for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*units))
            input_channels = output_channels
        output_channels = stages_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(output_channels, num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x).mean([2, 3])  # global average pool
        return self.fc(x)


def shufflenet_v2_x1_0() -> nn.Module:
    """torchvision's shufflenet_v2_x1_0."""
    return ShuffleNetV2([4, 8, 4], [24, 116, 232, 464, 1024])


model = shufflenet_v2_x1_0
input_shape = (1, 3, 224, 224)
