"""What an evaluation metric is here.

Two shapes cover every metric of the paper's Sec. 4.1 / Table 4:

* :class:`ImageMetric`: one value per image, from the restored image alone (no-reference: MUSIQ,
  CLIP-IQA, Q-Align, NIQE) or against a reference image (the ground truth for PSNR, SSIM, MS-SSIM,
  LPIPS, DISTS, Deg, LMD; the posterior-mean output for IndRMSE). ``aggregate`` turns the
  per-image values into the table's number (a mean, except PMRF's ``ind_rmse``: the root of the
  mean MSE).
* :class:`FeatureMetric`: a distance between two image *sets* computed from per-image features
  (FID, FD-DINOv2, MMD-DINOv2); ``features`` embeds a batch, ``distance`` compares two feature sets.

Images reach a metric as (B, 3, H, W) float tensors in [0, 1], RGB, on the 8-bit grid: the values
an image file holds (x·255 rounds back to the file's integers). ``to_unit_8bit`` puts a network's
[-1, 1] output there exactly as a saved PNG would hold it, so training-time numbers equal
``latent-pmrf evaluate``'s on the written files.

Each metric's ``info`` comes from the one metric table, ``registry.SPECS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..data.image_io import to_uint8

Reference = Literal["none", "gt", "posterior_mean", "set"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    reference: Reference  # what the metric compares the restored images to
    higher_is_better: bool
    weights: tuple[str, ...] = ()  # keys of latent_pmrf.weights.WEIGHT_FILES
    description: str = ""


def to_unit_8bit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats (clamped) -> [0, 1] on the 8-bit grid: round((x + 1)·127.5) / 255, the values of
    the PNG ``latent-pmrf restore`` writes."""
    return torch.round((images.float().clamp(-1, 1) + 1) * 127.5) / 255


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [0, 1] -> (B, H, W, 3) uint8, the files' own values."""
    return to_uint8(images, (0, 1))


class ImageMetric:
    """Per-image metric: ``__call__(pred, ref=None) -> (B,) float64 CPU tensor``."""

    info: MetricInfo

    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def aggregate(self, values: np.ndarray) -> float:
        return float(np.mean(values))


class FeatureMetric:
    """Set-level metric: ``features(batch) -> (B, D)`` float64 array; ``distance(a, b) -> float``.
    ``feature_kind`` names the features in the reference-feature cache."""

    info: MetricInfo
    feature_kind: str

    @property
    def backbone(self) -> object:
        """What computes the features: set metrics that share it embed each image once."""
        return self

    def features(self, images: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def distance(self, pred_features: np.ndarray, ref_features: np.ndarray) -> float:
        raise NotImplementedError
