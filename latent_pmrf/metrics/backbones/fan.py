"""FAN with four stacked hourglasses (AWing; Wang et al. 2019), 98 WFLW landmarks: the network
of the LMD metric (paper Table 4, as in DifFace/VQFR/PMRF). Input (B, 3, 256, 256) RGB in [0, 1];
output the last stack's 64×64 heatmaps, 98 landmarks + 1 boundary channel. Parameter names follow
the released ``alignment_WFLW_4HG.pth``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def coordinate_channels(x: torch.Tensor, boundary: torch.Tensor | None) -> torch.Tensor:
    """CoordConv inputs: x plus a row and a column coordinate in [-1, 1], their radius (divided
    by its maximum) and, given the previous stack's boundary heatmap, both coordinates masked to
    where the boundary exceeds 0.05."""
    b, _, h, w = x.shape
    rows = (torch.arange(h, device=x.device, dtype=x.dtype) / (h - 1) * 2 - 1).view(1, 1, h, 1).expand(b, 1, h, w)
    cols = (torch.arange(w, device=x.device, dtype=x.dtype) / (w - 1) * 2 - 1).view(1, 1, 1, w).expand(b, 1, h, w)
    radius = torch.sqrt(rows**2 + cols**2)
    channels = [x, rows, cols, radius / radius.max()]
    if boundary is not None:
        mask = boundary[:, -1:].clamp(0, 1) > 0.05
        channels += [torch.where(mask, rows, 0.0), torch.where(mask, cols, 0.0)]
    return torch.cat(channels, dim=1)


class CoordConv(nn.Module):
    def __init__(self, cin: int, cout: int, with_boundary: bool, **conv):
        super().__init__()
        self.conv = nn.Conv2d(cin + 3 + (2 if with_boundary else 0), cout, **conv)

    def forward(self, x: torch.Tensor, boundary: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(coordinate_channels(x, boundary))


class ConvBlock(nn.Module):
    """Pre-activation block of three 3×3 convs (out/2, out/4, out/4 channels, concatenated) + skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout // 2, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout // 2), nn.Conv2d(cout // 2, cout // 4, 3, padding=1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(cout // 4), nn.Conv2d(cout // 4, cout // 4, 3, padding=1, bias=False)
        self.downsample = (nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(True), nn.Conv2d(cin, cout, 1, bias=False))
                           if cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        skip = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + skip


class HourGlass(nn.Module):
    """Depth-4 hourglass at 64×64 after a 1×1 CoordConv; blocks named b1_/b2_/b3_<level>."""

    def __init__(self, first: bool, depth: int = 4, width: int = 256):
        super().__init__()
        self.depth = depth
        self.coordconv = CoordConv(width, width, with_boundary=not first, kernel_size=1)
        for level in range(depth, 0, -1):
            for name in ("b1_", "b2_", "b3_"):
                self.add_module(f"{name}{level}", ConvBlock(width, width))
        self.add_module("b2_plus_1", ConvBlock(width, width))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._modules[f"b1_{level}"](x)
        lower = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
        lower = self._level(level - 1, lower) if level > 1 else self._modules["b2_plus_1"](lower)
        lower = self._modules[f"b3_{level}"](lower)
        return upper + F.interpolate(lower, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor, boundary: torch.Tensor | None) -> torch.Tensor:
        return self._level(self.depth, self.coordconv(x, boundary))


class FAN(nn.Module):
    def __init__(self, stacks: int = 4, landmarks: int = 98):
        super().__init__()
        self.stacks = stacks
        self.conv1 = CoordConv(3, 64, with_boundary=False, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2, self.conv3, self.conv4 = ConvBlock(64, 128), ConvBlock(128, 128), ConvBlock(128, 256)
        for i in range(stacks):
            self.add_module(f"m{i}", HourGlass(first=i == 0))
            self.add_module(f"top_m_{i}", ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            self.add_module(f"l{i}", nn.Conv2d(256, landmarks + 1, 1))
            if i < stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
                self.add_module(f"al{i}", nn.Conv2d(landmarks + 1, 256, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) in [0, 1] -> (B, 99, 64, 64), the last stack's heatmaps."""
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 64, 128, 128)
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))  # (B, 256, 64, 64)
        previous, heatmaps = x, None
        for i in range(self.stacks):
            features = self._modules[f"top_m_{i}"](self._modules[f"m{i}"](previous, heatmaps))
            features = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](features)))
            heatmaps = self._modules[f"l{i}"](features)
            if i < self.stacks - 1:
                previous = previous + self._modules[f"bl{i}"](features) + self._modules[f"al{i}"](heatmaps)
        return heatmaps
