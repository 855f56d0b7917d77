"""Metrics with the paper's conventions (issue 6; formulas first)."""

from .distortion import psnr, ssim
from .formulas import frechet_distance, ind_rmse, mmd_rbf

__all__ = ["frechet_distance", "ind_rmse", "mmd_rbf", "psnr", "ssim"]
