"""Weight-free per-image metrics with the paper's conventions: PSNR, SSIM (BasicSR's, see
``distortion.py``) and IndRMSE, the RMSE against the posterior-mean output f(y) that stands in for
the ground truth on real-world sets (Fig. 5's "distortion"-perception plane), in its two published
aggregations: ``ind_rmse`` (PMRF's) and ``ind_rmse_per_image`` (the official Latent-PMRF code's,
the one Fig. 5 plots)."""

from __future__ import annotations

import numpy as np
import torch

from .base import ImageMetric
from .distortion import psnr, ssim, to_255
from .registry import metric_info


class PSNR(ImageMetric):
    info = metric_info("psnr")

    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        return psnr(pred, ref).cpu()


class SSIM(ImageMetric):
    info = metric_info("ssim")

    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        return ssim(pred, ref).cpu()


class IndRMSE(ImageMetric):
    """PMRF's IndRMSE (Ohayon et al. 2025): sqrt of the mean over images of the MSE on 0-255 against
    the posterior mean f(y) (PMRF ``evaluation/compute_metrics_blind.py`` accumulates ``ind_mse``
    over images; ``formulas.ind_rmse``). Per image: the MSE; ``aggregate``: the root of the mean.

    Not what the Latent-PMRF paper's Fig. 5 plots: see :class:`IndRMSEPerImage`."""

    info = metric_info("ind_rmse")

    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        a, b = to_255(pred), to_255(ref)
        return (a - b).pow(2).mean(dim=(1, 2, 3)).cpu()

    def aggregate(self, values: np.ndarray) -> float:
        return float(np.sqrt(np.mean(values)))


class IndRMSEPerImage(ImageMetric):
    """The Latent-PMRF paper's IndRMSE (Fig. 5): the mean over images of each image's RMSE against
    the posterior mean f(y) (``formulas.ind_rmse_per_image``). The official code registers a
    per-image RMSE in pyiqa (``latent_pmrf/metrics/rmse_arch.py``, ``RMSE.forward``), measures the
    real-world sets against the ``mmse_model_out`` folder (``scripts/test/test_exp125_0.sh``) and
    averages per-image pyiqa values (as ``train_vae.py``'s test loop does). It is never above
    PMRF's ``ind_rmse`` (Jensen). Ours is on 0-255 like ``ind_rmse``; the official code feeds pyiqa
    [0, 1] images, so its numbers are ours / 255."""

    info = metric_info("ind_rmse_per_image")

    def __call__(self, pred: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        a, b = to_255(pred), to_255(ref)
        return (a - b).pow(2).mean(dim=(1, 2, 3)).sqrt().cpu()


PIXEL_METRICS = {cls.info.name: cls for cls in (PSNR, SSIM, IndRMSE, IndRMSEPerImage)}
