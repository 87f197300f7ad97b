"""MNASNet 1.0 (Tan et al., 2018), as built by torchvision.

Counts at 1x3x224x224: 4,383,312 params, 0.314 GMACs. A stem and a depthwise-separable
conv feed six stacks of inverted residuals (MobileNetV2-style blocks with ReLU and
3x3 or 5x5 depthwise kernels), then a 1x1 conv to 1280 channels and a classifier.

    cnnir analyze examples/mnasnet.py
"""

from __future__ import annotations

from cnnir import nn

# TensorFlow's BN momentum 0.9997 expressed the PyTorch way (1 - momentum).
_BN_MOMENTUM = 1 - 0.9997


class _InvertedResidual(nn.Module):
    """1x1 expand (ReLU), kxk depthwise (ReLU), linear 1x1 project; skip when shapes agree."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int,
                 expansion_factor: int, bn_momentum: float = 0.1) -> None:
        super().__init__()
        mid_ch = in_ch * expansion_factor
        self.apply_residual = in_ch == out_ch and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(in_ch, mid_ch, 1, bias=False),
            nn.BatchNorm2d(mid_ch, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, mid_ch, kernel_size, padding=kernel_size // 2, stride=stride,
                      groups=mid_ch, bias=False),
            nn.BatchNorm2d(mid_ch, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch, momentum=bn_momentum),
        )

    def forward(self, x):
        if self.apply_residual:
            return self.layers(x) + x
        return self.layers(x)


def _stack(in_ch: int, out_ch: int, kernel_size: int, stride: int, exp_factor: int,
           repeats: int) -> nn.Sequential:
    """``repeats`` inverted residuals; only the first changes width and resolution."""
    blocks = [_InvertedResidual(in_ch, out_ch, kernel_size, stride, exp_factor, _BN_MOMENTUM)]
    blocks += [_InvertedResidual(out_ch, out_ch, kernel_size, 1, exp_factor, _BN_MOMENTUM)
               for _ in range(1, repeats)]
    return nn.Sequential(*blocks)


class MNASNet(nn.Module):
    """MNASNet-A1 without squeeze-excitation, at depth multiplier 1.0."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        depths = [24, 40, 80, 96, 192, 320]
        self.layers = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, stride=2, bias=False),
            nn.BatchNorm2d(32, momentum=_BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1, stride=1, groups=32, bias=False),
            nn.BatchNorm2d(32, momentum=_BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 16, 1, padding=0, stride=1, bias=False),
            nn.BatchNorm2d(16, momentum=_BN_MOMENTUM),
            _stack(16, depths[0], 3, 2, 3, 3),
            _stack(depths[0], depths[1], 5, 2, 3, 3),
            _stack(depths[1], depths[2], 5, 2, 6, 3),
            _stack(depths[2], depths[3], 3, 1, 6, 2),
            _stack(depths[3], depths[4], 5, 2, 6, 4),
            _stack(depths[4], depths[5], 3, 1, 6, 1),
            nn.Conv2d(depths[5], 1280, 1, padding=0, stride=1, bias=False),
            nn.BatchNorm2d(1280, momentum=_BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True),
                                        nn.Linear(1280, num_classes))

    def forward(self, x):
        x = self.layers(x).mean([2, 3])  # global average pool, H and W removed
        return self.classifier(x)


def mnasnet1_0() -> nn.Module:
    """torchvision's mnasnet1_0."""
    return MNASNet()


model = mnasnet1_0
input_shape = (1, 3, 224, 224)
