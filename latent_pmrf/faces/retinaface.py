"""RetinaFace (Deng et al. 2020) with a ResNet-50 body, the network and decoding of facexlib's
``detection/retinaface*.py`` (its ``detection_Resnet50_Final.pth`` loads with strict keys), which
GFPGAN, CodeFormer and PMRF's demo detect with.

Network: ResNet-50 stages C3-C5 (strides 8, 16, 32) -> FPN (1×1 lateral convs, nearest top-down,
3×3 merges; conv-BN-ReLU everywhere) -> one SSH context module per level -> 1×1 heads for 2 anchors
per cell (2 class logits, 4 box offsets, 10 landmark offsets). Detection (facexlib's ``detect_faces``
at the image's own size): BGR in [0, 255] minus the mean (104, 117, 123); anchors of sides 16/32,
64/128, 256/512 centred on each cell; offsets scaled by the variances 0.1 (centres, landmarks) and
0.2 (log sides); score > 0.97 (``FaceRestoreHelper``'s), then NMS at IoU 0.4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .detection import Face

BGR_MEAN = (104.0, 117.0, 123.0)
STEPS = (8, 16, 32)
ANCHOR_SIDES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, relu: bool = True) -> nn.Sequential:
    """facexlib's ``conv_bn`` / ``conv_bn1X1`` / ``conv_bn_no_relu`` (bias-free conv, BN; leaky slope 0
    at 256 channels, i.e. ReLU)."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=False),
              nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class ResNet50Body(nn.Module):
    """torchvision's ResNet-50 up to ``layer4`` (the keys of facexlib's ``IntermediateLayerGetter``);
    returns C3, C4, C5."""

    def __init__(self):
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(resnet, name))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, ...], out_channels: int):
        super().__init__()
        self.output1, self.output2, self.output3 = (conv_bn(c, out_channels, 1) for c in in_channels)
        self.merge1 = conv_bn(out_channels, out_channels)
        self.merge2 = conv_bn(out_channels, out_channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class SSH(nn.Module):
    """Single-stage headless context module: 3×3, 5×5 (two 3×3) and 7×7 (three 3×3, sharing the first)
    branches of C/2, C/4, C/4 channels, concatenated, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv3X3 = conv_bn(channels, channels // 2, relu=False)
        self.conv5X5_1 = conv_bn(channels, channels // 4)
        self.conv5X5_2 = conv_bn(channels // 4, channels // 4, relu=False)
        self.conv7X7_2 = conv_bn(channels // 4, channels // 4)
        self.conv7x7_3 = conv_bn(channels // 4, channels // 4, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5 = self.conv5X5_1(x)
        branch7 = self.conv7x7_3(self.conv7X7_2(branch5))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(branch5), branch7], dim=1))


class AnchorHead(nn.Module):
    """1×1 conv predicting ``values`` numbers per anchor: (B, C, H, W) -> (B, H·W·anchors, values),
    ordered by row, column, anchor."""

    def __init__(self, channels: int, values: int, anchors: int = 2):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    def __init__(self, channels: int = 256):
        super().__init__()
        self.body = ResNet50Body()
        self.fpn = FPN((512, 1024, 2048), channels)
        self.ssh1, self.ssh2, self.ssh3 = SSH(channels), SSH(channels), SSH(channels)
        self.ClassHead = nn.ModuleList(AnchorHead(channels, 2) for _ in STEPS)
        self.BboxHead = nn.ModuleList(AnchorHead(channels, 4) for _ in STEPS)
        self.LandmarkHead = nn.ModuleList(AnchorHead(channels, 10) for _ in STEPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) mean-subtracted BGR -> box offsets (B, N, 4), class probabilities (B, N, 2),
        landmark offsets (B, N, 10) for the N anchors of :func:`anchors`."""
        levels = [ssh(p) for ssh, p in zip((self.ssh1, self.ssh2, self.ssh3), self.fpn(self.body(x)))]
        boxes = torch.cat([head(p) for head, p in zip(self.BboxHead, levels)], dim=1)
        logits = torch.cat([head(p) for head, p in zip(self.ClassHead, levels)], dim=1)
        landmarks = torch.cat([head(p) for head, p in zip(self.LandmarkHead, levels)], dim=1)
        return boxes, logits.softmax(dim=-1), landmarks


def anchors(height: int, width: int) -> torch.Tensor:
    """(N, 4) anchor centre x, y and side w, h in pixels (facexlib's ``PriorBox`` times the image
    size): per level, cells row by row, ``ANCHOR_SIDES`` within a cell."""
    out = []
    for step, sides in zip(STEPS, ANCHOR_SIDES):
        rows, cols = -(-height // step), -(-width // step)
        cy, cx = torch.meshgrid((torch.arange(rows) + 0.5) * step, (torch.arange(cols) + 0.5) * step, indexing="ij")
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(sides), 2)
        side = torch.tensor(sides, dtype=torch.float32).reshape(1, -1, 1).expand(centres.shape[0], -1, 2)
        out.append(torch.cat([centres, side], dim=-1).reshape(-1, 4))
    return torch.cat(out)


def decode(offsets: torch.Tensor, landmark_offsets: torch.Tensor, priors: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (N, 4) x0 y0 x1 y1 and landmarks (N, 5, 2) in pixels from the heads' offsets."""
    centre = priors[:, :2] + offsets[:, :2] * VARIANCES[0] * priors[:, 2:]
    side = priors[:, 2:] * torch.exp(offsets[:, 2:] * VARIANCES[1])
    boxes = torch.cat([centre - side / 2, centre + side / 2], dim=1)
    landmarks = priors[:, None, :2] + landmark_offsets.reshape(-1, 5, 2) * VARIANCES[0] * priors[:, None, 2:]
    return boxes, landmarks


def load_retinaface(path: str | Path) -> RetinaFace:
    """facexlib's ``detection_Resnet50_Final.pth`` (keys with or without DataParallel's ``module.``),
    strict keys."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable, truncated, not a state dict
        raise ValueError(f"cannot read RetinaFace weights {path}: {err}") from err
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = RetinaFace()
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} is not facexlib's RetinaFace ResNet-50: {err}") from err
    return model.eval()


class RetinaFaceDetector:
    def __init__(self, path: str | Path, device: str = "cpu", score_threshold: float = 0.97,
                 nms_threshold: float = 0.4):
        self.model = load_retinaface(path).to(device)
        self.device = torch.device(device)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        bgr = torch.from_numpy(np.ascontiguousarray(image[..., ::-1] * 255, dtype=np.float32))
        x = (bgr - torch.tensor(BGR_MEAN)).permute(2, 0, 1)[None].to(self.device)  # (1, 3, H, W)
        offsets, probs, landmark_offsets = self.model(x)
        boxes, landmarks = decode(offsets[0].float().cpu(), landmark_offsets[0].float().cpu(), anchors(height, width))
        scores = probs[0, :, 1].float().cpu()
        keep = scores > self.score_threshold
        boxes, landmarks, scores = boxes[keep], landmarks[keep], scores[keep]
        keep = torchvision.ops.nms(boxes, scores, self.nms_threshold)  # sorted by score, as facexlib's
        return [Face(boxes[i].double().numpy(), float(scores[i]), landmarks[i].double().numpy()) for i in keep]
