"""ArcFace ResNet-18 of VQFR / PMRF's evaluation (``resnet_face18(use_se=False)``), the network of
the Deg. metric (paper Table 4): gray 128×128 input in [-1, 1] -> 512-d identity embedding.
Parameter names follow the released ``resnet18_110.pth``."""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """Pre-BN residual block: BN -> conv -> BN -> PReLU -> conv(stride) -> BN, + skip, PReLU
    (one PReLU module used twice, as the original)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cin)
        self.bn1 = nn.BatchNorm2d(cin)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        skip = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + skip)


class ArcFaceResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        widths, cin = (64, 128, 256, 512), 64
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            self.add_module(f"layer{i}", nn.Sequential(IRBlock(cin, width, stride), IRBlock(width, width)))
            cin = width
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(512 * 8 * 8, 512)
        self.bn5 = nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))  # (B, 1, 128, 128) -> (B, 64, 64, 64)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # -> (B, 512, 8, 8)
        x = self.dropout(self.bn4(x)).flatten(1)
        return self.bn5(self.fc5(x))  # (B, 512)
