"""Metrics with the paper's conventions (Sec. 4.1, Table 4): our formulas (``formulas``,
``distortion``), library wrappers (``library``, ``distribution``), the face metrics (``face``),
the metric table (``registry``), the one metric loop (``suite``) and the folder evaluation behind
``latent-pmrf evaluate``."""

from .distortion import psnr, ssim
from .formulas import frechet_distance, ind_rmse, ind_rmse_per_image, mmd_rbf

__all__ = ["frechet_distance", "ind_rmse", "ind_rmse_per_image", "mmd_rbf", "psnr", "ssim"]
