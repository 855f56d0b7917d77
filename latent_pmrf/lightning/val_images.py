"""Validation bookkeeping shared by the restoration modules: PSNR/SSIM on [0, 1] and an image grid."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torchvision
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def log_psnr_ssim(module: L.LightningModule, pred: torch.Tensor, gt: torch.Tensor) -> None:
    """``val/psnr`` and ``val/ssim`` of images in [-1, 1] (clamped), averaged over images."""
    p, g = (pred.float().clamp(-1, 1) + 1) / 2, (gt.float() + 1) / 2
    n = p.shape[0]
    psnr = peak_signal_noise_ratio(p, g, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(p, g, data_range=1.0, reduction="none")
    module.log("val/psnr", psnr.mean(), batch_size=n, sync_dist=True)
    module.log("val/ssim", ssim.mean(), batch_size=n, sync_dist=True)


def save_grid(module: L.LightningModule, rows: list[torch.Tensor], name: str, tag: str | None = None) -> Path | None:
    """Rows of images in [-1, 1] (same count each) as OUTPUT/samples/<name>_step<N>.png and as the
    TensorBoard image ``tag`` (default ``val/<name>``)."""
    if not module.trainer.is_global_zero or module.trainer.sanity_checking:
        return None
    k = rows[0].shape[0]
    grid = torchvision.utils.make_grid(((torch.cat(rows).float().cpu().clamp(-1, 1)) + 1) / 2, nrow=k)
    out = Path(module.trainer.default_root_dir) / "samples" / f"{name}_step{module.global_step:08d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(grid, out)
    for logger in module.loggers:
        if hasattr(logger.experiment, "add_image"):
            logger.experiment.add_image(tag or f"val/{name}", grid, module.global_step)
    return out
