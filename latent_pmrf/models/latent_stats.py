"""Estimate a VAE's latent normalisation (``shift_factor``, ``scaling_factor``) from images.

Global scalars as in FLUX/SD3: ``shift = mean(z)``, ``scale = 1 / std(z)`` over every element
of the posterior means of centre crops, so that ``(z - shift) * scale`` has zero mean and unit
variance on this data.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..atomic import write_text_atomic
from ..data.image_folder import ImageFolderCenter
from .sim_vae import SimVAE
from .vae_hub import CONFIG_NAME


@torch.no_grad()
def estimate_latent_stats(vae_dir: str | Path, images: str | Path, limit: int | None = 1000, crop_size: int = 256,
                          batch_size: int = 8, device: str = "cpu", write: bool = False) -> dict:
    vae = SimVAE.from_pretrained(vae_dir).to(device).eval()
    loader = DataLoader(ImageFolderCenter(images, crop_size, limit), batch_size=batch_size)
    total = torch.zeros((), dtype=torch.float64)
    total_sq = torch.zeros((), dtype=torch.float64)
    count = 0
    for batch in loader:
        z = vae.encode(batch["image"].to(device)).mode().double().cpu()
        total += z.sum()
        total_sq += z.pow(2).sum()
        count += z.numel()
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    stats = {"shift_factor": float(mean), "scaling_factor": float(1.0 / std), "num_images": len(loader.dataset),
             "crop_size": crop_size}
    if write:
        config_path = Path(vae_dir) / CONFIG_NAME
        raw = json.loads(config_path.read_text())
        raw.update(shift_factor=stats["shift_factor"], scaling_factor=stats["scaling_factor"])
        write_text_atomic(config_path, json.dumps(raw, indent=2, sort_keys=True) + "\n")
    return stats
