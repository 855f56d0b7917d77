"""``latent-pmrf vae-equivariance``: GenSIRR's Table 1 as a command. For one VAE, or two (before /
after re-VAE fine-tuning), on ``n`` held-out α-mixtures I = (1-α)B + αR of centre crops:

- the relative equivariance error ‖μ_E(I) − ((1-α)μ_E(B) + αμ_E(R))‖² / ‖(1-α)μ_E(B) + αμ_E(R)‖²
  of the posterior means, averaged over mixtures (scale-free: shrinking latents cannot lower it);
- the reconstruction PSNR of D(μ_E(I)) against I (8-bit grid, dB), averaged over mixtures.

Mixture i and its α are fixed by (seed, i) (``re_vae_data.HeldOutMixtures``), so two VAEs and two
runs see the same set.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from ..lightning.re_vae_data import HeldOutMixtures
from ..losses.equivariance import superposition_metrics
from ..models.autoencoder import load_autoencoder


@torch.no_grad()
def measure_equivariance(vaes: list[str | Path], background: str | Path, reflection: str | Path, n: int = 64,
                         seed: int = 0, crop_size: int = 256, batch_size: int = 4, device: str = "cpu") -> list[dict]:
    """One row per VAE (anything ``load_autoencoder`` takes): ``vae``, ``n``,
    ``equivariance_error`` and ``psnr`` (means over the mixtures)."""
    if not 1 <= len(vaes) <= 2:
        raise ValueError(f"give one VAE, or two (before and after), got {len(vaes)}")
    if n < 1 or batch_size < 1:
        raise ValueError(f"--n and --batch-size must be >= 1, got {n} and {batch_size}")
    mixtures = HeldOutMixtures(background, reflection, crop_size, n, seed)
    rows = []
    for spec in vaes:
        model = load_autoencoder(spec).to(device).eval()
        if crop_size % model.downsample_factor:
            raise ValueError(f"--crop-size {crop_size} is not a multiple of {spec}'s downsampling factor "
                             f"{model.downsample_factor}")
        errors, psnrs = [], []
        for batch in DataLoader(mixtures, batch_size=batch_size):
            metrics = superposition_metrics(model, batch["background"].to(device), batch["reflection"].to(device),
                                            batch["alpha"].to(device))
            errors.append(metrics["equivariance_error"].cpu())
            psnrs.append(metrics["psnr"].cpu())
        rows.append({"vae": str(spec), "n": n, "equivariance_error": float(torch.cat(errors).mean()),
                     "psnr": float(torch.cat(psnrs).mean())})
    return rows


def print_equivariance(rows: list[dict], console: Console) -> None:
    table = Table(title=f"reflection equivariance on {rows[0]['n']} held-out α-mixtures (GenSIRR Table 1)")
    for col in ("vae", "relative equivariance error ↓", "mixture reconstruction PSNR (dB) ↑"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["vae"], f"{row['equivariance_error']:.4g}", f"{row['psnr']:.2f}")
    console.print(table)
    if len(rows) == 2:
        before, after = rows
        ratio = after["equivariance_error"] / before["equivariance_error"]
        console.print(f"equivariance error after / before: {ratio:.3f}; "
                      f"PSNR change: {after['psnr'] - before['psnr']:+.2f} dB")
