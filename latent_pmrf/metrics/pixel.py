"""Weight-free per-image metrics with the paper's conventions: PSNR, SSIM (BasicSR's, see
``distortion.py``) and IndRMSE (PMRF's distortion proxy against the posterior-mean output, used
where there is no ground truth: Fig. 5's real-world plane)."""

from __future__ import annotations

import numpy as np
import torch

from .base import ImageMetric, MetricInfo
from .distortion import psnr, ssim, to_255


class PSNR(ImageMetric):
    info = MetricInfo("psnr", "gt", True, description="PSNR, RGB 0-255, no crop (BasicSR calculate_psnr_pt)")

    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        return psnr(pred, ref).cpu()


class SSIM(ImageMetric):
    info = MetricInfo("ssim", "gt", True, description="SSIM, RGB 0-255, Gaussian 11/1.5 (BasicSR calculate_ssim_pt)")

    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        return ssim(pred, ref).cpu()


class IndRMSE(ImageMetric):
    """Per image: the MSE on 0-255 against the posterior mean f(y); the table number is
    sqrt(mean MSE) over the set (PMRF's IndRMSE, ``formulas.ind_rmse``)."""

    info = MetricInfo("ind_rmse", "posterior_mean", False,
                      description="sqrt(mean over images of MSE on 0-255 vs the posterior-mean output)")

    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        a, b = to_255(pred), to_255(ref)
        return (a - b).pow(2).mean(dim=(1, 2, 3)).cpu()

    def aggregate(self, values: np.ndarray) -> float:
        return float(np.sqrt(np.mean(values)))
