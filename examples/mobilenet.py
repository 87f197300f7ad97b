"""MobileNet v1, v2 and v3 (large and small), the last three as built by torchvision.

Counts at 1x3x224x224 (params / GMACs): mobilenet_v1 4,231,976 / 0.569 (the 2017 paper's
network, width 1.0); mobilenet_v2 3,504,872 / 0.301 (exactly 300,774,272 MACs);
mobilenet_v3_large 5,483,032 / 0.217; mobilenet_v3_small 2,542,856 / 0.057.

    cnnir analyze examples/mobilenet.py:mobilenet_v3_large
"""

from __future__ import annotations

import cnnir
import cnnir.nn.functional as F
from cnnir import nn


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going more than 10% below it."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn_act(in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1,
                groups: int = 1, activation: type | None = nn.ReLU6) -> nn.Sequential:
    """torchvision's ConvNormActivation: bias-free conv with "same" padding, BN, activation."""
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------- MobileNet v1


class MobileNetV1(nn.Module):
    """MobileNet (Howard et al., 2017): a 3x3 stem, then 13 depthwise-separable blocks.

    Each block is a 3x3 depthwise conv and a 1x1 pointwise conv, each followed by BN and
    ReLU; a global average pool and one fully connected layer classify.
    """

    # (output channels, stride) of each depthwise-separable block
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers = [conv_bn_act(3, 32, stride=2, activation=nn.ReLU)]
        in_ch = 32
        for out_ch, stride in self.cfg:
            layers.append(nn.Sequential(
                conv_bn_act(in_ch, in_ch, stride=stride, groups=in_ch, activation=nn.ReLU),
                conv_bn_act(in_ch, out_ch, kernel_size=1, activation=nn.ReLU),
            ))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = cnnir.flatten(self.avgpool(self.features(x)), 1)
        return self.fc(x)


# ------------------------------------------------------------------------- MobileNet v2


class InvertedResidual(nn.Module):
    """v2 block: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), linear 1x1 project, skip."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(conv_bn_act(inp, hidden_dim, kernel_size=1))
        layers += [
            conv_bn_act(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018) at width 1.0."""

    # expansion t, output channels c, repeats n, first stride s
    cfg = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
           [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        input_channel = _make_divisible(32 * width_mult, 8)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), 8)
        features = [conv_bn_act(3, input_channel, stride=2)]
        for t, c, n, s in self.cfg:
            output_channel = _make_divisible(c * width_mult, 8)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel,
                                                 s if i == 0 else 1, expand_ratio=t))
                input_channel = output_channel
        features.append(conv_bn_act(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(cnnir.flatten(x, 1))


# ------------------------------------------------------------------------- MobileNet v3


class SqueezeExcitation(nn.Module):
    """Channel attention: global pool, 1x1 squeeze (ReLU), 1x1 excite (hardsigmoid), scale."""

    def __init__(self, input_channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        scale = self.activation(self.fc1(self.avgpool(x)))
        return self.scale_activation(self.fc2(scale)) * x


class InvertedResidualV3(nn.Module):
    """v3 bneck: optional 1x1 expand, kxk depthwise, optional SE, linear 1x1 project, skip."""

    def __init__(self, in_ch: int, kernel: int, exp_ch: int, out_ch: int, use_se: bool,
                 activation: str, stride: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_ch == out_ch
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        layers = []
        if exp_ch != in_ch:
            layers.append(conv_bn_act(in_ch, exp_ch, kernel_size=1, activation=act))
        layers.append(conv_bn_act(exp_ch, exp_ch, kernel, stride, groups=exp_ch, activation=act))
        if use_se:
            layers.append(SqueezeExcitation(exp_ch, _make_divisible(exp_ch // 4, 8)))
        layers.append(conv_bn_act(exp_ch, out_ch, kernel_size=1, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


class MobileNetV3(nn.Module):
    """MobileNetV3 (Howard et al., 2019) from a list of bneck settings.

    Each setting is (in, kernel, expanded, out, use_se, "RE" | "HS", stride), width 1.0.
    """

    def __init__(self, setting: list[tuple], last_channel: int,
                 num_classes: int = 1000) -> None:
        super().__init__()
        layers = [conv_bn_act(3, setting[0][0], stride=2, activation=nn.Hardswish)]
        layers += [InvertedResidualV3(*cnf) for cnf in setting]
        lastconv_in = setting[-1][3]
        lastconv_out = 6 * lastconv_in
        layers.append(conv_bn_act(lastconv_in, lastconv_out, kernel_size=1,
                                  activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_out, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=0.2, inplace=True),
            nn.Linear(last_channel, num_classes),
        )

    def forward(self, x):
        x = cnnir.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


_V3_LARGE = [
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
]

_V3_SMALL = [
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
]


def mobilenet_v1() -> nn.Module:
    """The classic MobileNet, width multiplier 1.0, 224x224 input."""
    return MobileNetV1()


def mobilenet_v2() -> nn.Module:
    """torchvision's mobilenet_v2."""
    return MobileNetV2()


def mobilenet_v3_large() -> nn.Module:
    """torchvision's mobilenet_v3_large."""
    return MobileNetV3(_V3_LARGE, last_channel=1280)


def mobilenet_v3_small() -> nn.Module:
    """torchvision's mobilenet_v3_small."""
    return MobileNetV3(_V3_SMALL, last_channel=1024)


model = mobilenet_v2
input_shape = (1, 3, 224, 224)
