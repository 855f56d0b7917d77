"""VGG19 perceptual loss as used to train Sim-VAE (Appendix B.2, Real-ESRGAN weighting).

Features are taken *before* the ReLU of the named conv layers of torchvision's VGG19, on inputs
mapped from [-1, 1] to [0, 1] and normalised with ImageNet statistics; each layer contributes the
L1 distance between feature maps, weighted per layer (Real-ESRGAN: conv1_2 0.1, conv2_2 0.1,
conv3_4 1, conv4_4 1, conv5_4 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.state_dict import load_strict
from ..weights import WEIGHT_FILES, require

# Layer names of torchvision's vgg19().features, in order (BasicSR's naming).
VGG19_LAYERS = [
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "conv4_4", "relu4_4", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "conv5_4", "relu5_4", "pool5",
]
VGG19_WEIGHTS_FILE = WEIGHT_FILES["vgg19"].filename  # torchvision's VGG19_Weights.IMAGENET1K_V1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features(pretrained: bool) -> nn.Sequential:
    """torchvision VGG19 conv trunk, weights from the local torch hub cache when ``pretrained``."""
    import torchvision

    vgg = torchvision.models.vgg19(weights=None)
    if pretrained:
        path = require("vgg19", "The VGG19 perceptual loss")
        load_strict(vgg, torch.load(path, map_location="cpu", weights_only=True), str(path))
    # torchvision's ReLUs are in place: they would overwrite a stored conv output with its
    # post-ReLU values. BasicSR's VGGFeatureExtractor (the official loss) compares pre-ReLU maps.
    for i, layer in enumerate(vgg.features):
        if isinstance(layer, nn.ReLU):
            vgg.features[i] = nn.ReLU(inplace=False)
    return vgg.features


class VGGPerceptualLoss(nn.Module):
    """sum_l w_l * mean |phi_l(x) - phi_l(y)|, images in [-1, 1]. Returns a (B,) tensor."""

    def __init__(self, layer_weights: dict[str, float], pretrained: bool = True):
        super().__init__()
        unknown = sorted(set(layer_weights) - set(VGG19_LAYERS))
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; choose from {VGG19_LAYERS}")
        self.layer_weights = dict(layer_weights)
        last = max(VGG19_LAYERS.index(name) for name in layer_weights)
        self.features = vgg19_features(pretrained)[: last + 1]
        self.features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VGGPerceptualLoss":
        super().train(mode)
        self.features.eval()  # frozen feature extractor, always in eval mode
        return self

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> ImageNet-normalised
        out = {}
        for name, layer in zip(VGG19_LAYERS, self.features):
            x = layer(x)
            if name in self.layer_weights:
                out[name] = x
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_f, target_f = self._features(pred), self._features(target.detach())
        loss = pred.new_zeros(pred.shape[0])
        for name, weight in self.layer_weights.items():
            loss = loss + weight * F.l1_loss(pred_f[name], target_f[name], reduction="none").flatten(1).mean(1)
        return loss
