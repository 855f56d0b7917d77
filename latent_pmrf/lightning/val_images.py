"""Validation bookkeeping shared by the restoration modules: PSNR/SSIM with ``latent-pmrf evaluate``'s
convention and an image grid."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torchvision
from PIL import Image

from ..data.image_io import to_uint8
from ..metrics.base import to_unit_8bit
from ..metrics.distortion import psnr, ssim


def log_psnr_ssim(module: L.LightningModule, pred: torch.Tensor, gt: torch.Tensor) -> None:
    """``val/psnr`` and ``val/ssim`` of images in [-1, 1] (clamped), averaged over images: the
    ``psnr`` / ``ssim`` metrics of ``latent-pmrf evaluate`` (BasicSR's, on the 8-bit grid) of the
    images as their PNGs would hold them."""
    p, g = to_unit_8bit(pred), to_unit_8bit(gt)
    n = p.shape[0]
    module.log("val/psnr", psnr(p, g).mean().float(), batch_size=n, sync_dist=True)
    module.log("val/ssim", ssim(p, g).mean().float(), batch_size=n, sync_dist=True)


def save_grid(module: L.LightningModule, rows: list[torch.Tensor], name: str, tag: str | None = None) -> Path | None:
    """Rows of images in [-1, 1] (same count each) as OUTPUT/samples/<name>_step<N>.png and as the
    TensorBoard image ``tag`` (default ``val/<name>``)."""
    if not module.trainer.is_global_zero or module.trainer.sanity_checking:
        return None
    k = rows[0].shape[0]
    grid = torchvision.utils.make_grid(((torch.cat(rows).float().cpu().clamp(-1, 1)) + 1) / 2, nrow=k)
    out = Path(module.trainer.default_root_dir) / "samples" / f"{name}_step{module.global_step:08d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(grid, (0, 1))).save(out)  # rounds as restore's PNGs do
    for logger in module.loggers:
        if hasattr(logger.experiment, "add_image"):
            logger.experiment.add_image(tag or f"val/{name}", grid, module.global_step)
    return out
