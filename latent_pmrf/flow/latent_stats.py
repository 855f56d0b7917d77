"""Estimate a VAE's latent normalisation (``shift_factor``, ``scaling_factor``) from images.

Global scalars as in FLUX/SD3: ``shift = mean(z)``, ``scale = 1 / std(z)`` over every element
of the posterior means of centre crops, so that ``(z - shift) * scale`` has zero mean and unit
variance on this data (the flow's z' of Sec. 3.1). Any VAE ``load_autoencoder`` accepts can be
measured; ``write=True`` stores the factors in a local Sim-VAE snapshot's ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..atomic import write_text_atomic
from ..data.image_folder import ImageFolderCenter
from ..models.autoencoder import load_autoencoder
from ..models.vae_hub import CONFIG_NAME, OFFICIAL_CLASS, OUR_CLASS, read_config_json


def writable_config(vae: str | Path) -> Path:
    """The ``config.json`` that ``write=True`` updates: only a local Sim-VAE snapshot directory has
    one this repository owns (a baseline's or a cached repo's config is not ours to change)."""
    refusal = (f"--write stores the factors only in a local Sim-VAE snapshot directory ({CONFIG_NAME} with "
               f"_class_name {OFFICIAL_CLASS!r} or {OUR_CLASS!r}); run without --write and put the printed factors "
               f"in the VAE's config yourself")
    if not Path(vae).is_dir():
        raise ValueError(f"{refusal}. {str(vae)!r} is not a directory")
    config = Path(vae) / CONFIG_NAME
    try:
        read_config_json(config)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"{refusal}. {err}") from err
    return config


@torch.no_grad()
def estimate_latent_stats(vae: str | Path, images: str | Path, limit: int | None = 1000, crop_size: int = 256,
                          batch_size: int = 8, device: str = "cpu", write: bool = False) -> dict:
    """``vae``: anything ``load_autoencoder`` takes (a Sim-VAE or diffusers directory, a Hugging Face
    repo id, sd15|sdxl|flux|sd3). Returns the factors, the number of images and the crop size."""
    config = writable_config(vae) if write else None  # refuse before the encoding pass
    model = load_autoencoder(vae).to(device).eval()
    loader = DataLoader(ImageFolderCenter(images, crop_size, limit), batch_size=batch_size)
    total = torch.zeros((), dtype=torch.float64)
    total_sq = torch.zeros((), dtype=torch.float64)
    count = 0
    for batch in loader:
        z = model.encode(batch["image"].to(device)).mode().double().cpu()  # raw latent, (B, C, h, w)
        total += z.sum()
        total_sq += z.pow(2).sum()
        count += z.numel()
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    stats = {"shift_factor": float(mean), "scaling_factor": float(1.0 / std), "num_images": len(loader.dataset),
             "crop_size": crop_size}
    if config is not None:
        raw = json.loads(config.read_text())
        raw.update(shift_factor=stats["shift_factor"], scaling_factor=stats["scaling_factor"])
        write_text_atomic(config, json.dumps(raw, indent=2, sort_keys=True) + "\n")
    return stats
