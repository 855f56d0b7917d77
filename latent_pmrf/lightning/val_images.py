"""Validation bookkeeping shared by the restoration modules: each rank's shard of a validation set,
PSNR/SSIM with ``latent-pmrf evaluate``'s convention and an image grid.

Under DDP every rank restores its own contiguous shard (``validation_shard``), so a validation
costs 1/R of the set per rank and each image is seen exactly once; the numbers are gathered, never
recomputed: per-image validation values through running means whose sums and image counts are
added over ranks (``log_image_mean``), the convergence metrics through ``MetricSuite.gather``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchmetrics.aggregation import MeanMetric

from ..data.image_io import to_uint8
from ..metrics.base import to_unit_8bit
from ..metrics.distortion import psnr, ssim


def validation_shard(dataset: Dataset, rank: int = 0, world_size: int = 1) -> Dataset:
    """Rank ``rank``'s share of a validation set: the contiguous block of images
    ``[rank·N // R, (rank + 1)·N // R)``; shard sizes differ by at most one, no image is repeated
    (no padding, unlike ``DistributedSampler``), and concatenating the shards in rank order gives
    the set in order, so per-image results gathered in rank order are the 1-process arrays.
    Items keep their dataset index, which seeds their noise (``seeding.torch_generator``)."""
    n = len(dataset)
    if world_size == 1:
        return dataset
    if n < world_size:
        raise ValueError(f"the validation set has {n} images, fewer than the {world_size} ranks: every rank needs "
                         "at least one (raise data.val_limit or convergence.num_images, or validate on fewer devices)")
    return Subset(dataset, range(rank * n // world_size, (rank + 1) * n // world_size))


def log_psnr_ssim(module: L.LightningModule, pred: torch.Tensor, gt: torch.Tensor) -> None:
    """``val/psnr`` and ``val/ssim`` of images in [-1, 1] (clamped), averaged over images: the
    ``psnr`` / ``ssim`` metrics of ``latent-pmrf evaluate`` (BasicSR's, on the 8-bit grid) of the
    images as their PNGs would hold them."""
    p, g = to_unit_8bit(pred), to_unit_8bit(gt)
    log_image_mean(module, "psnr", psnr(p, g))
    log_image_mean(module, "ssim", ssim(p, g))


def log_image_mean(module: L.LightningModule, name: str, values: torch.Tensor) -> None:
    """``val/<name>``: the mean over the validation set of per-image ``values`` (B,), kept in a
    running mean (a ``torchmetrics`` metric made on first use) that Lightning computes and resets
    every validation; under DDP it adds the values and image counts of every rank's shard. Not
    ``self.log(sync_dist=True)``: Lightning's DDP mean divides the summed image count by the world
    size in integers, wrong whenever the shards differ in size (5 images on 2 ranks read as 4)."""
    attribute = f"val_{name}_mean"
    if not hasattr(module, attribute):
        # NaN (a failed image) propagates to the mean rather than being dropped
        module.add_module(attribute, MeanMetric(nan_strategy="disable").to(module.device))
    mean = getattr(module, attribute)
    mean.update(values.detach().float())
    module.log(f"val/{name}", mean, metric_attribute=attribute)


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
